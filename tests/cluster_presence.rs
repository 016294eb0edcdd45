//! Presence across nodes (issue 9, item 6): three real nodes on one etcd
//! and one PostgreSQL store. A user's presence lives on its home (the owner
//! of its id in the placement, any node); every gateway node reports its
//! connections there.
//!
//! - Counts come from every gateway node: a user connected on the two nodes
//!   that are not its home stays active until its last connection closes.
//! - The home dies (kill -9): the gateways report to the new home, so the
//!   user stays active there (the watcher hears nothing else, and
//!   users.getPresence counts both connections), and goes away when they
//!   close.
//! - A gateway node dies (kill -9): the homes forget the connections it
//!   reported, and the watchers hear its users go away, whether their home
//!   lived on or died with it.
//! - A gateway node is paused until it is placed out: its users go away;
//!   when it wakes, it reports again and they are active again.
//!
//! Needs `--features cluster` and `tests/with_pg.sh`.

mod common;

use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

use common::fleet::*;
use common::*;
use serde_json::{json, Value};

const NODES: usize = 3;
/// How long the watchers may take to hear what a node's death changed: the
/// new placement, then the homes' announcements.
const CHANGE_WITHIN: Duration = Duration::from_secs(30);
/// How long a node is paused: past the 1 s of link silence and the 2 s
/// lease, so that it is placed out.
const PAUSE: Duration = Duration::from_secs(5);

#[track_caller]
fn expect_presence(ws: &mut Ws, user: &str, presence: &str) {
    let ev = ws.recv();
    assert_type(&ev, "presence_change");
    assert_eq!(ev["user"], json!(user), "{}: {ev}", ws.name);
    assert_eq!(ev["presence"], json!(presence), "{}: {ev}", ws.name);
}

/// Reads presence changes until each of `want` has the state it names (the
/// newest change of each user counts), within [`CHANGE_WITHIN`]; every
/// frame must be a presence_change. Returns every change read, in order.
#[track_caller]
fn await_states(ws: &mut Ws, want: &[(&str, &str)]) -> Vec<(String, String)> {
    let deadline = Instant::now() + CHANGE_WITHIN;
    let mut now: HashMap<String, String> = HashMap::new();
    let mut read = Vec::new();
    while !want
        .iter()
        .all(|(u, p)| now.get(*u).map(String::as_str) == Some(*p))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = ws.try_recv_json(left).unwrap_or_else(|| {
            panic!(
                "{}: not {want:?} within {CHANGE_WITHIN:?}; heard {read:?}",
                ws.name
            )
        });
        assert_type(&ev, "presence_change");
        let (u, p) = (s(&ev, "user").to_string(), s(&ev, "presence").to_string());
        now.insert(u.clone(), p.clone());
        read.push((u, p));
    }
    read
}

/// users.getPresence of `user` on `server`'s Web API, asked by `asker`'s
/// token (the asker itself: the long form, with `connection_count`).
fn get_presence(server: &Server, asker: &User, user: &str) -> Value {
    let args = if asker.id == user {
        json!({})
    } else {
        json!({ "user": user })
    };
    WebApi::new(server).ok(&asker.token, "users.getPresence", args)
}

/// Polls `get_presence` until `done` holds of its answer (the cluster is
/// settling after a failure), within [`CHANGE_WITHIN`].
#[track_caller]
fn await_presence(server: &Server, asker: &User, user: &str, done: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + CHANGE_WITHIN;
    loop {
        let answer = get_presence(server, asker, user);
        if done(&answer) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "users.getPresence of {user} still {answer} after {CHANGE_WITHIN:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// A user created through `admin` whose home, in `placement`, is (`true`)
/// or is not (`false`) on node `node`.
fn user_homed(admin: &Admin, placement: &Value, node: u64, on_it: bool, name: &str) -> User {
    for i in 0..64 {
        let u = admin.create_user(&format!("{name}{i}"));
        if (owner_node(placement, &u.id) == node) == on_it {
            return u;
        }
    }
    panic!("no user homed (on_it: {on_it}) on node {node} among 64");
}

#[test]
fn presence_counts_from_every_gateway_node_and_survives_its_home() {
    let mut fleet = Fleet::start(NODES, &[]);
    let placement = fleet.wait_for_placement(NODES);
    let admin = fleet.node(0).admin.clone();
    let roamer = admin.create_user("roamer");
    let watcher_user = admin.create_user("watcher");
    let home = fleet.index_of(owner_node(&placement, &roamer.id));
    let others: Vec<usize> = (0..NODES).filter(|&i| i != home).collect();
    let (y, z) = (others[0], others[1]);

    let mut watcher = fleet.node(y).connect(&watcher_user.id).named("watcher");
    watcher.send_json(&json!({"type": "presence_sub", "ids": [roamer.id]}));
    expect_presence(&mut watcher, &roamer.id, "away");

    // Connected on the two nodes that are not its home: active once.
    let on_y = fleet.node(y).connect(&roamer.id).named("roamer on y");
    expect_presence(&mut watcher, &roamer.id, "active");
    let on_z = fleet.node(z).connect(&roamer.id).named("roamer on z");
    watcher.expect_no_event(QUIET);
    let me = get_presence(fleet.node(z), &roamer, &roamer.id);
    assert_eq!(me["presence"], json!("active"), "{me}");
    assert_eq!(me["connection_count"], json!(2), "both nodes count: {me}");

    // One closes: still active. The other closes: away.
    on_y.close();
    watcher.expect_no_event(QUIET);
    let other = get_presence(fleet.node(y), &watcher_user, &roamer.id);
    assert_eq!(other["presence"], json!("active"), "{other}");
    on_z.abort();
    expect_presence(&mut watcher, &roamer.id, "away");

    // Again on both, then the home dies.
    let on_y = fleet.node(y).connect(&roamer.id).named("roamer on y");
    expect_presence(&mut watcher, &roamer.id, "active");
    let on_z = fleet.node(z).connect(&roamer.id).named("roamer on z");
    watcher.expect_no_event(QUIET);
    fleet.kill(home);
    let after = fleet.wait_for_placement(NODES - 1);
    let new_home = owner_node(&after, &roamer.id);
    assert_ne!(
        fleet.index_of(new_home),
        home,
        "the home moved to a survivor"
    );

    // The new home counts both connections (each gateway re-reported)...
    await_presence(fleet.node(y), &roamer, &roamer.id, |v| {
        v["connection_count"] == json!(2)
    });
    let other = get_presence(fleet.node(z), &watcher_user, &roamer.id);
    assert_eq!(other["presence"], json!("active"), "{other}");
    assert_eq!(admin_presence(fleet.node(y), &roamer.id), "active");
    // ...and the watcher heard nothing: the new home told its gateway the
    // state it has, which is what the watcher knew.
    watcher.expect_no_event(QUIET);

    // The watch moved too: the last close is heard.
    on_y.abort();
    watcher.expect_no_event(QUIET);
    on_z.close();
    expect_presence(&mut watcher, &roamer.id, "away");
    let other = get_presence(fleet.node(y), &watcher_user, &roamer.id);
    assert_eq!(other["presence"], json!("away"), "{other}");
}

/// `GET /v1/presence` of one user on `server`.
fn admin_presence(server: &Server, user: &str) -> String {
    server.admin.presence_of(user)
}

#[test]
fn a_dead_gateway_nodes_connections_stop_counting() {
    let mut fleet = Fleet::start(NODES, &[]);
    let placement = fleet.wait_for_placement(NODES);
    let victim = NODES - 1;
    let victim_id = node_id(fleet.node(victim));
    let admin = fleet.node(0).admin.clone();
    // Both connected only on the victim: one homed on a survivor, whose
    // home must forget the victim's count; one homed on the victim, whose
    // new home starts without it and must tell the watchers so.
    let survivor_homed = user_homed(&admin, &placement, victim_id, false, "kept");
    let victim_homed = user_homed(&admin, &placement, victim_id, true, "lost");
    let ids = [survivor_homed.id.as_str(), victim_homed.id.as_str()];

    // A watcher on each survivor.
    let mut watchers: Vec<Ws> = (0..NODES - 1)
        .map(|i| {
            let w = admin.create_user(&format!("watcher{i}"));
            let mut ws = fleet
                .node(i)
                .connect(&w.id)
                .named(format!("watcher on {i}"));
            ws.send_json(&json!({"type": "presence_sub", "ids": ids}));
            await_states(&mut ws, &[(ids[0], "away"), (ids[1], "away")]);
            ws
        })
        .collect();
    let _on_victim: Vec<Ws> = ids
        .iter()
        .map(|u| fleet.node(victim).connect(u).named("on the victim"))
        .collect();
    for ws in &mut watchers {
        await_states(ws, &[(ids[0], "active"), (ids[1], "active")]);
    }

    fleet.kill(victim);
    fleet.wait_for_placement(NODES - 1);
    for ws in &mut watchers {
        let heard = await_states(ws, &[(ids[0], "away"), (ids[1], "away")]);
        eprintln!("{}: heard {heard:?}", ws.name);
    }
    for i in 0..NODES - 1 {
        for u in ids {
            assert_eq!(admin_presence(fleet.node(i), u), "away", "{u} on node {i}");
        }
    }
    let asker = &survivor_homed;
    let v = get_presence(fleet.node(1), asker, &victim_homed.id);
    assert_eq!(v["presence"], json!("away"), "{v}");
    let me = get_presence(fleet.node(0), asker, &asker.id);
    assert_eq!(me["connection_count"], json!(0), "{me}");
    for ws in &mut watchers {
        ws.expect_no_event(QUIET);
    }
}

#[test]
fn a_paused_gateway_node_counts_again_when_it_wakes() {
    let fleet = Fleet::start(NODES, &[]);
    let placement = fleet.wait_for_placement(NODES);
    let victim = NODES - 1;
    let victim_id = node_id(fleet.node(victim));
    let admin = fleet.node(0).admin.clone();
    // Homed on a survivor, connected only on the victim.
    let sleeper = user_homed(&admin, &placement, victim_id, false, "sleeper");
    let w = admin.create_user("watcher");
    let mut watcher = fleet.node(0).connect(&w.id).named("watcher");
    watcher.send_json(&json!({"type": "presence_sub", "ids": [sleeper.id]}));
    expect_presence(&mut watcher, &sleeper.id, "away");
    let on_victim = fleet.node(victim).connect(&sleeper.id).named("sleeper");
    expect_presence(&mut watcher, &sleeper.id, "active");

    // Paused until placed out: its connections no longer count.
    fleet.node(victim).signal(libc::SIGSTOP);
    let paused_at = Instant::now();
    let survivors: Vec<usize> = (0..NODES - 1).collect();
    fleet.wait_for_placement_among(&survivors, NODES - 1);
    await_states(&mut watcher, &[(sleeper.id.as_str(), "away")]);
    thread::sleep(PAUSE.saturating_sub(paused_at.elapsed()));

    // Awake: it finds itself placed out, reports its connections again,
    // and joins again.
    fleet.node(victim).signal(libc::SIGCONT);
    await_states(&mut watcher, &[(sleeper.id.as_str(), "active")]);
    fleet.wait_for_placement(NODES);
    await_presence(fleet.node(1), &sleeper, &sleeper.id, |v| {
        v["connection_count"] == json!(1)
    });

    // Its connection still counts, once: its close is heard.
    on_victim.close();
    await_states(&mut watcher, &[(sleeper.id.as_str(), "away")]);
    watcher.expect_no_event(QUIET);
}
