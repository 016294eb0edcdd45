//! The channel server role: for the channels this shard owns (by the ring),
//! which gateway shards watch them, the next `ts`, the recent history, and
//! fan-out. Every publish of a channel passes through its one owner, which is
//! what makes per-channel order total.

pub mod fanout;
pub mod history;
pub mod state;

use std::rc::Rc;

use bytes::Bytes;

use crate::ids::{Id, IdMap};
use crate::limits;
use crate::shard::message::{
    ChannelInfo, ConnId, EventBody, Msg, NewChannel, Refusal, Reply, ReqId, ShardId,
};
use crate::shard::{Counters, Shard};
use crate::ts::Ts;
use history::{History, Replay};
use state::{Channel, ChannelRecord};

/// The channels this shard owns.
/// Owned by its shard; never crosses cores.
pub struct ChannelServer {
    channels: IdMap<Channel>,
    history_per_channel: usize,
}

impl ChannelServer {
    pub fn new(history_per_channel: usize) -> ChannelServer {
        ChannelServer {
            channels: IdMap::default(),
            history_per_channel,
        }
    }

    pub fn len(&self) -> usize {
        self.channels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// (channel, gateway shard) pairs.
    pub fn subscriptions(&self) -> usize {
        self.channels.values().map(|c| c.gateways.len()).sum()
    }

    /// The channel, created on first use for users' and teams' own channels;
    /// conversations exist only once created.
    fn get_or_implicit(&mut self, id: Id) -> Option<&mut Channel> {
        if id.is_conversation() {
            self.channels.get_mut(&id)
        } else {
            Some(self.channels.entry(id).or_default())
        }
    }

    /// Reserves room for `n` more channels (benchmarks and bulk loads).
    pub fn reserve(&mut self, n: usize) {
        self.channels.reserve(n);
    }

    /// Subscribes gateway `gateway` to `id` (a benchmark and test entry point
    /// that bypasses the mesh).
    pub fn subscribe_gateway(&mut self, id: Id, gateway: ShardId) -> bool {
        match self.get_or_implicit(id) {
            Some(c) => {
                c.gateways.insert(gateway);
                true
            }
            None => false,
        }
    }
}

pub fn on_subscribe(
    shard: &Rc<Shard>,
    from: ShardId,
    conns: Vec<ConnId>,
    channels: Vec<Id>,
    since: Option<Ts>,
    notify: Option<(ShardId, ReqId)>,
) {
    let mut cs = shard.channels.borrow_mut();
    let mut ok = Vec::with_capacity(channels.len());
    let mut replay = Vec::new();
    let mut resync = Vec::new();
    for id in channels {
        debug_assert_eq!(
            shard.owner(id),
            shard.id,
            "subscribe sent to the wrong owner"
        );
        let Some(channel) = cs.get_or_implicit(id) else {
            continue;
        };
        channel.gateways.insert(from);
        ok.push(id);
        if let (Some(since), Some(history)) = (since, channel.history.as_deref()) {
            let from_ts = Ts(since.0.saturating_sub(limits::RESUME_LOOKBACK_MICROS));
            match history.replay(since, from_ts) {
                Replay::Frames(frames) => replay.extend(frames),
                Replay::ResyncRequired => resync.push(id),
            }
        }
    }
    drop(cs);
    shard.send(
        from,
        Msg::SubscribeAck {
            conns,
            channels: ok,
            replay,
            resync,
            notify,
        },
    );
}

pub fn on_unsubscribe(shard: &Rc<Shard>, from: ShardId, channels: Vec<Id>) {
    let mut cs = shard.channels.borrow_mut();
    for id in channels {
        if let Some(c) = cs.channels.get_mut(&id) {
            c.gateways.remove(from);
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub fn on_publish(
    shard: &Rc<Shard>,
    from: ShardId,
    req: Option<ReqId>,
    id: Id,
    body: EventBody,
    transient: bool,
    sender: Option<Id>,
    exclude: Option<ConnId>,
) {
    let result = publish(shard, from, id, &body, transient, sender, exclude);
    if let Some(req) = req {
        shard.reply(from, req, Reply::Published(result));
    }
}

fn publish(
    shard: &Rc<Shard>,
    from: ShardId,
    id: Id,
    body: &EventBody,
    transient: bool,
    sender: Option<Id>,
    exclude: Option<ConnId>,
) -> Result<Option<Ts>, Refusal> {
    let mut cs = shard.channels.borrow_mut();
    let history_cap = cs.history_per_channel;
    let channel = cs.get_or_implicit(id).ok_or(Refusal::ChannelNotFound)?;
    if let Some(user) = sender {
        let allowed = match &channel.record {
            Some(record) => record.is_member(user),
            None => id == user,
        };
        if !allowed {
            return Err(Refusal::NotInChannel);
        }
    }
    Counters::add(&shard.counters.events_in, 1);
    let ts = if transient {
        None
    } else {
        let ts = Ts::next_after(Ts(channel.last_ts_micros), Ts::now());
        channel.last_ts_micros = ts.0;
        Some(ts)
    };
    let frame = fanout::encode(body, id, ts);
    if let Some(ts) = ts {
        if history_cap > 0 {
            channel
                .history
                .get_or_insert_with(|| Box::new(History::new(history_cap)))
                .push(ts, frame.clone());
        }
    }
    let gateways = channel.gateways;
    drop(cs);
    deliver(shard, from, id, frame, gateways, exclude);
    Ok(ts)
}

/// One message per subscribed gateway shard, each carrying the same
/// reference-counted frame.
fn deliver(
    shard: &Rc<Shard>,
    from: ShardId,
    id: Id,
    frame: Bytes,
    gateways: state::GatewaySet,
    exclude: Option<ConnId>,
) {
    for g in gateways.iter() {
        let exclude = if g == from { exclude } else { None };
        shard.send(
            g,
            Msg::Deliver {
                channel: id,
                frame: frame.clone(),
                exclude,
            },
        );
        Counters::add(&shard.counters.events_out, 1);
    }
}

pub fn on_create(shard: &Rc<Shard>, from: ShardId, req: ReqId, new: NewChannel) {
    let mut cs = shard.channels.borrow_mut();
    let result = if cs.channels.get(&new.id).is_some_and(|c| c.record.is_some()) {
        Err(Refusal::NameTaken)
    } else {
        let channel = cs.channels.entry(new.id).or_default();
        channel.record = Some(Box::new(ChannelRecord {
            name: new.name.into_boxed_str(),
            private: new.private,
            created_unix_secs: crate::ticket::unix_secs_now(),
            creator: new.creator,
            members: Vec::new(),
        }));
        Ok(())
    };
    drop(cs);
    shard.reply(from, req, Reply::Done(result));
}

pub fn on_set_member(shard: &Rc<Shard>, from: ShardId, req: ReqId, id: Id, user: Id, member: bool) {
    let mut cs = shard.channels.borrow_mut();
    let result = match cs
        .channels
        .get_mut(&id)
        .and_then(|c| c.record.as_deref_mut())
    {
        None => Err(Refusal::ChannelNotFound),
        Some(record) if member => record
            .add(user)
            .then_some(())
            .ok_or(Refusal::AlreadyInChannel),
        Some(record) => record
            .remove(user)
            .then_some(())
            .ok_or(Refusal::NotInChannel),
    };
    drop(cs);
    shard.reply(from, req, Reply::Done(result));
}

pub fn on_lookup(shard: &Rc<Shard>, from: ShardId, req: ReqId, id: Id) {
    let cs = shard.channels.borrow();
    let info = cs
        .channels
        .get(&id)
        .and_then(|c| c.record.as_deref())
        .map(|r| ChannelInfo {
            id,
            name: r.name.to_string(),
            private: r.private,
            members: r.members.len(),
        });
    drop(cs);
    shard.reply(from, req, Reply::ChannelInfo(info));
}
