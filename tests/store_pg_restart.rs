//! The server rides out a restart of its PostgreSQL server: the store's
//! threads lose their connections, a post in flight may fail (with an
//! error, never a false `ok`), and the next ones reconnect; every
//! acknowledged post is in the history afterwards.
//!
//! A test binary of its own: restarting the shared test server would cut
//! the sessions of any other test running beside it. Run it under
//! `tests/with_pg.sh cargo test --test store_pg_restart`.

mod common;

use common::pg::{restart_server, Schema};
use common::*;
use serde_json::{json, Value};

/// Posts after the restart. Each is answered, ok or not.
const POSTS_AFTER: usize = 30;
/// At most one job per store thread can meet its lost connection.
const FAILURES_MAX: usize = 3;

#[test]
fn a_postgres_restart_fails_a_post_at_most_and_loses_no_acknowledged_one() {
    let schema = Schema::new();
    let server = Server::start_with(&["--store", &schema.url]);
    let alice = server.admin.create_user("alice");
    let channel = server.admin.create_channel("restarts");
    server.admin.add_member(&channel, &alice.id);
    let mut api = WebApi::new(&server);
    let post = |api: &mut WebApi, text: &str| -> Value {
        api.call(
            &alice.token,
            "chat.postMessage",
            &json!({"channel": channel, "text": text}),
        )
        .unwrap()
        .json()
    };
    assert_eq!(post(&mut api, "before")["ok"], json!(true));

    restart_server();

    let mut acked = vec!["before".to_string()];
    let mut failed = Vec::new();
    for i in 0..POSTS_AFTER {
        let text = format!("after {i}");
        let answer = post(&mut api, &text);
        if answer["ok"] == json!(true) {
            acked.push(text);
        } else {
            failed.push(answer);
        }
    }
    eprintln!(
        "after the restart: {} posts acknowledged, {} failed {failed:?}",
        acked.len() - 1,
        failed.len()
    );
    assert!(
        failed.len() <= FAILURES_MAX,
        "{} posts failed after the restart: {failed:?}",
        failed.len()
    );
    // Reads reconnect too, and see exactly the acknowledged posts.
    let history = api.ok(
        &alice.token,
        "conversations.history",
        json!({"channel": channel, "limit": 1000}),
    );
    let mut seen: Vec<String> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_string())
        .collect();
    seen.reverse();
    assert_eq!(seen, acked);
    assert_eq!(schema.count("messages") as usize, acked.len());
}
