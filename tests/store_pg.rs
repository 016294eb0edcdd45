//! The real binary on PostgreSQL (`--store postgres://…`): the Web API and
//! a websocket work as on SQLite, and a restart keeps everything — users
//! and their tokens, channels, memberships, messages, reactions, and each
//! channel's ts, which keeps increasing.
//!
//! Needs the PostgreSQL server named by `TRANSPONDER_TEST_PG`: run it under
//! `tests/with_pg.sh cargo test --test store_pg` (tests/run.sh does). Without
//! it the test fails, saying so; it never skips. Each test works in a
//! schema of its own on that server, dropped at the end.

mod common;

use std::process::Command;
use std::time::Duration;

use common::pg::Schema;
use common::*;
use serde_json::{json, Value};

fn start(schema: &Schema) -> Server {
    Server::start_with(&["--store", &schema.url])
}

fn stop(mut server: Server) {
    server.terminate();
    let status = server
        .wait_exit(Duration::from_secs(20))
        .expect("the server did not exit after SIGTERM");
    assert!(status.success(), "exit status {status}");
}

/// `transponder <args> --store <url>`: its stdout, trimmed.
fn cli(schema: &Schema, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_transponder"))
        .args(args)
        .args(["--store", &schema.url])
        .env("TRANSPONDER_DATA_DIR", fresh_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "transponder {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn texts(history: &Value) -> Vec<String> {
    history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn the_web_api_and_a_websocket_on_postgres_and_a_restart_keeps_everything() {
    let schema = Schema::new();
    let server = start(&schema);
    let admin = &server.admin;
    let alice = admin.create_user("alice");
    let bob = admin.create_user("bob");
    let mut api = WebApi::new(&server);

    // A conversation made through the Web API; bob invited; bob's socket.
    let created = api.ok(
        &alice.token,
        "conversations.create",
        json!({"name": "pg-room"}),
    );
    let channel = s(&created["channel"], "id").to_string();
    api.ok(
        &alice.token,
        "conversations.invite",
        json!({"channel": channel, "users": bob.id}),
    );
    let mut bob_ws = server.connect(&bob.id).named("bob");

    // Post, then delivery, history, a thread reply and a reaction.
    let first = api.ok(
        &alice.token,
        "chat.postMessage",
        json!({"channel": channel, "text": "stored in postgres"}),
    );
    let first_ts = s(&first, "ts").to_string();
    let ev = bob_ws.recv();
    assert_type(&ev, "message");
    assert_eq!(ev["text"], json!("stored in postgres"));
    assert_eq!(ev["ts"], json!(first_ts));
    api.ok(
        &bob.token,
        "chat.postMessage",
        json!({"channel": channel, "text": "a reply", "thread_ts": first_ts}),
    );
    api.ok(
        &bob.token,
        "reactions.add",
        json!({"channel": channel, "timestamp": first_ts, "name": "tada"}),
    );
    // A name is unique in the store, whichever node asks.
    let taken = api
        .call(
            &bob.token,
            "conversations.create",
            &json!({"name": "pg-room"}),
        )
        .unwrap()
        .json();
    assert_eq!(taken["error"], json!("name_taken"), "{taken}");

    let history = api.ok(
        &bob.token,
        "conversations.history",
        json!({"channel": channel}),
    );
    assert_eq!(texts(&history), ["stored in postgres"]);
    let parent = &history["messages"][0];
    assert_eq!(parent["reply_count"], json!(1), "{parent}");
    assert_eq!(parent["reactions"][0]["name"], json!("tada"), "{parent}");
    assert!(schema.count("messages") >= 2);
    drop(bob_ws);
    stop(server);

    // Offline, on the same store: a user and a channel from the CLI.
    let carol_token = cli(&schema, &["user", "add", "carol"]);
    assert!(carol_token.starts_with("xoxp-"), "{carol_token}");
    let lobby = cli(&schema, &["channel", "add", "lobby"]);
    assert!(lobby.starts_with('C'), "{lobby}");

    // Restarted: everything is still there.
    let server = start(&schema);
    let mut api = WebApi::new(&server);
    let me = api.ok(&bob.token, "auth.test", json!({}));
    assert_eq!(me["user_id"], json!(bob.id));
    let carol = api.ok(&carol_token, "auth.test", json!({}));
    let carol_id = s(&carol, "user_id").to_string();
    let history = api.ok(
        &bob.token,
        "conversations.history",
        json!({"channel": channel}),
    );
    assert_eq!(texts(&history), ["stored in postgres"]);
    assert_eq!(history["messages"][0]["reply_count"], json!(1));
    let members = api.ok(
        &alice.token,
        "conversations.members",
        json!({"channel": channel}),
    );
    let mut ids: Vec<&str> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    ids.sort();
    let mut want = [alice.id.as_str(), bob.id.as_str()];
    want.sort();
    assert_eq!(ids, want);

    // Bob's membership survived: his new socket gets the channel's next
    // message, whose ts is after everything stored before the restart.
    let mut bob_ws = server.connect(&bob.id).named("bob again");
    let second = api.ok(
        &alice.token,
        "chat.postMessage",
        json!({"channel": channel, "text": "after the restart"}),
    );
    let second_ts = s(&second, "ts").to_string();
    assert!(
        ts_micros(&second_ts) > ts_micros(&first_ts),
        "{second_ts} after {first_ts}"
    );
    let ev = bob_ws.recv();
    assert_eq!(ev["text"], json!("after the restart"));

    // The CLI's channel is loaded too: carol joins it and posts.
    api.ok(
        &carol_token,
        "conversations.join",
        json!({"channel": lobby}),
    );
    api.ok(
        &carol_token,
        "chat.postMessage",
        json!({"channel": lobby, "text": "hello lobby"}),
    );
    let lobby_history = api.ok(
        &carol_token,
        "conversations.history",
        json!({"channel": lobby}),
    );
    assert_eq!(texts(&lobby_history), ["hello lobby"]);
    assert_eq!(
        api.ok(&carol_token, "users.info", json!({"user": carol_id}))["user"]["name"],
        json!("carol")
    );
    drop(bob_ws);
    stop(server);
}

#[test]
fn a_store_url_that_cannot_be_reached_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_transponder"))
        .args(["serve", "--store", "postgres://nobody@127.0.0.1:1/none"])
        .args(common::EPHEMERAL_PORTS)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot open the store postgres://nobody@127.0.0.1:1/none"),
        "{stderr}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_transponder"))
        .args(["user", "add", "x", "--store", "mysql://x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--store must be"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
