//! The shard runtime: one pinned glommio executor per core, each a complete
//! share-nothing slice of the node, talking to the others only through
//! [`mesh`] messages ([`message::Msg`]).
//!
//! A [`Shard`] is the context every task on one core holds (`Rc<Shard>`):
//! its identity, the node's settings, the ring, the mesh, and the requests
//! waiting for answers. It knows no role: the roles above it (channel
//! server, gateway, presence, directory) keep their state in their own
//! modules ([`local`]), and the node hands the shard the function that
//! routes a message to its role ([`Handlers`]). Handlers of mesh messages
//! are synchronous: they change local state and send messages, never wait,
//! so no borrow is held across an `.await` and two shards can never wait on
//! each other.

pub mod local;
pub mod mesh;
pub mod message;
pub mod notify;
pub mod receive;
pub mod set;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use futures_channel::oneshot;

use crate::config::Config;
use crate::http::StopSignal;
use crate::ids::Id;
use crate::limits;
use crate::placement::{Addr, NodeId, Placement};
use crate::ticket::TicketKey;
use mesh::Mesh;
use message::{Answer, Msg, Reply, ReplyTo, ReqId, ShardId};

/// What every shard knows about the node, read-only, shared by `Arc`.
pub struct NodeInfo {
    pub config: Config,
    pub ticket_key: TicketKey,
    pub admin_token: String,
    /// Base of the websocket URLs we hand out, e.g. `ws://127.0.0.1:7770`.
    pub gateway_url: String,
    pub team: Id,
    pub team_name: String,
    /// The durable store (a handle; its threads run off the executors).
    pub store: crate::store::Store,
    /// The newest epoch this node has heard of (from the control plane, or
    /// in a peer's link frames): a shard behind it holds what depends on
    /// the placement until its own catches up, rather than act on an old
    /// one (`Shard::behind`).
    pub newest_epoch: std::sync::atomic::AtomicU64,
    /// Where the admin API sends region drain requests: the control
    /// thread (a node with a control plane only).
    pub drains: Option<crate::cluster::region::DrainCommands>,
}

/// Per-shard event counters, for `/v1/stats` and `/metrics`.
/// Owned by its shard; never crosses cores.
#[derive(Default)]
pub struct Counters {
    pub events_in: Cell<u64>,
    pub events_out: Cell<u64>,
    pub deliveries: Cell<u64>,
    pub slow_consumers: Cell<u64>,
}

impl Counters {
    pub fn add(cell: &Cell<u64>, n: u64) {
        cell.set(cell.get() + n);
    }
}

/// What the node gives the runtime to run its roles: where each message
/// goes, and what follows a batch of them.
#[derive(Clone, Copy)]
pub struct Handlers {
    /// Handles one message (never an answer: the runtime completes those)
    /// from a shard of this node or another. Never waits.
    pub dispatch: fn(&Rc<Shard>, Addr, Msg),
    /// Runs after each batch of messages (the gateway's write flush).
    pub after_batch: fn(),
    /// Sends a message to a shard of another node (its node link).
    pub send_remote: fn(&Shard, Addr, Msg),
}

/// One core's slice of the node: the runtime every role of the core uses.
/// Owned by its shard; never crosses cores.
pub struct Shard {
    pub id: ShardId,
    /// This node's number in the cluster (0 for a single node).
    pub node_id: NodeId,
    pub node: Arc<NodeInfo>,
    /// Who owns what, and the epoch; swapped whole when the cluster changes.
    placement: RefCell<Arc<Placement>>,
    pub mesh: Rc<Mesh>,
    pub handlers: Handlers,
    pub counters: Counters,
    /// Triggered when the shard drains: listeners stop accepting.
    pub stop: StopSignal,
    /// Requests waiting for their answer, and the node each went to.
    calls: RefCell<HashMap<ReqId, (NodeId, oneshot::Sender<Reply>)>>,
    next_req: Cell<ReqId>,
}

/// A request to another shard failed to get an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallError {
    /// No answer within [`limits::SHARD_REQUEST_TIMEOUT`] (the peer stopped,
    /// or a link to it failed).
    Timeout,
}

/// How a message reaches the owner of an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// A shard of this node: the mesh.
    Local(ShardId),
    /// Another node: its link.
    Remote(Addr),
}

/// How long the answer to a request may take.
const CALL_TIMEOUT: std::time::Duration = limits::SHARD_REQUEST_TIMEOUT;

impl Shard {
    pub fn new(
        id: ShardId,
        node_id: NodeId,
        node: Arc<NodeInfo>,
        placement: Arc<Placement>,
        mesh: Rc<Mesh>,
        handlers: Handlers,
    ) -> Shard {
        Shard {
            id,
            node_id,
            placement: RefCell::new(placement),
            mesh,
            handlers,
            counters: Counters::default(),
            stop: StopSignal::new(),
            calls: RefCell::new(HashMap::new()),
            next_req: Cell::new(1),
            node,
        }
    }

    pub fn shards(&self) -> usize {
        self.mesh.shards()
    }

    /// Whether this node is part of a cluster (node ids start at 1; a
    /// single node is node 0).
    pub fn clustered(&self) -> bool {
        self.node_id != 0
    }

    /// The placement this shard works with now.
    pub fn placement(&self) -> Arc<Placement> {
        self.placement.borrow().clone()
    }

    /// The epoch: the version of the placement in force here.
    pub fn epoch(&self) -> u64 {
        self.placement.borrow().version()
    }

    /// Swaps in a newer placement. An older or equal one is a bug upstream
    /// (placements only move forward) and is refused.
    pub fn set_placement(&self, placement: Arc<Placement>) -> Result<(), u64> {
        let mut current = self.placement.borrow_mut();
        if placement.version() <= current.version() {
            return Err(current.version());
        }
        *current = placement;
        Ok(())
    }

    /// Where channel (or user) `id` is owned: its channel server, and for
    /// users their home (directory and presence), as (node, core).
    #[inline]
    pub fn owner_addr(&self, id: Id) -> Addr {
        self.placement.borrow().owner(id.raw())
    }

    /// How to reach the owner of `id` from here.
    #[inline]
    pub fn route(&self, id: Id) -> Route {
        let owner = self.owner_addr(id);
        if owner.node == self.node_id {
            Route::Local(owner.core)
        } else {
            Route::Remote(owner)
        }
    }

    /// The shard of this node that serves `id`: its owner, when this node
    /// owns it; otherwise the shard that relays it from its owner's node
    /// (the same core number, within this node's shards), so every local
    /// subscriber of a remote channel goes through one shard.
    #[inline]
    pub fn owner(&self, id: Id) -> ShardId {
        let owner = self.owner_addr(id);
        if owner.node == self.node_id {
            owner.core
        } else {
            owner.core % self.shards() as ShardId
        }
    }

    pub fn send(&self, to: ShardId, msg: Msg) {
        self.mesh.send(to, msg);
    }

    /// Sends `msg` to the owner of `id` (channel server, or a user's home):
    /// the local mesh, or the node link to the owner's node.
    pub fn send_owner(&self, id: Id, msg: Msg) {
        self.send_to(self.owner_addr(id), msg);
    }

    /// Sends `msg` to shard `to.core` of node `to.node`: the mesh for this
    /// node, a node link for another.
    pub fn send_to(&self, to: Addr, msg: Msg) {
        if to.node == self.node_id {
            self.send(to.core, msg);
        } else {
            (self.handlers.send_remote)(self, to, msg);
        }
    }

    /// This node's shard `core`, as an address other nodes understand.
    pub fn here(&self, core: ShardId) -> Addr {
        Addr {
            node: self.node_id,
            core,
        }
    }

    /// Sends a request to shard `to` of this node *now* (before the
    /// returned future is first polled, so requests keep the order they are
    /// made in) and returns its answer. `build` gets where the answer must
    /// go; its type fixes the answer's, so a handler cannot answer with
    /// another kind. The local shard is a valid destination.
    pub fn call<T: Answer + 'static>(
        self: &Rc<Self>,
        to: ShardId,
        build: impl FnOnce(ReplyTo<T>) -> Msg,
    ) -> impl std::future::Future<Output = Result<T, CallError>> + 'static {
        self.call_at(self.here(to), build)
    }

    /// [`Shard::call`] to the owner of `id`: the one way requests reach a
    /// channel's server or a user's home, over the local mesh or a node
    /// link.
    pub fn call_owner<T: Answer + 'static>(
        self: &Rc<Self>,
        id: Id,
        build: impl FnOnce(ReplyTo<T>) -> Msg,
    ) -> impl std::future::Future<Output = Result<T, CallError>> + 'static {
        self.call_at(self.owner_addr(id), build)
    }

    /// [`Shard::call`] to shard `to.core` of node `to.node`: the mesh or a
    /// node link, the answer coming back the same way.
    pub fn call_at<T: Answer + 'static>(
        self: &Rc<Self>,
        to: Addr,
        build: impl FnOnce(ReplyTo<T>) -> Msg,
    ) -> impl std::future::Future<Output = Result<T, CallError>> + 'static {
        let req = self.next_req.get();
        self.next_req.set(req + 1);
        let (tx, rx) = oneshot::channel();
        self.calls.borrow_mut().insert(req, (to.node, tx));
        self.send_to(to, build(ReplyTo::new(self.node_id, self.id, req)));
        let shard = self.clone();
        async move {
            let answer = glommio::timer::timeout(CALL_TIMEOUT, async {
                rx.await
                    .map_err(|_| glommio::GlommioError::from(std::io::Error::other("dropped")))
            })
            .await;
            let reply = match answer {
                Ok(reply) => reply,
                Err(_) => {
                    shard.calls.borrow_mut().remove(&req);
                    return Err(CallError::Timeout);
                }
            };
            // `ReplyTo<T>` is answered only with a `T` (`Shard::reply`), and
            // `answers!` wraps each type in one variant: this cannot fail.
            T::from_reply(reply).map_err(|other| {
                tracing::error!(?other, "an answer of the wrong kind");
                CallError::Timeout
            })
        }
    }

    /// Answers a request, on whichever node it came from; the answer's type
    /// is the one the caller waits for.
    pub fn reply<T: Answer>(&self, to: ReplyTo<T>, answer: T) {
        let msg = Msg::Reply {
            req: to.req,
            reply: answer.into_reply(),
        };
        self.send_to(
            Addr {
                node: to.node,
                core: to.shard,
            },
            msg,
        );
    }

    /// Completes the request `req` with its answer (`receive`).
    fn complete(&self, req: ReqId, reply: Reply) {
        if let Some((_, tx)) = self.calls.borrow_mut().remove(&req) {
            let _ = tx.send(reply);
        }
    }

    /// Fails at once every request waiting on a node the placement no
    /// longer has (it failed): its callers answer "busy" now rather than
    /// after the request timeout, and a retry reaches the new owner.
    pub fn fail_calls_outside(&self, placement: &Placement) {
        let nodes = placement.nodes();
        let me = self.node_id;
        // Dropping a sender completes its receiver with an error.
        self.calls
            .borrow_mut()
            .retain(|_, (node, _)| *node == me || nodes.contains(node));
    }

    /// Whether this node has heard of a newer placement than this shard
    /// holds (it is on its way here).
    pub fn behind(&self) -> bool {
        self.node
            .newest_epoch
            .load(std::sync::atomic::Ordering::Relaxed)
            > self.epoch()
    }

    /// Notes an epoch heard of (a peer's frame, the control plane).
    pub fn heard_epoch(&self, epoch: u64) {
        self.node
            .newest_epoch
            .fetch_max(epoch, std::sync::atomic::Ordering::Relaxed);
    }

    /// Groups ids by the shard of this node that serves them (owner or
    /// relay, [`Shard::owner`]), keeping their order within each group.
    pub fn group_by_owner(&self, ids: impl IntoIterator<Item = Id>) -> Vec<(ShardId, Vec<Id>)> {
        group_by(ids, |id| self.owner(id))
    }

    /// Groups ids by where they are owned, in the cluster (a user's home
    /// may be on another node), keeping their order within each group.
    pub fn group_by_owner_addr(&self, ids: impl IntoIterator<Item = Id>) -> Vec<(Addr, Vec<Id>)> {
        group_by(ids, |id| self.owner_addr(id))
    }
}

/// Groups `ids` by `key`, in first-seen order of keys and ids.
fn group_by<K: PartialEq>(
    ids: impl IntoIterator<Item = Id>,
    key: impl Fn(Id) -> K,
) -> Vec<(K, Vec<Id>)> {
    let mut groups: Vec<(K, Vec<Id>)> = Vec::new();
    for id in ids {
        let k = key(id);
        match groups.iter_mut().find(|(g, _)| *g == k) {
            Some((_, v)) => v.push(id),
            None => groups.push((k, vec![id])),
        }
    }
    groups
}
