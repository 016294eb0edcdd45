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
//! watch it, the forwarded subscriptions still in flight (the channel is
//! unsubscribed upstream only when it has neither: the gateway's own rule,
//! one level up), and the ts of the last persisted event it passed on.
//! That ts is what makes failover lossless: when the link to the owner
//! breaks, or the placement gives C to another owner, the relay
//! resubscribes from it, holding back live events until the owner's replay
//! of everything after it has arrived, and passes on each persisted event
//! once (by ts).

use std::collections::HashMap;
use std::rc::Rc;

use bytes::Bytes;

use crate::ids::{Id, IdMap};
use crate::placement::{Addr, NodeId};
use crate::shard::message::{ConnId, Done, Exclude, Msg, ReplyTo, ShardId};
use crate::shard::set::GatewaySet;
use crate::shard::Shard;
use crate::ts::Ts;

crate::shard::local::shard_local!(Relays);

/// One relayed channel.
/// Owned by its shard; never crosses cores.
struct Relayed {
    /// The owner subscribed to.
    owner: Addr,
    /// Local gateway shards watching the channel.
    local: GatewaySet,
    /// Forwarded subscriptions not yet acknowledged.
    pending: u32,
    /// The last persisted event passed on to the local gateways.
    last_ts: Ts,
    /// Resubscribing after a broken link or a new owner: persisted events
    /// wait for the replay, which carries them.
    resyncing: bool,
}

/// Who a forwarded subscription is for.
/// Owned by its shard; never crosses cores.
enum For {
    /// A local gateway shard's subscription: its answer goes back to it.
    Gateway {
        gateway: ShardId,
        conns: Vec<ConnId>,
        notify: Option<ReplyTo<Done>>,
    },
    /// The relay's own resubscription: its replay goes to every local
    /// gateway watching the channel.
    Resync,
}

/// A subscription forwarded to another node, waiting for its answer: kept
/// whole, so it can be sent again to a new owner.
/// Owned by its shard; never crosses cores.
struct Forwarded {
    owner: Addr,
    user: Id,
    channels: Vec<Id>,
    since: Option<Ts>,
    who: For,
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
    fn unwatched(&mut self, channels: impl IntoIterator<Item = Id>) -> Vec<(Addr, Id)> {
        let mut gone = Vec::new();
        for c in channels {
            if self
                .channels
                .get(&c)
                .is_some_and(|r| r.local.is_empty() && r.pending == 0)
            {
                let r = self.channels.remove(&c).expect("checked");
                gone.push((r.owner, c));
            }
        }
        gone
    }

    /// A forwarded subscription of `channels` waits no more (answered,
    /// refused, superseded or passed on elsewhere).
    fn settled<'a>(&mut self, channels: impl IntoIterator<Item = &'a Id>) {
        for c in channels {
            if let Some(r) = self.channels.get_mut(c) {
                r.pending = r.pending.saturating_sub(1);
            }
        }
    }

    fn entry(&mut self, channel: Id, owner: Addr) -> &mut Relayed {
        self.channels.entry(channel).or_insert(Relayed {
            owner,
            local: GatewaySet::default(),
            pending: 0,
            last_ts: Ts(0),
            resyncing: false,
        })
    }
}

/// Sends `f` to its owner under a fresh tag.
fn forward(shard: &Shard, relays: &mut Relays, f: Forwarded) {
    let tag = relays.next_tag;
    relays.next_tag += 1;
    let msg = Msg::Subscribe {
        user: f.user,
        conns: Vec::new(),
        channels: f.channels.clone(),
        since: f.since,
        notify: None,
        relay_tag: Some(tag),
        resync: matches!(f.who, For::Resync),
    };
    let owner = f.owner;
    relays.forwarded.insert(tag, f);
    shard.send_to(owner, msg);
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
    for &c in &channels {
        relays.entry(c, owner).pending += 1;
    }
    forward(
        shard,
        &mut relays,
        Forwarded {
            owner,
            user,
            channels,
            since,
            who: For::Gateway {
                gateway,
                conns,
                notify,
            },
        },
    );
}

/// The owner answered a forwarded subscription: pass the answer on (a
/// gateway's), or the replay to every local watcher (a resubscription).
/// `heads` are the owner's last persisted ts of each granted channel.
#[allow(clippy::too_many_arguments)]
pub fn on_subscribe_ack(
    shard: &Rc<Shard>,
    owner: Addr,
    channels: Vec<Id>,
    heads: Vec<Ts>,
    refused: Vec<Id>,
    replay: Vec<(Ts, Bytes)>,
    resync: Vec<Id>,
    relay_tag: Option<u64>,
) {
    let mut relays = this_shard().borrow_mut();
    let Some(f) = relay_tag.and_then(|t| relays.forwarded.remove(&t)) else {
        tracing::debug!(
            ?owner,
            ?relay_tag,
            "an acknowledgement for no forwarded subscription"
        );
        return;
    };
    // The answer may come from another owner than the one it was sent to:
    // that one had a newer placement and passed it on (with this tag), and
    // the one answering serves the channel now and has registered this
    // relay. (A subscription sent again goes under a new tag, so an old
    // owner's late answer finds nothing above.) Dropping it would leave a
    // resubscription holding back live events for good, or a gateway's
    // subscription unanswered.
    if f.owner != owner {
        tracing::debug!(asked = ?f.owner, ?owner, "relay: answered by the owner it was passed on to");
    }
    for (c, &head) in channels.iter().zip(&heads) {
        if let Some(r) = relays.channels.get_mut(c) {
            r.owner = owner;
            r.pending = r.pending.saturating_sub(1);
            if let For::Gateway { gateway, .. } = &f.who {
                // A first subscription starts where the owner is; a
                // resubscription's replay moves `last_ts` itself, below.
                r.last_ts = r.last_ts.max(head);
                r.local.insert(*gateway);
            }
        }
    }
    relays.settled(&refused);
    match f.who {
        For::Gateway {
            gateway,
            conns,
            notify,
        } => {
            let gone = relays.unwatched(refused.iter().copied());
            drop(relays);
            unsubscribe(shard, gone);
            shard.send(
                gateway,
                Msg::SubscribeAck {
                    conns,
                    channels,
                    heads,
                    refused,
                    replay,
                    resync,
                    notify,
                    relay_tag: None,
                },
            );
        }
        For::Resync => {
            // Everything after `since` of each channel, in ts order: to every
            // local watcher, and the live events flow again.
            let mut sends = Vec::new();
            for &c in &channels {
                let Some(r) = relays.channels.get_mut(&c) else {
                    continue;
                };
                r.resyncing = false;
                sends.push((c, r.local));
            }
            let mut frames: IdMap<Vec<(Ts, Bytes)>> = IdMap::default();
            // The replay is in ts order per channel, channels one after
            // another; a resubscription names one channel.
            if let [c] = channels[..] {
                frames.insert(c, replay);
            }
            for (c, gateways) in sends {
                let mut last = relays.channels.get(&c).map_or(Ts(0), |r| r.last_ts);
                tracing::debug!(
                    %c,
                    ?owner,
                    %last,
                    replay = ?frames.get(&c).map(|f| (f.len(), f.first().map(|x| x.0), f.last().map(|x| x.0))),
                    "relay: resubscribed"
                );
                for (ts, frame) in frames.remove(&c).unwrap_or_default() {
                    if ts <= last {
                        continue; // passed on before the link broke
                    }
                    last = ts;
                    for g in gateways.iter() {
                        shard.send(
                            g,
                            Msg::Deliver {
                                channel: c,
                                frame: frame.clone(),
                                exclude: None,
                                ts: Some(ts),
                            },
                        );
                    }
                }
                // The replay reached the owner's head when it answered.
                let head = channels
                    .iter()
                    .position(|&x| x == c)
                    .map_or(Ts(0), |i| heads[i]);
                if let Some(r) = relays.channels.get_mut(&c) {
                    r.last_ts = last.max(head);
                }
            }
            let gone = relays.unwatched(refused.iter().copied());
            drop(relays);
            unsubscribe(shard, gone);
        }
    }
}

fn unsubscribe(shard: &Shard, gone: Vec<(Addr, Id)>) {
    let mut by_owner: Vec<(Addr, Vec<Id>)> = Vec::new();
    for (owner, c) in gone {
        match by_owner.iter_mut().find(|(o, _)| *o == owner) {
            Some((_, v)) => v.push(c),
            None => by_owner.push((owner, vec![c])),
        }
    }
    for (owner, channels) in by_owner {
        shard.send_to(owner, Msg::Unsubscribe { channels });
    }
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
    unsubscribe(shard, gone);
}

/// An event of a relayed channel: one copy to each local gateway shard that
/// watches it (the exclusion, if any, names one of them). A persisted event
/// passes once: not again after a replay carried it, and not while a
/// resubscription's replay is on its way (it carries it).
pub fn on_deliver(
    shard: &Shard,
    channel: Id,
    frame: Bytes,
    exclude: Option<Exclude>,
    ts: Option<Ts>,
) {
    let mut relays = this_shard().borrow_mut();
    let Some(r) = relays.channels.get_mut(&channel) else {
        return; // unsubscribed while the event was on its way
    };
    if let Some(ts) = ts {
        if r.resyncing || ts <= r.last_ts {
            tracing::debug!(%channel, %ts, last = %r.last_ts, r.resyncing, "relay: held back");
            return;
        }
        r.last_ts = ts;
    }
    let gateways = r.local;
    drop(relays);
    for g in gateways.iter() {
        shard.send(
            g,
            Msg::Deliver {
                channel,
                frame: frame.clone(),
                exclude,
                ts,
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

/// Another shard of this node relayed `channel` until a new placement made
/// this one its relay: take its gateways, and resubscribe from `since`.
pub fn on_adopt(shard: &Rc<Shard>, channel: Id, gateways: GatewaySet, since: Ts) {
    let owner = shard.owner_addr(channel);
    debug_assert_ne!(
        owner.node, shard.node_id,
        "a relay adopting a local channel"
    );
    let mut relays = this_shard().borrow_mut();
    let r = relays.entry(channel, owner);
    for g in gateways.iter() {
        r.local.insert(g);
    }
    r.owner = owner;
    r.last_ts = r.last_ts.max(since);
    resubscribe(shard, &mut relays, channel);
}

/// Starts a resubscription of `channel` at its owner from its last ts.
fn resubscribe(shard: &Shard, relays: &mut Relays, channel: Id) {
    let Some(r) = relays.channels.get_mut(&channel) else {
        return;
    };
    r.resyncing = true;
    r.pending += 1;
    let (owner, since) = (r.owner, r.last_ts);
    tracing::debug!(%channel, ?owner, %since, "relay: resubscribing");
    forward(
        shard,
        relays,
        Forwarded {
            owner,
            // A resubscription is the node's, not a user's: the owner grants
            // it for a channel that exists (the users' memberships were
            // checked when their connections subscribed).
            user: channel,
            channels: vec![channel],
            since: Some(since),
            who: For::Resync,
        },
    );
}

/// A link from `node` ended, or a new one began: what `node` sent on the
/// connection that ended may be lost (a reply written into a socket the
/// other end had already closed, after a pause, is lost without a trace
/// here except the new connection). So every channel relayed from it is
/// resubscribed from the last event passed on, and every forwarded
/// subscription still waiting on it is sent again, over the link as it is
/// now. Replays pass each persisted event once (by ts), so doing this for
/// a link that lost nothing costs a replay, not a duplicate. If the node is
/// gone instead, the next placement moves its channels and supersedes this.
pub fn on_link_changed(shard: &Shard, node: NodeId) {
    let mut relays = this_shard().borrow_mut();
    let waiting: Vec<u64> = relays
        .forwarded
        .iter()
        .filter(|(_, f)| f.owner.node == node)
        .map(|(&t, _)| t)
        .collect();
    for tag in waiting {
        let f = relays.forwarded.remove(&tag).expect("listed");
        match f.who {
            // The resubscriptions below replace it.
            For::Resync => relays.settled(&f.channels),
            For::Gateway { .. } => forward(shard, &mut relays, f),
        }
    }
    let channels: Vec<Id> = relays
        .channels
        .iter()
        .filter(|(_, r)| r.owner.node == node && !r.local.is_empty())
        .map(|(&c, _)| c)
        .collect();
    for c in channels {
        resubscribe(shard, &mut relays, c);
    }
}

/// A new placement: every relayed channel whose owner changed is
/// resubscribed at its new owner (from the last event passed on), or, if
/// another shard of this node serves it now (its new owner, or its new
/// relay), handed over there with its gateways. Forwarded subscriptions
/// waiting on an old owner go to the new one.
pub fn on_placement(shard: &Rc<Shard>) {
    let mut relays = this_shard().borrow_mut();
    let mut handed: Vec<(ShardId, Id, GatewaySet, Ts)> = Vec::new();
    let mut moved: Vec<(Addr, Id)> = Vec::new();
    let channels: Vec<Id> = relays.channels.keys().copied().collect();
    for c in channels {
        let owner = shard.owner_addr(c);
        let r = relays.channels.get_mut(&c).expect("listed");
        if owner == r.owner {
            continue;
        }
        moved.push((r.owner, c));
        let target = shard.owner(c);
        if owner.node != shard.node_id && target == shard.id {
            r.owner = owner;
            resubscribe(shard, &mut relays, c);
        } else {
            let r = relays.channels.remove(&c).expect("listed");
            if !r.local.is_empty() {
                handed.push((target, c, r.local, r.last_ts));
            }
        }
    }
    // Subscriptions still waiting on an old owner: to the new one, or to
    // the shard of this node that serves the channel now.
    let stale: Vec<u64> = relays
        .forwarded
        .iter()
        .filter(|(_, f)| {
            f.channels
                .first()
                .is_some_and(|&c| shard.owner_addr(c) != f.owner)
        })
        .map(|(&t, _)| t)
        .collect();
    let mut rerouted = Vec::new();
    for tag in stale {
        let mut f = relays.forwarded.remove(&tag).expect("listed");
        if matches!(f.who, For::Resync) {
            // The resubscriptions above replace it.
            relays.settled(&f.channels);
            continue;
        }
        let owner = shard.owner_addr(f.channels[0]);
        if owner.node != shard.node_id && shard.owner(f.channels[0]) == shard.id {
            f.owner = owner;
            forward(shard, &mut relays, f);
        } else {
            rerouted.push(f);
        }
    }
    drop(relays);
    // The old owners, if alive, forget this node's subscriptions.
    unsubscribe(shard, moved);
    for (target, channel, gateways, since) in handed {
        shard.send(
            target,
            Msg::Adopt {
                channel,
                gateways,
                since,
            },
        );
    }
    for f in rerouted {
        if let For::Gateway {
            gateway,
            conns,
            notify,
        } = f.who
        {
            // The gateway's subscription, to whoever serves it here now.
            this_shard().borrow_mut().settled(&f.channels);
            shard.send(
                shard.owner(f.channels[0]),
                Msg::PassedOn {
                    from: shard.here(gateway),
                    msg: Box::new(Msg::Subscribe {
                        user: f.user,
                        conns,
                        channels: f.channels,
                        since: f.since,
                        notify,
                        relay_tag: None,
                        resync: false,
                    }),
                },
            );
        }
    }
}
