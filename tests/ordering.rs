//! Concurrent publishers to one channel: every subscriber sees every event
//! exactly once, all in one order, ts strictly increasing, and each
//! publisher's events in the order it sent them.

mod common;

use std::collections::{HashMap, HashSet};
use std::thread;
use std::time::Duration;

use common::*;
use serde_json::json;

const PUBLISHERS: usize = 4;
const PER_PUBLISHER: usize = 200;
const SUBSCRIBERS: usize = 6;
const TOTAL: usize = PUBLISHERS * PER_PUBLISHER;

#[test]
fn concurrent_publishes_are_seen_in_one_order_by_all() {
    let server = Server::start();
    let admin = server.admin.clone();
    let subs = admin.create_users("sub", SUBSCRIBERS);
    let author = admin.create_user("author");
    let channel = admin.create_channel("ordering");
    for u in &subs {
        admin.add_member(&channel, &u.id);
    }
    let conns: Vec<Ws> = subs
        .iter()
        .enumerate()
        .map(|(i, u)| server.connect(&u.id).named(format!("sub{i}")))
        .collect();

    // Readers run while the publishers publish.
    let readers: Vec<_> = conns
        .into_iter()
        .map(|mut ws| {
            thread::spawn(move || {
                let mut got = Vec::with_capacity(TOTAL);
                for _ in 0..TOTAL {
                    match ws.try_recv_json(Duration::from_secs(30)) {
                        Some(v) => got.push(v),
                        None => break,
                    }
                }
                (ws, got)
            })
        })
        .collect();

    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let admin = admin.clone();
            let channel = channel.clone();
            let author = author.id.clone();
            thread::spawn(move || {
                (0..PER_PUBLISHER)
                    .map(|i| {
                        admin.publish(
                            &channel,
                            json!({"type": "message", "user": author, "text": format!("p{p}-{i}"), "publisher": p, "seq": i}),
                        )
                    })
                    .collect::<Vec<String>>()
            })
        })
        .collect();
    let published: Vec<Vec<String>> = publishers
        .into_iter()
        .map(|h| join_within(h, Duration::from_secs(180), "publisher"))
        .collect();

    // The ts the API returned for each (publisher, seq).
    let mut ts_of: HashMap<(u64, u64), String> = HashMap::new();
    for (p, list) in published.iter().enumerate() {
        for (i, ts) in list.iter().enumerate() {
            ts_of.insert((p as u64, i as u64), ts.clone());
        }
    }
    let distinct: HashSet<&String> = ts_of.values().collect();
    assert_eq!(distinct.len(), TOTAL, "publish answered duplicate ts");

    let mut reference: Option<Vec<(u64, u64)>> = None;
    for (n, h) in readers.into_iter().enumerate() {
        let (mut ws, got) = join_within(h, Duration::from_secs(120), "reader");
        assert_eq!(
            got.len(),
            TOTAL,
            "sub{n} received {} of {TOTAL} events",
            got.len()
        );
        let mut order = Vec::with_capacity(TOTAL);
        let mut last_ts = 0u64;
        let mut next_seq = [0u64; PUBLISHERS];
        for ev in &got {
            assert_type(ev, "message");
            assert_eq!(ev["channel"], json!(channel), "sub{n}: {ev}");
            let p = ev["publisher"]
                .as_u64()
                .unwrap_or_else(|| panic!("sub{n}: no publisher: {ev}"));
            let i = ev["seq"]
                .as_u64()
                .unwrap_or_else(|| panic!("sub{n}: no seq: {ev}"));
            assert!((p as usize) < PUBLISHERS, "sub{n}: {ev}");
            assert_eq!(
                i, next_seq[p as usize],
                "sub{n}: publisher {p}'s events out of order or repeated: {ev}"
            );
            next_seq[p as usize] += 1;
            let ts = s(ev, "ts");
            assert_eq!(
                Some(&ts.to_string()),
                ts_of.get(&(p, i)),
                "sub{n}: ts differs from the publish answer: {ev}"
            );
            assert_eq!(ev["event_ts"], json!(ts), "sub{n}: {ev}");
            let t = ts_micros(ts);
            assert!(t > last_ts, "sub{n}: ts not strictly increasing: {ev}");
            last_ts = t;
            order.push((p, i));
        }
        let unique: HashSet<_> = order.iter().collect();
        assert_eq!(unique.len(), TOTAL, "sub{n}: events repeated");
        match &reference {
            None => reference = Some(order),
            Some(r) => assert!(r == &order, "sub{n} saw another order than sub0"),
        }
        ws.expect_no_event(Duration::from_millis(100));
    }
}
