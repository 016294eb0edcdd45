//! The cluster's control plane against a real etcd (docs/CLUSTER.md):
//! node ids, registration, the CHARM election and its fencing, grow,
//! replace, failure reports. Needs `--features cluster` (Cargo.toml) and
//! etcd (`tests/common/etcd.rs`). Real `transponder serve --etcd …`
//! processes where the node matters; the control thread in-process where
//! the test must reach into etcd's leases.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::etcd::Etcd;
use common::etcd_keys::{charm_leader, with_etcd, PREFIX};
use common::fleet::{placement_from, ring};
use common::{fresh_dir, Server};
use etcd_client::Client;
use serde_json::Value;
use transponder::cluster::control::leader::{self, Publish};
use transponder::cluster::control::{self, ControlConfig, ControlEvent, ControlHandle};
use transponder::cluster::keys::Keys;
use transponder::cluster::record::{NodeRecord, NodeState};
use transponder::placement::{Addr, Placement};
use transponder::ring::Ring;

/// Bound on a cluster change becoming visible: a lease lapsing (2 s TTL,
/// etcd checks expiries every ~0.5 s), an election, a publish, a watch.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

/// The value of `key`, and the lease it is under.
fn etcd_get(etcd: &Etcd, key: &str) -> Option<(String, i64)> {
    with_etcd(etcd, async |c| {
        let got = c.get(key, None).await.unwrap();
        got.kvs()
            .first()
            .map(|kv| (kv.value_str().unwrap().to_string(), kv.lease()))
    })
}

/// The admin token every node of a test cluster shares (it keys the links).
const SHARED_TOKEN: &str = "it-cluster-control-shared-token";

/// `transponder serve --etcd …` named `name` on `data`, not started: for a
/// start that is to fail (the harness would wait for a ready line).
fn node_command(etcd: &Etcd, data: &Path, name: &str) -> std::process::Command {
    let mut cmd =
        common::transponder_command(&["serve", "--etcd", &etcd.endpoint, "--node-name", name]);
    cmd.arg("--data-dir")
        .arg(data)
        .args(["--admin-token", SHARED_TOKEN, "--shards", "1"])
        .args(common::EPHEMERAL_PORTS);
    cmd
}

/// `transponder serve --etcd …` named `name` on `data` (kept across restarts).
fn node(etcd: &Etcd, data: &Path, name: &str, extra: &[&str]) -> Server {
    let mut args = vec![
        "--etcd",
        &etcd.endpoint,
        "--node-name",
        name,
        "--link-port",
        "0",
        "--admin-token",
        SHARED_TOKEN,
        "--no-pin",
        "--spin-before-park-us",
        "0",
    ];
    args.extend_from_slice(extra);
    Server::start_in(data, &args)
}

/// The node's id as its data dir remembers it.
fn node_id(data: &Path) -> u16 {
    std::fs::read_to_string(data.join(control::NODE_ID_FILE))
        .expect("node-id file")
        .trim()
        .parse()
        .unwrap()
}

/// Nodes (as `(member, node, core)`) of a placement.
fn assignment(p: &Placement) -> Vec<(u32, u16, u32)> {
    p.assignment().map(|(m, a)| (m, a.node, a.core)).collect()
}

fn nodes_of(p: &Placement) -> Vec<u16> {
    p.nodes().into_iter().collect()
}

/// Waits until every server serves the same placement and `done` holds for
/// it; returns it.
#[track_caller]
fn wait_agreed(servers: &[&Server], what: &str, done: impl Fn(&Placement) -> bool) -> Placement {
    let started = Instant::now();
    loop {
        let rings: Vec<Value> = servers.iter().map(|s| ring(s)).collect();
        let first = placement_from(&rings[0]);
        if rings.iter().all(|r| r == &rings[0]) && done(&first) {
            return first;
        }
        assert!(
            started.elapsed() < CHANGE_TIMEOUT,
            "no agreed placement with {what} within {CHANGE_TIMEOUT:?}; rings: {rings:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A record for an in-process control thread.
fn record(name: &str, cores: u32, state: NodeState) -> NodeRecord {
    NodeRecord {
        id: 0,
        name: name.into(),
        link: None,
        gateway: "ws://127.0.0.1:9/".into(),
        api: "http://127.0.0.1:9/api/".into(),
        admin: "http://127.0.0.1:9/".into(),
        cores,
        region: "default".into(),
        state,
    }
}

/// An in-process control thread (no shards, no data dir).
fn control_thread(etcd: &Etcd, name: &str, cores: u32) -> ControlHandle {
    control::start(ControlConfig {
        endpoints: vec![etcd.endpoint.clone()],
        prefix: PREFIX.into(),
        lease_ttl: Duration::from_secs(2),
        node_id_file: None,
        record: record(name, cores, NodeState::Active),
        drains: None,
    })
    .expect("control thread starts")
}

/// The next placement event of `handle` for which `done` holds.
#[track_caller]
fn wait_event(
    handle: &ControlHandle,
    what: &str,
    done: impl Fn(&ControlEvent) -> bool,
) -> ControlEvent {
    let events = handle.events();
    let deadline = Instant::now() + CHANGE_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(e) if done(&e) => return e,
            Ok(_) => {}
            Err(_) => panic!("no {what} within {CHANGE_TIMEOUT:?}"),
        }
    }
}

fn placement_event(e: &ControlEvent) -> Option<&Placement> {
    match e {
        ControlEvent::Placement(p) => Some(p),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// tests
// ---------------------------------------------------------------------------

#[test]
fn a_node_registers_under_a_lease_and_keeps_its_id_across_restarts() {
    let etcd = Etcd::start();
    let keys = Keys::new(PREFIX);
    let (data_a, data_b) = (fresh_dir(), fresh_dir());
    let mut a = node(&etcd, &data_a, "alpha", &["--region", "eu"]);
    let b = node(&etcd, &data_b, "beta", &[]);
    let (id_a, id_b) = (node_id(&data_a), node_id(&data_b));
    assert_ne!(id_a, id_b, "two nodes, two ids");
    assert_eq!(
        etcd_get(&etcd, &keys.id_of("alpha")).unwrap().0,
        id_a.to_string()
    );

    let (json, lease) = etcd_get(&etcd, &keys.node(id_a)).expect("alpha registered");
    assert_ne!(lease, 0, "the record lives under a lease");
    let rec = NodeRecord::parse(json.as_bytes()).unwrap();
    assert_eq!(
        (
            rec.id,
            rec.name.as_str(),
            rec.cores,
            rec.region.as_str(),
            rec.state
        ),
        (id_a, "alpha", 2, "eu", NodeState::Active)
    );
    assert_eq!(rec.admin, a.admin_url);
    assert_eq!(rec.gateway, a.gateway_url);

    // Both nodes serve the placement CHARM published: 2 cores each.
    let p = wait_agreed(&[&a, &b], "both nodes", |p| {
        nodes_of(p) == sorted(&[id_a, id_b])
    });
    assert_eq!(p.ring().members().len(), 4);

    // kill -9 and restart on the same data dir: the same id, registered
    // again (after the old lease lapses) under a new lease.
    a.kill();
    let a = node(&etcd, &data_a, "alpha", &["--region", "eu"]);
    assert_eq!(node_id(&data_a), id_a);
    let (_, new_lease) = etcd_get(&etcd, &keys.node(id_a)).expect("alpha registered again");
    assert_ne!(new_lease, lease);

    // The data dir's file lost: the name still maps to the same id.
    let mut a = a;
    a.kill();
    std::fs::remove_file(data_a.join(control::NODE_ID_FILE)).unwrap();
    let _a = node(&etcd, &data_a, "alpha", &[]);
    assert_eq!(node_id(&data_a), id_a);
    drop(b);
    for d in [data_a, data_b] {
        let _ = std::fs::remove_dir_all(d);
    }
}

fn sorted(ids: &[u16]) -> Vec<u16> {
    let mut v = ids.to_vec();
    v.sort_unstable();
    v
}

#[test]
fn a_data_dir_with_another_names_id_is_refused() {
    let etcd = Etcd::start();
    let (data_a, data_b) = (fresh_dir(), fresh_dir());
    drop(node(&etcd, &data_a, "alpha", &[]));
    drop(node(&etcd, &data_b, "beta", &[]));
    // beta's data dir started as "alpha": etcd says alpha is another id.
    let mut cmd = node_command(&etcd, &data_b, "alpha");
    let out = common::run_to_exit(&mut cmd, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        out.stderr.contains("etcd gives node name \"alpha\""),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty());
    for d in [data_a, data_b] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn a_second_live_node_with_the_same_name_is_refused() {
    let etcd = Etcd::start();
    let (data_a, data_b) = (fresh_dir(), fresh_dir());
    let a = node(&etcd, &data_a, "twin", &[]);
    let mut cmd = node_command(&etcd, &data_b, "twin");
    // It waits up to three lease TTLs for the id to come free (a killed
    // previous run), then gives up naming the holder.
    let out = common::run_to_exit(&mut cmd, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr
            .contains("is registered by another live process (node name \"twin\")"),
        "{}",
        out.stderr
    );
    drop(a);
    for d in [data_a, data_b] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn a_new_leader_takes_over_when_the_leader_is_killed() {
    let etcd = Etcd::start();
    let dirs: Vec<_> = (0..3).map(|_| fresh_dir()).collect();
    let mut servers: Vec<Server> = ["n0", "n1", "n2"]
        .iter()
        .zip(&dirs)
        .map(|(name, dir)| node(&etcd, dir, name, &[]))
        .collect();
    let ids: Vec<u16> = dirs.iter().map(|d| node_id(d)).collect();
    let all: Vec<&Server> = servers.iter().collect();
    let before = wait_agreed(&all, "three nodes", |p| nodes_of(p) == sorted(&ids));
    let leader = charm_leader(&etcd).expect("a CHARM leader");
    let gone = ids.iter().position(|&id| id == leader).unwrap();

    let killed = Instant::now();
    servers[gone].kill();
    let survivors: Vec<&Server> = servers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != gone)
        .map(|(_, s)| s)
        .collect();
    let after = wait_agreed(&survivors, "the killed leader gone", |p| {
        p.version() > before.version() && !nodes_of(p).contains(&leader)
    });
    eprintln!(
        "leader {leader} killed: version {} -> {} seen by both survivors after {:?}",
        before.version(),
        after.version(),
        killed.elapsed()
    );
    let new_leader = charm_leader(&etcd).expect("a new leader");
    assert_ne!(new_leader, leader);
    // No spare: the dead leader's members left the ring; the others stay.
    let kept: Vec<_> = assignment(&before)
        .into_iter()
        .filter(|&(_, n, _)| n != leader)
        .collect();
    assert_eq!(assignment(&after), kept);
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn a_deposed_leader_cannot_publish() {
    let etcd = Etcd::start();
    let keys = Keys::new(PREFIX);
    let placement = |version| {
        let ring = Ring::new(&[0], 16);
        Placement::new(ring, &[(0, Addr { node: 1, core: 0 })], version).unwrap()
    };
    with_etcd(&etcd, async |c| {
        let lease = c.lease_grant(30, None).await.unwrap().id();
        let old = leader::campaign(c, &keys, 1, lease).await.unwrap();
        assert_eq!(
            leader::publish(c, &keys, &old, 0, &placement(1))
                .await
                .unwrap(),
            Publish::Published
        );
        let rev = async |c: &mut Client| {
            c.get(keys.placement(), None).await.unwrap().kvs()[0].mod_revision()
        };
        let published = rev(c).await;
        // A publish computed from an older placement is stale, not fenced.
        assert_eq!(
            leader::publish(c, &keys, &old, 0, &placement(2))
                .await
                .unwrap(),
            Publish::Stale
        );

        // The leader's lease is revoked (as when it lapses while the
        // leader is paused): its election key goes, and a second candidate
        // wins.
        c.lease_revoke(lease).await.unwrap();
        let lease2 = c.lease_grant(30, None).await.unwrap().id();
        let new = leader::campaign(c, &keys, 2, lease2).await.unwrap();
        assert_eq!(
            leader::publish(c, &keys, &old, published, &placement(2))
                .await
                .unwrap(),
            Publish::Fenced,
            "the deposed leader's publish must fail"
        );
        assert_eq!(rev(c).await, published, "nothing was written");
        assert_eq!(
            leader::publish(c, &keys, &new, published, &placement(2))
                .await
                .unwrap(),
            Publish::Published
        );

        // Deleting the leader's key (an operator, or etcd's election
        // resign) fences it as well.
        let republished = rev(c).await;
        c.delete(new.key(), None).await.unwrap();
        assert_eq!(
            leader::publish(c, &keys, &new, republished, &placement(3))
                .await
                .unwrap(),
            Publish::Fenced
        );
        let got = c.get(keys.placement(), None).await.unwrap();
        let value = got.kvs()[0].value_str().unwrap().to_string();
        assert!(value.starts_with(r#"{"version":2,"#), "{value}");
    });
}

#[test]
fn a_placement_deleted_under_the_cluster_is_published_again_with_a_higher_version() {
    let etcd = Etcd::start();
    let keys = Keys::new(PREFIX);
    let a = control_thread(&etcd, "va", 1);
    wait_event(&a, "a placement", |e| placement_event(e).is_some());
    let b = control_thread(&etcd, "vb", 1);
    let two = wait_event(&a, "b placed", |e| {
        placement_event(e).is_some_and(|p| nodes_of(p).contains(&b.node_id()))
    });
    let v = placement_event(&two).unwrap().version();
    assert!(v >= 2);
    with_etcd(&etcd, async |c| {
        c.delete(keys.placement(), None).await.unwrap();
    });
    // A third node makes the leader publish again: from the placement it
    // followed, not from scratch (version 1 or 2, which every node would
    // ignore as old).
    let c = control_thread(&etcd, "vc", 1);
    let next = wait_event(&a, "c placed", |e| {
        placement_event(e).is_some_and(|p| nodes_of(p).contains(&c.node_id()))
    });
    assert_eq!(placement_event(&next).unwrap().version(), v + 1);
    for node in [c, b, a] {
        node.leave(Duration::from_secs(5));
    }
}

#[test]
fn growing_from_two_nodes_to_three_moves_about_a_third_of_the_channels() {
    let etcd = Etcd::start();
    let dirs: Vec<_> = (0..3).map(|_| fresh_dir()).collect();
    let a = node(&etcd, &dirs[0], "g0", &[]);
    let b = node(&etcd, &dirs[1], "g1", &[]);
    let two = [node_id(&dirs[0]), node_id(&dirs[1])];
    let before = wait_agreed(&[&a, &b], "two nodes", |p| nodes_of(p) == sorted(&two));
    let c = node(&etcd, &dirs[2], "g2", &[]);
    let new = node_id(&dirs[2]);
    let after = wait_agreed(&[&a, &b, &c], "the third node", |p| {
        nodes_of(p).contains(&new)
    });
    assert_eq!(after.version(), before.version() + 1);
    assert_eq!(after.ring().members().len(), 6);

    const KEYS: u64 = 100_000;
    let mut moved = 0;
    for i in 0..KEYS {
        let key = transponder::ring::hash_key(i);
        let (was, is) = (before.owner(key), after.owner(key));
        if was != is {
            assert_eq!(is.node, new, "a channel moved between the old nodes");
            moved += 1;
        }
    }
    let share = moved as f64 / KEYS as f64;
    eprintln!("2 -> 3 nodes: {share:.4} of {KEYS} channels moved");
    assert!(
        (share - 1.0 / 3.0).abs() < 0.05,
        "moved {share:.4}, expected ~1/3"
    );
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn a_spare_replaces_a_killed_node_core_for_core() {
    let etcd = Etcd::start();
    let dirs: Vec<_> = (0..3).map(|_| fresh_dir()).collect();
    let a = node(&etcd, &dirs[0], "r0", &[]);
    let mut b = node(&etcd, &dirs[1], "r1", &[]);
    let spare = node(&etcd, &dirs[2], "r2", &["--spare"]);
    let (id_a, id_b, id_s) = (node_id(&dirs[0]), node_id(&dirs[1]), node_id(&dirs[2]));
    let before = wait_agreed(&[&a, &b, &spare], "two active nodes", |p| {
        nodes_of(p) == sorted(&[id_a, id_b])
    });
    let keys = Keys::new(PREFIX);
    let rec = etcd_get(&etcd, &keys.node(id_s)).unwrap().0;
    assert_eq!(
        NodeRecord::parse(rec.as_bytes()).unwrap().state,
        NodeState::Spare
    );

    b.kill();
    let after = wait_agreed(&[&a, &spare], "the spare in", |p| {
        nodes_of(p).contains(&id_s)
    });
    assert_eq!(after.version(), before.version() + 1);
    assert_eq!(
        after.ring().members(),
        before.ring().members(),
        "the ring does not change"
    );
    for (m, was) in before.assignment() {
        let is = after.assignment().find(|&(n, _)| n == m).unwrap().1;
        if was.node == id_b {
            assert_eq!(
                is,
                Addr {
                    node: id_s,
                    core: was.core
                },
                "member {m}: core for core"
            );
        } else {
            assert_eq!(is, was, "member {m} of a survivor stays");
        }
    }
    // Given members, the spare says it is active.
    let started = Instant::now();
    loop {
        let rec = etcd_get(&etcd, &keys.node(id_s)).unwrap().0;
        if NodeRecord::parse(rec.as_bytes()).unwrap().state == NodeState::Active {
            break;
        }
        assert!(
            started.elapsed() < CHANGE_TIMEOUT,
            "the spare's record still says spare"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn a_node_reported_by_its_peers_is_placed_out_before_its_lease_lapses() {
    let etcd = Etcd::start();
    let keys = Keys::new(PREFIX);
    // a starts first, so it leads (the oldest candidate wins).
    let a = control_thread(&etcd, "sa", 1);
    wait_event(&a, "a's first placement", |e| placement_event(e).is_some());
    let b = control_thread(&etcd, "sb", 1);
    let (id_a, id_b) = (a.node_id(), b.node_id());
    assert_eq!(charm_leader(&etcd), Some(id_a));
    wait_event(&a, "a placement with b", |e| {
        placement_event(e).is_some_and(|p| nodes_of(p) == sorted(&[id_a, id_b]))
    });
    let b_lease = etcd_get(&etcd, &keys.node(id_b)).map(|(_, l)| l);
    assert!(b_lease.is_some());
    // The report names b's registration as a's registry saw it.
    assert_eq!(a.registry().lease_of(id_b), b_lease);

    // a's link to b died: with two nodes, a's report is enough.
    a.reporter().suspect(id_b);
    let out = wait_event(&a, "a placement without b", |e| {
        placement_event(e).is_some_and(|p| nodes_of(p) == [id_a])
    });
    // b is alive and still registered under the same lease: the report,
    // not a lapsed lease, placed it out.
    assert_eq!(etcd_get(&etcd, &keys.node(id_b)).map(|(_, l)| l), b_lease);
    let version = placement_event(&out).unwrap().version();

    // The link is back: b gets members again, as a new node.
    a.reporter().withdraw(id_b);
    wait_event(&a, "b placed again", |e| {
        placement_event(e).is_some_and(|p| p.version() > version && nodes_of(p).contains(&id_b))
    });
    b.leave(Duration::from_secs(5));
    a.leave(Duration::from_secs(5));
}

#[test]
fn a_node_that_loses_its_lease_is_fenced_and_registers_again() {
    let etcd = Etcd::start();
    let keys = Keys::new(PREFIX);
    let a = control_thread(&etcd, "fa", 1);
    let id = a.node_id();
    let (_, lease) = etcd_get(&etcd, &keys.node(id)).unwrap();
    with_etcd(&etcd, async |c| {
        c.lease_revoke(lease).await.unwrap();
    });
    wait_event(&a, "Fenced", |e| matches!(e, ControlEvent::Fenced));
    let wait_registered = |old: i64| {
        let started = Instant::now();
        loop {
            if let Some((_, lease)) = etcd_get(&etcd, &keys.node(id)) {
                return lease;
            }
            assert!(
                started.elapsed() < CHANGE_TIMEOUT,
                "not registered again after {old:x}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let new = wait_registered(lease);
    assert_ne!(new, lease);
    // Its record deleted under a live lease: it puts it back, same lease.
    with_etcd(&etcd, async |c| {
        c.delete(keys.node(id), None).await.unwrap();
    });
    assert_eq!(wait_registered(new), new);
    // Leaving revokes the lease: the registration goes at once.
    a.leave(Duration::from_secs(5));
    assert_eq!(etcd_get(&etcd, &keys.node(id)), None);
}

#[test]
fn a_node_that_stops_leaves_the_cluster_at_once() {
    let etcd = Etcd::start();
    let keys = Keys::new(PREFIX);
    let dirs: Vec<_> = (0..2).map(|_| fresh_dir()).collect();
    let a = node(&etcd, &dirs[0], "l0", &[]);
    let mut b = node(&etcd, &dirs[1], "l1", &[]);
    let (id_a, id_b) = (node_id(&dirs[0]), node_id(&dirs[1]));
    let before = wait_agreed(&[&a, &b], "two nodes", |p| {
        nodes_of(p) == sorted(&[id_a, id_b])
    });
    b.terminate();
    let status = b
        .wait_exit(Duration::from_secs(20))
        .expect("b stops on SIGTERM");
    assert!(status.success(), "{status}");
    // It revoked its lease on the way out: no TTL to wait for.
    assert_eq!(etcd_get(&etcd, &keys.node(id_b)), None);
    wait_agreed(&[&a], "b gone", |p| {
        p.version() > before.version() && nodes_of(p) == [id_a]
    });
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn a_drain_of_the_nodes_region_reaches_the_node_and_its_record() {
    let etcd = Etcd::start();
    let keys = Keys::new(PREFIX);
    let a = control_thread(&etcd, "da", 1);
    let id = a.node_id();
    let state = || {
        let json = etcd_get(&etcd, &keys.node(id)).unwrap().0;
        NodeRecord::parse(json.as_bytes()).unwrap().state
    };
    let wait_state = |want: NodeState| {
        let started = Instant::now();
        while state() != want {
            assert!(
                started.elapsed() < CHANGE_TIMEOUT,
                "record never says {want:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    with_etcd(&etcd, async |c| {
        c.put(keys.drain("default"), r#"{"to":"eu","rate":500}"#, None)
            .await
            .unwrap();
    });
    let event = wait_event(&a, "a drain", |e| matches!(e, ControlEvent::Drain { .. }));
    let ControlEvent::Drain { region, to, rate } = event else {
        unreachable!()
    };
    assert_eq!(
        (region.as_str(), to.as_deref(), rate),
        ("default", Some("eu"), Some(500))
    );
    wait_state(NodeState::Draining);
    // Draining keeps its members: no new placement for it.
    with_etcd(&etcd, async |c| {
        c.delete(keys.drain("default"), None).await.unwrap();
    });
    wait_state(NodeState::Active);
    a.leave(Duration::from_secs(5));
}

/// Not a check: the failover figures of the README. Kills a non-leader,
/// then the leader, `RUNS` times each, and prints how long until every
/// survivor serves the placement without the dead node. Run with
/// `cargo test --features cluster --test cluster_control -- --ignored --nocapture measure_failover`.
#[test]
#[ignore]
fn measure_failover() {
    const RUNS: usize = 10;
    for kill_leader in [false, true] {
        let mut times = Vec::new();
        for _ in 0..RUNS {
            let etcd = Etcd::start();
            let dirs: Vec<_> = (0..3).map(|_| fresh_dir()).collect();
            let mut servers: Vec<Server> = dirs
                .iter()
                .enumerate()
                .map(|(i, d)| node(&etcd, d, &format!("m{i}"), &[]))
                .collect();
            let ids: Vec<u16> = dirs.iter().map(|d| node_id(d)).collect();
            let all: Vec<&Server> = servers.iter().collect();
            let before = wait_agreed(&all, "three nodes", |p| nodes_of(p) == sorted(&ids));
            let leader = charm_leader(&etcd).unwrap();
            let victim = if kill_leader {
                leader
            } else {
                *ids.iter().find(|&&id| id != leader).unwrap()
            };
            let gone = ids.iter().position(|&id| id == victim).unwrap();
            let killed = Instant::now();
            servers[gone].kill();
            let survivors: Vec<&Server> = servers
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != gone)
                .map(|(_, s)| s)
                .collect();
            wait_agreed(&survivors, "the victim gone", |p| {
                p.version() > before.version() && !nodes_of(p).contains(&victim)
            });
            times.push(killed.elapsed());
            drop(servers);
            for d in dirs {
                let _ = std::fs::remove_dir_all(d);
            }
        }
        times.sort();
        let what = if kill_leader { "leader" } else { "non-leader" };
        println!(
            "kill -9 of a {what}: new placement on every survivor after median {:?}, max {:?} ({RUNS} runs: {:?})",
            times[RUNS / 2],
            times[RUNS - 1],
            times
        );
    }
    // A peer's report (what a node link says when its socket closes)
    // instead of the lease: in-process control threads, two nodes.
    let mut times = Vec::new();
    for run in 0..RUNS {
        let etcd = Etcd::start();
        let a = control_thread(&etcd, &format!("pa{run}"), 1);
        wait_event(&a, "a's placement", |e| placement_event(e).is_some());
        let b = control_thread(&etcd, &format!("pb{run}"), 1);
        let (id_a, id_b) = (a.node_id(), b.node_id());
        wait_event(&a, "b placed", |e| {
            placement_event(e).is_some_and(|p| nodes_of(p).contains(&id_b))
        });
        let reported = Instant::now();
        a.reporter().suspect(id_b);
        wait_event(&a, "b placed out", |e| {
            placement_event(e).is_some_and(|p| nodes_of(p) == [id_a])
        });
        times.push(reported.elapsed());
    }
    times.sort();
    println!(
        "a peer's report: new placement at the reporter after median {:?}, max {:?} ({RUNS} runs: {:?})",
        times[RUNS / 2],
        times[RUNS - 1],
        times
    );
}

#[test]
fn idle_nodes_that_die_are_failed_on_their_peers_reports_leader_included() {
    // A lease far longer than the test: whatever places a node out here, it
    // is not its lease lapsing. No users, no channels: no traffic between
    // the nodes but their links' heartbeats.
    let etcd = Etcd::start();
    let keys = Keys::new(PREFIX);
    let ttl = ["--etcd-lease-ttl-secs", "120"];
    let dirs: Vec<_> = (0..3).map(|_| fresh_dir()).collect();
    let mut a = node(&etcd, &dirs[0], "i0", &ttl);
    let b = node(&etcd, &dirs[1], "i1", &ttl);
    let mut c = node(&etcd, &dirs[2], "i2", &ttl);
    let ids: Vec<u16> = dirs.iter().map(|d| node_id(d)).collect();
    wait_agreed(&[&a, &b, &c], "three nodes", |p| {
        nodes_of(p) == sorted(&ids)
    });
    let leader = charm_leader(&etcd).expect("a leader");
    assert_eq!(leader, ids[0], "the first node leads");

    // A node that is not the leader dies: its peers' links to it go
    // silent at once, their reports fail it.
    c.kill();
    wait_agreed(&[&a, &b], "c placed out", |p| {
        nodes_of(p) == sorted(&ids[..2])
    });
    assert!(
        etcd_get(&etcd, &keys.node(ids[2])).is_some(),
        "c's registration is still there: its lease did not do it"
    );

    // The leader dies: b's report ends its leadership, b leads and places
    // it out, its registration still there too.
    a.kill();
    wait_agreed(&[&b], "a placed out", |p| nodes_of(p) == [ids[1]]);
    assert!(etcd_get(&etcd, &keys.node(ids[0])).is_some());
    assert_eq!(charm_leader(&etcd), Some(ids[1]));
    drop(b);
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}
