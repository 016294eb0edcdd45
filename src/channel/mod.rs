//! The channel server role: for the channels this shard owns (by the ring),
//! which gateway shards watch them, the next `ts`, the recent history, and
//! fan-out. Every publish of a channel passes through its one owner, which is
//! what makes per-channel order total.

pub mod fanout;
pub mod fire;
pub mod history;
pub mod membership;
pub mod ownership;
pub mod persist;
pub mod state;

use std::rc::Rc;

use bytes::Bytes;

use crate::ids::{Id, IdMap};
use crate::idtable::IdTable;
use crate::limits;
use crate::placement::{Addr, NodeId};
use crate::shard::message::{
    ConnId, Done, EventBody, Exclude, Msg, NewChannel, Persist, Published, Refusal, ReplyTo,
};
use crate::shard::{Counters, Shard};
use crate::ts::Ts;
use history::{History, Replay};
use state::{Channel, ChannelRecord};

crate::shard::local::shard_local!(ChannelServer);

/// The channels this shard owns.
/// Owned by its shard; never crosses cores.
pub struct ChannelServer {
    channels: IdTable<Channel>,
    history_per_channel: usize,
    /// Persisted events waiting for their commit, per channel; only
    /// channels with writes in flight have an entry.
    inflight: IdMap<persist::Inflight>,
    /// Membership changes queued or running, per conversation; only
    /// conversations with changes in flight have an entry.
    membership: IdMap<membership::Queue>,
    /// Shards of other nodes that relay a channel there (one per node):
    /// only channels watched from another node have an entry, so a
    /// channel's own state stays 48 bytes.
    remote: IdMap<Vec<Addr>>,
}

impl ChannelServer {
    pub fn new(history_per_channel: usize) -> ChannelServer {
        ChannelServer {
            channels: IdTable::default(),
            history_per_channel,
            inflight: IdMap::default(),
            membership: IdMap::default(),
            remote: IdMap::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.channels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// Recent events kept per channel for resume.
    pub fn history_per_channel(&self) -> usize {
        self.history_per_channel
    }

    /// Whether `id` has an entry here (a cluster loads what it takes over).
    pub fn is_loaded(&self, id: Id) -> bool {
        self.channels.get(id).is_some()
    }

    /// Puts a channel loaded from the store (a cluster taking it over).
    pub fn install(&mut self, id: Id, entry: Channel) {
        *self.channels.get_or_insert_with(id, Channel::default) = entry;
    }

    /// Every channel here.
    pub fn ids(&self) -> impl Iterator<Item = Id> + '_ {
        self.channels.iter().map(|(id, _)| id)
    }

    /// Whether `id` has persisted events waiting for their commit.
    pub fn has_inflight(&self, id: Id) -> bool {
        self.inflight.contains_key(&id)
    }

    /// Forgets a channel this shard no longer owns; its entry, for handing
    /// its watchers over.
    pub fn drop_channel(&mut self, id: Id) -> Option<Channel> {
        self.remote.remove(&id);
        self.channels.remove(id)
    }

    /// Every persisted event of `id` after `since`, exactly, if this shard
    /// has them all in memory (`None`: the store has older ones).
    pub fn replay_exact(&self, id: Id, since: Ts) -> Option<Vec<(Ts, Bytes)>> {
        let Some(channel) = self.channels.get(id) else {
            return Some(Vec::new());
        };
        match channel.history.as_deref() {
            Some(history) => match history.replay(since, since) {
                Replay::Frames(frames) => Some(frames),
                Replay::ResyncRequired => None,
            },
            None if channel.last_ts_micros > since.0 => None,
            None => Some(Vec::new()),
        }
    }

    /// A conversation's record (members, privacy).
    pub fn record(&self, id: Id) -> Option<&ChannelRecord> {
        self.channels.get(id).and_then(|c| c.record.as_ref())
    }

    /// Who watches `id`: gateway shards here, relays on other nodes.
    pub fn watchers(&self, id: Id) -> Watchers {
        Watchers {
            local: self
                .channels
                .get(id)
                .map(|c| c.gateways)
                .unwrap_or_default(),
            remote: self.remote.get(&id).cloned().unwrap_or_default(),
        }
    }

    /// Records that shard `from` (of node `me` or another) watches `id`.
    fn watch(&mut self, me: NodeId, id: Id, from: Addr) {
        if from.node == me {
            if let Some(c) = self.channels.get_mut(id) {
                c.gateways.insert(from.core);
            }
        } else {
            let relays = self.remote.entry(id).or_default();
            if !relays.contains(&from) {
                relays.push(from);
            }
        }
    }

    fn unwatch(&mut self, me: NodeId, id: Id, from: Addr) {
        if from.node == me {
            if let Some(c) = self.channels.get_mut(id) {
                c.gateways.remove(from.core);
            }
        } else if let Some(relays) = self.remote.get_mut(&id) {
            relays.retain(|&r| r != from);
            if relays.is_empty() {
                self.remote.remove(&id);
            }
        }
    }

    /// (channel, gateway shard) pairs.
    pub fn subscriptions(&self) -> usize {
        self.channels.values().map(|c| c.gateways.len()).sum()
    }

    /// The channel `id`. Conversations exist once created; a user's or a
    /// team's own channel is created on first use, but only when `implicit`
    /// says its user or team exists, so no id a client makes up leaves an
    /// entry behind.
    fn get_or_implicit(&mut self, id: Id, implicit: Implicit) -> Option<&mut Channel> {
        if id.is_conversation() || implicit == Implicit::Unknown {
            self.channels.get_mut(id)
        } else {
            Some(self.channels.get_or_insert_with(id, Channel::default))
        }
    }

    /// Forgets the user or team channel `id` if it holds nothing: no
    /// watcher, no event ever (so no `ts` to continue and no history to
    /// replay), no write in flight. Recreated on next use, unchanged.
    fn reclaim_if_idle(&mut self, id: Id) {
        if id.is_conversation() || self.inflight.contains_key(&id) || self.remote.contains_key(&id)
        {
            return;
        }
        let idle = self
            .channels
            .get(id)
            .is_some_and(|c| c.gateways.is_empty() && c.last_ts_micros == 0 && c.history.is_none());
        if idle {
            self.channels.remove(id);
        }
    }

    /// Takes the conversations loaded from the store (at start, before any
    /// other channel exists), as they are: no copy, no per-channel
    /// allocation.
    pub fn load(&mut self, channels: Vec<(Id, Channel)>) {
        assert!(self.channels.is_empty(), "load runs first, once");
        self.channels = IdTable::from_entries(channels);
    }

    /// Records the commit outcome of the event at `ts` and takes every event
    /// now complete at the head of the channel's queue, in ts order.
    pub fn complete(
        &mut self,
        channel: Id,
        ts: Ts,
        outcome: persist::Outcome,
    ) -> Vec<(persist::Pending, persist::Outcome)> {
        let queue = self
            .inflight
            .get_mut(&channel)
            .expect("a commit for a channel with writes in flight");
        let slot = queue
            .iter_mut()
            .find(|p| p.ts == ts)
            .expect("the committed event is queued");
        assert!(slot.outcome.is_none(), "an event committed twice");
        slot.outcome = Some(outcome);
        let mut ready = Vec::new();
        while queue.front().is_some_and(|p| p.outcome.is_some()) {
            let mut p = queue.pop_front().expect("front exists");
            let o = p.outcome.take().expect("checked");
            ready.push((p, o));
        }
        if queue.is_empty() {
            self.inflight.remove(&channel);
        }
        ready
    }

    /// Continues a channel's ts after what the store holds (at start; the
    /// store only holds events of channels that exist).
    pub fn set_last_ts(&mut self, id: Id, micros: u64) {
        if let Some(c) = self.get_or_implicit(id, Implicit::Exists) {
            c.last_ts_micros = c.last_ts_micros.max(micros);
        }
    }

    /// Creates a conversation's record (its id was generated by the caller).
    pub fn create(&mut self, new: NewChannel) -> Result<(), Refusal> {
        let channel = self.channels.get_or_insert_with(new.id, Channel::default);
        if channel.record.is_some() {
            return Err(Refusal::NameTaken);
        }
        channel.record = Some(ChannelRecord {
            private: new.private,
            ..ChannelRecord::default()
        });
        Ok(())
    }

    /// Adds (or removes) a member of a conversation.
    pub fn set_member(&mut self, id: Id, user: Id, member: bool) -> Result<(), Refusal> {
        match self.channels.get_mut(id).and_then(|c| c.record.as_mut()) {
            None => Err(Refusal::ChannelNotFound),
            Some(record) if member => record
                .add(user)
                .then_some(())
                .ok_or(Refusal::AlreadyInChannel),
            Some(record) => record
                .remove(user)
                .then_some(())
                .ok_or(Refusal::NotInChannel),
        }
    }

    /// Subscribes gateway `gateway` to `id` (a benchmark and test entry point
    /// that bypasses the mesh).
    pub fn subscribe_gateway(&mut self, id: Id, gateway: crate::shard::message::ShardId) -> bool {
        match self.get_or_implicit(id, Implicit::Exists) {
            Some(c) => {
                c.gateways.insert(gateway);
                true
            }
            None => false,
        }
    }
}

/// What a clustered channel server writes `id`'s events with (the logical
/// member owning it and the epoch); a single node needs no fence.
fn fence(shard: &Shard, id: Id) -> Option<persist::Fence> {
    shard.clustered().then(|| {
        let placement = shard.placement();
        persist::Fence {
            member: placement.ring().owner(id.raw()),
            epoch: placement.version(),
        }
    })
}

/// Whether the user or team a non-conversation channel belongs to exists:
/// the user's directory entry lives on this very shard (a user's home is
/// the owner of its user channel), and a node serves one team.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Implicit {
    Exists,
    Unknown,
}

fn implicit(shard: &Shard, id: Id) -> Implicit {
    let exists = if id.is_user() {
        crate::directory::this_shard().borrow().user(id).is_some()
    } else {
        id == shard.node.team
    };
    if exists {
        Implicit::Exists
    } else {
        Implicit::Unknown
    }
}

/// May `user` watch channel `channel`, as the channel server sees it now?
/// Members watch their conversations; a user watches its own user channel
/// and its team's. This is the check that makes a removal final: whatever
/// list a connection was admitted with, it is granted only what its user
/// is a member of when the subscription arrives here.
fn may_watch(shard: &Shard, channel: &Channel, id: Id, user: Id) -> bool {
    match &channel.record {
        Some(record) => record.is_member(user),
        None if id.is_user() => id == user,
        None => id == shard.node.team,
    }
}

/// Who watches a channel: gateway shards here, relays on other nodes.
#[derive(Clone, Debug, Default)]
pub struct Watchers {
    pub local: state::GatewaySet,
    pub remote: Vec<Addr>,
}

#[allow(clippy::too_many_arguments)]
pub fn on_subscribe(
    shard: &Rc<Shard>,
    from: Addr,
    user: Id,
    conns: Vec<ConnId>,
    channels: Vec<Id>,
    since: Option<Ts>,
    notify: Option<ReplyTo<Done>>,
    relay_tag: Option<u64>,
    resync: bool,
) {
    let sub = Subscription {
        from,
        user,
        conns,
        channels,
        since,
        notify,
        relay_tag,
        resync,
    };
    // A relay resubscribing after a failover needs every event after its
    // `since`; in a cluster the store has those the history does not.
    let exact = resync && shard.clustered();
    let from_store = since.filter(|&s| {
        exact && {
            let cs = this_shard().borrow();
            sub.channels
                .iter()
                .any(|&c| cs.replay_exact(c, s).is_none())
        }
    });
    if resync {
        tracing::debug!(?from, channels = ?sub.channels, ?since, from_store = from_store.is_some(), "owner: resubscription");
    }
    match from_store {
        None => subscribe(shard, sub, None),
        Some(since) => {
            let shard = shard.clone();
            glommio::spawn_local(async move {
                let mut replays = IdMap::default();
                for &c in &sub.channels {
                    match ownership::replay_after(&shard, c, since).await {
                        Some(frames) => replays.insert(c, Replay::Frames(frames)),
                        None => replays.insert(c, Replay::ResyncRequired),
                    };
                }
                // Registered and answered in this one step, with no await
                // before: no event of these channels can fall in between.
                subscribe(&shard, sub, Some(replays));
            })
            .detach();
        }
    }
}

/// A subscription being served.
struct Subscription {
    from: Addr,
    user: Id,
    conns: Vec<ConnId>,
    channels: Vec<Id>,
    since: Option<Ts>,
    notify: Option<ReplyTo<Done>>,
    relay_tag: Option<u64>,
    resync: bool,
}

/// Grants what `sub.user` may watch (all of it, for a relay's
/// resubscription), registers the watcher, and answers with the replay of
/// each channel after `since`: from `fetched` when given (read from the
/// store), else from the history (a client's resume looks back a little:
/// [`limits::RESUME_LOOKBACK_MICROS`]; a relay's is exact).
fn subscribe(shard: &Rc<Shard>, sub: Subscription, mut fetched: Option<IdMap<Replay>>) {
    let mut ok = Vec::with_capacity(sub.channels.len());
    let mut heads = Vec::with_capacity(sub.channels.len());
    let mut refused = Vec::new();
    let mut replay = Vec::new();
    let mut resync = Vec::new();
    let here = shard.here(shard.id);
    for id in sub.channels {
        // Owned elsewhere since it was sent (a new placement).
        if shard.owner_addr(id) != here {
            refused.push(id);
            continue;
        }
        let kind = implicit(shard, id);
        let mut cs = this_shard().borrow_mut();
        let Some(channel) = cs.get_or_implicit(id, kind) else {
            refused.push(id);
            continue;
        };
        if !sub.resync && !may_watch(shard, channel, id, sub.user) {
            refused.push(id);
            continue;
        }
        let replayed = match fetched.as_mut().and_then(|f| f.remove(&id)) {
            Some(r) => Some(r),
            None => sub.since.map(|since| match channel.history.as_deref() {
                Some(history) => {
                    let from_ts = match sub.resync {
                        true => since,
                        false => Ts(since.0.saturating_sub(limits::RESUME_LOOKBACK_MICROS)),
                    };
                    history.replay(since, from_ts)
                }
                // Events newer than `since` exist (stored before a restart)
                // but none is in memory.
                None if channel.last_ts_micros > since.0 => Replay::ResyncRequired,
                None => Replay::Frames(Vec::new()),
            }),
        };
        heads.push(
            channel
                .history
                .as_deref()
                .and_then(History::newest)
                .unwrap_or(Ts(channel.last_ts_micros)),
        );
        cs.watch(shard.node_id, id, sub.from);
        ok.push(id);
        match replayed {
            Some(Replay::Frames(frames)) => replay.extend(frames),
            Some(Replay::ResyncRequired) => resync.push(id),
            None => {}
        }
    }
    shard.send_to(
        sub.from,
        Msg::SubscribeAck {
            conns: sub.conns,
            channels: ok,
            heads,
            refused,
            replay,
            resync,
            notify: sub.notify,
            relay_tag: sub.relay_tag,
        },
    );
}

/// Local gateway shards that another shard of this node served `channel`
/// to before a new placement made this one its owner: each gets every event
/// after `since` (the last it got), then is watching.
pub fn on_adopt(shard: &Rc<Shard>, channel: Id, gateways: state::GatewaySet, since: Ts) {
    let replayed = this_shard().borrow().replay_exact(channel, since);
    match replayed {
        Some(frames) => adopt(shard, channel, gateways, frames),
        None => {
            let shard = shard.clone();
            glommio::spawn_local(async move {
                let frames = ownership::replay_after(&shard, channel, since)
                    .await
                    .unwrap_or_else(|| {
                        tracing::warn!(%channel, "an adopted channel's gap is past the log");
                        Vec::new()
                    });
                adopt(&shard, channel, gateways, frames);
            })
            .detach();
        }
    }
}

/// Replays `frames` to `gateways`, then registers them, in one step.
fn adopt(shard: &Rc<Shard>, channel: Id, gateways: state::GatewaySet, frames: Vec<(Ts, Bytes)>) {
    let kind = implicit(shard, channel);
    if this_shard()
        .borrow_mut()
        .get_or_implicit(channel, kind)
        .is_none()
    {
        tracing::warn!(%channel, "adopting watchers of a channel that is gone");
        return;
    }
    for g in gateways.iter() {
        for (ts, frame) in &frames {
            shard.send(
                g,
                Msg::Deliver {
                    channel,
                    frame: frame.clone(),
                    exclude: None,
                    ts: Some(*ts),
                },
            );
        }
        this_shard()
            .borrow_mut()
            .watch(shard.node_id, channel, shard.here(g));
    }
}

pub fn on_unsubscribe(shard: &Shard, from: Addr, channels: Vec<Id>) {
    let mut cs = this_shard().borrow_mut();
    for id in channels {
        cs.unwatch(shard.node_id, id, from);
        cs.reclaim_if_idle(id);
    }
}

#[allow(clippy::too_many_arguments)]
pub fn on_publish(
    shard: &Rc<Shard>,
    from: Addr,
    reply: Option<ReplyTo<Published>>,
    id: Id,
    body: EventBody,
    persist: Persist,
    sender: Option<Id>,
    exclude: Option<ConnId>,
) {
    let mut reply = reply;
    let result = publish(shard, from, id, body, persist, sender, exclude, &mut reply);
    // A persisted event took its `reply` along: it is answered after the
    // commit. What is left is answered now.
    if let Some(reply) = reply {
        shard.reply(reply, result.map(|()| None));
    }
}

/// Authorizes and assigns the ts. A transient event is delivered now; a
/// persisted one is handed to the store with `reply` (taken) and is
/// delivered and answered after its commit.
#[allow(clippy::too_many_arguments)]
fn publish(
    shard: &Rc<Shard>,
    from: Addr,
    id: Id,
    body: EventBody,
    persist: Persist,
    sender: Option<Id>,
    exclude: Option<ConnId>,
    reply: &mut Option<ReplyTo<Published>>,
) -> Result<(), Refusal> {
    if let Some((ts, job)) = admit(shard, from, id, body, persist, sender, exclude, reply)? {
        persist::submit(shard, id, ts, job);
    }
    Ok(())
}

/// Authorizes and, for a persisted event, assigns its ts, queues it behind
/// the channel's writes in flight (taking `reply`) and answers its store
/// job, which the caller must submit and whose outcome it must hand to
/// [`persist::committed`]; a transient event is delivered now (`None`).
#[allow(clippy::too_many_arguments)]
fn admit(
    shard: &Rc<Shard>,
    from: Addr,
    id: Id,
    body: EventBody,
    persist: Persist,
    sender: Option<Id>,
    exclude: Option<ConnId>,
    reply: &mut Option<ReplyTo<Published>>,
) -> Result<Option<(Ts, impl persist::StoreJob)>, Refusal> {
    // Clients post to conversations only: Slack refuses a user's own `U…`
    // (and anyone else's) as a channel, and nothing is created for it.
    if sender.is_some() && !id.is_conversation() {
        return Err(Refusal::ChannelNotFound);
    }
    let kind = implicit(shard, id);
    let mut cs = this_shard().borrow_mut();
    let channel = cs
        .get_or_implicit(id, kind)
        .ok_or(Refusal::ChannelNotFound)?;
    if let Some(user) = sender {
        match &channel.record {
            Some(record) if record.is_member(user) => {}
            // A private channel does not exist for those outside it.
            Some(record) if record.private => return Err(Refusal::ChannelNotFound),
            _ => return Err(Refusal::NotInChannel),
        }
    }
    Counters::add(&shard.counters.events_in, 1);
    if !persist.is_stored() {
        let frame = fanout::encode(&body, id, None);
        drop(cs);
        deliver(shard, from, id, frame, exclude, None);
        return Ok(None);
    }
    let previous_ts = Ts(channel.last_ts_micros);
    let ts = Ts::next_after(previous_ts, Ts::now());
    channel.last_ts_micros = ts.0;
    cs.inflight
        .entry(id)
        .or_default()
        .push_back(persist::Pending {
            ts,
            previous_ts,
            reply: reply.take(),
            from,
            exclude,
            outcome: None,
        });
    drop(cs);
    let job = persist::job(persist, id, ts, body, shard.node.team, fence(shard, id));
    Ok(Some((ts, job)))
}

/// Delivers a committed event: encode once, keep it for resume, fan out.
fn deliver_persisted(shard: &Rc<Shard>, id: Id, pending: &persist::Pending, body: &EventBody) {
    let frame = fanout::encode(body, id, Some(pending.ts));
    let mut cs = this_shard().borrow_mut();
    let history_cap = cs.history_per_channel;
    // It had an entry when the event was queued, and entries with writes
    // in flight are never reclaimed.
    let Some(channel) = cs.channels.get_mut(id) else {
        return;
    };
    if history_cap > 0 {
        let floor = Some(pending.previous_ts).filter(|t| t.0 > 0);
        channel
            .history
            .get_or_insert_with(|| Box::new(History::new(history_cap, floor)))
            .push(pending.ts, frame.clone());
    }
    drop(cs);
    deliver(
        shard,
        pending.from,
        id,
        frame,
        pending.exclude,
        Some(pending.ts),
    );
}

/// One message per subscribed gateway shard of this node and per relay of
/// another node, each carrying the same reference-counted frame. The
/// publisher's own connection `exclude` (on shard `from`) is skipped: only
/// the copy for `from`'s node names it.
fn deliver(
    shard: &Rc<Shard>,
    from: Addr,
    id: Id,
    frame: Bytes,
    exclude: Option<ConnId>,
    ts: Option<Ts>,
) {
    let watchers = this_shard().borrow().watchers(id);
    let skip = |node| {
        exclude.filter(|_| from.node == node).map(|conn| Exclude {
            shard: from.core,
            conn,
        })
    };
    let to = watchers
        .local
        .iter()
        .map(|g| shard.here(g))
        .chain(watchers.remote.iter().copied());
    for g in to {
        shard.send_to(
            g,
            Msg::Deliver {
                channel: id,
                frame: frame.clone(),
                exclude: skip(g.node),
                ts,
            },
        );
        Counters::add(&shard.counters.events_out, 1);
    }
}

pub fn on_create(shard: &Rc<Shard>, reply: ReplyTo<Done>, new: NewChannel) {
    let result = this_shard().borrow_mut().create(new);
    shard.reply(reply, result);
}
