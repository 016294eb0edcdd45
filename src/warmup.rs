//! Filling the shards' caches from the store at start: each user goes to
//! its home shard's directory, each conversation (record, members) to its
//! channel server, each name to its name shard, and each channel's newest
//! stored ts to its owner so ts keep increasing across restarts. Runs on
//! the main thread before the executors start.

use crate::channel::state::ChannelRecord;
use crate::directory::User;
use crate::ids::Id;
use crate::ring::Ring;
use crate::store::{self, Store, StoreError};

/// One shard's share of the stored state.
#[derive(Default)]
pub struct Warm {
    pub users: Vec<(Id, User)>,
    pub channels: Vec<(Id, ChannelRecord)>,
    pub names: Vec<(String, Id)>,
    pub last_ts: Vec<(Id, u64)>,
}

/// Reads everything the caches hold and splits it by owning shard.
pub fn load(store: &Store, ring: &Ring, shards: usize) -> Result<Vec<Warm>, StoreError> {
    let ring = ring.clone();
    store.read_blocking(move |conn| {
        let mut out: Vec<Warm> = (0..shards).map(|_| Warm::default()).collect();
        let mut users: crate::ids::IdMap<User> = Default::default();
        store::users::all(conn, |u, hash| {
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
        let mut channels: crate::ids::IdMap<ChannelRecord> = Default::default();
        store::channels::all(conn, |c| {
            let Some(id) = Id::parse(&c.id) else {
                tracing::warn!(channel = %c.id, "skipping a stored channel with an invalid id");
                return;
            };
            let owner = ring.owner(crate::ring::hash_bytes(c.name.as_bytes())) as usize;
            out[owner].names.push((c.name.clone(), id));
            channels.insert(
                id,
                ChannelRecord {
                    name: c.name.into_boxed_str(),
                    private: c.is_private,
                    created_unix_secs: (c.created / 1_000_000) as u64,
                    creator: Id::parse(&c.creator),
                    members: Vec::new(),
                },
            );
        })?;
        store::members::all(conn, |c, u| {
            let (Some(c), Some(u)) = (Id::parse(c), Id::parse(u)) else {
                return;
            };
            if let Some(record) = channels.get_mut(&c) {
                record.members.push(u);
            }
            if let Some(user) = users.get_mut(&u) {
                user.channels.push(c);
            }
        })?;
        store::events::max_ts_all(conn, |c, ts| {
            if let Some(id) = Id::parse(c) {
                out[ring.owner(id.raw()) as usize]
                    .last_ts
                    .push((id, ts.max(0) as u64));
            }
        })?;
        for (id, mut record) in channels {
            record.members.sort();
            out[ring.owner(id.raw()) as usize]
                .channels
                .push((id, record));
        }
        for (id, user) in users {
            out[ring.owner(id.raw()) as usize].users.push((id, user));
        }
        Ok(out)
    })
}
