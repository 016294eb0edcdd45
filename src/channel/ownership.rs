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
    /// What arrived while this shard was behind the node's newest epoch,
    /// in order, and since when it has waited.
    parked: Vec<(Addr, Msg)>,
    parked_since: Option<std::time::Instant>,
    /// Claims of members that left the ring, not yet done: nothing is
    /// written until they are (`on_placement`).
    fences_pending: usize,
}

/// Longest a shard holds messages waiting for a placement it heard of; past
/// it they are served on the placement it has (a peer's epoch that never
/// comes here would otherwise stall it).
const PARKED_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether handling `msg` from `from` depends on who owns what: anything a
/// peer node sent, and what an owner or relay serves.
fn placement_bound(shard: &Shard, from: Addr, msg: &Msg) -> bool {
    from.node != shard.node_id || ids_of(msg).is_some() || matches!(msg, Msg::Unsubscribe { .. })
}

/// Holds `msg` if this shard is behind the node's newest epoch (a new
/// placement is on its way): acting on the old one would send it to an
/// owner that may be gone. `Some` when it may be handled now.
pub fn park_if_behind(shard: &Rc<Shard>, from: Addr, msg: Msg) -> Option<(Addr, Msg)> {
    if !shard.clustered() || !placement_bound(shard, from, &msg) {
        return Some((from, msg));
    }
    let mut own = this_shard().borrow_mut();
    let holding = !own.parked.is_empty();
    if !holding && !shard.behind() {
        return Some((from, msg));
    }
    own.parked.push((from, msg));
    if !holding {
        own.parked_since = Some(std::time::Instant::now());
        let shard = shard.clone();
        glommio::spawn_local(async move {
            glommio::timer::sleep(PARKED_MAX).await;
            let since = this_shard().borrow().parked_since;
            if since.is_some_and(|t| t.elapsed() >= PARKED_MAX) {
                tracing::warn!(
                    shard = shard.id,
                    "a newer placement did not arrive: serving on ours"
                );
                unpark(&shard);
            }
        })
        .detach();
    }
    None
}

/// Handles, in order, what was parked (the placement caught up).
pub fn unpark(shard: &Rc<Shard>) {
    let parked = {
        let mut own = this_shard().borrow_mut();
        own.parked_since = None;
        std::mem::take(&mut own.parked)
    };
    for (from, msg) in parked {
        crate::shard::receive::passed_on(shard, from, msg);
    }
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
        | Msg::Adopt { channel, .. }
        | Msg::Schedule { channel, .. } => Some(vec![*channel]),
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

/// Whether a request for `id` would pass [`gate`] at once: this shard owns
/// it and, in a cluster, holds its member's claim and has it loaded (or
/// knows it does not exist), with no request waiting for it. A scheduled round publishes such channels
/// directly (`channel::fire`); the others go through the gate.
pub fn ready(shard: &Shard, id: Id) -> bool {
    if shard.owner_addr(id) != shard.here(shard.id) {
        return false;
    }
    if !shard.clustered() {
        return true;
    }
    readiness(shard, &this_shard().borrow(), id).passes()
}

/// What [`gate`] asks of a channel this shard owns, in a cluster.
struct Readiness {
    /// Requests for it already wait (a later one must queue behind them).
    waiting: bool,
    /// Its ring member's claim is held, and no fence is pending.
    claimed: bool,
    /// It is loaded here, or known not to exist.
    loaded: bool,
}

impl Readiness {
    fn passes(&self) -> bool {
        !self.waiting && self.claimed && self.loaded
    }
}

fn readiness(shard: &Shard, own: &Ownership, c: Id) -> Readiness {
    let member = shard.placement().ring().owner(c.raw());
    Readiness {
        waiting: own.waiting.contains_key(&c),
        claimed: own.claims.get(&member) == Some(&Claim::Held) && own.fences_pending == 0,
        loaded: is_loaded(c) || own.absent.contains(&c),
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
    let (msg, ids) = match ids.iter().all(|&c| shard.owner_addr(c) == here) {
        true => (msg, ids),
        false => split(shard, from, msg, &ids)?,
    };
    let mut own = this_shard().borrow_mut();
    for &c in &ids {
        let r = readiness(shard, &own, c);
        if !r.passes() {
            own.waiting.entry(c).or_default().push((from, msg));
            let start = r.claimed && !r.loaded && own.loading.insert(c);
            drop(own);
            if start {
                glommio::spawn_local(load(shard.clone(), c)).detach();
            }
            return None;
        }
    }
    Some((from, msg))
}

/// A request sent on an older placement, some of whose ids another shard
/// owns now: each part goes on to its owner (sender kept), and the part
/// this shard owns, if any, is handed back. A subscription's answer is
/// counted per channel at its gateway, so splitting it is exact. A relay's
/// forwarded subscription is not split: what is not owned here is refused
/// (the relay follows the new placement itself).
fn split(shard: &Shard, from: Addr, msg: Msg, ids: &[Id]) -> Option<(Msg, Vec<Id>)> {
    let here = shard.here(shard.id);
    let pass_on = |to: Addr, msg: Msg| {
        shard.send_to(
            to,
            Msg::PassedOn {
                from,
                msg: Box::new(msg),
            },
        )
    };
    if let [only] = ids {
        // One id: all of it goes on.
        pass_on(shard.owner_addr(*only), msg);
        return None;
    }
    match msg {
        Msg::Subscribe {
            user,
            conns,
            since,
            notify: None,
            relay_tag: None,
            resync,
            ..
        } => {
            let mut mine = Vec::new();
            for (owner, channels) in shard.group_by_owner_addr(ids.iter().copied()) {
                if owner == here {
                    mine = channels;
                    continue;
                }
                pass_on(
                    owner,
                    Msg::Subscribe {
                        user,
                        conns: conns.clone(),
                        channels,
                        since,
                        notify: None,
                        relay_tag: None,
                        resync,
                    },
                );
            }
            (!mine.is_empty()).then(|| {
                let msg = Msg::Subscribe {
                    user,
                    conns,
                    channels: mine.clone(),
                    since,
                    notify: None,
                    relay_tag: None,
                    resync,
                };
                (msg, mine)
            })
        }
        Msg::WatchPresence {
            watch, snapshot, ..
        } => {
            let mut mine = Vec::new();
            for (owner, users) in shard.group_by_owner_addr(ids.iter().copied()) {
                if owner == here {
                    mine = users;
                    continue;
                }
                pass_on(
                    owner,
                    Msg::WatchPresence {
                        users,
                        watch,
                        snapshot,
                    },
                );
            }
            (!mine.is_empty()).then(|| {
                let msg = Msg::WatchPresence {
                    users: mine.clone(),
                    watch,
                    snapshot,
                };
                (msg, mine)
            })
        }
        // A relay's subscription: served here; the channel server refuses
        // what it does not own.
        msg @ Msg::Subscribe { .. } => {
            let mine = ids
                .iter()
                .copied()
                .filter(|&c| shard.owner_addr(c) == here)
                .collect();
            Some((msg, mine))
        }
        // Nothing else names several ids.
        msg => {
            pass_on(shard.owner_addr(ids[0]), msg);
            None
        }
    }
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
    if let Ok(s) = &stored {
        tracing::debug!(%id, last_ts = ?s.last_ts, events = s.events.len(), "owner: loaded");
    }
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
async fn claim(shard: Rc<Shard>, member: u32, epoch: u64, deposed: Rc<[u16]>) {
    let nodes = deposed.to_vec();
    let claimed = shard
        .node
        .store
        .write(move |tx| tx.claim_member(member, epoch, &nodes))
        .await;
    match claimed {
        Ok(true) => {
            let mut own = this_shard().borrow_mut();
            // Still ours, at this epoch (a newer placement claims again)?
            if let Some(c) = own
                .claims
                .get_mut(&member)
                .filter(|_| shard.epoch() == epoch)
            {
                *c = Claim::Held;
                glommio::spawn_local(crate::schedule::load_member(shard.clone(), member)).detach();
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
                glommio::spawn_local(claim(shard.clone(), member, epoch, deposed)).detach();
            }
        }
    }
}

/// Fences `member` (which left the ring, or gave this shard channels) at
/// `epoch`, then serves what waited. Retried until done: until then this
/// shard writes nothing.
async fn fence(shard: Rc<Shard>, member: u32, epoch: u64, deposed: Rc<[u16]>) {
    loop {
        let nodes = deposed.to_vec();
        match shard
            .node
            .store
            .write(move |tx| tx.claim_member(member, epoch, &nodes))
            .await
        {
            // False: a newer epoch fenced it already.
            Ok(_) => break,
            Err(e) => {
                tracing::error!(
                    member,
                    epoch,
                    "cannot fence a removed member: {e}; retrying"
                );
                glommio::timer::sleep(std::time::Duration::from_millis(100)).await;
                if shard.epoch() != epoch {
                    break; // a newer placement fences it again
                }
            }
        }
    }
    let mut own = this_shard().borrow_mut();
    own.fences_pending = own.fences_pending.saturating_sub(1);
    let done = own.fences_pending == 0;
    drop(own);
    if done {
        release_all(&shard);
    }
}

/// The placement in force changed (or is the first): claim what this
/// shard gained, hand over what it lost.
pub fn on_placement(shard: &Rc<Shard>, old: &crate::placement::Placement) {
    if !shard.clustered() {
        return;
    }
    let placement = shard.placement();
    let epoch = placement.version();
    let here = shard.here(shard.id);
    let mine: HashSet<u32> = placement
        .assignment()
        .filter(|&(_, a)| a == here)
        .map(|(m, _)| m)
        .collect();
    // Members that left the ring: their channels went to other members, so
    // no owner of theirs claims them; every shard fences them at the new
    // epoch, so that their old owner (a zombie) cannot write them any more.
    let removed: Vec<u32> = old
        .ring()
        .members()
        .iter()
        .copied()
        .filter(|m| placement.ring().members().binary_search(m).is_err())
        .collect();
    // Members still in the ring that gave channels to this shard's members
    // (members joined, or the ring changed otherwise): their owner may have
    // a write of a moved channel in flight, fenced with the member it was
    // written under, not with ours; a claim of ours would not wait for it
    // and the channel could be loaded without it, then acknowledged there
    // and delivered nowhere. So they are fenced at the new epoch too (their
    // owner claims them again as soon as it has this placement), and
    // nothing is served here until that is done.
    let donors: Vec<u32> = placement
        .ring()
        .donors(old.ring(), |m| mine.contains(&m))
        .into_iter()
        .filter(|m| !mine.contains(m) && !removed.contains(m))
        .collect();
    // Nodes that left the placement: if one of them is paused inside a
    // transaction (a zombie), the claims below end its store sessions
    // rather than wait for it (`Tx::claim_member`).
    let deposed: Rc<[u16]> = placement.nodes_gone_since(old).into_iter().collect();
    // Every member of this shard is claimed again at the new epoch: a
    // zombie that owned one at an older epoch is fenced out, whatever moved.
    let mut own = this_shard().borrow_mut();
    own.claims = mine.iter().map(|&m| (m, Claim::Pending)).collect();
    own.fences_pending += removed.len() + donors.len();
    own.absent.clear();
    drop(own);
    for &m in &mine {
        glommio::spawn_local(claim(shard.clone(), m, epoch, deposed.clone())).detach();
    }
    for m in removed.into_iter().chain(donors) {
        glommio::spawn_local(fence(shard.clone(), m, epoch, deposed.clone())).detach();
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
    tracing::debug!(%channel, %since, gateways = ?entry.gateways, "owner: handing over");
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
