//! The directory: users on their home shard (the shard their id hashes to).
//! Conversations' records (privacy, members) live with their channel
//! server, in [`crate::channel::state::ChannelRecord`]; their names only in
//! the store, whose UNIQUE (team_id, name) keeps them unique.
//!
//! In memory for now; the store puts a durable copy beneath it.

use std::rc::Rc;

use crate::ids::{Id, IdMap};
use crate::shard::message::{Done, Msg, NewUser, Refusal, ReplyTo, UserInfo};
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

crate::shard::local::shard_local!(Directory);

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

/// A new placement: forget the users homed elsewhere now (a new home loads
/// them from the store when first asked).
pub fn on_placement(shard: &Shard) {
    let here = shard.here(shard.id);
    this_shard()
        .borrow_mut()
        .users
        .retain(|&u, _| shard.owner_addr(u) == here);
}

pub fn on_create_user(shard: &Rc<Shard>, reply: ReplyTo<Done>, new: NewUser) {
    let mut dir = this_shard().borrow_mut();
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
    shard.reply(reply, result);
}

pub fn on_lookup_user(shard: &Rc<Shard>, reply: ReplyTo<Option<UserInfo>>, id: Id) {
    let info = this_shard().borrow().users.get(&id).map(|u| UserInfo {
        id,
        team: u.team,
        name: u.name.to_string(),
        is_bot: u.is_bot,
    });
    shard.reply(reply, info);
}

/// The user joined or left a conversation: update the user's list, which
/// connections admitted from now on subscribe to. After a join, subscribe
/// the live connections too, from here: a `LiveJoin` leaves this shard
/// after the answer to every admission counted before it (the mesh is FIFO
/// per pair of shards), so a connection admitted with the old list is
/// already known to its gateway — admitted or being admitted — when the
/// join reaches it. Answers once every gateway has subscribed them.
///
/// A removal needs nothing live here: the channel server has already
/// stopped every connection of the user from watching the channel
/// (`Msg::Unwatch`) and refuses their subscriptions from then on.
pub fn on_set_user_channel(
    shard: &Rc<Shard>,
    reply: ReplyTo<Done>,
    user: Id,
    channel: Id,
    member: bool,
) {
    let mut dir = this_shard().borrow_mut();
    let Some(u) = dir.users.get_mut(&user) else {
        drop(dir);
        shard.reply(reply, Err(Refusal::UserNotFound));
        return;
    };
    match (u.channels.iter().position(|&c| c == channel), member) {
        (None, true) => u.channels.push(channel),
        (Some(i), false) => {
            u.channels.swap_remove(i);
        }
        _ => {}
    }
    drop(dir);
    let gateways = if member {
        crate::presence::this_shard().borrow().gateways_of(user)
    } else {
        Vec::new()
    };
    if gateways.is_empty() {
        shard.reply(reply, Ok(()));
        return;
    }
    // Sent now, in this handler: the order against admissions is the point.
    let joins: Vec<_> = gateways
        .into_iter()
        .map(|g| {
            shard.call_at(g, |reply| Msg::LiveJoin {
                reply,
                user,
                channel,
            })
        })
        .collect();
    let shard = shard.clone();
    glommio::spawn_local(async move {
        let mut result = Ok(());
        for join in joins {
            match join.await {
                Ok(Ok(())) => {}
                Ok(Err(r)) => result = Err(r),
                Err(_) => result = Err(Refusal::Busy),
            }
        }
        shard.reply(reply, result);
    })
    .detach();
}

pub fn on_authenticate(
    shard: &Rc<Shard>,
    reply: ReplyTo<Option<UserInfo>>,
    user: Id,
    secret_hash: [u8; 32],
) {
    let info = this_shard()
        .borrow()
        .check_token(user, &secret_hash)
        .map(|u| UserInfo {
            id: user,
            team: u.team,
            name: u.name.to_string(),
            is_bot: u.is_bot,
        });
    shard.reply(reply, info);
}
