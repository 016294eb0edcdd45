//! The registry snapshot: every registered node as the control thread last
//! saw it, for the node links (where to connect) and the admin API. The
//! control thread swaps the whole map on each change; readers clone an
//! `Arc` under a lock held for that clone only, so a shard never waits on
//! etcd.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::lock;
use crate::cluster::record::NodeRecord;
use crate::placement::NodeId;

/// A registered node: its record and the lease it is registered under (its
/// incarnation: a restart registers under a new one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub record: NodeRecord,
    pub lease: i64,
}

/// Shared between the control thread (writer) and the node (readers).
#[derive(Clone, Default)]
pub struct Registry(Arc<Mutex<Arc<BTreeMap<NodeId, Registered>>>>);

impl Registry {
    /// The nodes registered now, by id.
    pub fn snapshot(&self) -> Arc<BTreeMap<NodeId, Registered>> {
        lock(&self.0).clone()
    }

    pub fn lease_of(&self, id: NodeId) -> Option<i64> {
        self.snapshot().get(&id).map(|r| r.lease)
    }

    pub(super) fn replace(&self, nodes: BTreeMap<NodeId, Registered>) {
        *lock(&self.0) = Arc::new(nodes);
    }

    pub(super) fn update(&self, change: impl FnOnce(&mut BTreeMap<NodeId, Registered>)) {
        let mut current = lock(&self.0);
        let mut next = (**current).clone();
        change(&mut next);
        *current = Arc::new(next);
    }
}
