//! Regions (issue 9, items 7 and 8): three real nodes coordinated by a
//! real etcd, sharing one PostgreSQL store, two in region `east` and one
//! in `west`.
//!
//! - Drain a region: `POST /v1/drain?region=east&to=west&rate=20` while a
//!   publisher posts to every channel. Every east connection gets a
//!   `goodbye` naming a west gateway and close 4001; the closes are spread
//!   by the rate (a limit, not a speed); the clients reconnect on the
//!   goodbye's URL or through rtm.connect on their east node's Web API (a
//!   west URL), with `since`, and between before and after hold every
//!   event published once, in order; every node's `/v1/ring` shows the
//!   east nodes draining; a websocket that reaches an east gateway is sent
//!   west at once; `DELETE` ends the drain and east accepts again.
//! - `/v1/ring` and `/metrics` show the nodes, their regions and states,
//!   the placement version and the link to each peer; bad drain requests
//!   get their documented errors.
//!
//! Needs `--features cluster` and `tests/with_pg.sh`.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::etcd::Etcd;
use common::pg::Schema;
use common::*;
use serde_json::{json, Value};

const REGIONS: [&str; 3] = ["east", "east", "west"];
/// Users with two connections each, all on the east nodes.
const USERS: usize = 30;
const CONNS: usize = 2 * USERS;
const CHANNELS: usize = 3;
/// The drain's rate: connections per second for the whole region.
const RATE: usize = 20;
/// Bound on the cluster agreeing on something (a placement, a record).
const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);

struct Fleet {
    _etcd: Etcd,
    _store: Schema,
    nodes: Vec<Server>,
}

impl Fleet {
    fn start() -> Fleet {
        let etcd = Etcd::start();
        let store = Schema::new();
        let token = format!("it-drain-{}", unique());
        let nodes = REGIONS
            .iter()
            .enumerate()
            .map(|(i, region)| {
                let data = fresh_dir().join("data");
                Server::start_in(
                    &data,
                    &[
                        "--etcd",
                        &etcd.endpoint,
                        "--node-name",
                        &format!("node{i}"),
                        "--region",
                        region,
                        "--store",
                        &store.url,
                        "--admin-token",
                        &token,
                        "--link-port",
                        "0",
                        "--shards",
                        "2",
                        "--no-pin",
                        "--spin-before-park-us",
                        "0",
                    ],
                )
            })
            .collect();
        let fleet = Fleet {
            _etcd: etcd,
            _store: store,
            nodes,
        };
        fleet.wait_until(
            "one placement over every node, every record known",
            |rings| {
                let placed: BTreeSet<u64> = rings[0]["ring"]["assignment"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a["node"].as_u64().unwrap())
                    .collect();
                rings
                    .windows(2)
                    .all(|w| w[0]["ring"]["version"] == w[1]["ring"]["version"])
                    && placed.len() == REGIONS.len()
                    && rings.iter().all(|r| states(r).len() == REGIONS.len())
            },
        );
        fleet
    }

    fn east(&self) -> &[Server] {
        &self.nodes[..2]
    }

    fn west(&self) -> &Server {
        &self.nodes[2]
    }

    /// Waits until every node's `/v1/ring` answer satisfies `done`.
    fn wait_until(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + CHANGE_TIMEOUT;
        loop {
            let rings: Vec<Value> = self.nodes.iter().map(ring).collect();
            if done(&rings) {
                return rings;
            }
            assert!(
                Instant::now() < deadline,
                "not within {CHANGE_TIMEOUT:?}: {what}; rings: {rings:#?}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

fn ring(server: &Server) -> Value {
    server.admin.ok("GET", "/v1/ring", None)
}

fn node_id(server: &Server) -> u64 {
    server.ready["node"]
        .as_u64()
        .expect("a clustered node's id")
}

/// Node id → (region, state), from one `/v1/ring` answer.
fn states(ring: &Value) -> HashMap<u64, (String, String)> {
    ring["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["region"].is_string())
        .map(|n| {
            (
                n["id"].as_u64().unwrap(),
                (s(n, "region").to_string(), s(n, "state").to_string()),
            )
        })
        .collect()
}

/// Whether every node of `ring` in `region` says `state`.
fn region_says(ring: &Value, region: &str, state: &str) -> bool {
    let all = states(ring);
    let of_region: Vec<_> = all.values().filter(|(r, _)| r == region).collect();
    !of_region.is_empty() && of_region.iter().all(|(_, st)| st == state)
}

/// What one east client lived through.
struct Outcome {
    name: String,
    goodbye: Value,
    /// When its close arrived.
    closed_at: Instant,
    close: Option<Frame>,
    /// Where it reconnected.
    url: String,
    /// Every event it received, before and after the drain, in order.
    events: Vec<Value>,
}

/// How a drained client comes back.
#[derive(Clone, Copy, Debug)]
enum Back {
    /// On the goodbye's `reconnect_url`, with `since`.
    Goodbye,
    /// Through rtm.connect (with `since`) on the Web API of the east node it
    /// was on, as an unmodified SDK does.
    RtmConnect,
}

/// The `event_ts` of the last event in `events` that has one.
fn last_event_ts(events: &[Value]) -> Option<String> {
    events
        .iter()
        .rev()
        .find_map(|e| e["event_ts"].as_str().map(str::to_string))
}

/// Reads until the drain's goodbye and close, comes back in region west as
/// `back` says, and reads until the final event of every channel.
#[allow(clippy::too_many_arguments)]
fn client(
    mut ws: Ws,
    mut events: Vec<Value>,
    token: String,
    api: std::net::SocketAddr,
    back: Back,
    west_gateway: String,
    reconnected: Arc<AtomicUsize>,
) -> Outcome {
    let name = ws.name.clone();
    let (frames, close) = ws.read_until_close(Duration::from_secs(45), 100_000);
    let closed_at = Instant::now();
    let goodbye = frames.last().cloned().unwrap_or(Value::Null);
    events.extend(frames[..frames.len().saturating_sub(1)].iter().cloned());
    let since = last_event_ts(&events).expect("an event before the drain");
    let url = match back {
        Back::Goodbye => with_since(
            goodbye["reconnect_url"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: goodbye without reconnect_url: {goodbye}")),
            &since,
        ),
        Back::RtmConnect => {
            let mut api = WebApi::with_timeout(api, Duration::from_secs(10));
            let answer = api.ok(&token, "rtm.connect", json!({ "since": since }));
            s(&answer, "url").to_string()
        }
    };
    assert!(
        url.starts_with(&format!("{west_gateway}websocket/")),
        "{name} ({back:?}): reconnects on {url}, not on the west gateway {west_gateway}"
    );
    let mut ws = Ws::connect(&url).named(format!("{name}-back"));
    reconnected.fetch_add(1, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut finals = HashSet::new();
    while finals.len() < CHANNELS && Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(ev) = ws.try_recv_json(left) else {
            break;
        };
        if ev["text"] == json!("final") {
            finals.insert(s(&ev, "channel").to_string());
        }
        events.push(ev);
    }
    ws.close();
    Outcome {
        name,
        goodbye,
        closed_at,
        close,
        url,
        events,
    }
}

#[test]
fn drain_a_region_sends_every_client_west_at_the_rate_losing_nothing() {
    let fleet = Fleet::start();
    let west = fleet.west();
    let admin = west.admin.clone();
    let users = admin.create_users("drained", USERS);
    let channels: Vec<String> = (0..CHANNELS)
        .map(|i| admin.create_channel(&format!("region-{i}")))
        .collect();
    for c in &channels {
        for u in &users {
            admin.add_member(c, &u.id);
        }
    }
    let mut published: Vec<(String, String)> = Vec::new();

    // Every connection on an east node, each user on both.
    let mut conns: Vec<(Ws, &User, usize)> = Vec::new();
    for (i, u) in users.iter().enumerate() {
        for k in 0..2 {
            let e = (i + k) % 2;
            let ws = fleet.east()[e]
                .connect(&u.id)
                .named(format!("u{i}c{k}@east{e}"));
            conns.push((ws, u, e));
        }
    }
    // One event in each channel before the drain: every client has a
    // `since` to come back with.
    for c in &channels {
        let ts = admin.publish(c, json!({"type": "message", "text": "before"}));
        published.push((c.clone(), ts));
    }
    let mut clients = Vec::new();
    let reconnected = Arc::new(AtomicUsize::new(0));
    for (n, (mut ws, u, e)) in conns.into_iter().enumerate() {
        let before = ws.recv_n(CHANNELS, EVENT_TIMEOUT);
        let back = if n % 2 == 0 {
            Back::Goodbye
        } else {
            Back::RtmConnect
        };
        let (token, api) = (u.token.clone(), fleet.east()[e].api);
        let (west_gateway, reconnected) = (west.gateway_url.clone(), reconnected.clone());
        clients.push(thread::spawn(move || {
            client(ws, before, token, api, back, west_gateway, reconnected)
        }));
    }

    // A publisher posts to every channel through the west node throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let during = Arc::new(Mutex::new(Vec::new()));
    let publisher = {
        let (admin, channels, stop, during) = (
            admin.clone(),
            channels.clone(),
            stop.clone(),
            during.clone(),
        );
        thread::spawn(move || {
            let mut seq = 0;
            while !stop.load(Ordering::SeqCst) {
                for c in &channels {
                    seq += 1;
                    let ts = admin.publish(
                        c,
                        json!({"type": "message", "text": format!("during-{seq}")}),
                    );
                    during.lock().unwrap().push((c.clone(), ts));
                }
                thread::sleep(Duration::from_millis(30));
            }
        })
    };
    thread::sleep(Duration::from_millis(200));

    let answer = fleet.east()[0].admin.ok(
        "POST",
        &format!("/v1/drain?region=east&to=west&rate={RATE}"),
        None,
    );
    assert_eq!(
        answer["drain"],
        json!({"region": "east", "to": "west", "rate": RATE}),
        "{answer}"
    );
    let rings = fleet.wait_until("every node sees east draining, west active", |rings| {
        rings
            .iter()
            .all(|r| region_says(r, "east", "draining") && region_says(r, "west", "active"))
    });
    for r in &rings[..2] {
        assert_eq!(
            r["drain"],
            json!({"region": "east", "to": "west", "rate": RATE}),
            "an east node's drain: {r}"
        );
    }
    assert!(
        rings[2]["drain"].is_null(),
        "west is not drained: {}",
        rings[2]
    );
    // Every shard takes the drain from its own queue: give the others the
    // moment the one that answered had.
    thread::sleep(Duration::from_millis(200));

    // A websocket that reaches an east gateway now is sent west at once.
    let u = &users[0];
    let url = west
        .ticket(&u.id)
        .replacen(&west.gateway_url, &fleet.east()[1].gateway_url, 1);
    let mut late = Ws::connect_no_hello(&url).named("late");
    let (frames, close) = late.read_until_close(EVENT_TIMEOUT, 10);
    assert_eq!(frames.len(), 1, "late: {frames:?}");
    assert_type(&frames[0], "goodbye");
    assert!(
        s(&frames[0], "reconnect_url").starts_with(&format!("{}websocket/", west.gateway_url)),
        "late: {}",
        frames[0]
    );
    assert!(
        matches!(close, Some(Frame::Close(Some(4001), _))),
        "late: {close:?}"
    );

    // Every client comes back; then the last event of each channel.
    let deadline = Instant::now() + Duration::from_secs(45);
    while reconnected.load(Ordering::SeqCst) < CONNS {
        assert!(
            Instant::now() < deadline,
            "only {} of {CONNS} clients came back",
            reconnected.load(Ordering::SeqCst)
        );
        thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::SeqCst);
    join_within(publisher, Duration::from_secs(20), "publisher");
    published.extend(during.lock().unwrap().drain(..));
    for c in &channels {
        let ts = admin.publish(c, json!({"type": "message", "text": "final"}));
        published.push((c.clone(), ts));
    }
    let outcomes: Vec<Outcome> = clients
        .into_iter()
        .map(|h| join_within(h, Duration::from_secs(60), "client"))
        .collect();

    // Goodbye, 4001, a west URL.
    for o in &outcomes {
        assert_type(&o.goodbye, "goodbye");
        assert_eq!(
            o.goodbye["region"],
            json!("west"),
            "{}: {}",
            o.name,
            o.goodbye
        );
        assert!(
            s(&o.goodbye, "reconnect_url").starts_with(&format!("{}websocket/", west.gateway_url)),
            "{}: {}",
            o.name,
            o.goodbye
        );
        assert!(
            matches!(o.close, Some(Frame::Close(Some(4001), _))),
            "{}: closed with {:?}",
            o.name,
            o.close
        );
    }

    // The rate is a limit: the closes are spread over time, not all at once.
    let mut closes: Vec<Instant> = outcomes.iter().map(|o| o.closed_at).collect();
    closes.sort();
    let first = closes[0];
    let early = closes
        .iter()
        .filter(|&&t| t < first + Duration::from_millis(500))
        .count();
    let span = closes[CONNS - 1] - first;
    eprintln!(
        "drain of {CONNS} connections at {RATE}/s: {early} closed in the first 0.5 s, all within {span:?}"
    );
    assert!(
        early < CONNS / 2,
        "{early} of {CONNS} connections closed within 0.5 s at {RATE}/s"
    );
    // At 20/s, 60 closes take at least 2.9 s; allow for when each client
    // noticed its close.
    assert!(
        span >= Duration::from_millis(1500),
        "{CONNS} connections closed within {span:?} at {RATE}/s"
    );

    // Nothing lost: each client, before and after, holds every published
    // event, in ts order per channel once deduplicated by (channel, ts).
    let want: BTreeSet<(String, String)> = published.iter().cloned().collect();
    assert_eq!(want.len(), published.len(), "published ts are unique");
    for o in &outcomes {
        let mut seen = HashSet::new();
        let mut last: HashMap<String, u64> = HashMap::new();
        for ev in o.events.iter().filter(|e| e["type"] == json!("message")) {
            let key = (s(ev, "channel").to_string(), s(ev, "ts").to_string());
            if !seen.insert(key.clone()) {
                continue; // a replay may repeat what was seen
            }
            let t = ts_micros(&key.1);
            if let Some(&prev) = last.get(&key.0) {
                assert!(t > prev, "{}: out of order in {}: {ev}", o.name, key.0);
            }
            last.insert(key.0, t);
        }
        let got: BTreeSet<(String, String)> = seen.into_iter().collect();
        let missing: Vec<_> = want.difference(&got).collect();
        let extra: Vec<_> = got.difference(&want).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{} (back on {}): missing {missing:?}, unexpected {extra:?}",
            o.name,
            o.url
        );
    }

    // Withdrawn: the region accepts again, and hands out its own URLs.
    west.admin.ok("DELETE", "/v1/drain?region=east", None);
    fleet.wait_until("east active again, drain gone", |rings| {
        rings.iter().all(|r| region_says(r, "east", "active"))
            && rings[..2].iter().all(|r| r["drain"].is_null())
    });
    thread::sleep(Duration::from_millis(200));
    for east in fleet.east() {
        let url = east.ticket(&users[1].id);
        assert!(
            url.starts_with(&format!("{}websocket/", east.gateway_url)),
            "after the drain, {url} is not on {}",
            east.gateway_url
        );
        Ws::connect(&url).close();
    }
}

#[test]
fn ring_and_metrics_show_nodes_regions_version_and_links() {
    let fleet = Fleet::start();
    let ids: Vec<u64> = fleet.nodes.iter().map(node_id).collect();

    // Links open on first use: each node creates users (whose homes are
    // spread over the nodes) until it is linked with both peers.
    for (i, node) in fleet.nodes.iter().enumerate() {
        let deadline = Instant::now() + CHANGE_TIMEOUT;
        let mut n = 0;
        loop {
            let r = ring(node);
            let linked = r["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["link"]["up"] == json!(true))
                .count();
            if linked == ids.len() - 1 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} not linked to both peers: {r}"
            );
            node.admin.create_user(&format!("linker{i}-{n}"));
            n += 1;
        }
    }

    let rings = fleet.wait_until("one placement", |rings| {
        rings
            .windows(2)
            .all(|w| w[0]["ring"]["version"] == w[1]["ring"]["version"])
    });
    let version = rings[0]["ring"]["version"].as_u64().unwrap();
    assert!(version >= 1, "a published placement: {}", rings[0]);
    for (i, (node, r)) in fleet.nodes.iter().zip(&rings).enumerate() {
        assert_eq!(r["node"], json!(ids[i]), "node {i}: {r}");
        assert_eq!(r["region"], json!(REGIONS[i]), "node {i}: {r}");
        assert!(r["drain"].is_null(), "node {i}: {r}");
        let nodes = r["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), ids.len(), "node {i}: {r}");
        for (k, other) in fleet.nodes.iter().enumerate() {
            let n = nodes
                .iter()
                .find(|n| n["id"] == json!(ids[k]))
                .unwrap_or_else(|| panic!("node {i} does not list node {k}: {r}"));
            assert_eq!(n["region"], json!(REGIONS[k]), "{n}");
            assert_eq!(n["state"], json!("active"), "{n}");
            assert_eq!(n["gateway"], json!(other.gateway_url), "{n}");
            assert_eq!(n["api"], json!(other.api_url), "{n}");
            assert_eq!(n["cores"], json!(2), "{n}");
            assert_eq!(n["self"], json!(i == k), "{n}");
            if i == k {
                assert!(n["link"].is_null(), "{n}");
            } else {
                assert_eq!(n["link"]["up"], json!(true), "node {i} → {k}: {n}");
                assert!(
                    n["link"]["last_heard_ms"].is_u64() || n["link"]["out_up"].as_u64() > Some(0),
                    "{n}"
                );
            }
        }

        let metrics = node.admin.request_raw("GET", "/metrics", None);
        assert_eq!(metrics.status, 200);
        let text = metrics.text();
        for line in [
            format!("transponder_placement_version {version}\n"),
            "transponder_cluster_nodes{region=\"east\",state=\"active\"} 2\n".to_string(),
            "transponder_cluster_nodes{region=\"west\",state=\"active\"} 1\n".to_string(),
            "transponder_region_draining 0\n".to_string(),
        ] {
            assert!(
                text.contains(&line),
                "node {i}'s /metrics lacks {line:?}:\n{text}"
            );
        }
        for (k, &peer) in ids.iter().enumerate() {
            let up = format!("transponder_link_up{{peer=\"{peer}\"}} 1\n");
            let sent = format!("transponder_link_bytes_sent_total{{peer=\"{peer}\"}} ");
            if k == i {
                assert!(
                    !text.contains(&format!("peer=\"{peer}\"")),
                    "node {i} lists itself:\n{text}"
                );
            } else {
                assert!(
                    text.contains(&up),
                    "node {i}'s /metrics lacks {up:?}:\n{text}"
                );
                assert!(
                    text.contains(&sent),
                    "node {i}'s /metrics lacks {sent:?}:\n{text}"
                );
            }
        }
    }

    // Bad drain requests: their documented errors, nothing written.
    let admin = &fleet.nodes[0].admin;
    for (method, path, code) in [
        ("POST", "/v1/drain?region=east&to=east", "invalid_target"),
        ("POST", "/v1/drain?region=east", "invalid_target"),
        (
            "POST",
            "/v1/drain?region=east&to=west&rate=0",
            "invalid_rate",
        ),
        (
            "POST",
            "/v1/drain?region=east&to=west&rate=100001",
            "invalid_rate",
        ),
        (
            "POST",
            "/v1/drain?region=east&to=west&rate=fast",
            "invalid_rate",
        ),
        ("POST", "/v1/drain?region=east&to=north", "unknown_target"),
        ("POST", "/v1/drain?region=a%2Fb&to=west", "invalid_region"),
        ("POST", "/v1/drain?to=west", "invalid_region"),
        ("DELETE", "/v1/drain", "invalid_region"),
    ] {
        let (status, body) = admin.request(method, path, None);
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some(code)),
            "{method} {path}: {body}"
        );
    }
    thread::sleep(Duration::from_millis(300));
    for r in fleet.nodes.iter().map(ring) {
        assert!(
            r["drain"].is_null() && region_says(&r, "east", "active"),
            "{r}"
        );
    }
}
