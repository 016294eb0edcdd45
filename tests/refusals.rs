//! Refused requests leave nothing behind, and get Slack's answers (issue 8,
//! items 2 and 4): a client naming ids that do not exist cannot grow the
//! server's tables, threads must exist, and nobody posts to a user id.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Sum of one `/v1/stats` counter over the shards.
fn total(admin: &Admin, key: &str) -> u64 {
    let stats = admin.stats();
    stats["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .map(|s| s[key].as_u64().unwrap_or_else(|| panic!("no {key} in {s}")))
        .sum()
}

/// An id of kind `kind` that names nothing (ids are uppercase base 36).
fn made_up(kind: char, i: usize) -> String {
    format!("{kind}ZZ{i:08}")
}

/// Sends `frames` (JSON) over `ws` and reads every answer until it goes
/// quiet; returns the error codes of the answers.
fn send_all(ws: &mut Ws, frames: &[Value]) -> Vec<u64> {
    for f in frames {
        ws.send_json(f);
    }
    ws.collect_until_quiet(QUIET, Duration::from_secs(60), usize::MAX)
        .iter()
        .filter_map(|v| v["error"]["code"].as_u64())
        .collect()
}

/// A server whose client rate limit none of these floods reaches.
fn unlimited() -> Server {
    Server::start_with(&[
        "--client-msgs-per-sec",
        "100000",
        "--client-msgs-burst",
        "100000",
    ])
}

#[test]
fn made_up_channel_ids_leave_no_entries() {
    let server = unlimited();
    let admin = &server.admin;
    let user = admin.create_user("prober");
    let mut ws = server.connect(&user.id);
    ws.ping_roundtrip();
    let before = total(admin, "channels");

    // typing and messages to user, team and other non-conversation ids that
    // exist nowhere.
    let mut frames = Vec::new();
    for i in 0..600 {
        for kind in ['U', 'T', 'W'] {
            frames.push(json!({"id": i, "type": "typing", "channel": made_up(kind, i)}));
        }
        frames.push(json!({"id": i, "type": "message", "channel": made_up('U', i), "text": "x"}));
    }
    let errors = send_all(&mut ws, &frames);
    assert_eq!(
        errors.len(),
        frames.len(),
        "every typing and message to a made-up id is refused: {errors:?}"
    );
    assert!(
        errors.iter().all(|&c| c == 5),
        "channel_not_found: {errors:?}"
    );
    // Publishes through the admin API to made-up user and team ids too.
    for i in 0..50 {
        for kind in ['U', 'T'] {
            let body = json!({"channel": made_up(kind, 10_000 + i), "event": {"type": "x"}, "transient": true});
            let (status, v) = admin.request("POST", "/v1/publish", Some(&body));
            assert_eq!((status, &v["error"]), (404, &json!("channel_not_found")));
        }
    }
    assert_eq!(
        total(admin, "channels"),
        before,
        "refused requests created channel entries"
    );
    ws.ping_roundtrip();
}

#[test]
fn watching_made_up_users_keeps_no_state() {
    let server = unlimited();
    let admin = &server.admin;
    let user = admin.create_user("watcher");
    let mut ws = server.connect(&user.id);
    let before = total(admin, "presence_users");
    let mut frames = Vec::new();
    for i in 0..10 {
        let ids: Vec<String> = (0..500).map(|j| made_up('U', i * 500 + j)).collect();
        frames.push(json!({"type": "presence_sub", "ids": ids}));
    }
    let errors = send_all(&mut ws, &frames);
    assert!(
        errors.is_empty(),
        "presence_sub answers no error: {errors:?}"
    );
    assert_eq!(
        total(admin, "presence_users"),
        before,
        "watching made-up users created presence entries"
    );
}

#[test]
fn user_channels_are_reclaimed_when_idle() {
    let server = Server::start();
    let admin = &server.admin;
    let users: Vec<User> = (0..20)
        .map(|i| admin.create_user(&format!("idle{i}")))
        .collect();
    let before = total(admin, "channels");
    // Each connection subscribes its own user channel (and the team's);
    // with no event ever sent there, closing them leaves nothing.
    let conns: Vec<Ws> = users.iter().map(|u| server.connect(&u.id)).collect();
    assert!(total(admin, "channels") > before);
    for ws in conns {
        ws.close();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while total(admin, "channels") > before + 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // The team channel may stay (it is one entry, whatever the users).
    assert!(
        total(admin, "channels") <= before + 1,
        "user channels with nothing in them stay after their last watcher left: {} > {}",
        total(admin, "channels"),
        before + 1
    );
}

#[test]
fn rtm_thread_ts_must_name_a_message() {
    let server = Server::start();
    let admin = &server.admin;
    let user = admin.create_user("threader");
    let channel = admin.create_channel("threads");
    admin.add_member(&channel, &user.id);
    let mut ws = server.connect(&user.id);

    for thread_ts in [json!("1234567890.123456"), json!("not-a-ts"), json!(42)] {
        let id = ws.next_id();
        ws.send_json(&json!({"id": id, "type": "message", "channel": channel, "text": "reply", "thread_ts": thread_ts}));
        let v = ws.recv();
        assert_eq!(v["ok"], json!(false), "thread_ts {thread_ts}: {v}");
        assert_eq!(v["reply_to"], json!(id), "{v}");
        assert_eq!(v["error"]["code"], json!(11), "thread_ts {thread_ts}: {v}");
        assert_eq!(v["error"]["msg"], json!("thread_not_found"), "{v}");
    }

    // A real thread works, and naming a reply names its thread.
    let id = ws.next_id();
    ws.send_json(&json!({"id": id, "type": "message", "channel": channel, "text": "parent"}));
    let (parent_event, ack) = (ws.recv(), ws.recv());
    let (parent_event, ack) = if ack["type"] == json!("message") {
        (ack, parent_event)
    } else {
        (parent_event, ack)
    };
    assert_eq!(ack["ok"], json!(true), "{ack}");
    let parent = s(&parent_event, "ts").to_string();
    let id = ws.next_id();
    ws.send_json(&json!({"id": id, "type": "message", "channel": channel, "text": "r1", "thread_ts": parent}));
    let frames = ws.recv_n(2, EVENT_TIMEOUT);
    let reply = frames
        .iter()
        .find(|f| f["type"] == json!("message"))
        .expect("the reply event");
    assert_eq!(reply["thread_ts"], json!(parent), "{reply}");
    let id = ws.next_id();
    ws.send_json(&json!({"id": id, "type": "message", "channel": channel, "text": "r2", "thread_ts": s(reply, "ts")}));
    let frames = ws.recv_n(2, EVENT_TIMEOUT);
    let reply2 = frames
        .iter()
        .find(|f| f["type"] == json!("message"))
        .expect("the reply event");
    assert_eq!(
        reply2["thread_ts"],
        json!(parent),
        "a reply to a reply joins its thread: {reply2}"
    );
    ws.expect_no_event(QUIET);
}

#[test]
fn nobody_posts_to_a_user_id() {
    let server = Server::start();
    let admin = &server.admin;
    let me = admin.create_user("self-poster");
    let other = admin.create_user("other");
    let mut ws = server.connect(&me.id);
    let mut other_ws = server.connect(&other.id);

    for target in [&me.id, &other.id] {
        let id = ws.next_id();
        ws.send_json(
            &json!({"id": id, "type": "message", "channel": target, "text": "to a user id"}),
        );
        let v = ws.recv();
        assert_eq!(v["ok"], json!(false), "{v}");
        assert_eq!(v["error"]["code"], json!(5), "channel_not_found: {v}");
    }
    let mut web = WebApi::new(&server);
    let v = web
        .call(
            &me.token,
            "chat.postMessage",
            &json!({"channel": me.id, "text": "hi"}),
        )
        .expect("chat.postMessage answers")
        .json();
    assert_eq!(v["ok"], json!(false), "{v}");
    assert_eq!(v["error"], json!("channel_not_found"), "{v}");
    ws.expect_no_event(QUIET);
    other_ws.expect_no_event(QUIET);
}
