//! Failover, end to end (issue 9, item 5): three real nodes coordinated by
//! a real etcd, sharing one PostgreSQL store, node links between them. A
//! node that owns channels dies (kill -9, or SIGSTOP; the CHARM leader or
//! another node), or PostgreSQL restarts, while two publishers post to
//! every channel through the other two nodes and connections on those two
//! nodes watch every channel. Or the network drops everything between one
//! node and the rest for 5 s (a blackhole: the node runs in a network
//! namespace of its own, `common::netns`), and it rejoins; or a fourth node
//! joins under load. Afterwards:
//!
//! - every acknowledged post reached every watcher (nothing acknowledged is
//!   lost), in ts order, once (no duplicates after the failover's replays);
//! - the dead node's channels took posts again, and how long after the
//!   failure that was is printed (not asserted: these machines are shared).
//!
//! And a gateway node dies (kill -9) with clients on it (issue 9, items 5
//! and 8): they reconnect to the other nodes with `since` = the newest ts
//! they saw, and what they got before and after, deduplicated by (channel,
//! ts), is every acknowledged post of their channels, once, in order, and
//! nothing of a channel they are not in.
//!
//! The scenarios run one at a time (`SCENARIOS`). Needs `--features
//! cluster` and `tests/with_pg.sh` (tests/run.sh runs it so).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::etcd_keys::charm_leader;
use common::fleet::*;
use common::*;
use serde_json::{json, Value};

const NODES: usize = 3;
const CHANNELS: usize = 24;
/// How long the publishers run before and after the failure.
const BEFORE: Duration = Duration::from_secs(3);
const AFTER: Duration = Duration::from_secs(10);

/// Which node a scenario fails.
#[derive(Clone, Copy)]
enum Victim {
    /// A node that is not the CHARM leader (it owns channels: every node
    /// does).
    NotLeader,
    /// The CHARM leader: the placement cannot change until another node
    /// is elected.
    Leader,
    /// The node started in a network namespace of its own (the last one;
    /// it may lead), which `fail` can cut off ([`Fleet::isolated`]).
    Isolated,
}

/// Runs a failover scenario: `fail` does the failure to the victim node (it
/// is given the fleet and the victim's index, and returns when the failure
/// has happened, with the moment it took effect if that is later than the
/// call); with `victim` None, `fail` does something to the whole fleet
/// (PostgreSQL restarts) and no node dies.
fn failover(victim: Option<Victim>, fail: impl FnOnce(&mut Fleet, usize) -> Option<Instant>) {
    let _one_at_a_time = SCENARIOS.lock().unwrap_or_else(|e| e.into_inner());
    let isolated = matches!(victim, Some(Victim::Isolated)).then_some(NODES - 1);
    let mut fleet = Fleet::start_isolating(NODES, &[], isolated);
    let placement = fleet.wait_for_placement(NODES);
    let ids: Vec<u64> = fleet.nodes.iter().flatten().map(node_id).collect();
    let victim_index = match victim {
        Some(Victim::Leader) => {
            let leader = u64::from(charm_leader(&fleet.etcd).expect("a CHARM leader"));
            ids.iter()
                .position(|&id| id == leader)
                .expect("the leader is a node of the fleet")
        }
        Some(Victim::Isolated) => NODES - 1,
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
            Duration::ZERO,
            stop.clone(),
            acked.clone(),
        ),
        publisher(
            b.admin.clone(),
            channels.clone(),
            "b",
            Duration::ZERO,
            stop.clone(),
            acked.clone(),
        ),
    ];
    thread::sleep(BEFORE);
    let called_at = Instant::now();
    let failed_at = fail(&mut fleet, victim_index).unwrap_or(called_at);
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
    failover(Some(Victim::NotLeader), |fleet, i| {
        fleet.kill(i);
        None
    });
}

#[test]
fn a_paused_node_is_replaced_and_cannot_write_when_it_wakes() {
    failover(Some(Victim::NotLeader), |fleet, i| {
        let victim = fleet.node(i);
        victim.signal(libc::SIGSTOP);
        thread::sleep(Duration::from_secs(5));
        victim.signal(libc::SIGCONT);
        None
    });
}

/// A network blackhole: every packet between the victim and the rest (etcd,
/// the other nodes, clients) is dropped in silence for 5 s; no connection
/// is reset. The victim keeps running — unlike a paused node it can act on
/// its own timers — and it can still reach the store (a unix socket): it
/// must stop serving on its own and never commit under its old epoch. When
/// the network heals it rejoins, its share moves back to it, and the
/// publishers go on through all that.
#[test]
fn a_blackholed_node_is_replaced_and_fenced_and_rejoins() {
    failover(Some(Victim::Isolated), |fleet, i| {
        let (_, ns) = fleet.isolated.as_ref().expect("an isolated node");
        ns.cut();
        // The cut takes a few milliseconds (two `ip` commands): what was
        // answered meanwhile does not count as service after the failure.
        let cut_at = Instant::now();
        thread::sleep(BLACKHOLE);
        ns.heal();
        let healed = Instant::now();
        fleet.wait_for_placement(NODES);
        eprintln!(
            "FAILOVER: the blackholed node {} is back in the placement {:?} after the heal",
            node_id(fleet.node(i)),
            healed.elapsed()
        );
        Some(cut_at)
    });
}

/// A node joins under load: a third of every node's channels move to it,
/// while posts to them are in flight at their old owners.
#[test]
fn a_node_joining_under_load_loses_nothing() {
    failover(None, |fleet, _| {
        let joined = Instant::now();
        fleet.add_node();
        fleet.wait_for_placement(NODES + 1);
        eprintln!(
            "FAILOVER: a node joined; the fleet served the placement over it {:?} after its start",
            joined.elapsed()
        );
        None
    });
}

/// How long the blackhole lasts.
const BLACKHOLE: Duration = Duration::from_secs(5);

#[test]
fn kill_9_of_the_charm_leader_loses_nothing() {
    failover(Some(Victim::Leader), |fleet, i| {
        fleet.kill(i);
        None
    });
}

#[test]
fn a_postgresql_restart_under_load_loses_nothing() {
    failover(None, |_, _| {
        common::pg::restart_server();
        None
    });
}

/// Channels of the gateway scenario.
const GATEWAY_CHANNELS: usize = 8;
/// How long a client may take to be admitted again after its node died
/// (during the failover its user's home may be the dead node's).
const RECONNECT_WITHIN: Duration = Duration::from_secs(30);
/// A session being read ends this long after it was told to stop and
/// nothing more arrived.
const SESSION_QUIET: Duration = Duration::from_secs(3);
/// No session is read longer than this.
const SESSION_MAX: Duration = Duration::from_secs(120);

#[test]
fn kill_9_of_a_gateway_node_its_clients_resume_elsewhere() {
    let _one_at_a_time = SCENARIOS.lock().unwrap_or_else(|e| e.into_inner());
    // A ring per channel long enough for this test's posts, so that every
    // resume is served from memory (a `resync_required` would send the
    // client to conversations.history, which this test does not do).
    let mut fleet = Fleet::start(NODES, &["--history-per-channel", "4096"]);
    let before_kill = fleet.wait_for_placement(NODES);
    let victim = NODES - 1;
    let a = fleet.node(0);

    // `whole` is in every channel, `half` in every other one.
    let whole = a.admin.create_user("whole");
    let half = a.admin.create_user("half");
    let mut channels = Vec::new();
    for i in 0..GATEWAY_CHANNELS {
        let c = a.admin.create_channel(&format!("hall{i}"));
        a.admin.add_member(&c, &whole.id);
        if i % 2 == 0 {
            a.admin.add_member(&c, &half.id);
        }
        channels.push(c);
    }
    let half_channels: Vec<String> = channels.iter().step_by(2).cloned().collect();
    // Each client: its user, its channels, the node it resumes on.
    let clients = [
        (whole.clone(), channels.clone(), 0),
        (half.clone(), half_channels, 1),
    ];

    // Their connections on the victim, read from the start.
    let never = Arc::new(AtomicBool::new(false));
    let before: Vec<_> = clients
        .iter()
        .map(|(user, _, _)| {
            let ws = fleet.node(victim).connect(&user.id).named(&user.name);
            read_session(ws, never.clone())
        })
        .collect();

    let stop_posts = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let pubs: Vec<_> = [(0, "a"), (1, "b")]
        .into_iter()
        .map(|(i, tag)| {
            publisher(
                fleet.node(i).admin.clone(),
                channels.clone(),
                tag,
                Duration::from_millis(2),
                stop_posts.clone(),
                acked.clone(),
            )
        })
        .collect();
    thread::sleep(BEFORE);
    fleet.kill(victim);
    let killed_at = Instant::now();
    let after_kill = fleet.wait_for_placement(NODES - 1);
    // Where each channel lives, before and after, for failure messages.
    let owners: HashMap<String, (u64, u64)> = channels
        .iter()
        .map(|c| {
            let owners = (owner_node(&before_kill, c), owner_node(&after_kill, c));
            (c.clone(), owners)
        })
        .collect();

    // Each client sees its connection end and resumes on a surviving node
    // from the newest ts it saw.
    let stop_reading = Arc::new(AtomicBool::new(false));
    let mut sessions = Vec::new();
    for ((user, _, target), reading) in clients.iter().zip(before) {
        let got = join_within(reading, SESSION_MAX, "reading on the victim");
        let since = got
            .iter()
            .filter(|f| f["type"] == json!("message"))
            .map(|f| s(f, "ts"))
            .max_by_key(|ts| ts_micros(ts))
            .unwrap_or_else(|| panic!("{}: no post arrived before the kill", user.name))
            .to_string();
        let ws = reconnect_since(fleet.node(*target), &user.id, &since).named(&user.name);
        eprintln!(
            "GATEWAY FAILOVER: {} resumed on node {} {:?} after the kill, from {since}",
            user.name,
            node_id(fleet.node(*target)),
            killed_at.elapsed()
        );
        sessions.push((got, read_session(ws, stop_reading.clone())));
    }
    thread::sleep(AFTER);
    stop_posts.store(true, Ordering::Relaxed);
    for p in pubs {
        join_within(p, Duration::from_secs(60), "publisher");
    }
    stop_reading.store(true, Ordering::Relaxed);

    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.iter().any(|p| p.sent > killed_at),
        "no post was acknowledged after the kill"
    );
    for ((user, mine, _), (got_before, after)) in clients.iter().zip(sessions) {
        let got_after = join_within(after, SESSION_MAX, "reading the resumed session");
        check_resumed(&user.name, &got_before, &got_after, mine, &acked, &owners);
    }
    drop(fleet);
}

/// Reads `ws` on a thread of its own (so its socket never backs up) until
/// the connection ends, or `stop` is set and nothing arrived for
/// [`SESSION_QUIET`]; returns its JSON frames.
fn read_session(mut ws: Ws, stop: Arc<AtomicBool>) -> thread::JoinHandle<Vec<Value>> {
    thread::spawn(move || {
        let started = Instant::now();
        let mut last = Instant::now();
        let mut frames = Vec::new();
        loop {
            assert!(
                started.elapsed() < SESSION_MAX,
                "{}: read for {SESSION_MAX:?}",
                ws.name
            );
            match ws.recv_frame(Duration::from_millis(200)) {
                Some(Frame::Text(t)) => {
                    let v: Value = serde_json::from_str(&t)
                        .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {t}", ws.name));
                    frames.push(v);
                    last = Instant::now();
                }
                Some(Frame::Ping(_)) | Some(Frame::Pong(_)) => {}
                Some(Frame::Close(..)) | Some(Frame::Ended(_)) => return frames,
                Some(other) => panic!("{}: unexpected frame {other:?}", ws.name),
                None if stop.load(Ordering::Relaxed) && last.elapsed() >= SESSION_QUIET => {
                    return frames
                }
                None => {}
            }
        }
    })
}

/// A connection of `user` on `server` resuming after `since`, tried again
/// until the node admits it: until the new placement, the user's home may
/// be on the dead node, and the admission fails (a real client reconnects
/// the same way).
fn reconnect_since(server: &Server, user: &str, since: &str) -> Ws {
    let deadline = Instant::now() + RECONNECT_WITHIN;
    let mut last: String;
    loop {
        let ticket =
            server
                .admin
                .try_request("POST", "/v1/tickets", Some(&json!({ "user": user })));
        match ticket {
            Some((200, v)) => {
                let url = with_since(v["url"].as_str().expect("a ticket url"), since);
                match Ws::try_connect(&url, EVENT_TIMEOUT) {
                    Ok(mut ws) => match ws.recv_frame(EVENT_TIMEOUT) {
                        Some(Frame::Text(t)) if t.contains(r#""type":"hello""#) => return ws,
                        other => last = format!("admission: {other:?}"),
                    },
                    Err(e) => last = format!("connect: {e}"),
                }
            }
            other => last = format!("ticket: {other:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "{user} not admitted again within {RECONNECT_WITHIN:?}; last: {last}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// The checker of a resumed client: within each session, each channel's
/// posts arrive in ts order, each once; deduplicated by (channel, ts), the
/// two sessions hold every acknowledged post of the client's channels,
/// each post once (by its text), and nothing of any other channel.
fn check_resumed(
    who: &str,
    before: &[Value],
    after: &[Value],
    mine: &[String],
    acked: &[Acked],
    owners: &HashMap<String, (u64, u64)>,
) {
    let mut seen: HashMap<(String, String), String> = HashMap::new();
    for (session, frames) in [("before", before), ("after", after)] {
        let mut last: HashMap<&str, u64> = HashMap::new();
        for f in frames {
            assert_ne!(
                f["type"],
                json!("resync_required"),
                "{who}: {session}: a resync (the ring is long enough): {f}"
            );
            if let Some(c) = f["channel"].as_str() {
                assert!(
                    mine.iter().any(|m| m == c),
                    "{who}: {session}: an event of a channel it is not in: {f}"
                );
            }
            if f["type"] != json!("message") {
                continue;
            }
            let (c, ts) = (s(f, "channel"), s(f, "ts"));
            let t = ts_micros(ts);
            if let Some(prev) = last.insert(c, t) {
                assert!(
                    t > prev,
                    "{who}: {session}: {c}: out of order or repeated at {f}"
                );
            }
            seen.insert((c.to_string(), ts.to_string()), s(f, "text").to_string());
        }
    }
    let mut texts: Vec<&String> = seen.values().collect();
    texts.sort();
    let n = texts.len();
    texts.dedup();
    assert_eq!(texts.len(), n, "{who}: one post under two ts");
    let mut missing = Vec::new();
    for p in acked.iter().filter(|p| mine.contains(&p.channel)) {
        match seen.get(&(p.channel.clone(), p.ts.clone())) {
            Some(text) => assert_eq!(text, &p.text, "{who}: {} at {}", p.channel, p.ts),
            None => missing.push(format!("{} {} ({})", p.channel, p.ts, p.text)),
        }
    }
    if !missing.is_empty() {
        // Per channel: its owner before and after the kill, what is missing,
        // and what each session got of it.
        let mut detail = String::new();
        for c in mine {
            let lost: Vec<&String> = missing.iter().filter(|m| m.starts_with(c)).collect();
            if lost.is_empty() {
                continue;
            }
            let got = |frames: &[Value]| {
                let ts: Vec<&str> = frames
                    .iter()
                    .filter(|f| f["channel"] == json!(c))
                    .map(|f| f["ts"].as_str().unwrap_or("-"))
                    .collect();
                format!(
                    "{} (first {:?}, last {:?})",
                    ts.len(),
                    ts.first(),
                    ts.last()
                )
            };
            detail += &format!(
                "\n  {c} owned by node {:?} (before, after): {} missing, first {:?} last {:?}; \
                 got before: {}; after: {}",
                owners.get(c),
                lost.len(),
                lost.first(),
                lost.last(),
                got(before),
                got(after),
            );
        }
        panic!(
            "{who}: {} of {} acknowledged posts never arrived:{detail}",
            missing.len(),
            acked.iter().filter(|p| mine.contains(&p.channel)).count(),
        );
    }
}
