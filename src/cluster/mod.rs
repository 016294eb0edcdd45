//! The cluster (docs/CLUSTER.md): many nodes, one placement.
//!
//! - [`link`] — node links: length-prefixed binary frames over TCP between
//!   the shards of two nodes, batched, heartbeated, stamped with the epoch.
//! - [`relay`] — on a node that watches a channel owned elsewhere, the one
//!   local shard that subscribes to it once and fans its events out here.
//! - [`fixed`] — a cluster written in a file (no control plane).
//! - [`record`] — what a node registers about itself ([`record::NodeRecord`]).
//! - [`region`] — regions and their drains: the node records every shard
//!   sees, the drain in force, where a drained client goes.
//! - [`keys`] — the etcd key layout.
//! - [`published`] — the placement as published in etcd (JSON).
//! - [`charm`] — CHARM's placement rule: grow, replace, shrink; pure.
//! - [`health`] — which registered nodes count as failed; pure.
//! - `control` (feature `cluster`) — the control thread: etcd-client on a
//!   current-thread tokio runtime beside the shards' executors; node ids,
//!   registration under a lease, the CHARM election, publishing and
//!   following the placement.
//!
//! The pure parts build without the feature, so their tests run in every
//! build; only the etcd client needs `protoc`.

pub mod charm;
#[cfg(feature = "cluster")]
pub mod control;
pub mod fixed;
pub mod health;
pub mod keys;
pub mod link;
pub mod published;
pub mod record;
pub mod region;
pub mod relay;

use std::rc::Rc;
use std::sync::Arc;

use crate::placement::{NodeId, Placement};
use crate::shard::message::{Msg, ShardId};
use crate::shard::Shard;

/// A link from `node` ended (closed, reset, or silent too long) or began,
/// on this shard (the one that accepted it). That link carried messages for
/// every shard of this node, so every shard hears of it
/// ([`on_link_changed`]). If the node is gone, the control plane (told by
/// the link) publishes a placement without it, and that takes over.
pub fn on_link(shard: &Rc<Shard>, node: NodeId, up: bool) {
    if up {
        tracing::debug!(shard = shard.id, node, "link from node up");
    } else {
        tracing::warn!(shard = shard.id, node, "link from node lost");
    }
    for s in 0..shard.shards() as ShardId {
        if s == shard.id {
            on_link_changed(shard, node);
        } else {
            shard.send(s, Msg::LinkChanged { node });
        }
    }
}

/// A link from `node` to some shard of this node ended or began: what
/// `node` sent before may be lost, so what this shard relays from it is
/// fetched again, and the presence homes there hear again what this
/// shard's gateway told them (and tell their state again).
pub fn on_link_changed(shard: &Rc<Shard>, node: NodeId) {
    relay::on_link_changed(shard, node);
    crate::gateway::on_link_changed(shard, node);
}

/// This shard's own link to `node` connected again after it failed: what
/// the failed connection's last writes carried may be lost (a write to a
/// peer that already closed succeeds here and is dropped there). The relays
/// hear of it from the other side ([`on_link_changed`] there); the presence
/// homes on `node` hear again what this shard's gateway told them.
pub fn on_link_restored(shard: &Rc<Shard>, node: NodeId) {
    tracing::info!(shard = shard.id, node, "link to node restored");
    crate::gateway::on_link_changed(shard, node);
}

/// Swaps in a newer placement on this shard and moves what it moves: the
/// channel server claims what it gained and hands over what it lost, relays
/// follow their channels' new owners, homes drop the users they lost, and
/// gateways tell users' new homes about their connections.
pub fn apply_placement(shard: &Rc<Shard>, placement: Arc<Placement>) {
    let old = shard.placement();
    let version = placement.version();
    if let Err(current) = shard.set_placement(placement) {
        tracing::debug!(
            shard = shard.id,
            version,
            current,
            "placement not newer; kept"
        );
        return;
    }
    tracing::info!(shard = shard.id, version, "new placement");
    shard.heard_epoch(version);
    shard.fail_calls_outside(&shard.placement());
    crate::channel::ownership::on_placement(shard, &old);
    relay::on_placement(shard);
    crate::presence::on_placement(shard, &old);
    crate::directory::on_placement(shard);
    crate::gateway::on_placement(shard, &old);
    if !shard.behind() {
        crate::channel::ownership::unpark(shard);
    }
}
