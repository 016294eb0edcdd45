//! The mesh: an SPSC queue for every ordered pair of shards (N×N, glommio
//! `shared_channel`, lock-free), plus a local queue for messages a shard
//! sends itself, so that every message is handled the same way and in the
//! same order whether its destination is local or not.
//!
//! Handlers never wait on a full queue: a message that does not fit goes to
//! the sender's outbox for that peer and a pump task moves it when there is
//! room. Waiting inside a handler could deadlock two shards that wait on
//! each other; outboxes cannot. What bounds the outboxes is the edges:
//! sockets and HTTP handlers stop reading while an outbox is over its high
//! water mark ([`Mesh::congested`]).
//!
//! Measured (benches/mesh.rs, 32 B messages, two pinned executors):
//! glommio's shared_channel 25–33 M msg/s one way, crossbeam ArrayQueue
//! with a waker 17–41 M/s (noisy), flume 8.6–9.6 M/s; round trips are
//! dominated by the executor wake, not the queue. shared_channel is the
//! steadiest and cheapest per burst, so it is the mesh.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use glommio::channels::shared_channel::{
    ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender,
};
use glommio::GlommioError;

use super::message::{Msg, ShardId};
use super::notify::Notify;
use crate::limits;

/// The unconnected ends of one shard's queues, built on the main thread and
/// moved to the shard's executor.
pub struct MeshEnds {
    /// `to[j]`: sender to shard j (`None` for itself).
    pub to: Vec<Option<SharedSender<Msg>>>,
    /// `from[i]`: receiver from shard i (`None` for itself).
    pub from: Vec<Option<SharedReceiver<Msg>>>,
}

/// Builds every shard's ends: `result[i]` goes to shard i.
pub fn build(shards: usize) -> Vec<MeshEnds> {
    let mut ends: Vec<MeshEnds> = (0..shards)
        .map(|_| MeshEnds {
            to: (0..shards).map(|_| None).collect(),
            from: (0..shards).map(|_| None).collect(),
        })
        .collect();
    for i in 0..shards {
        for j in 0..shards {
            if i != j {
                let (tx, rx) =
                    glommio::channels::shared_channel::new_bounded(limits::MESH_QUEUE_MESSAGES);
                ends[i].to[j] = Some(tx);
                ends[j].from[i] = Some(rx);
            }
        }
    }
    ends
}

/// One shard's side of the mesh.
/// Owned by its shard; never crosses cores (the queues it holds do).
pub struct Mesh {
    me: ShardId,
    senders: Vec<Option<ConnectedSender<Msg>>>,
    /// Per destination: messages waiting for queue room, in order.
    outboxes: Vec<RefCell<VecDeque<Msg>>>,
    pumps: Vec<Notify>,
    /// Per destination: the pump holds a message it is waiting to send, so
    /// new messages must queue behind it to keep FIFO order.
    in_flight: Vec<Cell<bool>>,
    local: RefCell<VecDeque<Msg>>,
    local_notify: Notify,
    sent: Cell<u64>,
    received: Cell<u64>,
}

impl Mesh {
    /// Connects this shard's ends; returns the mesh and the receivers to
    /// drain (index = sending shard).
    pub async fn connect(
        me: ShardId,
        ends: MeshEnds,
    ) -> (Mesh, Vec<(ShardId, ConnectedReceiver<Msg>)>) {
        // Connecting waits for the peer to connect its end, so connect all
        // ends concurrently.
        let send_tasks: Vec<_> = ends
            .to
            .into_iter()
            .map(|s| s.map(|s| glommio::spawn_local(s.connect())))
            .collect();
        let recv_tasks: Vec<_> = ends
            .from
            .into_iter()
            .enumerate()
            .filter_map(|(i, r)| r.map(|r| (i as ShardId, glommio::spawn_local(r.connect()))))
            .collect();
        let mut senders = Vec::with_capacity(send_tasks.len());
        for t in send_tasks {
            senders.push(match t {
                Some(t) => Some(t.await),
                None => None,
            });
        }
        let mut receivers = Vec::with_capacity(recv_tasks.len());
        for (i, t) in recv_tasks {
            receivers.push((i, t.await));
        }
        let n = senders.len();
        let mesh = Mesh {
            me,
            senders,
            outboxes: (0..n).map(|_| RefCell::new(VecDeque::new())).collect(),
            pumps: (0..n).map(|_| Notify::new()).collect(),
            in_flight: (0..n).map(|_| Cell::new(false)).collect(),
            local: RefCell::new(VecDeque::new()),
            local_notify: Notify::new(),
            sent: Cell::new(0),
            received: Cell::new(0),
        };
        (mesh, receivers)
    }

    pub fn shards(&self) -> usize {
        self.senders.len()
    }

    /// Sends `msg` to shard `to` without waiting. FIFO per destination.
    pub fn send(&self, to: ShardId, msg: Msg) {
        let to_idx = to as usize;
        assert!(to_idx < self.senders.len(), "shard {to} out of range");
        self.sent.set(self.sent.get() + 1);
        if to == self.me {
            self.local.borrow_mut().push_back(msg);
            self.local_notify.notify();
            return;
        }
        let sender = self.senders[to_idx]
            .as_ref()
            .expect("a sender for every peer");
        let mut outbox = self.outboxes[to_idx].borrow_mut();
        if !outbox.is_empty() || self.in_flight[to_idx].get() {
            outbox.push_back(msg);
            return;
        }
        match sender.try_send(msg) {
            Ok(()) => {}
            Err(GlommioError::WouldBlock(glommio::ResourceType::Channel(msg))) => {
                outbox.push_back(msg);
                self.pumps[to_idx].notify();
            }
            Err(GlommioError::Closed(_)) => {
                // The peer has stopped (shutdown): nobody is left to answer.
                tracing::debug!(to, "mesh: peer closed, message dropped");
            }
            Err(e) => panic!("unexpected mesh error: {e}"),
        }
    }

    /// True while some outbox is over its high water mark: edges should
    /// stop reading new work until it drains.
    pub fn congested(&self) -> bool {
        self.local.borrow().len() >= limits::OUTBOX_MESSAGES_HIGH_WATER
            || self
                .outboxes
                .iter()
                .any(|o| o.borrow().len() >= limits::OUTBOX_MESSAGES_HIGH_WATER)
    }

    pub fn outbox_len(&self) -> usize {
        self.local.borrow().len()
            + self
                .outboxes
                .iter()
                .map(|o| o.borrow().len())
                .sum::<usize>()
    }

    /// Moves outbox `to` into its queue as room appears. One task per peer.
    pub async fn pump(self: &Rc<Self>, to: ShardId) {
        let idx = to as usize;
        let sender = self.senders[idx].as_ref().expect("a sender for every peer");
        loop {
            self.pumps[idx].wait().await;
            loop {
                let msg = match self.outboxes[idx].borrow_mut().pop_front() {
                    Some(m) => m,
                    None => break,
                };
                self.in_flight[idx].set(true);
                let sent = sender.send(msg).await;
                self.in_flight[idx].set(false);
                if sent.is_err() {
                    return; // peer gone: shutting down
                }
            }
        }
    }

    /// Takes the next local message, waiting for one.
    pub async fn recv_local(&self) -> Msg {
        loop {
            if let Some(m) = self.local.borrow_mut().pop_front() {
                return m;
            }
            self.local_notify.wait().await;
        }
    }

    pub fn try_recv_local(&self) -> Option<Msg> {
        self.local.borrow_mut().pop_front()
    }

    pub fn count_received(&self) {
        self.received.set(self.received.get() + 1);
    }

    pub fn sent(&self) -> u64 {
        self.sent.get()
    }

    pub fn received(&self) -> u64 {
        self.received.get()
    }
}
