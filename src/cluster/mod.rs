//! The cluster (docs/CLUSTER.md): many nodes, one placement.
//!
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
pub mod health;
pub mod keys;
pub mod published;
pub mod record;
