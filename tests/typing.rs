//! Typing: a transient event to every other connection in the channel, never
//! back to the typist's own connection, never to non-members.

mod common;

use common::*;
use serde_json::json;

#[test]
fn typing_reaches_other_connections_but_not_the_typist() {
    let server = Server::start();
    let admin = &server.admin;
    let a = admin.create_user("alice");
    let b = admin.create_user("bob");
    let d = admin.create_user("dave");
    let channel = admin.create_channel("typing");
    let elsewhere = admin.create_channel("elsewhere");
    admin.add_member(&channel, &a.id);
    admin.add_member(&channel, &b.id);
    admin.add_member(&elsewhere, &d.id);

    let mut a1 = server.connect(&a.id).named("alice1");
    let mut a2 = server.connect(&a.id).named("alice2");
    let mut b1 = server.connect(&b.id).named("bob1");
    let mut d1 = server.connect(&d.id).named("dave1");

    a1.send_json(&json!({"id": 1, "type": "typing", "channel": channel}));
    for ws in [&mut b1, &mut a2] {
        let ev = ws.recv();
        assert_type(&ev, "user_typing");
        assert_eq!(ev["channel"], json!(channel), "{}: {ev}", ws.name);
        assert_eq!(ev["user"], json!(a.id), "{}: {ev}", ws.name);
    }
    // A marker published after the typing event went out: it follows the
    // typing event in the channel's order, so it must be the typist's next
    // frame (no echo of its own typing, no reply).
    admin.publish(
        &channel,
        json!({"type": "message", "user": b.id, "text": "marker1"}),
    );
    for ws in [&mut a1, &mut a2, &mut b1] {
        let ev = ws.recv();
        assert_eq!(
            ev["text"],
            json!("marker1"),
            "{}: expected the marker, got {ev}",
            ws.name
        );
    }

    // Now bob types: both of alice's connections get it, bob does not.
    b1.send_json(&json!({"id": 2, "type": "typing", "channel": channel}));
    for ws in [&mut a1, &mut a2] {
        let ev = ws.recv();
        assert_type(&ev, "user_typing");
        assert_eq!(ev["channel"], json!(channel), "{}: {ev}", ws.name);
        assert_eq!(ev["user"], json!(b.id), "{}: {ev}", ws.name);
    }
    admin.publish(
        &channel,
        json!({"type": "message", "user": b.id, "text": "marker2"}),
    );
    for ws in [&mut a1, &mut a2, &mut b1] {
        let ev = ws.recv();
        assert_eq!(
            ev["text"],
            json!("marker2"),
            "{}: expected the marker, got {ev}",
            ws.name
        );
    }

    // The non-member heard nothing of it.
    expect_all_quiet(&mut [&mut a1, &mut a2, &mut b1, &mut d1], QUIET);
}

#[test]
fn typing_in_a_channel_one_is_not_in_is_refused() {
    let server = Server::start();
    let admin = &server.admin;
    let a = admin.create_user("alice");
    let b = admin.create_user("bob");
    let channel = admin.create_channel("private-ish");
    admin.add_member(&channel, &b.id);
    let mut a1 = server.connect(&a.id).named("alice1");
    let mut b1 = server.connect(&b.id).named("bob1");

    a1.send_json(&json!({"id": 5, "type": "typing", "channel": channel}));
    let err = a1.recv();
    assert_eq!(err["ok"], json!(false), "{err}");
    assert_eq!(err["reply_to"], json!(5), "{err}");
    assert_eq!(err["error"]["code"], json!(6), "not_in_channel: {err}");
    // Bob heard nothing: his next frame is a later marker.
    admin.publish(
        &channel,
        json!({"type": "message", "user": b.id, "text": "marker"}),
    );
    assert_eq!(b1.recv()["text"], json!("marker"));
    expect_all_quiet(&mut [&mut a1, &mut b1], QUIET);
}
