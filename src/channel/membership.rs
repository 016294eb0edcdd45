//! Membership changes of a conversation, run by its channel server one at
//! a time, in one order for the store, the member list, the user's home
//! and the live connections.
//!
//! A change has several steps that await (store commits, the user's home,
//! the membership event), and two changes of one channel running side by
//! side could interleave them: a join's store write before a leave's, its
//! member-list update after, leaving the store and the channel server
//! disagreeing for good. So the channel server queues the changes of each
//! channel and a worker task runs them in turn; per (user, channel), the
//! state is then the outcome of the acknowledged changes in that order:
//!
//! - after a join is acknowledged, every live connection of the user —
//!   including one being admitted — watches the channel, and a new one
//!   subscribes to it (the home's list);
//! - after a removal is acknowledged, no connection of the user watches
//!   it: the gateways heard `Unwatch` in queue order with the channel's
//!   deliveries, and any later subscription is refused by the member list.

use std::collections::VecDeque;
use std::rc::Rc;

use serde_json::{json, Map, Value};

use crate::ids::Id;
use crate::ops::backend_event;
use crate::shard::message::{Done, Msg, Refusal, ReplyTo};
use crate::shard::{CallError, Shard};

/// One requested change.
/// Owned by its shard; never crosses cores.
pub struct Change {
    user: Id,
    join: bool,
    reply: ReplyTo<Done>,
}

/// The changes of one channel: the front one is running.
pub type Queue = VecDeque<Change>;

/// Queues a change of `channel`'s membership; starts its worker if none
/// runs. Refused at once when the conversation does not exist.
pub fn on_change(shard: &Rc<Shard>, reply: ReplyTo<Done>, channel: Id, user: Id, join: bool) {
    let mut cs = super::this_shard().borrow_mut();
    if cs.record(channel).is_none() {
        drop(cs);
        shard.reply(reply, Err(Refusal::ChannelNotFound));
        return;
    }
    let queue = cs.membership.entry(channel).or_default();
    queue.push_back(Change { user, join, reply });
    let idle = queue.len() == 1;
    drop(cs);
    if idle {
        glommio::spawn_local(run(shard.clone(), channel)).detach();
    }
}

/// Runs the queued changes of `channel` until none is left.
async fn run(shard: Rc<Shard>, channel: Id) {
    loop {
        let (user, join) = {
            let cs = super::this_shard().borrow();
            let front = cs.membership[&channel].front().expect("a queued change");
            (front.user, front.join)
        };
        let result = if join {
            add(&shard, channel, user).await
        } else {
            remove(&shard, channel, user).await
        };
        let mut cs = super::this_shard().borrow_mut();
        let queue = cs.membership.get_mut(&channel).expect("the running queue");
        let change = queue.pop_front().expect("the running change");
        let done = queue.is_empty();
        if done {
            cs.membership.remove(&channel);
        }
        drop(cs);
        shard.reply(change.reply, result);
        if done {
            return;
        }
    }
}

fn busy(_: CallError) -> Refusal {
    Refusal::Busy
}

/// The store, the member list, the user's home (which subscribes the live
/// connections), then `member_joined_channel`, which the joiner's
/// connections therefore receive too.
async fn add(shard: &Rc<Shard>, channel: Id, user: Id) -> Done {
    let private = match super::this_shard().borrow().record(channel) {
        None => return Err(Refusal::ChannelNotFound),
        Some(r) if r.is_member(user) => return Err(Refusal::AlreadyInChannel),
        Some(r) => r.private,
    };
    let (c, u) = (channel.to_string(), user.to_string());
    let added = shard
        .node
        .store
        .write(move |tx| tx.add_member(&c, &u, crate::store::now_micros()))
        .await
        .map_err(|_| Refusal::StoreFailed)?;
    super::this_shard()
        .borrow_mut()
        .set_member(channel, user, true)?;
    set_user_channel(shard, channel, user, true).await?;
    if !added {
        // The store had it already (written while the caches were not
        // looking): the caches agree again; no one joined just now.
        return Err(Refusal::AlreadyInChannel);
    }
    announce(shard, channel, user, private, "member_joined_channel").await
}

/// `member_left_channel` first (so the leaver sees it), then the store, the
/// member list (and `Unwatch` to every gateway watching), the user's home.
async fn remove(shard: &Rc<Shard>, channel: Id, user: Id) -> Done {
    let private = match super::this_shard().borrow().record(channel) {
        None => return Err(Refusal::ChannelNotFound),
        Some(r) if !r.is_member(user) => return Err(Refusal::NotInChannel),
        Some(r) => r.private,
    };
    announce(shard, channel, user, private, "member_left_channel").await?;
    let (c, u) = (channel.to_string(), user.to_string());
    shard
        .node
        .store
        .write(move |tx| tx.remove_member(&c, &u))
        .await
        .map_err(|_| Refusal::StoreFailed)?;
    let watchers = {
        let mut cs = super::this_shard().borrow_mut();
        cs.set_member(channel, user, false)?;
        cs.watchers(channel)
    };
    for g in watchers.local.iter() {
        shard.send(g, Msg::Unwatch { channel, user });
    }
    for relay in watchers.remote {
        shard.send_to(relay, Msg::Unwatch { channel, user });
    }
    set_user_channel(shard, channel, user, false).await
}

/// The user's home updates the user's list (and after a join subscribes
/// its live connections).
async fn set_user_channel(shard: &Rc<Shard>, channel: Id, user: Id, member: bool) -> Done {
    shard
        .call_owner(user, |reply| Msg::SetUserChannel {
            reply,
            user,
            channel,
            member,
        })
        .await
        .map_err(busy)?
}

/// Publishes the stored membership event through this channel server.
async fn announce(shard: &Rc<Shard>, channel: Id, user: Id, private: bool, kind: &str) -> Done {
    let event: Map<String, Value> = [
        ("type", json!(kind)),
        ("user", json!(user)),
        ("channel", json!(channel)),
        ("channel_type", json!(if private { "G" } else { "C" })),
        ("team", json!(shard.node.team)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let (body, persist) = backend_event(event, false).expect("a typed event");
    shard
        .call(shard.id, |reply| Msg::Publish {
            reply: Some(reply),
            channel,
            body,
            persist,
            sender: None,
            exclude: None,
        })
        .await
        .map_err(busy)?
        .map(|_| ())
}
