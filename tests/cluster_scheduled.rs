//! Scheduled messages in a cluster (three nodes, etcd, one shared
//! PostgreSQL store): a message fires on whoever owns its channel at its
//! time. Messages are scheduled through one node for channels owned all
//! over the cluster; then a node that owns some of them is killed (-9)
//! before they are due. Each still fires exactly once, not before its time:
//! the new owner of a dead node's channels loads their pending messages when
//! it claims them (`schedule::load_member`), and the row, deleted in the
//! transaction that writes the message, decides which firing writes.
//!
//! Needs `--features cluster` and `tests/with_pg.sh` (tests/run.sh runs it
//! so).

mod common;

use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::fleet::*;
use common::*;
use serde_json::json;

const CHANNELS: usize = 12;

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn a_dead_owners_scheduled_messages_fire_once_on_the_new_owner() {
    let mut fleet = Fleet::start(3, &[]);
    let placement = fleet.wait_for_placement(3);
    let leader = common::etcd_keys::charm_leader(&fleet.etcd).map(u64::from);
    let ids: Vec<u64> = (0..3).map(|i| node_id(fleet.node(i))).collect();
    let victim = (0..3).rposition(|i| Some(ids[i]) != leader).unwrap();
    let via = (0..3).find(|&i| i != victim).unwrap();
    let a = fleet.node(via);
    let user = a.admin.create_user("planner");
    let channels: Vec<String> = (0..CHANNELS)
        .map(|i| {
            let c = a.admin.create_channel(&format!("plan{i}"));
            a.admin.add_member(&c, &user.id);
            c
        })
        .collect();
    let victims = channels
        .iter()
        .filter(|c| owner_node(&placement, c) == ids[victim])
        .count();
    assert!(victims > 0, "the victim owns none of the channels");
    // Two per channel, through the Web API of a surviving node, and one
    // backend event through its admin API.
    let post_at = now_secs() + 8;
    let mut api = WebApi::new(a);
    for c in &channels {
        for n in 0..2 {
            api.ok(
                &user.token,
                "chat.scheduleMessage",
                json!({"channel": c, "post_at": post_at, "text": format!("{c}-{n}")}),
            );
        }
        a.admin.ok(
            "POST",
            "/v1/schedule",
            Some(&json!({"channel": c, "post_at": post_at,
                         "event": {"type": "message", "user": user.id, "text": format!("{c}-backend")}})),
        );
    }
    fleet.kill(victim);
    fleet.wait_for_placement(2);

    let a = fleet.node(via);
    let mut api = WebApi::new(a);
    let deadline = Instant::now() + Duration::from_secs(60);
    for c in &channels {
        let expected = vec![format!("{c}-0"), format!("{c}-1"), format!("{c}-backend")];
        let texts = loop {
            let v = api.ok(&user.token, "conversations.history", json!({"channel": c}));
            let mut got: Vec<(String, String)> = v["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| (s(m, "text").to_string(), s(m, "ts").to_string()))
                .collect();
            got.reverse();
            if got.len() >= expected.len() || Instant::now() > deadline {
                break got;
            }
            thread::sleep(Duration::from_millis(200));
        };
        for (_, ts) in &texts {
            assert!(
                ts_micros(ts) >= post_at as u64 * 1_000_000,
                "{c}: fired early: {texts:?}"
            );
        }
        let texts: Vec<String> = texts.into_iter().map(|(t, _)| t).collect();
        assert_eq!(
            texts,
            expected,
            "{c} (owned by the victim: {})",
            owner_node(&placement, c) == ids[victim]
        );
    }
    thread::sleep(Duration::from_secs(1));
    let left = a.admin.ok("GET", "/v1/schedule", None);
    assert_eq!(left["scheduled"], json!([]), "{left}");
}
