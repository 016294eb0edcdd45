//! The cluster: what lets the nodes of a fleet act as one (docs/CLUSTER.md).
//!
//! - [`link`] — node links: length-prefixed binary frames over TCP between
//!   the shards of two nodes, batched, heartbeated, stamped with the epoch.
//! - [`relay`] — on a node that watches a channel owned elsewhere, the one
//!   local shard that subscribes to it once and fans its events out here.

pub mod link;
pub mod relay;
