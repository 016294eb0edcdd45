//! Scheduled messages on the channel's owner: the timers of the pending
//! messages of the channels this shard owns, and the one task that fires
//! them (docs/PROTOCOL.md "Scheduled messages").
//!
//! A pending message is a row in the store (`store::scheduled`) and one
//! 24-byte entry here ([`timers::Entry`]). One glommio timer per shard, set
//! for the earliest entry, wakes the firing task; no task per message. When
//! entries come due, the task reads their rows in one store read and
//! publishes each, in `(post_at, id)` order per channel, as an ordinary persisted
//! publish on the channel's owner (the path of chat.postMessage: the same
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

use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::channel::fire::Firing;
use crate::ids::Id;
use crate::limits;
use crate::shard::message::{EventBody, MessageFields, Msg, Persist, Published, Refusal};
use crate::shard::notify::Notify;
use crate::shard::{CallError, Shard};
use crate::store::scheduled::ScheduledRow;
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
    add(Entry {
        post_at_secs,
        channel: channel.raw(),
        id,
    });
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
/// one store job each, and at most one round per shard is at the store
/// writer at a time: a live post queued behind the spike waits for about
/// one round, not for the spike. The next round's rows are read while the
/// previous one commits, so the writer is not left idle between rounds, and
/// the task yields between rounds so the shard keeps serving live traffic
/// and delivering what committed.
pub async fn fire_forever(shard: Rc<Shard>) {
    let wake = this_shard().borrow().wake.clone();
    let mut in_flight: Option<glommio::task::JoinHandle<Round>> = None;
    loop {
        let earliest = this_shard().borrow().timers.earliest();
        let now = now_millis();
        let due_now = earliest.is_some_and(|at| at.saturating_mul(1000) <= now);
        if !due_now {
            // Nothing to read ahead: let the round in flight finish first.
            if let Some(round) = in_flight.take() {
                if round.await == Some(Round::Retry) {
                    glommio::timer::sleep(limits::SCHEDULE_RETRY).await;
                }
                continue;
            }
        }
        match earliest {
            None => wake.wait().await,
            Some(at) if !due_now => {
                let wait = Duration::from_millis((at.saturating_mul(1000) - now) as u64);
                futures_lite::future::or(glommio::timer::sleep(wait), wake.wait()).await;
            }
            Some(_) => {
                let (due, rows) = match read_due(&shard, now / 1000).await {
                    Some(next) => next,
                    None => {
                        glommio::timer::sleep(limits::SCHEDULE_RETRY).await;
                        continue;
                    }
                };
                if let Some(round) = in_flight.take() {
                    if round.await == Some(Round::Retry) {
                        // Back in the heap, behind the entries that failed,
                        // so each channel's messages keep their order.
                        due.into_iter().for_each(add);
                        glommio::timer::sleep(limits::SCHEDULE_RETRY).await;
                        continue;
                    }
                }
                let shard = shard.clone();
                in_flight = Some(
                    glommio::spawn_local(async move { fire_rows(&shard, rows).await }).detach(),
                );
                glommio::yield_if_needed().await;
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Round {
    Done,
    /// Some firings failed for a passing reason and are back in the heap.
    Retry,
}

/// Takes up to [`limits::SCHEDULE_FIRE_BATCH_MAX`] due entries and reads
/// their rows (a missing row was cancelled, or fired by another owner);
/// `None` if the store could not be read (the entries are back in the
/// heap).
async fn read_due(shard: &Rc<Shard>, now_secs: i64) -> Option<(Vec<Entry>, Vec<ScheduledRow>)> {
    let due = this_shard()
        .borrow_mut()
        .timers
        .pop_due(now_secs, limits::SCHEDULE_FIRE_BATCH_MAX);
    let ids: Vec<i64> = due.iter().map(|e| e.id).collect();
    let rows = shard
        .node
        .store
        .read(move |tx| {
            let mut rows = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(row) = tx.scheduled(id)? {
                    rows.push(row);
                }
            }
            Ok(rows)
        })
        .await;
    match rows {
        Ok(rows) => Some((due, rows)),
        Err(e) => {
            tracing::warn!("scheduled messages: store read failed, retrying: {e}");
            due.into_iter().for_each(add);
            None
        }
    }
}

/// Publishes one round's rows, in order: those of channels this shard owns
/// and serves now as one batch ([`crate::channel::fire`]), any other
/// through its owner, one publish each: in a cluster, a channel whose
/// placement moved since it was loaded, or one this shard has just taken
/// over and not loaded yet (`Msg::Publish` waits for that at the owner's
/// gate, `channel::ownership`). Puts back what failed for a passing
/// reason; deletes the rows of what was refused for good.
async fn fire_rows(shard: &Rc<Shard>, rows: Vec<ScheduledRow>) -> Round {
    let mut local = Vec::with_capacity(rows.len());
    let mut local_entries = Vec::with_capacity(rows.len());
    let mut elsewhere = Vec::new();
    let mut dropped = Vec::new();
    for row in rows {
        let entry = |channel: Id| Entry {
            post_at_secs: row.row.post_at,
            channel: channel.raw(),
            id: row.id,
        };
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
                let entry = entry(channel);
                // Sent now, before any answer is awaited: the owner assigns
                // `ts` in this order.
                let call = shard.call_owner(channel, |reply| Msg::Publish {
                    reply: Some(reply),
                    channel,
                    body,
                    persist,
                    sender,
                    exclude: None,
                });
                elsewhere.push((entry, call));
            }
            None => {
                tracing::warn!(id = row.id, channel = %row.row.channel, "scheduled messages: dropping an unreadable row");
                dropped.push(row.id);
            }
        }
    }
    let mut answers: Vec<(Entry, Result<Published, CallError>)> = Vec::new();
    if !local.is_empty() {
        let fired = crate::channel::fire::fire(shard, local).await;
        answers.extend(local_entries.into_iter().zip(fired.into_iter().map(Ok)));
    }
    for (entry, call) in elsewhere {
        answers.push((entry, call.await));
    }
    let mut round = Round::Done;
    for (entry, answer) in answers {
        match answer {
            Ok(Ok(_)) | Ok(Err(Refusal::ScheduledGone)) => {}
            Ok(Err(Refusal::StoreFailed | Refusal::Busy | Refusal::Moved)) | Err(_) => {
                add(entry);
                round = Round::Retry;
            }
            Ok(Err(refusal)) => {
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

/// What a pending row publishes: a user's message (as its user: only a
/// member may post it, the check chat.postMessage makes), or a backend's
/// event; `None` for a row that cannot be read.
fn publication(row: &ScheduledRow) -> Option<(Id, EventBody, Persist, Option<Id>)> {
    let r = &row.row;
    let channel = Id::parse(&r.channel)?;
    let event = r.event.as_deref()?;
    let wrap = |inner| Persist::Scheduled {
        id: row.id,
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
            let map = serde_json::from_str(event).ok()?;
            let (body, persist) = crate::ops::backend_event(map, false).ok()?;
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
                    entries.push(Entry {
                        post_at_secs,
                        channel: c.raw(),
                        id,
                    });
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
