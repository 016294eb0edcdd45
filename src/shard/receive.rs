//! Drains the mesh queues into the node's handlers: answers complete the
//! requests waiting for them here, every other message goes to
//! [`Handlers::dispatch`](super::Handlers), and after each batch
//! [`Handlers::after_batch`](super::Handlers) runs (the gateway flushes the
//! connections that batch queued frames on: one write per connection per
//! batch).

use std::rc::Rc;

use futures_lite::future;
use glommio::channels::shared_channel::ConnectedReceiver;

use super::message::{Msg, ShardId};
use super::Shard;
use crate::limits;
use crate::placement::Addr;

/// Handles one message from shard `from` of this node (or, for
/// `PassedOn`, from the shard it names). Never waits.
fn handle(shard: &Rc<Shard>, from: ShardId, msg: Msg) {
    shard.mesh.count_received();
    match msg {
        Msg::PassedOn { from, msg } => passed_on(shard, from, *msg),
        other => deliver(shard, shard.here(from), other),
    }
}

/// Handles a message another shard sent this one and a third passed on
/// (read from a node link here, or routed by another shard).
pub fn passed_on(shard: &Rc<Shard>, from: Addr, msg: Msg) {
    deliver(shard, from, msg);
}

fn deliver(shard: &Rc<Shard>, from: Addr, msg: Msg) {
    match msg {
        Msg::Reply { req, reply } => shard.complete(req, reply),
        other => (shard.handlers.dispatch)(shard, from, other),
    }
}

/// Drains the queue from peer `from` until it closes (the peer stopped).
/// Handles up to a batch of messages, then runs the after-batch handler.
pub async fn receive_from(shard: Rc<Shard>, from: ShardId, rx: ConnectedReceiver<Msg>) {
    while let Some(msg) = rx.recv().await {
        handle(&shard, from, msg);
        for _ in 1..limits::MESH_BATCH_MESSAGES_MAX {
            match future::poll_once(rx.recv()).await {
                Some(Some(msg)) => handle(&shard, from, msg),
                _ => break,
            }
        }
        (shard.handlers.after_batch)();
    }
}

/// Drains the messages this shard sends itself.
pub async fn receive_local(shard: Rc<Shard>) {
    loop {
        let msg = shard.mesh.recv_local().await;
        handle(&shard, shard.id, msg);
        for _ in 1..limits::MESH_BATCH_MESSAGES_MAX {
            match shard.mesh.try_recv_local() {
                Some(msg) => handle(&shard, shard.id, msg),
                None => break,
            }
        }
        (shard.handlers.after_batch)();
        // Let sockets run between batches of local work.
        glommio::yield_if_needed().await;
    }
}
