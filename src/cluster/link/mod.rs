//! Node links: how the shards of one node reach the shards of another.
//!
//! Each shard keeps one outgoing link per other node ([`outbound`]), opened
//! on first use to the address the cluster's registry gives for that node,
//! and accepts the links other nodes' shards open to this node
//! ([`inbound`]; the listener is shared by the node's shards with
//! SO_REUSEPORT, like every other listener). A message from shard `i` of
//! node A to shard `k` of node B travels A.i's link to B, lands on whichever
//! shard of B accepted that link, and reaches B.k over B's mesh: FIFO per
//! (sending shard, receiving shard), as the mesh is on one node.
//!
//! Frames ([`frame`]) are length-prefixed, batched per write, stamped with
//! the sender's epoch; idle links carry heartbeats, and a link silent for
//! [`outbound::LINK_SILENCE_TIMEOUT`] is dead.

pub mod frame;
pub mod inbound;
pub mod outbound;

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use glommio::net::TcpListener;

use crate::placement::{Addr, NodeId};
use crate::shard::message::Msg;
use crate::shard::Shard;
use outbound::Outbound;

/// What one shard's links to and from one node have seen, for `/v1/ring`
/// and `/metrics` (gathered from every shard by `Msg::Stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LinkStats {
    pub node: NodeId,
    /// This shard's link to the node is connected.
    pub out_up: bool,
    /// Links from the node accepted by this shard and still open (each
    /// open one has heard a frame within [`outbound::LINK_SILENCE_TIMEOUT`]).
    pub in_open: u32,
    /// Milliseconds since this shard last read a frame from the node.
    pub last_heard_ms: Option<u64>,
    pub messages_sent: u64,
    pub bytes_sent: u64,
    pub messages_received: u64,
    pub bytes_received: u64,
    pub dropped_frames: u64,
}

/// What this shard read from one node's links: counters a link's reader
/// bumps once per read, never behind a lock.
/// Owned by its shard; never crosses cores.
#[derive(Debug, Default)]
pub struct Inbound {
    pub open: Cell<u32>,
    pub last_heard: Cell<Option<Instant>>,
    pub messages: Cell<u64>,
    pub bytes: Cell<u64>,
}

/// Where each node of the cluster listens for links.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peers {
    pub addrs: HashMap<NodeId, SocketAddr>,
}

crate::shard::local::shard_local!(Links);

/// One shard's links to the other nodes, and where those nodes are.
/// Owned by its shard; never crosses cores.
pub struct Links {
    /// The shard these links belong to (their writers read its epoch).
    shard: Rc<Shard>,
    peers: Arc<Peers>,
    out: HashMap<NodeId, Rc<Outbound>>,
    /// What the links other nodes opened to this shard delivered, by node.
    inbound: HashMap<NodeId, Rc<Inbound>>,
    /// Tells the control plane what the links see: a link from a node
    /// ended (`false`: it may be gone) or began (`true`).
    report: Box<dyn Fn(NodeId, bool)>,
}

impl Links {
    pub fn new(shard: Rc<Shard>, peers: Arc<Peers>, report: Box<dyn Fn(NodeId, bool)>) -> Links {
        Links {
            shard,
            peers,
            out: HashMap::new(),
            inbound: HashMap::new(),
            report,
        }
    }

    /// Frames dropped on every link of this shard (for `/v1/stats`).
    pub fn dropped_frames(&self) -> u64 {
        self.out.values().map(|l| l.dropped_frames.get()).sum()
    }

    /// Links of this shard that are connected now.
    pub fn up(&self) -> usize {
        self.out.values().filter(|l| l.is_up()).count()
    }
}

/// This shard's view of its links, by node (empty on a node without
/// links).
pub fn stats() -> Vec<LinkStats> {
    let Some(links) = try_this_shard() else {
        return Vec::new();
    };
    let links = links.borrow();
    let mut by_node: BTreeMap<NodeId, LinkStats> = BTreeMap::new();
    for (&node, out) in &links.out {
        let s = by_node.entry(node).or_insert_with(|| LinkStats {
            node,
            ..LinkStats::default()
        });
        s.out_up = out.is_up();
        s.messages_sent = out.messages_sent.get();
        s.bytes_sent = out.bytes_sent.get();
        s.dropped_frames = out.dropped_frames.get();
    }
    for (&node, inbound) in &links.inbound {
        let s = by_node.entry(node).or_insert_with(|| LinkStats {
            node,
            ..LinkStats::default()
        });
        s.in_open = inbound.open.get();
        s.last_heard_ms = inbound
            .last_heard
            .get()
            .map(|t| t.elapsed().as_millis() as u64);
        s.messages_received = inbound.messages.get();
        s.bytes_received = inbound.bytes.get();
    }
    by_node.into_values().collect()
}

/// The counters of what this shard reads from `node`'s links.
fn inbound_of(node: NodeId) -> Rc<Inbound> {
    this_shard()
        .borrow_mut()
        .inbound
        .entry(node)
        .or_default()
        .clone()
}

/// Takes a new registry of node addresses: links follow their node's new
/// address; links to nodes no longer listed close.
pub fn set_peers(peers: Arc<Peers>) {
    let mut links = this_shard().borrow_mut();
    links.out.retain(|node, link| match peers.addrs.get(node) {
        Some(addr) => {
            link.addr.set(Some(*addr));
            true
        }
        None => {
            link.close();
            false
        }
    });
    links.peers = peers;
    drop(links);
    watch_every_peer();
}

/// Keeps a link open from shard 0 to every peer, whatever the traffic: its
/// heartbeats are how each peer can tell within the silence timeout that
/// this node died or stopped (and report it), even a peer this node has
/// no reason to send anything to. The other shards open theirs on first
/// use.
pub fn watch_every_peer() {
    let nodes: Vec<NodeId> = {
        let links = this_shard().borrow();
        if links.shard.id != 0 {
            return;
        }
        links.peers.addrs.keys().copied().collect()
    };
    for node in nodes {
        link_to(node);
    }
}

/// Sends `msg` from shard `from_core` of this node to shard `to.core` of
/// node `to.node`. Never waits: the frame joins the link's next batch.
/// (The runtime's `Handlers::send_remote` on a clustered node.)
pub fn send(shard: &Shard, to: Addr, msg: Msg) {
    debug_assert_ne!(to.node, shard.node_id, "a local message on a node link");
    let link = link_to(to.node);
    let epoch = shard.epoch();
    link.messages_sent.set(link.messages_sent.get() + 1);
    link.push(|buf| {
        if let Err(e) = frame::encode_message(buf, epoch, shard.id, to.core, &msg) {
            tracing::error!(?to, "a message that cannot cross a link ({e}): dropped");
        }
    });
}

/// This shard's link to `node`, opened (and its writer started) on first use.
fn link_to(node: NodeId) -> Rc<Outbound> {
    let mut links = this_shard().borrow_mut();
    if let Some(link) = links.out.get(&node) {
        return link.clone();
    }
    let addr = links.peers.addrs.get(&node).copied();
    if addr.is_none() {
        tracing::warn!(node, "no link address for a node: its messages wait");
    }
    let link = Outbound::new(node, addr);
    links.out.insert(node, link.clone());
    let shard = links.shard.clone();
    drop(links);
    let (me, key, epoch_of) = (shard.node_id, shard.node.ticket_key.clone(), shard.clone());
    let restored = move || crate::cluster::on_link_restored(&shard, node);
    glommio::spawn_local(outbound::run(
        link.clone(),
        me,
        key,
        move || epoch_of.epoch(),
        restored,
    ))
    .detach();
    link
}

/// Accepts links from other nodes for as long as the shard runs. Not until
/// a drain (`shard.stop`, which ends the gateway's and the Web API's
/// accepting): a drained node still owns its channels and users until it
/// leaves the placement, and the other nodes' shards open their links to
/// it on first use.
pub async fn serve(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    if let Some(node) = inbound::serve(&shard, stream).await {
                        (this_shard().borrow().report)(node, false);
                        crate::cluster::on_link(&shard, node, false);
                    }
                })
                .detach();
            }
            Err(e) => {
                tracing::warn!(shard = shard.id, "link accept failed: {e}");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}
