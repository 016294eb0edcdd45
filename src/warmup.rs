//! Filling the shards' caches from the store at start: each user goes to
//! its home shard's directory, each conversation (privacy, members) to its
//! channel server, and each channel's newest stored ts to its owner so ts
//! keep increasing across restarts. Runs before the executors start.
//!
//! A host holds ~16 million conversations, so this builds each shard's
//! channel entries in their final form, in one `Vec` per shard that the
//! shard adopts as it is ([`crate::channel::ChannelServer::load`]): no
//! global map, no per-channel allocation, nothing to copy or free after.
//! Memberships are read in channel id order, the order of those `Vec`s once
//! sorted, so attaching them is a walk, not a lookup per row.

use crate::channel::state::{Channel, ChannelRecord};
use crate::directory::User;
use crate::ids::Id;
use crate::placement::{NodeId, Placement};
use crate::store::{Store, StoreError};

/// One shard's share of the stored state. Built on a store reader thread
/// and moved to its shard before that shard starts; the shard owns all of
/// it from then on.
#[derive(Default)]
pub struct Warm {
    pub users: Vec<(Id, User)>,
    /// Sorted by id.
    pub channels: Vec<(Id, Channel)>,
    pub last_ts: Vec<(Id, u64)>,
    /// Timer entries of the pending scheduled messages of its channels.
    pub scheduled: Vec<crate::schedule::timers::Entry>,
}

/// Reads everything the caches of node `node` hold and splits it by owning
/// shard; what other nodes own is left to them. Pending scheduled messages
/// only on a single node: in a cluster (`node` is not 0) ownership moves,
/// and each claimed member's are loaded with the claim instead
/// (`channel::ownership`, `schedule::load_member`).
pub fn load(
    store: &Store,
    placement: &Placement,
    node: NodeId,
    shards: usize,
) -> Result<Vec<Warm>, StoreError> {
    let clustered = node != 0;
    let placement = placement.clone();
    // The shard of this node that owns `key`, if this node owns it.
    let shard_of = move |key: u64| {
        let owner = placement.owner(key);
        (owner.node == node).then_some(owner.core as usize)
    };
    store.read_blocking(move |tx| {
        let mut out: Vec<Warm> = (0..shards).map(|_| Warm::default()).collect();
        let mut users: crate::ids::IdMap<User> = Default::default();
        tx.each_user(&mut |u, hash| {
            let (Some(id), Some(team)) = (Id::parse(&u.id), Id::parse(&u.team_id)) else {
                tracing::warn!(user = %u.id, "skipping a stored user with an invalid id");
                return;
            };
            users.insert(
                id,
                User {
                    team,
                    name: u.name.into_boxed_str(),
                    is_bot: u.is_bot,
                    token_hash: hash.unwrap_or([0; 32]),
                    channels: Vec::new(),
                },
            );
        })?;
        tx.each_channel_id(&mut |id, private| {
            let Some(id) = Id::parse(id) else {
                tracing::warn!(channel = %id, "skipping a stored channel with an invalid id");
                return;
            };
            let channel = Channel {
                record: Some(ChannelRecord {
                    private,
                    ..ChannelRecord::default()
                }),
                ..Channel::default()
            };
            if let Some(owner) = shard_of(id.raw()) {
                out[owner].channels.push((id, channel));
            }
        })?;
        for w in &mut out {
            w.channels.sort_unstable_by_key(|(id, _)| *id);
        }
        let mut cursors = vec![0usize; shards];
        tx.each_member(&mut |c, u| {
            let (Some(c), Some(u)) = (Id::parse(c), Id::parse(u)) else {
                return;
            };
            if let Some(owner) = shard_of(c.raw()) {
                if let Some(channel) = find(&mut out[owner].channels, &mut cursors[owner], c) {
                    if let Some(record) = channel.record.as_mut() {
                        record.add(u);
                    }
                }
            }
            if let Some(user) = users.get_mut(&u) {
                user.channels.push(c);
            }
        })?;
        tx.each_channel_max_ts(&mut |c, ts| {
            if let Some((id, owner)) = Id::parse(c).and_then(|id| Some((id, shard_of(id.raw())?))) {
                out[owner].last_ts.push((id, ts.max(0) as u64));
            }
        })?;
        if !clustered {
            tx.each_scheduled(&mut |id, c, post_at_secs| {
                if let Some((channel, owner)) =
                    Id::parse(c).and_then(|c| Some((c, shard_of(c.raw())?)))
                {
                    out[owner]
                        .scheduled
                        .push(crate::schedule::timers::Entry::new(
                            post_at_secs,
                            channel,
                            id,
                        ));
                }
            })?;
        }
        for (id, mut user) in users {
            // Grown by doubling while memberships were read: up to half of
            // it spare, for as long as the server runs.
            user.channels.shrink_to_fit();
            if let Some(owner) = shard_of(id.raw()) {
                out[owner].users.push((id, user));
            }
        }
        // This thread's temporary buffers (the users' map, the lists'
        // earlier sizes) are free now; without this they stay resident.
        crate::heap::release_now();
        Ok(out)
    })
}

/// The entry of `id` in `list` (sorted by id), starting at `cursor` and
/// leaving it there: memberships come in channel id order, so this is a
/// step forward almost every time. Falls back to a binary search when they
/// do not (a membership of a channel that is not listed).
fn find<'a>(list: &'a mut [(Id, Channel)], cursor: &mut usize, id: Id) -> Option<&'a mut Channel> {
    while *cursor < list.len() && list[*cursor].0 < id {
        *cursor += 1;
    }
    if list.get(*cursor).is_some_and(|(c, _)| *c == id) {
        return Some(&mut list[*cursor].1);
    }
    let i = list.binary_search_by_key(&id, |(c, _)| *c).ok()?;
    *cursor = i;
    Some(&mut list[i].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(ids: &[&str]) -> Vec<(Id, Channel)> {
        ids.iter()
            .map(|s| (Id::parse(s).unwrap(), Channel::default()))
            .collect()
    }

    #[test]
    fn find_walks_forward_and_searches_when_out_of_order() {
        let mut l = list(&["C1", "C3", "C5", "C7"]);
        let mut cursor = 0;
        let id = |s| Id::parse(s).unwrap();
        assert!(find(&mut l, &mut cursor, id("C1")).is_some());
        assert!(find(&mut l, &mut cursor, id("C5")).is_some());
        assert_eq!(cursor, 2);
        assert!(find(&mut l, &mut cursor, id("C6")).is_none());
        assert!(
            find(&mut l, &mut cursor, id("C3")).is_some(),
            "out of order"
        );
        assert_eq!(cursor, 1);
        assert!(find(&mut l, &mut cursor, id("C7")).is_some());
        assert!(find(&mut l, &mut cursor, id("C9")).is_none());
        assert!(find(&mut l, &mut cursor, id("C0")).is_none());
    }
}
