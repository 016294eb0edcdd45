//! A fleet for failover tests: real nodes coordinated by a real etcd
//! ([`super::etcd::Etcd`]), sharing one PostgreSQL store
//! ([`super::pg::Schema`]; run under `tests/with_pg.sh`), node links
//! between them; and what those tests ask of it: the placement every node
//! serves, who owns an id, and publishers that post through a node until
//! told to stop, recording what was acknowledged.
//!
//! Needs `--features cluster` (the nodes take `--etcd`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::etcd::Etcd;
use super::netns::Netns;
use super::pg::Schema;
use super::{fresh_dir, unique, Admin, Server};

/// Shards per node.
pub const FLEET_SHARDS: &str = "2";
/// How long a fleet may take to agree on a placement.
pub const PLACEMENT_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Fleet {
    pub etcd: Etcd,
    store: Schema,
    /// The admin token the nodes share, and the flags each node gets.
    token: String,
    extra: Vec<String>,
    /// The nodes; a killed node taken out ([`Fleet::kill`]) is `None`.
    pub nodes: Vec<Option<Server>>,
    /// The node that runs in a network namespace of its own, and that
    /// namespace ([`Fleet::start_isolating`]). Declared after `nodes`: the
    /// nodes stop before it goes.
    pub isolated: Option<(usize, Netns)>,
}

impl Fleet {
    /// `count` nodes (named `node0`…) with `extra` flags each; returns once
    /// all of them serve one placement over all of them.
    pub fn start(count: usize, extra: &[&str]) -> Fleet {
        Self::start_isolating(count, extra, None)
    }

    /// [`Fleet::start`], with node `isolated` (if any) in a network
    /// namespace of its own, bound to that namespace's address, so that a
    /// test can cut it off the network ([`Netns::cut`]).
    pub fn start_isolating(count: usize, extra: &[&str], isolated: Option<usize>) -> Fleet {
        let mut fleet = Fleet {
            etcd: Etcd::start(),
            store: Schema::new(),
            token: format!("it-failover-{}", unique()),
            extra: extra.iter().map(|a| a.to_string()).collect(),
            nodes: Vec::new(),
            isolated: isolated.map(|i| (i, Netns::create())),
        };
        for _ in 0..count {
            fleet.launch();
        }
        fleet.wait_for_placement(count);
        fleet
    }

    /// Starts one more node (the next `nodeN`), which joins the fleet; the
    /// placement over it is for the caller to wait for.
    pub fn add_node(&mut self) -> usize {
        self.launch()
    }

    /// Starts node `nodes.len()` (in the isolated namespace if it is that
    /// node) and returns its index.
    fn launch(&mut self) -> usize {
        let i = self.nodes.len();
        let data = fresh_dir().join("data");
        let name = format!("node{i}");
        let mut args = vec![
            "--etcd",
            &self.etcd.endpoint,
            "--node-name",
            &name,
            "--store",
            &self.store.url,
            "--admin-token",
            &self.token,
            "--link-port",
            "0",
            "--shards",
            FLEET_SHARDS,
            "--no-pin",
            "--spin-before-park-us",
            "0",
        ];
        args.extend(self.extra.iter().map(String::as_str));
        let node = match &self.isolated {
            Some((j, ns)) if *j == i => {
                args.extend_from_slice(&["--host", &ns.ip]);
                Server::start_in_netns(&data, &args, ns)
            }
            _ => Server::start_in(&data, &args),
        };
        self.nodes.push(Some(node));
        i
    }

    /// Node `i`, which must be alive.
    #[track_caller]
    pub fn node(&self, i: usize) -> &Server {
        self.nodes[i].as_ref().expect("a live node")
    }

    /// The index of the node whose id is `id`.
    #[track_caller]
    pub fn index_of(&self, id: u64) -> usize {
        (0..self.nodes.len())
            .find(|&i| self.nodes[i].as_ref().is_some_and(|n| node_id(n) == id))
            .unwrap_or_else(|| panic!("no live node {id}"))
    }

    /// kill -9 of node `i`, which leaves the fleet.
    pub fn kill(&mut self, i: usize) {
        let mut node = self.nodes[i].take().expect("a live node");
        node.kill();
    }

    /// Waits until every live node serves the same placement, over `count`
    /// nodes, and returns it (`/v1/ring`).
    #[track_caller]
    pub fn wait_for_placement(&self, count: usize) -> Value {
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_some())
            .collect();
        self.wait_for_placement_among(&live, count)
    }

    /// [`Fleet::wait_for_placement`] asking only nodes `which` (the others
    /// may be paused).
    #[track_caller]
    pub fn wait_for_placement_among(&self, which: &[usize], count: usize) -> Value {
        let deadline = Instant::now() + PLACEMENT_TIMEOUT;
        loop {
            let rings: Vec<Value> = which.iter().map(|&i| ring(self.node(i))).collect();
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
}

/// The placement a node serves (`/v1/ring`).
pub fn ring(server: &Server) -> Value {
    server.admin.ok("GET", "/v1/ring", None)["ring"].clone()
}

/// The nodes a ring assigns members to.
pub fn nodes_in(ring: &Value) -> Vec<u64> {
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

/// A node's id from its ready line.
pub fn node_id(server: &Server) -> u64 {
    server.ready["node"]
        .as_u64()
        .expect("a clustered node's ready line names it")
}

/// Where id `id` (a channel, or a user's home) is owned, per a node's view
/// (`/v1/ring` carries the assignment; the ring is rebuilt here with the
/// library's own code).
pub fn owner_node(ring: &Value, id: &str) -> u64 {
    let id = transponder::ids::Id::parse(id).unwrap();
    u64::from(placement_from(ring).owner(id.raw()).node)
}

/// The placement a node serves, rebuilt from its `/v1/ring` (`["ring"]`).
pub fn placement_from(ring: &Value) -> transponder::placement::Placement {
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
    let vnodes = ring["vnodes"].as_u64().unwrap() as u32;
    let version = ring["version"].as_u64().unwrap();
    Placement::new(Ring::new(&members, vnodes), &assignment, version).unwrap()
}

/// An acknowledged post: when it was sent and when acknowledged.
#[derive(Clone, Debug)]
pub struct Acked {
    pub channel: String,
    pub ts: String,
    pub text: String,
    pub sent: Instant,
    pub at: Instant,
}

/// Posts to every channel in turn through `admin` until `stop`, pausing
/// `pause` after each post, recording what was acknowledged. A post refused
/// or timed out during a failover is simply not acknowledged (and not
/// counted).
pub fn publisher(
    admin: Admin,
    channels: Vec<String>,
    tag: &'static str,
    pause: Duration,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Acked>>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut seq = 0u64;
        while !stop.load(Ordering::Relaxed) {
            for c in &channels {
                seq += 1;
                let sent = Instant::now();
                let text = format!("{tag}-{seq}");
                let body = json!({
                    "channel": c,
                    "event": {"type": "message", "text": text},
                });
                let resp = admin.try_request("POST", "/v1/publish", Some(&body));
                if let Some((200, v)) = resp {
                    if let Some(ts) = v["ts"].as_str() {
                        acked.lock().unwrap().push(Acked {
                            channel: c.clone(),
                            ts: ts.to_string(),
                            text,
                            sent,
                            at: Instant::now(),
                        });
                    }
                }
                if !pause.is_zero() {
                    thread::sleep(pause);
                }
            }
        }
    })
}
