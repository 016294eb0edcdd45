//! Resume: reconnecting with `?since=<event_ts>` replays the persisted events
//! missed in the user's channels (clients dedupe by (channel, ts)), or
//! `resync_required` for channels whose history ring no longer reaches back.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Reads the replay: frames until `done` holds (bounded), then until quiet.
fn read_replay(ws: &mut Ws, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut got = Vec::new();
    for _ in 0..1000 {
        if done(&got) {
            break;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        match ws.try_recv_json(remaining.max(Duration::from_millis(1))) {
            Some(v) => got.push(v),
            None => break,
        }
    }
    got.extend(ws.collect_until_quiet(QUIET, Duration::from_secs(5), 1000));
    got
}

/// The id of a persisted event: its `ts`, or `event_ts` for events without
/// one (member_joined_channel).
fn key_ts(ev: &Value) -> String {
    match ev.get("ts") {
        Some(_) => s(ev, "ts").to_string(),
        None => s(ev, "event_ts").to_string(),
    }
}

/// (channel, ts) of every event in `frames` that has both.
fn keys(frames: &[Value]) -> Vec<(String, String)> {
    frames
        .iter()
        .filter(|v| v.get("ts").is_some() && v.get("channel").is_some())
        .map(|v| (s(v, "channel").to_string(), s(v, "ts").to_string()))
        .collect()
}

/// Checks the replayed events: deduped by (channel, ts), each channel's in
/// strictly increasing ts; returns the deduped set of those newer than `since`.
fn replayed_after(
    frames: &[Value],
    since: &str,
    allowed_channels: &[&str],
) -> BTreeSet<(String, String)> {
    let since = ts_micros(since);
    let mut seen = HashSet::new();
    let mut last_per_channel: HashMap<String, u64> = HashMap::new();
    let mut after = BTreeSet::new();
    for ev in frames {
        if ev["type"] == json!("resync_required") {
            continue;
        }
        assert_ne!(
            ev["type"],
            json!("user_typing"),
            "a transient event was replayed: {ev}"
        );
        assert_ne!(ev["type"], json!("hello"), "a second hello: {ev}");
        assert!(
            ev["transient_marker"].is_null(),
            "a transient publish was replayed: {ev}"
        );
        let channel = s(ev, "channel").to_string();
        assert!(
            allowed_channels.contains(&channel.as_str()),
            "replayed an event of a channel the user is not in: {ev}"
        );
        let ts = key_ts(ev);
        let t = ts_micros(&ts);
        assert_eq!(
            ev["event_ts"],
            json!(ts),
            "replayed event keeps its event_ts: {ev}"
        );
        if !seen.insert((channel.clone(), ts.clone())) {
            continue; // a repeat: clients dedupe
        }
        if let Some(prev) = last_per_channel.insert(channel.clone(), t) {
            assert!(t > prev, "replay of {channel} out of order at {ev}");
        }
        if t > since {
            after.insert((channel, ts));
        }
    }
    after
}

#[test]
fn resume_replays_exactly_the_missed_events() {
    let server = Server::start_with(&["--history-per-channel", "64"]);
    let admin = &server.admin;
    let a = admin.create_user("roamer");
    let m = admin.create_user("typist");
    let c1 = admin.create_channel("one");
    let c2 = admin.create_channel("two");
    let c3 = admin.create_channel("three");
    admin.add_member(&c1, &a.id);
    admin.add_member(&c2, &a.id);
    admin.add_member(&c1, &m.id);

    let mut ws = server.connect(&a.id).named("roamer1");
    let mut seen = BTreeSet::new();
    for i in 0..3 {
        for c in [&c1, &c2] {
            let ts = admin.publish(
                c,
                json!({"type": "message", "user": m.id, "text": format!("seen {i}")}),
            );
            seen.insert((c.to_string(), ts));
        }
    }
    let mut since = String::new();
    let mut received = BTreeSet::new();
    for _ in 0..6 {
        let ev = ws.recv();
        assert_type(&ev, "message");
        since = s(&ev, "event_ts").to_string();
        received.insert((s(&ev, "channel").to_string(), s(&ev, "ts").to_string()));
    }
    assert_eq!(received, seen, "live events before going away");
    ws.close();

    // While A is away: persisted events on its channels (and on one it is not
    // in), a transient publish and a typing notification.
    let mut typist = server.connect(&m.id).named("typist");
    typist.send_json(&json!({"id": 1, "type": "typing", "channel": c1}));
    admin.publish_transient(
        &c2,
        json!({"type": "message", "user": m.id, "text": "transient", "transient_marker": true}),
    );
    let mut missed = BTreeSet::new();
    for i in 0..5 {
        let ts = admin.publish(
            &c1,
            json!({"type": "message", "user": m.id, "text": format!("missed one {i}")}),
        );
        missed.insert((c1.clone(), ts));
        if i < 4 {
            let ts = admin.publish(
                &c2,
                json!({"type": "message", "user": m.id, "text": format!("missed two {i}")}),
            );
            missed.insert((c2.clone(), ts));
        }
        admin.publish(
            &c3,
            json!({"type": "message", "user": m.id, "text": format!("never {i}")}),
        );
    }
    for (_, ts) in &missed {
        assert!(
            ts_micros(ts) > ts_micros(&since),
            "a later publish got an earlier ts than since"
        );
    }

    let mut back = server.connect_since(&a.id, &since).named("roamer2");
    let frames = read_replay(&mut back, |got| {
        let k: HashSet<(String, String)> = keys(got).into_iter().collect();
        missed.iter().all(|m| k.contains(m))
    });
    assert!(
        !frames.iter().any(|f| f["type"] == json!("resync_required")),
        "resync_required although the ring covers everything: {frames:?}"
    );
    let after = replayed_after(&frames, &since, &[&c1, &c2]);
    assert_eq!(
        after, missed,
        "replayed events newer than since (deduped) differ from the missed ones"
    );
    // Anything replayed from before `since` is a repeat of a real event of
    // these channels: one A saw, or A's own joins.
    for ev in &frames {
        let key = (s(ev, "channel").to_string(), key_ts(ev));
        if ts_micros(&key.1) <= ts_micros(&since) {
            assert!(
                seen.contains(&key) || ev["type"] == json!("member_joined_channel"),
                "replayed an old event that never happened: {ev}"
            );
        }
    }

    // The resumed connection is live afterwards.
    let ts = admin.publish(
        &c2,
        json!({"type": "message", "user": m.id, "text": "live again"}),
    );
    let ev = back.recv();
    assert_eq!(ev["text"], json!("live again"), "{ev}");
    assert_eq!(ev["ts"], json!(ts));
    back.expect_no_event(QUIET);
}

#[test]
fn resume_replays_the_users_own_channel() {
    let server = Server::start_with(&["--history-per-channel", "64"]);
    let admin = &server.admin;
    let a = admin.create_user("roamer");
    let b = admin.create_user("other");

    let mut ws = server.connect(&a.id).named("roamer1");
    admin.publish(&a.id, json!({"type": "note", "text": "first"}));
    let ev = ws.recv();
    assert_eq!(ev["text"], json!("first"));
    let since = s(&ev, "event_ts").to_string();
    ws.close();

    let mut missed = BTreeSet::new();
    for i in 0..2 {
        let ts = admin.publish(
            &a.id,
            json!({"type": "note", "text": format!("missed {i}")}),
        );
        missed.insert((a.id.clone(), ts));
    }
    admin.publish(&b.id, json!({"type": "note", "text": "for someone else"}));

    let mut back = server.connect_since(&a.id, &since).named("roamer2");
    let frames = read_replay(&mut back, |got| {
        let k: HashSet<(String, String)> = keys(got).into_iter().collect();
        missed.iter().all(|m| k.contains(m))
    });
    let after = replayed_after(&frames, &since, &[&a.id]);
    assert_eq!(after, missed, "own-channel events missed while away");
}

#[test]
fn resync_required_when_the_ring_no_longer_reaches_back() {
    let server = Server::start_with(&["--history-per-channel", "8"]);
    let admin = &server.admin;
    let a = admin.create_user("roamer");
    let m = admin.create_user("author");
    let busy = admin.create_channel("busy");
    let quiet = admin.create_channel("quiet");
    admin.add_member(&busy, &a.id);
    admin.add_member(&quiet, &a.id);

    let mut ws = server.connect(&a.id).named("roamer1");
    for i in 0..2 {
        admin.publish(
            &busy,
            json!({"type": "message", "user": m.id, "text": format!("busy seen {i}")}),
        );
        admin.publish(
            &quiet,
            json!({"type": "message", "user": m.id, "text": format!("quiet seen {i}")}),
        );
    }
    let mut since = String::new();
    for _ in 0..4 {
        since = s(&ws.recv(), "event_ts").to_string();
    }
    ws.close();

    // 20 events overflow busy's ring of 8; quiet's 3 still fit.
    for i in 0..20 {
        admin.publish(
            &busy,
            json!({"type": "message", "user": m.id, "text": format!("busy missed {i}")}),
        );
    }
    let mut missed_quiet = BTreeSet::new();
    for i in 0..3 {
        let ts = admin.publish(
            &quiet,
            json!({"type": "message", "user": m.id, "text": format!("quiet missed {i}")}),
        );
        missed_quiet.insert((quiet.clone(), ts));
    }

    let mut back = server.connect_since(&a.id, &since).named("roamer2");
    let frames = read_replay(&mut back, |got| {
        let k: HashSet<(String, String)> = keys(got).into_iter().collect();
        got.iter().any(|f| f["type"] == json!("resync_required"))
            && missed_quiet.iter().all(|m| k.contains(m))
    });
    let resyncs: Vec<&Value> = frames
        .iter()
        .filter(|f| f["type"] == json!("resync_required"))
        .collect();
    assert_eq!(resyncs.len(), 1, "expected one resync_required: {frames:?}");
    let channels: Vec<&str> = resyncs[0]["channels"]
        .as_array()
        .unwrap_or_else(|| panic!("resync_required without channels[]: {}", resyncs[0]))
        .iter()
        .map(|c| c.as_str().expect("channel ids are strings"))
        .collect();
    assert!(
        channels.contains(&busy.as_str()),
        "resync_required lacks the overflowed channel: {channels:?}"
    );
    assert!(
        !channels.contains(&quiet.as_str()),
        "resync_required names a channel the ring covers: {channels:?}"
    );

    let after = replayed_after(&frames, &since, &[&busy, &quiet]);
    let busy_after: Vec<_> = after.iter().filter(|(c, _)| *c == busy).collect();
    assert!(busy_after.is_empty(), "events of the resync channel were replayed instead of only resync_required: {busy_after:?}");
    let quiet_after: BTreeSet<_> = after.into_iter().filter(|(c, _)| *c == quiet).collect();
    assert_eq!(
        quiet_after, missed_quiet,
        "the covered channel's missed events"
    );

    // Still subscribed to both afterwards.
    admin.publish(
        &busy,
        json!({"type": "message", "user": m.id, "text": "live busy"}),
    );
    assert_eq!(back.recv()["text"], json!("live busy"));
}
