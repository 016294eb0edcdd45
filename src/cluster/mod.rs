//! The cluster: what lets the nodes of a fleet act as one (docs/CLUSTER.md).
//!
//! - [`link`] — node links: length-prefixed binary frames over TCP between
//!   the shards of two nodes, batched, heartbeated, stamped with the epoch.
//! - [`relay`] — on a node that watches a channel owned elsewhere, the one
//!   local shard that subscribes to it once and fans its events out here.
//! - [`fixed`] — a cluster written in a file (no control plane).

pub mod fixed;
pub mod link;
pub mod relay;

use std::rc::Rc;

use crate::placement::NodeId;
use crate::shard::Shard;

/// A link from `node` ended (closed, reset, or silent too long): the node
/// may be gone. What follows is the cluster's failure handling.
pub fn on_link_lost(shard: &Rc<Shard>, node: NodeId) {
    tracing::warn!(shard = shard.id, node, "link from node lost");
}
