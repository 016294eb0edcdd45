//! Persist, then deliver. A persisted event gets its `ts` on its channel
//! server, then a store job (run on the store's writer thread, group
//! committed) validates and writes it and returns the event's final body.
//! Only once the commit is acknowledged does the channel server deliver it
//! and answer — and, per channel, strictly in `ts` order, whatever order the
//! commits come back in.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::rc::Rc;

use super::fanout;
use crate::events;
use crate::ids::Id;
use crate::placement::Addr;
use crate::shard::message::{ConnId, EventBody, Persist, Published, Refusal, ReplyTo};
use crate::shard::Shard;
use crate::store::scheduled::ScheduledKey;
use crate::store::{messages, StoreError, Tx};
use crate::ts::Ts;

/// What a store job decides: the event body to deliver, or why not.
pub type Outcome = Result<EventBody, Refusal>;

/// A persisted event waiting for its commit.
/// Owned by its shard; never crosses cores.
pub struct Pending {
    pub ts: Ts,
    /// The channel's ts before this event: if this event starts the
    /// history ring, everything up to it is outside the ring.
    pub previous_ts: Ts,
    /// Who waits for the answer, if anyone.
    pub reply: Option<ReplyTo<Published>>,
    /// The shard that published it (its `exclude` applies there).
    pub from: Addr,
    pub exclude: Option<ConnId>,
    pub outcome: Option<Outcome>,
}

/// The events of one channel waiting for their commits, oldest first.
pub type Inflight = VecDeque<Pending>;

fn fetch(
    tx: &mut dyn Tx,
    channel: Id,
    ts: Ts,
) -> Result<Result<messages::MessageRow, Refusal>, StoreError> {
    Ok(tx
        .message(&channel.to_string(), ts.0 as i64)?
        .ok_or(Refusal::MessageNotFound))
}

fn json_body(v: &serde_json::Value, add_channel: bool, add_ts: bool) -> EventBody {
    EventBody {
        json: serde_json::to_vec(v).expect("json"),
        add_channel,
        add_ts,
    }
}

/// `body` with its `thread_ts` replaced by `thread`.
fn with_thread_ts(body: EventBody, thread: Ts) -> EventBody {
    let mut v: serde_json::Value = serde_json::from_slice(&body.json).expect("our own json");
    v["thread_ts"] = thread.to_string().into();
    json_body(&v, body.add_channel, body.add_ts)
}

/// What a clustered channel server writes with: the logical ring member
/// that owns the channel and the epoch it owns it at. The store refuses the
/// write if a later epoch has claimed the member (`Tx::member_epoch_holds`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fence {
    pub member: u32,
    pub epoch: u64,
}

/// A persisted event's store job: what [`job`] makes.
pub trait StoreJob: FnOnce(&mut dyn Tx) -> Result<Outcome, StoreError> + Send + 'static {}
impl<F: FnOnce(&mut dyn Tx) -> Result<Outcome, StoreError> + Send + 'static> StoreJob for F {}

/// The store job for `persist`: runs on the writer thread inside its own
/// savepoint; an `Err(Refusal)` writes nothing. In a cluster (`fence`), it
/// first checks that this owner still holds the channel, and it logs every
/// event's final body in the events table, from which a later owner
/// replays what relays missed and rebuilds its resume history.
pub fn job(
    persist: Persist,
    channel: Id,
    ts: Ts,
    body: EventBody,
    team: Id,
    fence: Option<Fence>,
) -> impl StoreJob {
    // What needs no store is done here, on the channel's shard: the store
    // has one writer thread for every shard, and at a spike (scheduled
    // messages due at once) that thread is the ceiling.
    let stored_as = match &persist {
        Persist::Scheduled { inner, .. } => &**inner,
        other => other,
    };
    let event = matches!(stored_as, Persist::Event).then(|| StoredEvent::new(&body, channel, ts));
    move |tx: &mut dyn Tx| {
        if let Some(fence) = fence {
            if !tx.member_epoch_holds(fence.member, fence.epoch)? {
                return Ok(Err(Refusal::Moved));
            }
        }
        // A scheduled message fires only if its row is still pending, and
        // its row goes in the very transaction that writes it: committed
        // together or not at all, so no crash can fire it twice or lose it.
        let persist = match persist {
            Persist::Scheduled { id, post_at, inner } => {
                let key = ScheduledKey {
                    post_at,
                    channel: channel.to_string(),
                    id,
                };
                if !tx.retire_scheduled(&key)? {
                    return Ok(Err(Refusal::ScheduledGone));
                }
                *inner
            }
            other => other,
        };
        if fence.is_none() {
            return write(persist, channel, ts, body, team, event, false, tx);
        }
        let logged = matches!(persist, Persist::Event);
        let outcome = write(persist, channel, ts, body, team, event, true, tx)?;
        if let (Ok(body), false) = (&outcome, logged) {
            let payload = fanout::payload(body, channel, Some(ts));
            let text = std::str::from_utf8(&payload).expect("json is utf-8");
            tx.insert_event(&channel.to_string(), ts.0 as i64, text)?;
        }
        Ok(outcome)
    }
}

/// A `Persist::Event`'s rows, made before its job reaches the store: the
/// event as delivered (the events table), and, for a plain message with a
/// user and a text (a backend's post), its row in history.
struct StoredEvent {
    payload: Vec<u8>,
    message: Option<messages::NewMessage>,
}

/// The fields of a delivered event that decide its history row, borrowed
/// from its JSON: no tree is built for them (at a scheduled spike this runs
/// for every message on the shard).
#[derive(serde::Deserialize)]
struct MessageFieldsOf<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    subtype: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    user: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    text: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    blocks: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    thread_ts: Option<&'a serde_json::value::RawValue>,
}

/// A JSON string's value; `None` for any other JSON value.
fn json_str(raw: Option<&serde_json::value::RawValue>) -> Option<String> {
    serde_json::from_str::<String>(raw?.get()).ok()
}

impl MessageFieldsOf<'_> {
    /// Its history row: a plain message with a user and a text (a
    /// backend's post) has one.
    fn message(self, channel: Id, ts: Ts) -> Option<messages::NewMessage> {
        if self.kind.as_deref() != Some("message") || self.subtype.is_some() {
            return None;
        }
        Some(messages::NewMessage {
            channel: channel.to_string(),
            ts: ts.0 as i64,
            user: json_str(self.user)?,
            text: json_str(self.text)?,
            blocks: self
                .blocks
                .map(|b| serde_json::from_str(b.get()).expect("valid json")),
            thread_ts: json_str(self.thread_ts)
                .as_deref()
                .and_then(Ts::parse)
                .map(|t| t.0 as i64),
            subtype: None,
            client_msg_id: None,
        })
    }
}

impl StoredEvent {
    fn new(body: &EventBody, channel: Id, ts: Ts) -> StoredEvent {
        let payload = fanout::payload(body, channel, Some(ts));
        let message = match serde_json::from_slice::<MessageFieldsOf>(&payload) {
            Ok(f) => f.message(channel, ts),
            // A backend's bytes kept as sent (the publish stream) may
            // repeat a key, which the borrowing parse refuses: the tree
            // takes the last, as it always did.
            Err(_) => {
                let v: serde_json::Value = serde_json::from_slice(&payload).expect("valid json");
                let once = serde_json::to_vec(&v).expect("json");
                serde_json::from_slice::<MessageFieldsOf>(&once)
                    .ok()
                    .and_then(|f| f.message(channel, ts))
            }
        };
        StoredEvent { payload, message }
    }
}

/// The writes of one persisted event (`event`: a `Persist::Event`'s rows,
/// made by [`job`]; `clustered`: a cluster's next owner reads the events
/// table back).
#[allow(clippy::too_many_arguments)]
fn write(
    persist: Persist,
    channel: Id,
    ts: Ts,
    body: EventBody,
    team: Id,
    event: Option<StoredEvent>,
    clustered: bool,
    tx: &mut dyn Tx,
) -> Result<Outcome, StoreError> {
    {
        let c = channel.to_string();
        let micros = ts.0 as i64;
        match persist {
            Persist::No => unreachable!("transient events are not stored"),
            Persist::Scheduled { .. } => unreachable!("unwrapped by `job`"),
            Persist::Event => {
                let event = event.expect("made by `job` for every Persist::Event");
                let text = std::str::from_utf8(&event.payload).expect("json is utf-8");
                // A plain message published by a backend shows in history.
                // On one node nothing reads the events table back (only a
                // cluster's next owner does, to replay): there such a
                // message is stored once, as its history row, as a user's
                // is. At a scheduled spike that is a third of the writer's
                // work (README, issue 11).
                if let Some(message) = &event.message {
                    tx.insert_message(message)?;
                }
                if event.message.is_none() || clustered {
                    tx.insert_event(&c, micros, text)?;
                }
                Ok(Ok(body))
            }
            Persist::Message(m) => {
                // A reply must name a live message of the channel (Slack's
                // thread_not_found, over RTM as over the Web API), checked
                // in the transaction that stores it; naming a reply names
                // its thread.
                let (thread_ts, body) = match m.thread_ts {
                    None => (None, body),
                    Some(t) => match tx.thread_of(&c, t.0 as i64)? {
                        None => return Ok(Err(Refusal::ThreadNotFound)),
                        Some(parent) if parent == t.0 as i64 => (Some(parent), body),
                        Some(parent) => (Some(parent), with_thread_ts(body, Ts(parent as u64))),
                    },
                };
                tx.insert_message(&messages::NewMessage {
                    channel: c,
                    ts: micros,
                    user: m.user.to_string(),
                    text: m.text,
                    blocks: m.blocks,
                    thread_ts,
                    subtype: m.subtype,
                    client_msg_id: m.client_msg_id,
                })?;
                Ok(Ok(body))
            }
            Persist::Edit(e) => {
                let before = match fetch(tx, channel, e.ts)? {
                    Ok(m) => m,
                    Err(r) => return Ok(Err(r)),
                };
                if before.user != e.user.to_string() {
                    return Ok(Err(Refusal::CantUpdateMessage));
                }
                let user = e.user.to_string();
                tx.update_text(&c, before.ts, &e.text, e.blocks.as_ref(), &user, micros)?;
                let after = tx.message(&c, before.ts)?.ok_or(StoreError::NotFound)?;
                Ok(Ok(json_body(
                    &events::message_changed(channel, &before, &after, team),
                    false,
                    true,
                )))
            }
            Persist::Delete { ts: target, user } => {
                let before = match fetch(tx, channel, target)? {
                    Ok(m) => m,
                    Err(r) => return Ok(Err(r)),
                };
                if before.user != user.to_string() {
                    return Ok(Err(Refusal::CantDeleteMessage));
                }
                tx.mark_deleted(&c, before.ts)?;
                Ok(Ok(json_body(
                    &events::message_deleted(channel, &before, team),
                    false,
                    true,
                )))
            }
            Persist::Reaction(r) => {
                let item = match fetch(tx, channel, r.ts)? {
                    Ok(m) => m,
                    Err(refusal) => return Ok(Err(refusal)),
                };
                let user = r.user.to_string();
                if r.add {
                    match tx.add_reaction(&c, item.ts, &r.name, &user, micros) {
                        Ok(()) => {}
                        Err(StoreError::Conflict) => return Ok(Err(Refusal::AlreadyReacted)),
                        Err(StoreError::NotFound) => return Ok(Err(Refusal::MessageNotFound)),
                        Err(e) => return Err(e),
                    }
                } else if !tx.remove_reaction(&c, item.ts, &r.name, &user)? {
                    return Ok(Err(Refusal::NoReaction));
                }
                Ok(Ok(json_body(
                    &events::reaction(channel, r.user, &r.name, &item, r.add),
                    false,
                    false,
                )))
            }
        }
    }
}

/// Submits the job and, when the store answers, records the outcome and
/// delivers what is now at the head of the channel's queue.
pub fn submit(shard: &Rc<Shard>, channel: Id, ts: Ts, job: impl StoreJob) {
    let shard = shard.clone();
    let store = shard.node.store.clone();
    glommio::spawn_local(async move {
        let outcome = match store.write(job).await {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(%channel, "store write failed: {e}");
                Err(Refusal::StoreFailed)
            }
        };
        committed(&shard, channel, ts, outcome);
    })
    .detach();
}

/// The store answered for the event at `ts`: delivers (and answers) every
/// event of `channel` now complete at the head of its queue, in ts order.
pub fn committed(shard: &Rc<Shard>, channel: Id, ts: Ts, outcome: Outcome) {
    let ready = super::this_shard()
        .borrow_mut()
        .complete(channel, ts, outcome);
    for (mut pending, outcome) in ready {
        let result = match outcome {
            Ok(body) => {
                super::deliver_persisted(shard, channel, &pending, &body);
                Ok(Some(pending.ts))
            }
            Err(r) => Err(r),
        };
        if let Some(reply) = pending.reply.take() {
            shard.reply(reply, result);
        }
    }
    super::ownership::after_commits(shard, channel);
    crate::gateway::request_flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(json: &str) -> StoredEvent {
        let body = EventBody {
            json: json.as_bytes().to_vec(),
            add_channel: true,
            add_ts: true,
        };
        StoredEvent::new(&body, Id::parse("C1").unwrap(), Ts(1_700_000_000_000_001))
    }

    #[test]
    fn a_backends_plain_message_gets_its_history_row() {
        let e = stored(
            r#"{"type":"message","user":"U1","text":"hi \"there\"","blocks":[{"type":"divider"}],"thread_ts":"1700000000.000001"}"#,
        );
        let m = e.message.expect("a history row");
        assert_eq!((m.user.as_str(), m.text.as_str()), ("U1", "hi \"there\""));
        assert_eq!(m.blocks, Some(serde_json::json!([{"type": "divider"}])));
        assert_eq!(m.thread_ts, Some(1_700_000_000_000_001));
        assert_eq!(m.ts, 1_700_000_000_000_001);
        let v: serde_json::Value = serde_json::from_slice(&e.payload).unwrap();
        assert_eq!(v["channel"], "C1");
        assert_eq!(v["ts"], "1700000000.000001");
    }

    #[test]
    fn other_events_get_no_history_row() {
        for json in [
            r#"{"type":"message","subtype":"bot_message","user":"U1","text":"x"}"#,
            r#"{"type":"message","text":"no user"}"#,
            r#"{"type":"message","user":"U1","text":7}"#,
            r#"{"type":"reminder","user":"U1","text":"x"}"#,
        ] {
            assert!(stored(json).message.is_none(), "{json}");
        }
    }

    /// The publish stream keeps a backend's bytes as sent: a repeated key
    /// is stored as the tree reads it (the last one), not refused.
    #[test]
    fn a_repeated_key_takes_the_last() {
        let m = stored(r#"{"type":"message","user":"U1","text":"first","text":"last"}"#)
            .message
            .expect("a history row");
        assert_eq!(m.text, "last");
    }

    /// On one node a backend's plain message is stored once, as its history
    /// row; in a cluster the next owner replays from the events table, so
    /// it is logged there too. Any other event is logged either way.
    #[test]
    fn a_backends_message_is_logged_as_an_event_only_in_a_cluster() {
        use crate::store::sqlite::SqliteTx;
        let channel = Id::parse("C1").unwrap();
        let team = Id::parse("T1").unwrap();
        let count = |tx: &mut SqliteTx, table: &str| {
            tx.scalar(&format!("SELECT count(*) FROM {table}")).unwrap()
        };
        for (fence, want_events) in [
            (None, 1),
            (
                Some(Fence {
                    member: 0,
                    epoch: 1,
                }),
                2,
            ),
        ] {
            let mut tx = SqliteTx::memory();
            if fence.is_some() {
                assert!(tx.claim_member(0, 1, &[]).unwrap());
            }
            for (i, json) in [
                r#"{"type":"message","user":"U1","text":"hi"}"#,
                r#"{"type":"reminder_fired","text":"stand-up"}"#,
            ]
            .into_iter()
            .enumerate()
            {
                let body = EventBody {
                    json: json.as_bytes().to_vec(),
                    add_channel: true,
                    add_ts: true,
                };
                let ts = Ts(1_700_000_000_000_000 + i as u64);
                let done = job(Persist::Event, channel, ts, body, team, fence)(&mut tx).unwrap();
                assert!(done.is_ok());
            }
            assert_eq!(count(&mut tx, "messages"), 1, "{fence:?}");
            assert_eq!(count(&mut tx, "events"), want_events, "{fence:?}");
        }
    }
}
