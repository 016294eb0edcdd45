//! Fan-out: every connection of every member gets every event of its channel,
//! in one order; a user's own channel reaches that user's connections only.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[test]
fn fanout_to_40_connections_on_both_shards_in_order() {
    let server = Server::start();
    let admin = &server.admin;
    let users = admin.create_users("dlv", 20);
    let outsider = admin.create_user("outsider");
    let channel = admin.create_channel("delivery");
    for u in &users {
        admin.add_member(&channel, &u.id);
    }

    // 20 users x 2 connections.
    let mut conns: Vec<(usize, Ws)> = Vec::new();
    for (i, u) in users.iter().enumerate() {
        for k in 0..2 {
            conns.push((i, server.connect(&u.id).named(format!("user{i}/conn{k}"))));
        }
    }

    // SO_REUSEPORT spreads connections by 4-tuple: make sure both shards hold
    // some. Extra connections (of a user in no channel) until they do, bounded.
    let mut extras: Vec<Ws> = Vec::new();
    let mut per_shard = admin.shard_connections();
    assert_eq!(
        per_shard.len(),
        2,
        "stats should list 2 shards: {}",
        admin.stats()
    );
    for _ in 0..64 {
        if per_shard.iter().all(|&n| n >= 1) {
            break;
        }
        extras.push(
            server
                .connect(&outsider.id)
                .named(format!("extra{}", extras.len())),
        );
        per_shard = admin.shard_connections();
    }
    assert!(
        per_shard.iter().all(|&n| n >= 1),
        "after {} connections one shard still holds none: {per_shard:?}",
        40 + extras.len()
    );
    let expected = 40 + extras.len() as u64;
    let total = admin.wait_total_connections(expected, Duration::from_secs(10));
    assert_eq!(
        total,
        expected,
        "stats connections total: {}",
        admin.stats()
    );

    // 50 persisted events, published one after the other.
    let author = &users[0].id;
    let mut published = Vec::new();
    for i in 0..50 {
        let ts = admin.publish(
            &channel,
            json!({"type": "message", "user": author, "text": format!("m{i}")}),
        );
        published.push(ts);
    }
    for w in published.windows(2) {
        assert!(
            ts_micros(&w[0]) < ts_micros(&w[1]),
            "publish ts not increasing: {w:?}"
        );
    }

    for (_, ws) in conns.iter_mut() {
        let mut last = 0u64;
        for (i, ts) in published.iter().enumerate() {
            let ev = ws.recv();
            assert_type(&ev, "message");
            assert_eq!(ev["channel"], json!(channel), "{}: {ev}", ws.name);
            assert_eq!(ev["user"], json!(author), "{}: {ev}", ws.name);
            assert_eq!(
                ev["text"],
                json!(format!("m{i}")),
                "{}: event {i} out of order: {ev}",
                ws.name
            );
            assert_eq!(ev["ts"], json!(ts), "{}: ts of event {i}: {ev}", ws.name);
            assert_eq!(
                ev["event_ts"],
                json!(ts),
                "{}: event_ts of event {i}: {ev}",
                ws.name
            );
            let t = ts_micros(s(&ev, "ts"));
            assert!(
                t > last,
                "{}: ts not strictly increasing at {i}: {ev}",
                ws.name
            );
            last = t;
        }
    }

    // A user's own channel: only that user's two connections get it.
    let target = &users[3];
    let private_ts = admin.publish(
        &target.id,
        json!({"type": "note", "text": "only for user3"}),
    );
    for (i, ws) in conns.iter_mut() {
        if *i == 3 {
            let ev = ws.recv();
            assert_type(&ev, "note");
            assert_eq!(ev["text"], json!("only for user3"));
            assert_eq!(
                ev["channel"],
                json!(target.id),
                "{}: channel set to the user id: {ev}",
                ws.name
            );
            assert_eq!(ev["ts"], json!(private_ts), "{}: {ev}", ws.name);
            assert_eq!(ev["event_ts"], json!(private_ts), "{}: {ev}", ws.name);
        }
    }
    // A marker on the shared channel: for everyone the next frame is the
    // marker (nobody else got the private event first), then nothing.
    admin.publish(
        &channel,
        json!({"type": "message", "user": author, "text": "marker"}),
    );
    for (_, ws) in conns.iter_mut() {
        let ev = ws.recv();
        assert_eq!(
            ev["text"],
            json!("marker"),
            "{}: expected the marker, got {ev}",
            ws.name
        );
    }
    let mut all: Vec<&mut Ws> = conns
        .iter_mut()
        .map(|(_, w)| w)
        .chain(extras.iter_mut())
        .collect();
    expect_all_quiet(&mut all, QUIET);
}

#[test]
fn rtm_message_is_acked_and_reaches_every_member_connection_including_sender() {
    let server = Server::start();
    let admin = &server.admin;
    let a = admin.create_user("alice");
    let b = admin.create_user("bob");
    let outsider = admin.create_user("carol");
    let channel = admin.create_channel("chat");
    admin.add_member(&channel, &a.id);
    admin.add_member(&channel, &b.id);

    let mut a1 = server.connect(&a.id).named("alice1");
    let mut a2 = server.connect(&a.id).named("alice2");
    let mut b1 = server.connect(&b.id).named("bob1");
    let mut c1 = server.connect(&outsider.id).named("carol1");

    a1.send_json(&json!({"id": 41, "type": "message", "channel": channel, "text": "hi"}));
    // The sender gets its reply and its own event, in either order.
    let first = a1.recv();
    let second = a1.recv();
    let (reply, event) = if first.get("reply_to").is_some() {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(reply["ok"], json!(true), "reply: {reply}");
    assert_eq!(reply["reply_to"], json!(41), "reply: {reply}");
    assert_eq!(reply["text"], json!("hi"), "reply: {reply}");
    let ts = s(&reply, "ts").to_string();
    ts_micros(&ts);

    let check = |ev: &serde_json::Value, who: &str| {
        assert_type(ev, "message");
        assert_eq!(ev["channel"], json!(channel), "{who}: {ev}");
        assert_eq!(ev["user"], json!(a.id), "{who}: {ev}");
        assert_eq!(ev["text"], json!("hi"), "{who}: {ev}");
        assert_eq!(
            ev["ts"],
            json!(ts),
            "{who}: event ts equals the reply's: {ev}"
        );
        assert_eq!(ev["event_ts"], json!(ts), "{who}: {ev}");
        assert!(s(ev, "team").starts_with('T'), "{who}: team: {ev}");
    };
    check(&event, "alice1");
    check(&a2.recv(), "alice2");
    check(&b1.recv(), "bob1");

    // The next message gets a later ts.
    b1.send_json(&json!({"id": 7, "type": "message", "channel": channel, "text": "hello back"}));
    let mut got_reply = None;
    for _ in 0..2 {
        let v = b1.recv();
        if v.get("reply_to").is_some() {
            got_reply = Some(v);
        } else {
            assert_eq!(v["text"], json!("hello back"), "bob1: {v}");
        }
    }
    let reply2 = got_reply.expect("bob1 got no reply");
    assert_eq!(reply2["reply_to"], json!(7));
    assert!(
        ts_micros(s(&reply2, "ts")) > ts_micros(&ts),
        "second message's ts not later: {reply2}"
    );
    for ws in [&mut a1, &mut a2] {
        let v = ws.recv();
        assert_eq!(v["text"], json!("hello back"), "{}: {v}", ws.name);
        assert_eq!(v["user"], json!(b.id));
    }
    expect_all_quiet(&mut [&mut a1, &mut a2, &mut b1, &mut c1], QUIET);
}

/// The upgrade's 101 waits for `hello` and leaves with it in one write, so
/// the first read of a client holds both: in a connect storm that is one
/// loopback segment and one wake-up of the client per connection instead of
/// two. (Before, the 101 left at once and `hello` after the subscriptions'
/// round trip to the channel servers, so a first read held the 101 alone.)
#[test]
fn the_101_and_hello_leave_in_one_write() {
    use std::io::Read;
    let server = Server::start();
    let alice = server.admin.create_user("alice");
    let hello: &[u8] = b"\x81\x10{\"type\":\"hello\"}";
    for _ in 0..5 {
        let url = server.ticket(&alice.id);
        let path = &url[url.find("/websocket/").expect("a gateway URL")..];
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n",
            server.gateway
        );
        let mut conn = send_raw(server.gateway, request.as_bytes(), EVENT_TIMEOUT);
        let mut first = vec![0u8; 4096];
        let n = conn.get_mut().read(&mut first).expect("the server answers");
        let first = &first[..n];
        let text = String::from_utf8_lossy(first);
        assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
        assert!(
            first.ends_with(hello),
            "the first read is not the 101 followed by hello: {text:?}"
        );
    }
}
