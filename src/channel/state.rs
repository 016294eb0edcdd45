//! Per-channel state of the channel server. Sixteen million of these live on
//! one host, so every byte is budgeted: 48 bytes a channel (plus its id and
//! 5 bytes of table in [`crate::idtable::IdTable`]), one member inline, the
//! history ring boxed and absent until the channel's first event.

use crate::channel::history::History;
use crate::ids::Id;
pub use crate::shard::set::GatewaySet;
use crate::sortedset::SortedSet;

/// What the channel server needs of a conversation (`C…`/`G…`/`D…`): who
/// may post and be told it exists. User and team channels have none: their
/// only member is themselves. Its name, topic, creator and creation time
/// are read from the store by the Web API and never from here, so they are
/// not kept in memory (with the name index they cost 100 bytes a channel,
/// 1.6 GB at 16 million: benches/channel_density.rs); names are unique
/// per team by the store's UNIQUE (team_id, name), checked before any
/// cache hears of a new conversation.
/// Owned by its shard; never crosses cores.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChannelRecord {
    /// Sorted, for binary search on every client publish.
    pub members: SortedSet<Id>,
    pub private: bool,
}

impl ChannelRecord {
    pub fn is_member(&self, user: Id) -> bool {
        self.members.contains(user)
    }

    /// Adds `user`; false if already a member.
    pub fn add(&mut self, user: Id) -> bool {
        self.members.insert(user)
    }

    /// Removes `user`; false if not a member.
    pub fn remove(&mut self, user: Id) -> bool {
        self.members.remove(user)
    }
}

/// One channel on its channel server: the routing part every channel has,
/// and the record of a conversation inline (a box would cost its pointer
/// and one allocation per channel for 17 bytes).
/// Owned by its shard; never crosses cores.
#[derive(Default)]
pub struct Channel {
    pub gateways: GatewaySet,
    /// Last assigned ts in microseconds (0: none yet).
    pub last_ts_micros: u64,
    pub history: Option<Box<History>>,
    pub record: Option<ChannelRecord>,
}

const _: () = assert!(std::mem::size_of::<Channel>() == 48);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_sorted() {
        let mut r = ChannelRecord::default();
        let (a, b) = (Id::parse("U2").unwrap(), Id::parse("U1").unwrap());
        assert!(r.add(a));
        assert!(r.add(b));
        assert!(!r.add(a));
        assert_eq!(r.members.as_slice(), [b, a]);
        assert!(r.is_member(a));
        assert!(r.remove(a));
        assert!(!r.remove(a));
        assert!(r.is_member(b));
    }
}
