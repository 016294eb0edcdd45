//! Sets of shards: who watches a channel or a user's presence. Shards of
//! this node are bits of one word (a node has at most 64); shards of other
//! nodes, rare and few, are a short list that exists only when needed.

use crate::placement::{Addr, NodeId};
use crate::shard::message::ShardId;

/// The gateway shards with at least one watcher of a channel, one bit per
/// shard (a node has at most 64 shards).
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GatewaySet(u64);

impl GatewaySet {
    pub fn insert(&mut self, shard: ShardId) {
        assert!(shard < 64, "at most 64 shards");
        self.0 |= 1 << shard;
    }

    pub fn remove(&mut self, shard: ShardId) {
        self.0 &= !(1 << shard);
    }

    pub fn contains(self, shard: ShardId) -> bool {
        shard < 64 && self.0 & (1 << shard) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    pub fn iter(self) -> impl Iterator<Item = ShardId> {
        let mut bits = self.0;
        std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let s = bits.trailing_zeros();
            bits &= bits - 1;
            Some(s)
        })
    }
}

/// Shards of this node and of others: a [`GatewaySet`] inline, and the
/// other nodes' shards in a boxed sorted list, absent while empty.
/// Owned by its shard; never crosses cores.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardSet {
    local: GatewaySet,
    // Boxed on purpose: 8 bytes while empty (nearly always) instead of 24.
    #[allow(clippy::box_collection)]
    remote: Option<Box<Vec<Addr>>>,
}

impl ShardSet {
    /// Adds `shard`; `me` is this node.
    pub fn insert(&mut self, me: NodeId, shard: Addr) {
        if shard.node == me {
            self.local.insert(shard.core);
            return;
        }
        let remote = self.remote.get_or_insert_with(Default::default);
        if let Err(i) = remote.binary_search(&shard) {
            remote.insert(i, shard);
        }
    }

    pub fn remove(&mut self, me: NodeId, shard: Addr) {
        if shard.node == me {
            self.local.remove(shard.core);
            return;
        }
        if let Some(remote) = &mut self.remote {
            if let Ok(i) = remote.binary_search(&shard) {
                remote.remove(i);
            }
            if remote.is_empty() {
                self.remote = None;
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.local.is_empty() && self.remote.is_none()
    }

    /// Every shard, this node's first; `me` is this node.
    pub fn iter(&self, me: NodeId) -> impl Iterator<Item = Addr> + '_ {
        self.local
            .iter()
            .map(move |core| Addr { node: me, core })
            .chain(self.remote.iter().flat_map(|r| r.iter().copied()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_set() {
        let mut s = GatewaySet::default();
        assert!(s.is_empty());
        s.insert(0);
        s.insert(5);
        s.insert(63);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 5, 63]);
        assert_eq!(s.len(), 3);
        s.remove(5);
        assert!(!s.contains(5));
        assert!(s.contains(63));
    }

    #[test]
    fn shard_set_keeps_other_nodes_apart() {
        let at = |node, core| Addr { node, core };
        let mut s = ShardSet::default();
        assert!(s.is_empty());
        s.insert(1, at(1, 3));
        s.insert(1, at(2, 0));
        s.insert(1, at(2, 0));
        s.insert(1, at(0, 5));
        assert_eq!(
            s.iter(1).collect::<Vec<_>>(),
            vec![at(1, 3), at(0, 5), at(2, 0)]
        );
        s.remove(1, at(0, 5));
        s.remove(1, at(2, 0));
        assert_eq!(s.remote, None, "the list goes when it empties");
        s.remove(1, at(1, 3));
        assert!(s.is_empty());
    }
}
