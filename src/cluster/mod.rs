//! The cluster (docs/CLUSTER.md): many nodes, one placement.
//!
//! - [`link`] — node links: length-prefixed binary frames over TCP between
//!   the shards of two nodes, batched, heartbeated, stamped with the epoch.
//! - [`relay`] — on a node that watches a channel owned elsewhere, the one
//!   local shard that subscribes to it once and fans its events out here.
//! - [`fixed`] — a cluster written in a file (no control plane).
//! - [`record`] — what a node registers about itself ([`record::NodeRecord`]).
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
pub mod relay;

use std::rc::Rc;

use crate::placement::NodeId;
use crate::shard::Shard;

/// A link from `node` ended (closed, reset, or silent too long): the node
/// may be gone. What follows is the cluster's failure handling.
pub fn on_link_lost(shard: &Rc<Shard>, node: NodeId) {
    tracing::warn!(shard = shard.id, node, "link from node lost");
}
