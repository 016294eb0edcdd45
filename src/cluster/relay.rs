//! Relays: how a node watches a channel another node owns.
//!
//! On a node that does not own channel C, the shard that would own it here
//! (the owner's core number within this node's shards, `Shard::owner`) is
//! C's *relay*. Local gateway shards subscribe to the relay as they would
//! to a channel server; the relay forwards each subscription to C's owner
//! (which records one watcher for this whole node) and hands the
//! acknowledgement back; the owner's events, unwatches and acknowledgements
//! arrive here once per node and the relay fans them out to the local
//! gateway shards that watch C. So a channel server sends one copy of each
//! event per subscribed node, however many connections watch it there.
//!
//! The relay keeps, per relayed channel, the local gateway shards that
//! watch it and the forwarded subscriptions still in flight: the channel is
//! unsubscribed upstream only when it has neither (the gateway's own rule,
//! one level up).

use std::collections::HashMap;
use std::rc::Rc;

use bytes::Bytes;

use crate::ids::{Id, IdMap};
use crate::placement::Addr;
use crate::shard::message::{ConnId, Done, Exclude, Msg, ReplyTo, ShardId};
use crate::shard::set::GatewaySet;
use crate::shard::Shard;
use crate::ts::Ts;

crate::shard::local::shard_local!(Relays);

/// One relayed channel.
/// Owned by its shard; never crosses cores.
#[derive(Default)]
struct Relayed {
    /// Local gateway shards watching the channel.
    local: GatewaySet,
    /// Forwarded subscriptions not yet acknowledged.
    pending: u32,
}

/// A subscription forwarded to another node, waiting for its answer.
/// Owned by its shard; never crosses cores.
struct Forwarded {
    gateway: ShardId,
    conns: Vec<ConnId>,
    notify: Option<ReplyTo<Done>>,
}

/// The channels this shard relays from other nodes.
/// Owned by its shard; never crosses cores.
#[derive(Default)]
pub struct Relays {
    channels: IdMap<Relayed>,
    forwarded: HashMap<u64, Forwarded>,
    next_tag: u64,
}

impl Relays {
    /// Channels relayed here now.
    pub fn len(&self) -> usize {
        self.channels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// Channels among `channels` that no local shard watches and no
    /// forwarded subscription waits for: forget them.
    fn unwatched(&mut self, channels: impl IntoIterator<Item = Id>) -> Vec<Id> {
        let mut gone = Vec::new();
        for c in channels {
            if self
                .channels
                .get(&c)
                .is_some_and(|r| r.local.is_empty() && r.pending == 0)
            {
                self.channels.remove(&c);
                gone.push(c);
            }
        }
        gone
    }
}

/// Gateway shard `gateway` subscribes connections to `channels`, all owned
/// by `owner` on another node: forward, remembering who asked.
#[allow(clippy::too_many_arguments)]
pub fn on_subscribe(
    shard: &Rc<Shard>,
    gateway: ShardId,
    owner: Addr,
    user: Id,
    conns: Vec<ConnId>,
    channels: Vec<Id>,
    since: Option<Ts>,
    notify: Option<ReplyTo<Done>>,
) {
    debug_assert_ne!(owner.node, shard.node_id, "relaying a local channel");
    let mut relays = this_shard().borrow_mut();
    let tag = relays.next_tag;
    relays.next_tag += 1;
    for &c in &channels {
        relays.channels.entry(c).or_default().pending += 1;
    }
    relays.forwarded.insert(
        tag,
        Forwarded {
            gateway,
            conns,
            notify,
        },
    );
    drop(relays);
    shard.send_to(
        owner,
        Msg::Subscribe {
            user,
            conns: Vec::new(),
            channels,
            since,
            notify: None,
            relay_tag: Some(tag),
        },
    );
}

/// The owner answered a forwarded subscription: the asking gateway shard
/// now watches what was granted; pass the answer on.
#[allow(clippy::too_many_arguments)]
pub fn on_subscribe_ack(
    shard: &Rc<Shard>,
    owner: Addr,
    channels: Vec<Id>,
    refused: Vec<Id>,
    replay: Vec<Bytes>,
    resync: Vec<Id>,
    relay_tag: Option<u64>,
) {
    let mut relays = this_shard().borrow_mut();
    let Some(f) = relay_tag.and_then(|t| relays.forwarded.remove(&t)) else {
        tracing::error!(
            ?owner,
            ?relay_tag,
            "an acknowledgement for no forwarded subscription"
        );
        return;
    };
    for c in &channels {
        if let Some(r) = relays.channels.get_mut(c) {
            r.local.insert(f.gateway);
            r.pending -= 1;
        }
    }
    for c in &refused {
        if let Some(r) = relays.channels.get_mut(c) {
            r.pending -= 1;
        }
    }
    let gone = relays.unwatched(refused.iter().copied());
    drop(relays);
    if !gone.is_empty() {
        shard.send_to(owner, Msg::Unsubscribe { channels: gone });
    }
    shard.send(
        f.gateway,
        Msg::SubscribeAck {
            conns: f.conns,
            channels,
            refused,
            replay,
            resync,
            notify: f.notify,
            relay_tag: None,
        },
    );
}

/// Gateway shard `gateway` no longer watches these relayed channels; the
/// owner hears about those nobody here watches any more.
pub fn on_unsubscribe(shard: &Shard, gateway: ShardId, channels: Vec<Id>) {
    let mut relays = this_shard().borrow_mut();
    for c in &channels {
        if let Some(r) = relays.channels.get_mut(c) {
            r.local.remove(gateway);
        }
    }
    let gone = relays.unwatched(channels);
    drop(relays);
    for (owner, channels) in shard.group_by_owner_addr(gone) {
        shard.send_to(owner, Msg::Unsubscribe { channels });
    }
}

/// An event of a relayed channel: one copy to each local gateway shard that
/// watches it (the exclusion, if any, names one of them).
pub fn on_deliver(shard: &Shard, channel: Id, frame: Bytes, exclude: Option<Exclude>) {
    let relays = this_shard().borrow();
    let Some(r) = relays.channels.get(&channel) else {
        return; // unsubscribed while the event was on its way
    };
    let gateways = r.local;
    drop(relays);
    for g in gateways.iter() {
        shard.send(
            g,
            Msg::Deliver {
                channel,
                frame: frame.clone(),
                exclude,
            },
        );
    }
}

/// A user left a relayed channel: every local gateway shard watching it
/// drops the user's connections from it.
pub fn on_unwatch(shard: &Shard, channel: Id, user: Id) {
    let gateways = this_shard()
        .borrow()
        .channels
        .get(&channel)
        .map(|r| r.local)
        .unwrap_or_default();
    for g in gateways.iter() {
        shard.send(g, Msg::Unwatch { channel, user });
    }
}
