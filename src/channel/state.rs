//! Per-channel state of the channel server. Sixteen million of these live on
//! one host, so every byte is budgeted: the routing part is 32 bytes, the
//! history ring and the directory record are boxed and absent until needed.

use crate::channel::history::History;
use crate::ids::Id;
use crate::shard::message::ShardId;

/// The gateway shards with at least one watcher of a channel, one bit per
/// shard (a node has at most 64 shards).
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
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

/// What the directory knows of a conversation (`C…`/`G…`/`D…`). User and
/// team channels have none: their only member is themselves.
/// Owned by its shard; never crosses cores.
pub struct ChannelRecord {
    pub name: Box<str>,
    pub private: bool,
    pub created_unix_secs: u64,
    pub creator: Option<Id>,
    /// Sorted, for binary search on every client publish.
    pub members: Vec<Id>,
}

impl ChannelRecord {
    pub fn is_member(&self, user: Id) -> bool {
        self.members.binary_search(&user).is_ok()
    }

    /// Adds `user`; false if already a member.
    pub fn add(&mut self, user: Id) -> bool {
        match self.members.binary_search(&user) {
            Ok(_) => false,
            Err(i) => {
                self.members.insert(i, user);
                true
            }
        }
    }

    /// Removes `user`; false if not a member.
    pub fn remove(&mut self, user: Id) -> bool {
        match self.members.binary_search(&user) {
            Ok(i) => {
                self.members.remove(i);
                true
            }
            Err(_) => false,
        }
    }
}

/// One channel on its channel server.
/// Owned by its shard; never crosses cores.
#[derive(Default)]
pub struct Channel {
    pub gateways: GatewaySet,
    /// Last assigned ts in microseconds (0: none yet).
    pub last_ts_micros: u64,
    pub history: Option<Box<History>>,
    pub record: Option<Box<ChannelRecord>>,
}

const _: () = assert!(std::mem::size_of::<Channel>() == 32);

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
    fn members_sorted() {
        let mut r = ChannelRecord {
            name: "x".into(),
            private: false,
            created_unix_secs: 0,
            creator: None,
            members: vec![],
        };
        let (a, b) = (Id::parse("U2").unwrap(), Id::parse("U1").unwrap());
        assert!(r.add(a));
        assert!(r.add(b));
        assert!(!r.add(a));
        assert_eq!(r.members, vec![b, a]);
        assert!(r.is_member(a));
        assert!(r.remove(a));
        assert!(!r.remove(a));
    }
}
