//! Failover, end to end (issue 9, item 5): three real nodes coordinated by
//! a real etcd, sharing one PostgreSQL store, node links between them. A
//! node that owns channels dies (kill -9, or SIGSTOP; the CHARM leader or
//! another node), or PostgreSQL restarts, while two publishers post to
//! every channel through the other two nodes and connections on those two
//! nodes watch every channel. Afterwards:
//!
//! - every acknowledged post reached every watcher (nothing acknowledged is
//!   lost), in ts order, once (no duplicates after the failover's replays);
//! - the dead node's channels took posts again, and how long after the
//!   failure that was is printed (not asserted: these machines are shared).
//!
//! Needs `--features cluster` and `tests/with_pg.sh` (tests/run.sh runs it
//! so).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::etcd::Etcd;
use common::etcd_keys::charm_leader;
use common::pg::Schema;
use common::*;
use serde_json::{json, Value};

const NODES: usize = 3;
const SHARDS: &str = "2";
const CHANNELS: usize = 24;
/// How long the publishers run before and after the failure.
const BEFORE: Duration = Duration::from_secs(3);
const AFTER: Duration = Duration::from_secs(10);

struct Fleet {
    etcd: Etcd,
    _store: Schema,
    nodes: Vec<Option<Server>>,
}

fn start_fleet() -> Fleet {
    let etcd = Etcd::start();
    let store = Schema::new();
    let token = format!("it-failover-{}", unique());
    let mut nodes = Vec::new();
    for i in 0..NODES {
        let data = fresh_dir().join("data");
        let name = format!("node{i}");
        nodes.push(Some(Server::start_in(
            &data,
            &[
                "--etcd",
                &etcd.endpoint,
                "--node-name",
                &name,
                "--store",
                &store.url,
                "--admin-token",
                &token,
                "--link-port",
                "0",
                "--shards",
                SHARDS,
                "--no-pin",
                "--spin-before-park-us",
                "0",
            ],
        )));
    }
    let fleet = Fleet {
        etcd,
        _store: store,
        nodes,
    };
    wait_for_placement(&fleet, NODES);
    fleet
}

fn ring(server: &Server) -> Value {
    server.admin.ok("GET", "/v1/ring", None)["ring"].clone()
}

/// The nodes a ring assigns members to.
fn nodes_in(ring: &Value) -> Vec<u64> {
    let mut nodes: Vec<u64> = ring["assignment"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["node"].as_u64().unwrap())
        .collect();
    nodes.sort_unstable();
    nodes.dedup();
    nodes
}

/// Waits until every live node serves the same placement, over `count`
/// nodes.
fn wait_for_placement(fleet: &Fleet, count: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rings: Vec<Value> = fleet.nodes.iter().flatten().map(ring).collect();
        let same = rings.windows(2).all(|w| w[0]["version"] == w[1]["version"]);
        if same && nodes_in(&rings[0]).len() == count {
            return rings[0].clone();
        }
        assert!(
            Instant::now() < deadline,
            "no common placement over {count} nodes: {rings:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// A node's id from its ready line.
fn node_id(server: &Server) -> u64 {
    server.ready["node"]
        .as_u64()
        .expect("a clustered node's ready line names it")
}

/// Where channel `c` is owned, per a node's view: asks the node which
/// node owns it (`/v1/ring` carries the assignment; the ring is rebuilt
/// here with the library's own code).
fn owner_node(ring: &Value, c: &str) -> u64 {
    use transponder::placement::{Addr, Placement};
    use transponder::ring::Ring;
    let members: Vec<u32> = ring["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_u64().unwrap() as u32)
        .collect();
    let assignment: Vec<(u32, Addr)> = ring["assignment"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let n = |k: &str| a[k].as_u64().unwrap();
            (
                n("member") as u32,
                Addr {
                    node: n("node") as u16,
                    core: n("core") as u32,
                },
            )
        })
        .collect();
    let p = Placement::new(
        Ring::new(&members, ring["vnodes"].as_u64().unwrap() as u32),
        &assignment,
        ring["version"].as_u64().unwrap(),
    )
    .unwrap();
    let id = transponder::ids::Id::parse(c).unwrap();
    u64::from(p.owner(id.raw()).node)
}

/// An acknowledged post: when it was sent and when acknowledged.
#[derive(Clone, Debug)]
struct Acked {
    channel: String,
    ts: String,
    sent: Instant,
    at: Instant,
}

/// Posts to every channel in turn through `admin` until `stop`, recording
/// what was acknowledged. A post refused or timed out during the failover
/// is simply not acknowledged (and not counted).
fn publisher(
    admin: Admin,
    channels: Vec<String>,
    tag: &'static str,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Acked>>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut seq = 0u64;
        while !stop.load(Ordering::Relaxed) {
            for c in &channels {
                seq += 1;
                let sent = Instant::now();
                let body = json!({
                    "channel": c,
                    "event": {"type": "message", "text": format!("{tag}-{seq}")},
                });
                let resp = admin.try_request("POST", "/v1/publish", Some(&body));
                if let Some((200, v)) = resp {
                    if let Some(ts) = v["ts"].as_str() {
                        acked.lock().unwrap().push(Acked {
                            channel: c.clone(),
                            ts: ts.to_string(),
                            sent,
                            at: Instant::now(),
                        });
                    }
                }
            }
        }
    })
}

/// Which node a scenario fails.
#[derive(Clone, Copy)]
enum Victim {
    /// A node that is not the CHARM leader (it owns channels: every node
    /// does).
    NotLeader,
    /// The CHARM leader: the placement cannot change until another node
    /// is elected.
    Leader,
}

/// Runs a failover scenario: `fail` does the failure to the victim node (it
/// returns when the failure has happened); with `victim` None, `fail` does
/// something to the whole fleet (PostgreSQL restarts) and no node dies.
fn failover(victim: Option<Victim>, fail: impl FnOnce(&mut Server)) {
    let _one_at_a_time = SCENARIOS.lock().unwrap_or_else(|e| e.into_inner());
    let mut fleet = start_fleet();
    let placement = wait_for_placement(&fleet, NODES);
    let ids: Vec<u64> = fleet.nodes.iter().flatten().map(node_id).collect();
    let victim_index = match victim {
        Some(Victim::Leader) => {
            let leader = u64::from(charm_leader(&fleet.etcd).expect("a CHARM leader"));
            ids.iter()
                .position(|&id| id == leader)
                .expect("the leader is a node of the fleet")
        }
        Some(Victim::NotLeader) | None => {
            let leader = charm_leader(&fleet.etcd).map(u64::from);
            ids.iter()
                .rposition(|&id| Some(id) != leader)
                .expect("a node that does not lead")
        }
    };
    let victim_id = ids[victim_index];
    let survivors: Vec<usize> = (0..NODES).filter(|&i| i != victim_index).collect();
    let a = fleet.nodes[survivors[0]].as_ref().unwrap();
    let b = fleet.nodes[survivors[1]].as_ref().unwrap();

    // Channels (some owned by the victim), a user in all of them, and that
    // user's connections on the two surviving nodes.
    let user = a.admin.create_user("watcher");
    let mut channels = Vec::new();
    for i in 0..CHANNELS {
        let c = a.admin.create_channel(&format!("room{i}"));
        a.admin.add_member(&c, &user.id);
        channels.push(c);
    }
    // The channels whose service the failure interrupts: the victim's, or
    // with no victim all of them.
    let victims: Vec<&String> = channels
        .iter()
        .filter(|c| victim.is_none() || owner_node(&placement, c) == victim_id)
        .collect();
    assert!(!victims.is_empty(), "the victim owns none of the channels");
    let mut watchers = vec![
        a.connect(&user.id).named("on a"),
        b.connect(&user.id).named("on b"),
    ];

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let pubs = vec![
        publisher(
            a.admin.clone(),
            channels.clone(),
            "a",
            stop.clone(),
            acked.clone(),
        ),
        publisher(
            b.admin.clone(),
            channels.clone(),
            "b",
            stop.clone(),
            acked.clone(),
        ),
    ];
    thread::sleep(BEFORE);
    let failed_at = Instant::now();
    fail(fleet.nodes[victim_index].as_mut().unwrap());
    thread::sleep(AFTER);
    stop.store(true, Ordering::Relaxed);
    for p in pubs {
        join_within(p, Duration::from_secs(60), "publisher");
    }

    // The failed node's channels took posts again: the first post sent to
    // one of them after the failure that was acknowledged.
    let acked = acked.lock().unwrap().clone();
    let back = acked
        .iter()
        .filter(|p| victims.contains(&&p.channel) && p.sent > failed_at)
        .map(|p| p.at - failed_at)
        .min()
        .expect("no post to the failed node's channels was acknowledged after the failure");
    // And the longest time in which none of them was acknowledged (for a
    // PostgreSQL restart, the outage: `back` may be a post that made it
    // before the server went down).
    let mut times: Vec<Instant> = acked
        .iter()
        .filter(|p| victims.contains(&&p.channel))
        .map(|p| p.at)
        .collect();
    times.sort_unstable();
    let gap = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    eprintln!(
        "FAILOVER: the failed node's channels took posts again {back:?} after the failure; \
         longest time without an acknowledged post to them {gap:?}"
    );

    if std::env::var("FAILOVER_LOGS").is_ok() {
        for node in fleet.nodes.iter().flatten() {
            let log = std::fs::read_to_string(&node.stderr_path).unwrap_or_default();
            eprintln!("---- node {} ----\n{log}", node_id(node));
        }
    }
    // Everything acknowledged reached both watchers, once, in order.
    let mut by_channel: HashMap<&str, Vec<&str>> = HashMap::new();
    for p in &acked {
        by_channel.entry(&p.channel).or_default().push(&p.ts);
    }
    for ws in &mut watchers {
        let frames =
            ws.collect_until_quiet(Duration::from_secs(3), Duration::from_secs(60), usize::MAX);
        let mut seen: HashMap<String, Vec<String>> = HashMap::new();
        for f in frames.iter().filter(|f| f["type"] == json!("message")) {
            seen.entry(s(f, "channel").to_string())
                .or_default()
                .push(s(f, "ts").to_string());
        }
        for c in &channels {
            let got = seen.remove(c).unwrap_or_default();
            let mut sorted = got.clone();
            sorted.sort_by_key(|t| ts_micros(t));
            sorted.dedup();
            assert_eq!(
                got, sorted,
                "{}: {c}: events out of order or repeated",
                ws.name
            );
            for ts in by_channel.get(c.as_str()).into_iter().flatten() {
                let at = acked
                    .iter()
                    .find(|p| p.ts == **ts && p.channel == *c)
                    .map(|p| {
                        p.at.checked_duration_since(failed_at).map_or_else(
                            || format!("{:?} before the failure", failed_at - p.at),
                            |d| format!("{d:?} after the failure"),
                        )
                    });
                assert!(
                    got.iter().any(|g| g == ts),
                    "{}: {c}: the acknowledged event {ts} (acknowledged {at:?}) never arrived \
                     (victim's channel: {}); got {got:?}",
                    ws.name,
                    victims.contains(&c)
                );
            }
        }
        assert!(
            seen.is_empty(),
            "{}: events of channels never posted to: {seen:?}",
            ws.name
        );
    }
    drop(fleet);
}

/// The scenarios share the machine's two cores and the test PostgreSQL
/// (one of them restarts it): one at a time.
static SCENARIOS: Mutex<()> = Mutex::new(());

#[test]
fn kill_9_of_a_channel_server_node_loses_nothing() {
    failover(Some(Victim::NotLeader), |victim| victim.kill());
}

#[test]
fn a_paused_node_is_replaced_and_cannot_write_when_it_wakes() {
    failover(Some(Victim::NotLeader), |victim| {
        victim.signal(libc::SIGSTOP);
        thread::sleep(Duration::from_secs(5));
        victim.signal(libc::SIGCONT);
    });
}

#[test]
fn kill_9_of_the_charm_leader_loses_nothing() {
    failover(Some(Victim::Leader), |victim| victim.kill());
}

#[test]
fn a_postgresql_restart_under_load_loses_nothing() {
    failover(None, |_| common::pg::restart_server());
}
