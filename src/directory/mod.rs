//! The directory: users on their home shard (the shard their id hashes to).
//! Conversations' records (privacy, members) live with their channel
//! server, in [`crate::channel::state::ChannelRecord`]; their names only in
//! the store, whose UNIQUE (team_id, name) keeps them unique.
//!
//! In memory for now; the store puts a durable copy beneath it.

use std::rc::Rc;

use crate::ids::{Id, IdMap};
use crate::shard::message::{NewUser, Refusal, Reply, ReqId, ShardId, UserInfo};
use crate::shard::Shard;

/// A user on its home shard.
/// Owned by its shard; never crosses cores.
pub struct User {
    pub team: Id,
    pub name: Box<str>,
    pub is_bot: bool,
    /// SHA-256 of the token's secret part; compared in constant time.
    pub token_hash: [u8; 32],
    /// Conversations the user is a member of.
    pub channels: Vec<Id>,
}

/// Owned by its shard; never crosses cores.
#[derive(Default)]
pub struct Directory {
    users: IdMap<User>,
}

impl Directory {
    pub fn users(&self) -> usize {
        self.users.len()
    }

    pub fn user(&self, id: Id) -> Option<&User> {
        self.users.get(&id)
    }

    /// Adds a user loaded from the store (at start).
    pub fn load_user(&mut self, id: Id, user: User) {
        self.users.insert(id, user);
    }

    /// Checks a token's secret against the stored hash in constant time.
    pub fn check_token(&self, id: Id, secret_hash: &[u8; 32]) -> Option<&User> {
        let user = self.users.get(&id)?;
        let diff = user
            .token_hash
            .iter()
            .zip(secret_hash)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        (diff == 0).then_some(user)
    }
}

pub fn on_create_user(shard: &Rc<Shard>, from: ShardId, req: ReqId, new: NewUser) {
    let mut dir = shard.directory.borrow_mut();
    let result = match dir.users.entry(new.id) {
        std::collections::hash_map::Entry::Occupied(_) => Err(Refusal::NameTaken),
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert(User {
                team: new.team,
                name: new.name.into_boxed_str(),
                is_bot: new.is_bot,
                token_hash: new.token_hash,
                channels: Vec::new(),
            });
            Ok(())
        }
    };
    drop(dir);
    shard.reply(from, req, Reply::Done(result));
}

pub fn on_lookup_user(shard: &Rc<Shard>, from: ShardId, req: ReqId, id: Id) {
    let info = shard.directory.borrow().users.get(&id).map(|u| UserInfo {
        id,
        team: u.team,
        name: u.name.to_string(),
        is_bot: u.is_bot,
    });
    shard.reply(from, req, Reply::UserInfo(info));
}

/// The user joined or left a conversation: update the user's list and name
/// the gateway shards that hold its live connections, which the caller
/// then updates.
pub fn on_set_user_channel(
    shard: &Rc<Shard>,
    from: ShardId,
    req: ReqId,
    user: Id,
    channel: Id,
    member: bool,
) {
    let mut dir = shard.directory.borrow_mut();
    let result = match dir.users.get_mut(&user) {
        None => Err(Refusal::UserNotFound),
        Some(u) => {
            match (u.channels.iter().position(|&c| c == channel), member) {
                (None, true) => u.channels.push(channel),
                (Some(i), false) => {
                    u.channels.swap_remove(i);
                }
                _ => {}
            }
            Ok(shard.presence.borrow().gateways_of(user))
        }
    };
    drop(dir);
    shard.reply(from, req, Reply::Gateways(result));
}

pub fn on_authenticate(
    shard: &Rc<Shard>,
    from: ShardId,
    req: ReqId,
    user: Id,
    secret_hash: [u8; 32],
) {
    let info = shard
        .directory
        .borrow()
        .check_token(user, &secret_hash)
        .map(|u| UserInfo {
            id: user,
            team: u.team,
            name: u.name.to_string(),
            is_bot: u.is_bot,
        });
    shard.reply(from, req, Reply::UserInfo(info));
}
