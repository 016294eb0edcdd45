//! Presence: only connections that watch a user hear its changes; a user is
//! active while it has at least one connection.

mod common;

use std::collections::HashMap;

use common::*;
use serde_json::{json, Value};

fn assert_presence(ev: &Value, user: &str, presence: &str, who: &str) {
    assert_type(ev, "presence_change");
    assert_eq!(ev["user"], json!(user), "{who}: {ev}");
    assert_eq!(ev["presence"], json!(presence), "{who}: {ev}");
}

/// Reads `n` presence_change frames (any order) into user → presence.
fn presence_changes(ws: &mut Ws, n: usize) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for _ in 0..n {
        let ev = ws.recv();
        assert_type(&ev, "presence_change");
        let prev = out.insert(s(&ev, "user").to_string(), s(&ev, "presence").to_string());
        assert!(
            prev.is_none(),
            "{}: two presence_change for one user: {ev}",
            ws.name
        );
    }
    out
}

#[test]
fn only_watchers_hear_presence_changes() {
    let server = Server::start();
    let admin = &server.admin;
    let a = admin.create_user("watcher");
    let b = admin.create_user("watched");
    let c = admin.create_user("bystander");

    let mut wa = server.connect(&a.id).named("watcher");
    let mut wc = server.connect(&c.id).named("bystander");

    // B is offline: subscribing reports it away right away.
    wa.send_json(&json!({"type": "presence_sub", "ids": [b.id]}));
    assert_presence(&wa.recv(), &b.id, "away", "watcher");
    assert_eq!(admin.presence_of(&b.id), "away");

    // B's first connection: away -> active, to the watcher only.
    let b1 = server.connect(&b.id).named("watched1");
    assert_presence(&wa.recv(), &b.id, "active", "watcher");
    let p = admin.presence(&[&b.id, &c.id, &a.id]);
    assert_eq!(p.get(&b.id).map(String::as_str), Some("active"), "{p:?}");
    assert_eq!(p.get(&c.id).map(String::as_str), Some("active"), "{p:?}");
    assert_eq!(p.get(&a.id).map(String::as_str), Some("active"), "{p:?}");

    // The bystander watches nobody: a query answers it exactly once, and no
    // change notification came or comes.
    wc.send_json(&json!({"type": "presence_query", "ids": [b.id]}));
    assert_presence(&wc.recv(), &b.id, "active", "bystander");
    wc.expect_no_event(QUIET);

    // A second connection changes nothing.
    let b2 = server.connect(&b.id).named("watched2");
    wa.expect_no_event(QUIET);

    // Closing one of two connections (cleanly) changes nothing.
    b1.close();
    wa.expect_no_event(QUIET);
    assert_eq!(admin.presence_of(&b.id), "active");

    // Losing the last one (abruptly, no close frame): active -> away.
    b2.abort();
    assert_presence(&wa.recv(), &b.id, "away", "watcher");
    assert_eq!(
        admin.presence_of(&b.id),
        "away",
        "GET /v1/presence disagrees with the notification"
    );

    // Query several at once: one presence_change each.
    wa.send_json(&json!({"type": "presence_query", "ids": [b.id, c.id]}));
    let got = presence_changes(&mut wa, 2);
    assert_eq!(got.get(&b.id).map(String::as_str), Some("away"), "{got:?}");
    assert_eq!(
        got.get(&c.id).map(String::as_str),
        Some("active"),
        "{got:?}"
    );

    expect_all_quiet(&mut [&mut wa, &mut wc], QUIET);
}

#[test]
fn presence_sub_replaces_the_watched_set() {
    let server = Server::start();
    let admin = &server.admin;
    let a = admin.create_user("watcher");
    let b = admin.create_user("first");
    let d = admin.create_user("second");
    let mut wa = server.connect(&a.id).named("watcher");

    wa.send_json(&json!({"type": "presence_sub", "ids": [b.id]}));
    assert_presence(&wa.recv(), &b.id, "away", "watcher");

    // Adding D: only the newly watched id is reported.
    wa.send_json(&json!({"type": "presence_sub", "ids": [b.id, d.id]}));
    assert_presence(&wa.recv(), &d.id, "away", "watcher");
    wa.expect_no_event(QUIET);

    // Dropping B: nothing newly watched, nothing sent.
    wa.send_json(&json!({"type": "presence_sub", "ids": [d.id]}));
    wa.expect_no_event(QUIET);

    // B comes online: no longer watched, so no notification.
    let _b1 = server.connect(&b.id).named("first1");
    wa.expect_no_event(QUIET);
    assert_eq!(admin.presence_of(&b.id), "active");

    // D comes online: still watched.
    let d1 = server.connect(&d.id).named("second1");
    assert_presence(&wa.recv(), &d.id, "active", "watcher");
    d1.close();
    assert_presence(&wa.recv(), &d.id, "away", "watcher");

    // An empty set stops everything.
    wa.send_json(&json!({"type": "presence_sub", "ids": []}));
    let _d2 = server.connect(&d.id).named("second2");
    wa.expect_no_event(QUIET);
    assert_eq!(admin.presence_of(&d.id), "active");
}
