//! Which channels this channel server owns, in a cluster, and how ownership
//! moves (docs/CLUSTER.md "Failure").
//!
//! On one node every channel is loaded at start and never moves; none of
//! this runs. In a cluster the placement says which logical ring members
//! this shard owns, and it changes:
//!
//! - **gained** members are *claimed* in the shared store at the new epoch
//!   (`Tx::claim_member`) before anything of theirs is written here; a
//!   claim waits for the writes of the member's previous owner and fences
//!   out any later ones (a zombie cannot commit). A channel of a gained
//!   member is *loaded* from the store on its first request (its record,
//!   members, last `ts` and recent events), so taking over a failed node's
//!   share costs nothing up front and its busy channels come back first.
//!   Requests for a channel that is not ready wait here, in order.
//! - **lost** members' channels are dropped, and the local gateways that
//!   watched them are handed to whichever shard of this node serves them now
//!   (`Msg::Adopt`: a relay, or the new owner if it is here), with the ts of
//!   the last event they got, from which the new server replays. A channel
//!   with writes in flight is handed over once they are delivered.
//!
//! A request that reaches a shard that does not own its channel any more is
//! passed on to the owner with its sender (`Msg::PassedOn`), so no one
//! waits for an answer that will not come.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use bytes::Bytes;

use super::history::History;
use super::state::{Channel, ChannelRecord};
use crate::gateway::frame;
use crate::ids::{Id, IdMap};
use crate::placement::Addr;
use crate::shard::message::Msg;
use crate::shard::set::GatewaySet;
use crate::shard::Shard;
use crate::ts::Ts;

crate::shard::local::shard_local!(Ownership);

/// Ids confirmed absent from the store that are remembered (so a request
/// naming one is refused without another read); beyond this, forgotten.
const ABSENT_IDS_MAX: usize = 16 * 1024;

/// A gained member's claim in the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Claim {
    Pending,
    Held,
}

/// What this shard owns in a cluster, and the requests waiting to be served.
/// Owned by its shard; never crosses cores.
#[derive(Default)]
pub struct Ownership {
    /// Logical members this shard owns in the placement in force.
    claims: HashMap<u32, Claim>,
    /// Requests waiting for a channel to be ready, per channel, in order.
    waiting: IdMap<Vec<(Addr, Msg)>>,
    /// Channels being loaded from the store.
    loading: HashSet<Id>,
    /// Ids the store was asked about and does not have.
    absent: HashSet<Id>,
    /// Channels this shard no longer owns but still has writes in flight
    /// for: handed over once those are delivered.
    leaving: HashSet<Id>,
}

/// The ids whose owner serves a request: the channels of a channel
/// server's request, the user of a home's request that reads the
/// directory. (Presence-only requests need nothing loaded: gateways report
/// to a new home themselves.)
fn ids_of(msg: &Msg) -> Option<Vec<Id>> {
    match msg {
        Msg::Subscribe { channels, .. } => Some(channels.clone()),
        Msg::Publish { channel, .. }
        | Msg::ChangeMember { channel, .. }
        | Msg::Adopt { channel, .. } => Some(vec![*channel]),
        Msg::ConnOpen { user, .. }
        | Msg::Authenticate { user, .. }
        | Msg::LookupUser { user, .. }
        | Msg::SetUserChannel { user, .. } => Some(vec![*user]),
        Msg::WatchPresence { users, .. } => Some(users.clone()),
        _ => None,
    }
}

/// Whether what this shard holds of `id` is current: a conversation in the
/// channel server, a user in the directory.
fn is_loaded(id: Id) -> bool {
    if id.is_user() {
        crate::directory::this_shard().borrow().user(id).is_some()
    } else {
        super::this_shard().borrow().is_loaded(id)
    }
}

/// Lets a channel server's request through when its channels are ready
/// here (`Some`), or keeps it until they are. Requests for channels another
/// shard owns now are passed on to it. One node: always through.
pub fn gate(shard: &Rc<Shard>, from: Addr, msg: Msg) -> Option<(Addr, Msg)> {
    if !shard.clustered() {
        return Some((from, msg));
    }
    let Some(ids) = ids_of(&msg) else {
        return Some((from, msg));
    };
    let here = shard.here(shard.id);
    if let Some(&moved) = ids.iter().find(|&&c| shard.owner_addr(c) != here) {
        // Sent on an older placement: to the owner now, sender kept. (An
        // adoption is for this node's shards only: the dispatcher routes it
        // before it gets here.)
        shard.send_to(
            shard.owner_addr(moved),
            Msg::PassedOn {
                from,
                msg: Box::new(msg),
            },
        );
        return None;
    }
    let mut own = this_shard().borrow_mut();
    for &c in &ids {
        let member = shard.placement().ring().owner(c.raw());
        let waiting = own.waiting.contains_key(&c);
        let claimed = own.claims.get(&member) == Some(&Claim::Held);
        let loaded = is_loaded(c) || own.absent.contains(&c);
        if waiting || !claimed || !loaded {
            own.waiting.entry(c).or_default().push((from, msg));
            let start = claimed && !loaded && own.loading.insert(c);
            drop(own);
            if start {
                glommio::spawn_local(load(shard.clone(), c)).detach();
            }
            return None;
        }
    }
    Some((from, msg))
}

/// Handles again, in order, what waited for `channel`.
fn release(shard: &Rc<Shard>, channel: Id) {
    let waiting = this_shard().borrow_mut().waiting.remove(&channel);
    for (from, msg) in waiting.unwrap_or_default() {
        crate::shard::receive::passed_on(shard, from, msg);
    }
}

/// Handles again everything that waits (a claim came through).
fn release_all(shard: &Rc<Shard>) {
    let channels: Vec<Id> = this_shard().borrow().waiting.keys().copied().collect();
    for c in channels {
        release(shard, c);
    }
}

/// What the store holds of an id this shard now owns: a conversation's
/// record, a user's directory entry, and the channel's recent events.
struct Stored {
    record: Option<ChannelRecord>,
    user: Option<crate::directory::User>,
    last_ts: Option<i64>,
    events: Vec<(i64, String)>,
}

/// Loads `id` from the store, then serves what waited for it.
async fn load(shard: Rc<Shard>, id: Id) {
    let history_cap = super::this_shard().borrow().history_per_channel();
    let key = id.to_string();
    let stored = shard
        .node
        .store
        .read(move |tx| {
            let mut stored = Stored {
                record: None,
                user: None,
                last_ts: tx.channel_max_ts(&key)?,
                events: tx.last_events(&key, history_cap)?,
            };
            if id.is_conversation() {
                if let Some(row) = tx.channel(&key)? {
                    let mut record = ChannelRecord {
                        private: row.is_private,
                        ..ChannelRecord::default()
                    };
                    for u in tx.members(&key, None, usize::MAX)?.0 {
                        if let Some(u) = Id::parse(&u) {
                            record.add(u);
                        }
                    }
                    stored.record = Some(record);
                }
            } else if id.is_user() {
                if let (Some(row), hash) = (tx.user(&key)?, tx.token_hash_of(&key)?) {
                    stored.user = Id::parse(&row.team_id).map(|team| crate::directory::User {
                        team,
                        name: row.name.into_boxed_str(),
                        is_bot: row.is_bot,
                        token_hash: hash.unwrap_or([0; 32]),
                        channels: Vec::new(),
                    });
                    if let Some(user) = stored.user.as_mut() {
                        user.channels = tx
                            .channels_of(&key)?
                            .iter()
                            .filter_map(|c| Id::parse(c))
                            .collect();
                    }
                }
            }
            Ok(stored)
        })
        .await;
    let mut own = this_shard().borrow_mut();
    own.loading.remove(&id);
    match stored {
        Ok(stored) => {
            let found =
                stored.record.is_some() || stored.user.is_some() || stored.last_ts.is_some();
            drop(own);
            if found {
                install_loaded(id, stored, history_cap);
            } else {
                remember_absent(id);
            }
        }
        Err(e) => {
            // Served as if absent this once (channel_not_found, an unknown
            // user); the next placement change forgets it.
            tracing::error!(%id, "cannot load what this shard took over: {e}");
            drop(own);
            remember_absent(id);
        }
    }
    release(&shard, id);
}

fn remember_absent(id: Id) {
    let mut own = this_shard().borrow_mut();
    if own.absent.len() >= ABSENT_IDS_MAX {
        own.absent.clear();
    }
    own.absent.insert(id);
}

/// Puts what was loaded of `id` in the channel server and the directory.
fn install_loaded(id: Id, stored: Stored, history_cap: usize) {
    if let Some(user) = stored.user {
        crate::directory::this_shard()
            .borrow_mut()
            .load_user(id, user);
    }
    if stored.record.is_none() && stored.last_ts.is_none() {
        return; // a user with no event on its own channel yet
    }
    let last_ts = stored.last_ts.unwrap_or(0).max(0) as u64;
    let mut history = None;
    if history_cap > 0 && !stored.events.is_empty() {
        // A full ring from the store may not reach back to every event: the
        // one before its first counts as evicted.
        let floor = stored
            .events
            .first()
            .map(|&(ts, _)| Ts((ts.max(1) - 1) as u64))
            .filter(|_| stored.events.len() == history_cap);
        let mut h = History::new(history_cap, floor);
        for (ts, json) in &stored.events {
            h.push(Ts(*ts as u64), frame::encode_text(json.as_bytes()));
        }
        history = Some(Box::new(h));
    }
    let entry = Channel {
        last_ts_micros: last_ts,
        history,
        record: stored.record,
        ..Channel::default()
    };
    super::this_shard().borrow_mut().install(id, entry);
}

/// Claims `member` at `epoch` in the store, then serves what waited.
async fn claim(shard: Rc<Shard>, member: u32, epoch: u64) {
    let claimed = shard
        .node
        .store
        .write(move |tx| tx.claim_member(member, epoch))
        .await;
    match claimed {
        Ok(true) => {
            let mut own = this_shard().borrow_mut();
            // Still ours (no newer placement took it meanwhile)?
            if let Some(c) = own.claims.get_mut(&member) {
                *c = Claim::Held;
            }
            drop(own);
            release_all(&shard);
        }
        Ok(false) => {
            // A newer epoch claimed it: this placement is already stale; the
            // next one says who owns it.
            tracing::warn!(
                member,
                epoch,
                "a newer epoch holds this member: not serving it"
            );
        }
        Err(e) => {
            tracing::error!(member, epoch, "cannot claim a member: {e}; retrying");
            glommio::timer::sleep(std::time::Duration::from_millis(100)).await;
            if this_shard().borrow().claims.get(&member) == Some(&Claim::Pending)
                && shard.epoch() == epoch
            {
                glommio::spawn_local(claim(shard.clone(), member, epoch)).detach();
            }
        }
    }
}

/// The placement in force changed (or is the first): claim what this
/// shard gained, hand over what it lost.
pub fn on_placement(shard: &Rc<Shard>) {
    if !shard.clustered() {
        return;
    }
    let placement = shard.placement();
    let here = shard.here(shard.id);
    let mine: HashSet<u32> = placement
        .assignment()
        .filter(|&(_, a)| a == here)
        .map(|(m, _)| m)
        .collect();
    let mut own = this_shard().borrow_mut();
    own.claims.retain(|m, _| mine.contains(m));
    let gained: Vec<u32> = mine
        .iter()
        .copied()
        .filter(|m| !own.claims.contains_key(m))
        .collect();
    for &m in &gained {
        own.claims.insert(m, Claim::Pending);
    }
    own.absent.clear();
    drop(own);
    for m in gained {
        glommio::spawn_local(claim(shard.clone(), m, placement.version())).detach();
    }
    // Channels this shard served and no longer owns.
    let lost: Vec<Id> = super::this_shard()
        .borrow()
        .ids()
        .filter(|&c| shard.owner_addr(c) != here)
        .collect();
    for c in lost {
        leave(shard, c);
    }
    // Requests waiting for channels that moved: to their new owners.
    let waiting: Vec<Id> = this_shard().borrow().waiting.keys().copied().collect();
    for c in waiting {
        if shard.owner_addr(c) != here {
            release(shard, c);
        }
    }
}

/// Drops a channel this shard no longer owns, handing its local watchers
/// to the shard of this node that serves it now; with writes in flight,
/// once they are delivered.
pub fn leave(shard: &Rc<Shard>, channel: Id) {
    let mut cs = super::this_shard().borrow_mut();
    if cs.has_inflight(channel) {
        drop(cs);
        this_shard().borrow_mut().leaving.insert(channel);
        return;
    }
    let Some(entry) = cs.drop_channel(channel) else {
        return;
    };
    drop(cs);
    this_shard().borrow_mut().leaving.remove(&channel);
    // Everything up to the last delivered event reached the watchers.
    let since = entry
        .history
        .as_deref()
        .and_then(History::newest)
        .unwrap_or(Ts(entry.last_ts_micros));
    if entry.gateways.is_empty() {
        return;
    }
    hand_over(shard, channel, entry.gateways, since);
}

/// The writes in flight of `channel` are all delivered: if it was leaving,
/// it goes now.
pub fn after_commits(shard: &Rc<Shard>, channel: Id) {
    if this_shard().borrow().leaving.contains(&channel) {
        leave(shard, channel);
    }
}

/// Local gateways watching `channel` go to the shard that serves it here now.
fn hand_over(shard: &Rc<Shard>, channel: Id, gateways: GatewaySet, since: Ts) {
    let target = shard.owner(channel);
    let msg = Msg::Adopt {
        channel,
        gateways,
        since,
    };
    if target == shard.id {
        // This shard relays it now.
        if let Msg::Adopt {
            channel,
            gateways,
            since,
        } = msg
        {
            crate::cluster::relay::on_adopt(shard, channel, gateways, since);
        }
    } else {
        shard.send(target, msg);
    }
}

/// Frames of `channel` after `since`, in ts order, as one replay: from the
/// history when it reaches back that far, else from the store's event log
/// followed by whatever the history holds after it (events delivered while
/// the store was read). `None`: more than the log keeps.
pub async fn replay_after(shard: &Rc<Shard>, channel: Id, since: Ts) -> Option<Vec<(Ts, Bytes)>> {
    if let Some(frames) = super::this_shard().borrow().replay_exact(channel, since) {
        return Some(frames);
    }
    let c = channel.to_string();
    let after = since.0 as i64;
    let stored = shard
        .node
        .store
        .read(move |tx| tx.events_after(&c, after, crate::limits::REPLAY_FROM_STORE_EVENTS_MAX))
        .await
        .ok()?;
    if stored.len() >= crate::limits::REPLAY_FROM_STORE_EVENTS_MAX {
        return None;
    }
    let mut frames: Vec<(Ts, Bytes)> = stored
        .iter()
        .map(|(ts, json)| (Ts(*ts as u64), frame::encode_text(json.as_bytes())))
        .collect();
    let newest = frames.last().map_or(since, |&(ts, _)| ts);
    if let Some(more) = super::this_shard().borrow().replay_exact(channel, newest) {
        frames.extend(more);
    }
    Some(frames)
}
