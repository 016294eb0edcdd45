//! Live membership changes: joining subscribes the user's live connections
//! (they see their own member_joined_channel); leaving announces
//! member_left_channel to everyone, the leaver included, then unsubscribes.

mod common;

use common::*;
use serde_json::{json, Value};

fn assert_member_event(ev: &Value, ty: &str, user: &str, channel: &str, who: &str) {
    assert_type(ev, ty);
    assert_eq!(ev["user"], json!(user), "{who}: {ev}");
    assert_eq!(ev["channel"], json!(channel), "{who}: {ev}");
    assert_eq!(ev["channel_type"], json!("C"), "{who}: {ev}");
    assert!(s(ev, "team").starts_with('T'), "{who}: team: {ev}");
    ts_micros(s(ev, "event_ts"));
}

#[test]
fn live_join_and_leave() {
    let server = Server::start();
    let admin = &server.admin;
    let a = admin.create_user("joiner");
    let b = admin.create_user("resident");
    let channel = admin.create_channel("room");
    admin.add_member(&channel, &b.id);

    let mut a1 = server.connect(&a.id).named("joiner1");
    let mut a2 = server.connect(&a.id).named("joiner2");
    let mut b1 = server.connect(&b.id).named("resident1");

    // Not a member yet: the channel's events do not reach A.
    admin.publish(
        &channel,
        json!({"type": "message", "user": b.id, "text": "before"}),
    );
    assert_eq!(b1.recv()["text"], json!("before"));
    expect_all_quiet(&mut [&mut a1, &mut a2], QUIET);

    // Join: everyone in the channel, the joiner's live connections included,
    // gets member_joined_channel, then the channel's next events.
    admin.add_member(&channel, &a.id);
    let mut joined_ts = Vec::new();
    for ws in [&mut a1, &mut a2, &mut b1] {
        let ev = ws.recv();
        assert_member_event(&ev, "member_joined_channel", &a.id, &channel, &ws.name);
        joined_ts.push(s(&ev, "event_ts").to_string());
    }
    assert!(
        joined_ts.windows(2).all(|w| w[0] == w[1]),
        "one event, one event_ts: {joined_ts:?}"
    );
    let ts = admin.publish(
        &channel,
        json!({"type": "message", "user": b.id, "text": "after join"}),
    );
    for ws in [&mut a1, &mut a2, &mut b1] {
        let ev = ws.recv();
        assert_eq!(ev["text"], json!("after join"), "{}: {ev}", ws.name);
        assert_eq!(ev["ts"], json!(ts), "{}: {ev}", ws.name);
    }
    // A new connection of the joiner is subscribed at connect time.
    let mut a3 = server.connect(&a.id).named("joiner3");
    admin.publish(
        &channel,
        json!({"type": "message", "user": b.id, "text": "to three"}),
    );
    for ws in [&mut a1, &mut a2, &mut a3, &mut b1] {
        assert_eq!(ws.recv()["text"], json!("to three"), "{}", ws.name);
    }
    // The member can now post over the websocket.
    a1.send_json(&json!({"id": 3, "type": "message", "channel": channel, "text": "from joiner"}));
    let mut saw_reply = false;
    for _ in 0..2 {
        let v = a1.recv();
        if v.get("reply_to").is_some() {
            assert_eq!(v["ok"], json!(true), "{v}");
            saw_reply = true;
        } else {
            assert_eq!(v["text"], json!("from joiner"), "{v}");
        }
    }
    assert!(saw_reply);
    for ws in [&mut a2, &mut a3, &mut b1] {
        assert_eq!(ws.recv()["text"], json!("from joiner"), "{}", ws.name);
    }

    // Leave: announced to everyone including the leaver's connections, then
    // the leaver's connections stop receiving the channel.
    admin.remove_member(&channel, &a.id);
    for ws in [&mut a1, &mut a2, &mut a3, &mut b1] {
        let ev = ws.recv();
        assert_member_event(&ev, "member_left_channel", &a.id, &channel, &ws.name);
    }
    admin.publish(
        &channel,
        json!({"type": "message", "user": b.id, "text": "after leave"}),
    );
    assert_eq!(b1.recv()["text"], json!("after leave"));
    expect_all_quiet(&mut [&mut a1, &mut a2, &mut a3, &mut b1], QUIET);

    // And the websocket refuses posting there now.
    a2.send_json(&json!({"id": 9, "type": "message", "channel": channel, "text": "ghost"}));
    let err = a2.recv();
    assert_eq!(err["ok"], json!(false), "{err}");
    assert_eq!(err["reply_to"], json!(9), "{err}");
    assert_eq!(err["error"]["code"], json!(6), "not_in_channel: {err}");
    expect_all_quiet(&mut [&mut a1, &mut a2, &mut a3, &mut b1], QUIET);

    // A connection opened after leaving is not subscribed either.
    let mut a4 = server.connect(&a.id).named("joiner4");
    admin.publish(
        &channel,
        json!({"type": "message", "user": b.id, "text": "later"}),
    );
    assert_eq!(b1.recv()["text"], json!("later"));
    expect_all_quiet(&mut [&mut a1, &mut a4], QUIET);
}
