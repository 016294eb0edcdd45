//! Scheduled messages on the channel's owner: the timers of the pending
//! messages of the channels this shard owns, and the one task that fires
//! them (docs/PROTOCOL.md "Scheduled messages").
//!
//! A pending message is a row in the store (`store::scheduled`) and one
//! 24-byte entry here ([`timers::Entry`]). One glommio timer per shard, set
//! for the earliest entry, wakes the firing task; no task per message. When
//! entries come due, the task reads their rows in one store read (a range
//! per channel: the rows are stored in firing order) and publishes each, in
//! `(post_at, id)` order per channel, as an ordinary persisted publish on
//! the channel's owner (the path of chat.postMessage: the same
//! event to subscribers, the same history), wrapped in
//! `Persist::Scheduled`: the store job that writes the message deletes the
//! row in the same transaction, and writes nothing if the row is gone. The
//! owner is this very shard, so a round is published as one batch and one
//! store job ([`crate::channel::fire`]); a row whose channel moved to
//! another owner goes there as a `Msg::Publish`. So:
//!
//! - a cancelled message never fires: its row is gone, its entry is skipped;
//! - a message fires at most once, even if two entries name it (a cluster
//!   owner that loaded it while the previous owner's entry still fired);
//! - a crash loses none: an uncommitted firing left the row, and the rows
//!   are loaded at start ([`crate::warmup`]); those already due fire at once.
//!
//! Messages of one channel are published in `(post_at, id)` order and the
//! owner assigns `ts` in the order publishes arrive, so they land in that
//! order. A firing that fails for a passing reason (store, timeout, moved
//! owner) is tried again after [`limits::SCHEDULE_RETRY`]; one refused for
//! good (the poster left the channel, the channel is gone, the thread it
//! replied to is gone) is dropped, its row deleted.

pub mod timers;

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::channel::fire::{Admitted, Firing};
use crate::channel::persist::StoreJob;
use crate::ids::Id;
use crate::limits;
use crate::shard::message::{EventBody, MessageFields, Msg, Persist, Published, Refusal};
use crate::shard::notify::Notify;
use crate::shard::{CallError, Shard};
use crate::store::scheduled::{ScheduledKey, ScheduledRow};
use crate::ts::Ts;
use timers::{Entry, Timers};

crate::shard::local::shard_local!(Scheduler);

/// This shard's pending messages and the wake-up of its firing task.
/// Owned by its shard; never crosses cores.
#[derive(Default)]
pub struct Scheduler {
    timers: Timers,
    /// Set when an entry earlier than the timer's arrives.
    wake: Rc<Notify>,
}

impl Scheduler {
    /// The entries loaded from the store at start.
    pub fn new(entries: Vec<Entry>) -> Scheduler {
        Scheduler {
            timers: Timers::from_entries(entries),
            wake: Rc::default(),
        }
    }

    /// Pending messages with an entry here.
    pub fn len(&self) -> usize {
        self.timers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.timers.is_empty()
    }
}

/// Adds an entry (a message just scheduled, or one taken over).
pub fn add(entry: Entry) {
    let mut s = this_shard().borrow_mut();
    if s.timers.push(entry) {
        s.wake.notify();
    }
}

/// `Msg::Schedule`: a message was scheduled for a channel owned here.
pub fn on_schedule(channel: Id, post_at_secs: i64, id: i64) {
    add(Entry::new(post_at_secs, channel, id));
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// The firing task of a shard: sleeps until the earliest entry is due (or
/// an earlier one arrives), fires what is due, forever.
///
/// Due messages fire in rounds of at most [`limits::SCHEDULE_FIRE_BATCH_MAX`],
/// one store job each, and at most [`limits::SCHEDULE_ROUNDS_IN_FLIGHT_MAX`]
/// rounds per shard are at the store writer: a live post queued behind the
/// spike waits for those, not for the spike. The next round is read,
/// admitted and sent while the previous one commits ([`InFlight`]), so the
/// writer never waits for this shard, and the task yields between rounds
/// so the shard keeps serving live traffic and delivering what committed.
pub async fn fire_forever(shard: Rc<Shard>) {
    let wake = this_shard().borrow().wake.clone();
    let mut in_flight = InFlight::default();
    loop {
        let earliest = this_shard().borrow().timers.earliest();
        let now = now_millis();
        let due_now = earliest.is_some_and(|at| at.saturating_mul(1000) <= now);
        if !due_now && !in_flight.rounds.is_empty() {
            // Nothing to read ahead: let the rounds in flight finish first.
            if in_flight.drain().await == Round::Retry {
                glommio::timer::sleep(limits::SCHEDULE_RETRY).await;
            }
            continue;
        }
        match earliest {
            None => wake.wait().await,
            Some(at) if !due_now => {
                let wait = Duration::from_millis((at.saturating_mul(1000) - now) as u64);
                futures_lite::future::or(glommio::timer::sleep(wait), wake.wait()).await;
            }
            Some(_) => {
                if in_flight.rounds.len() >= limits::SCHEDULE_ROUNDS_IN_FLIGHT_MAX
                    && in_flight.wait_oldest().await == Round::Retry
                {
                    // The failed entries are back in the heap, and those of
                    // the rounds after it: fired again in their order.
                    in_flight.drain().await;
                    glommio::timer::sleep(limits::SCHEDULE_RETRY).await;
                    continue;
                }
                let rows = match read_due(&shard, now / 1000).await {
                    Some(rows) => rows,
                    None => {
                        glommio::timer::sleep(limits::SCHEDULE_RETRY).await;
                        continue;
                    }
                };
                in_flight.launch(&shard, rows);
                glommio::yield_if_needed().await;
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    Done,
    /// Some firings failed for a passing reason and are back in the heap.
    Retry,
}

/// A shard's rounds between admission and their answers, oldest first: at
/// most [`limits::SCHEDULE_ROUNDS_IN_FLIGHT_MAX`]. A round is admitted and
/// sent to the store writer while the one before it commits, so the writer
/// always has the next; it writes only if the one before committed
/// ([`Admitted::write`]'s guard). What goes through other owners is sent
/// only once the round before is known to be done.
/// Owned by its shard; never crosses cores.
#[derive(Default)]
struct InFlight {
    rounds: VecDeque<glommio::task::JoinHandle<Round>>,
    /// How the newest round ended, for the next one.
    newest: Option<flume::Receiver<Round>>,
    /// The row of the last message admitted in a round still in flight.
    guard: Option<ScheduledKey>,
}

impl InFlight {
    /// Prepares the round of `rows` and starts it.
    fn launch(&mut self, shard: &Rc<Shard>, rows: Vec<ScheduledRow>) {
        let round = prepare(shard, rows, self.guard.clone());
        if let Some(last) = round.local.last() {
            self.guard = Some(last);
        }
        let previous = self.newest.take();
        let (done, next) = flume::bounded(1);
        self.newest = Some(next);
        let shard = shard.clone();
        let task = glommio::spawn_local(async move { finish(&shard, round, previous, done).await })
            .detach();
        self.rounds.push_back(task);
    }

    /// Waits for the oldest round.
    async fn wait_oldest(&mut self) -> Round {
        match self.rounds.pop_front() {
            Some(round) => round.await.unwrap_or(Round::Retry),
            None => Round::Done,
        }
    }

    /// Waits for every round: `Retry` if any failed.
    async fn drain(&mut self) -> Round {
        let mut ended = Round::Done;
        while !self.rounds.is_empty() {
            if self.wait_oldest().await == Round::Retry {
                ended = Round::Retry;
            }
        }
        self.newest = None;
        // Nothing in flight: a failed round's row, back in the heap, is no
        // guard for the rounds that fire it again.
        self.guard = None;
        ended
    }
}

/// Takes up to [`limits::SCHEDULE_FIRE_BATCH_MAX`] due entries and reads
/// their rows (a missing row was cancelled, or fired by another owner);
/// `None` if the store could not be read (the entries are back in the
/// heap).
async fn read_due(shard: &Rc<Shard>, now_secs: i64) -> Option<Vec<ScheduledRow>> {
    let due = this_shard()
        .borrow_mut()
        .timers
        .pop_due(now_secs, limits::SCHEDULE_FIRE_BATCH_MAX);
    // The round's entries are in (post_at, channel, id) order: one range
    // read per channel and second.
    let mut runs: Vec<(i64, u64, Vec<i64>)> = Vec::new();
    for e in &due {
        match runs.last_mut() {
            Some((at, channel, ids)) if (*at, *channel) == (e.post_at_secs, e.channel) => {
                ids.push(e.id)
            }
            _ => runs.push((e.post_at_secs, e.channel, vec![e.id])),
        }
    }
    // No row can be under a channel that is no id.
    let runs: Vec<(i64, String, Vec<i64>)> = runs
        .into_iter()
        .filter_map(|(at, c, ids)| Some((at, Id::from_raw(c)?.to_string(), ids)))
        .collect();
    let rows = shard
        .node
        .store
        .read(move |tx| {
            let mut rows = Vec::new();
            for (post_at, channel, ids) in &runs {
                rows.extend(tx.scheduled_run(*post_at, channel, ids)?);
            }
            Ok(rows)
        })
        .await;
    match rows {
        Ok(rows) => Some(rows),
        Err(e) => {
            tracing::warn!("scheduled messages: store read failed, retrying: {e}");
            due.into_iter().for_each(add);
            None
        }
    }
}

/// One round's rows sorted out, in order: those of channels this shard
/// owns and serves now admitted as one batch ([`crate::channel::fire`]),
/// any other to go through its owner, one publish each (in a cluster, a
/// channel whose placement moved since it was loaded, or one this shard
/// has just taken over and not loaded yet: `Msg::Publish` waits for that at
/// the owner's gate, `channel::ownership`). Owned by its shard; never
/// crosses cores.
struct Prepared<J> {
    local: Admitted<J>,
    local_entries: Vec<Entry>,
    elsewhere: Vec<(Entry, Id, EventBody, Persist, Option<Id>)>,
    /// Rows that cannot be read: deleted.
    dropped: Vec<i64>,
}

fn prepare(
    shard: &Rc<Shard>,
    rows: Vec<ScheduledRow>,
    guard: Option<ScheduledKey>,
) -> Prepared<impl StoreJob> {
    let mut local = Vec::with_capacity(rows.len());
    let mut local_entries = Vec::with_capacity(rows.len());
    let mut elsewhere = Vec::new();
    let mut dropped = Vec::new();
    for row in rows {
        let entry = |channel| Entry::new(row.row.post_at, channel, row.id);
        match publication(&row) {
            Some((channel, body, persist, sender))
                if crate::channel::ownership::ready(shard, channel) =>
            {
                local_entries.push(entry(channel));
                local.push(Firing {
                    channel,
                    body,
                    persist,
                    sender,
                });
            }
            Some((channel, body, persist, sender)) => {
                elsewhere.push((entry(channel), channel, body, persist, sender));
            }
            None => {
                tracing::warn!(id = row.id, channel = %row.row.channel, "scheduled messages: dropping an unreadable row");
                dropped.push(row.id);
            }
        }
    }
    Prepared {
        local: crate::channel::fire::admit(shard, local, guard),
        local_entries,
        elsewhere,
        dropped,
    }
}

/// Publishes a prepared round: writes its local messages, and sends the
/// others to their owners once the round before (`previous`) is done, none
/// if it failed. Tells the next round (`done`) whether this one failed as
/// soon as that is known, before delivering. Puts back what failed for a
/// passing reason; deletes the rows of what was refused for good.
async fn finish<J: StoreJob>(
    shard: &Rc<Shard>,
    round: Prepared<J>,
    previous: Option<flume::Receiver<Round>>,
    done: flume::Sender<Round>,
) -> Round {
    let Prepared {
        local,
        local_entries,
        elsewhere,
        mut dropped,
    } = round;
    let written = local.write().await;
    let previous_done = match previous {
        None => true,
        // A round that is gone (the task stopped) counts as failed.
        Some(previous) => previous.recv_async().await == Ok(Round::Done),
    };
    let mut answers: Vec<(Entry, Result<Published, CallError>)> = Vec::new();
    let mut calls = Vec::with_capacity(elsewhere.len());
    for (entry, channel, body, persist, sender) in elsewhere {
        if !previous_done {
            add(entry);
            continue;
        }
        // Sent now, before any answer is awaited: the owner assigns `ts` in
        // this order.
        let call = shard.call_owner(channel, |reply| Msg::Publish {
            reply: Some(reply),
            channel,
            body,
            persist,
            sender,
            exclude: None,
        });
        calls.push((entry, call));
    }
    for (entry, call) in calls {
        answers.push((entry, call.await));
    }
    let failed = !previous_done || written.failed() || answers.iter().any(|(_, a)| fires_again(a));
    // The next round may be gone (the task stopped): nobody to tell.
    let _ = done.send(if failed { Round::Retry } else { Round::Done });
    let fired = written.deliver();
    answers.extend(local_entries.into_iter().zip(fired.into_iter().map(Ok)));
    let mut round = if previous_done {
        Round::Done
    } else {
        Round::Retry
    };
    for (entry, answer) in answers {
        if fires_again(&answer) {
            add(entry);
            round = Round::Retry;
            continue;
        }
        // Else delivered, gone (cancelled, or fired by another owner), or
        // refused for good.
        if let Ok(Err(refusal)) = answer {
            if !matches!(refusal, Refusal::ScheduledGone) {
                tracing::info!(
                    id = entry.id,
                    ?refusal,
                    "scheduled messages: refused at its time, dropped"
                );
                dropped.push(entry.id);
            }
        }
    }
    if !dropped.is_empty() {
        let dropped_rows = shard
            .node
            .store
            .write(move |tx| {
                for id in dropped {
                    tx.delete_scheduled(id)?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = dropped_rows {
            // Still there at the next start, and refused again then.
            tracing::warn!("scheduled messages: could not drop refused rows: {e}");
        }
    }
    round
}

/// Whether a firing's answer means "not now": a passing refusal, or no
/// answer at all. It fires again later.
fn fires_again(answer: &Result<Published, CallError>) -> bool {
    match answer {
        Ok(Ok(_)) => false,
        Ok(Err(refusal)) => crate::channel::fire::passing(*refusal),
        Err(_) => true,
    }
}

/// What a pending row publishes: a user's message (as its user: only a
/// member may post it, the check chat.postMessage makes), or a backend's
/// event; `None` for a row that cannot be read.
fn publication(row: &ScheduledRow) -> Option<(Id, EventBody, Persist, Option<Id>)> {
    let r = &row.row;
    let channel = Id::parse(&r.channel)?;
    let event = r.event.as_deref()?;
    let wrap = |inner| Persist::Scheduled {
        id: row.id,
        post_at: r.post_at,
        inner: Box::new(inner),
    };
    match r.user.as_deref() {
        Some(user) => {
            let user = Id::parse(user)?;
            let blocks = match r.blocks.as_deref() {
                Some(b) => Some(serde_json::from_str(b).ok()?),
                None => None,
            };
            let fields = MessageFields {
                user,
                text: r.text.clone(),
                blocks,
                thread_ts: r.thread_ts.map(|t| Ts(t.max(0) as u64)),
                subtype: None,
                client_msg_id: None,
            };
            let body = EventBody {
                json: event.as_bytes().to_vec(),
                add_channel: false,
                add_ts: true,
            };
            Some((
                channel,
                body,
                wrap(Persist::Message(Box::new(fields))),
                Some(user),
            ))
        }
        None => {
            let (body, persist) = crate::ops::backend_event_text(event, false).ok()?;
            Some((channel, body, wrap(persist), None))
        }
    }
}

/// A cluster shard that claimed logical ring member `member` (at start, or
/// taking it over from a failed node): adds a timer entry for every
/// pending message of that member's channels. The previous owner's entries
/// may still fire too; the row decides which firing writes (module notes).
pub async fn load_member(shard: Rc<Shard>, member: u32) {
    let ring = shard.placement();
    let entries = shard
        .node
        .store
        .read(move |tx| {
            let mut entries = Vec::new();
            tx.each_scheduled(&mut |id, c, post_at_secs| {
                if let Some(c) = Id::parse(c).filter(|c| ring.ring().owner(c.raw()) == member) {
                    entries.push(Entry::new(post_at_secs, c, id));
                }
            })?;
            Ok(entries)
        })
        .await;
    match entries {
        Ok(entries) => {
            tracing::debug!(
                member,
                pending = entries.len(),
                "scheduled messages: loaded a claimed member's"
            );
            entries.into_iter().for_each(add);
        }
        // Not lost: the rows stay, and the next claim or start loads them.
        Err(e) => tracing::error!(
            member,
            "scheduled messages: cannot load a claimed member's: {e}"
        ),
    }
}
