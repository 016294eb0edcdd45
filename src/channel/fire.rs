//! Scheduled messages firing on their channels' owner, a round at a time
//! (`crate::schedule`): at the top of the hour a shard has hundreds of
//! thousands of messages due at once, and one store job per message (its
//! own savepoint, boxed closure, answer channel and wake-up) made the store
//! writer the ceiling. A round is admitted exactly as that many publishes
//! would be (each takes its channel's next `ts`, in the round's order),
//! written by ONE store job, and, once it commits, delivered exactly as
//! they would be: per channel, in ts order, after the commit.
//!
//! Exactly once holds per message as for a lone firing: each one's
//! `persist::job` deletes its pending row in the transaction that writes
//! it, and writes nothing if the row is gone (`Refusal::ScheduledGone`).
//! A store error undoes the whole job: no message of the round is written,
//! no row deleted, and each is answered `StoreFailed` (fired again later).

use std::rc::Rc;

use super::persist;
use crate::ids::Id;
use crate::shard::message::{EventBody, Persist, Published, Refusal};
use crate::shard::Shard;
use crate::store::scheduled::ScheduledKey;
use crate::ts::Ts;

/// One due message to publish on its channel's owner (this shard).
pub struct Firing {
    pub channel: Id,
    pub body: EventBody,
    /// `Persist::Scheduled`: the row is checked and deleted with the write.
    pub persist: Persist,
    /// Only a member may post it (a user's message); `None` for a backend's.
    pub sender: Option<Id>,
}

/// A round admitted on its channels (each message has its `ts` and holds
/// its channel's queue) whose store job has not been sent yet: see
/// [`Admitted::write`]. Owned by its shard; never crosses cores.
pub struct Admitted<J> {
    shard: Rc<Shard>,
    /// In the round's order: the answer of a firing refused at admission,
    /// `None` for one admitted.
    answers: Vec<Option<Published>>,
    /// Per admitted firing: its slot in `answers`, its channel and `ts`.
    admitted: Vec<(usize, Id, Ts)>,
    jobs: Vec<J>,
    /// The row of the last message admitted of the round before, if that
    /// one may not have committed yet: see [`Admitted::write`].
    guard: Option<ScheduledKey>,
    /// The row of this round's last admitted message.
    last: Option<ScheduledKey>,
}

/// Admits `firings`, which must all be of channels this shard owns and
/// serves now (`ownership::ready`), in their order: each takes its
/// channel's next `ts`, as a publish would. Nothing is written yet.
/// `guard`: the last row of the round before, if it is still in flight.
pub fn admit(
    shard: &Rc<Shard>,
    firings: Vec<Firing>,
    guard: Option<ScheduledKey>,
) -> Admitted<impl persist::StoreJob> {
    let here = shard.here(shard.id);
    let mut round = Admitted {
        shard: shard.clone(),
        answers: Vec::with_capacity(firings.len()),
        admitted: Vec::with_capacity(firings.len()),
        jobs: Vec::with_capacity(firings.len()),
        guard,
        last: None,
    };
    for f in firings {
        let &Persist::Scheduled { id, post_at, .. } = &f.persist else {
            panic!("only scheduled messages fire in rounds");
        };
        let key = ScheduledKey {
            post_at,
            channel: f.channel.to_string(),
            id,
        };
        let mut no_reply = None;
        match super::admit(
            shard,
            here,
            f.channel,
            f.body,
            f.persist,
            f.sender,
            None,
            &mut no_reply,
        ) {
            Ok(Some((ts, job))) => {
                round.admitted.push((round.answers.len(), f.channel, ts));
                round.jobs.push(job);
                round.answers.push(None);
                round.last = Some(key);
            }
            Ok(None) => unreachable!("a scheduled message is persisted"),
            Err(refusal) => round.answers.push(Some(Err(refusal))),
        }
    }
    round
}

impl<J: persist::StoreJob> Admitted<J> {
    /// The row of the round's last admitted message: the next round's
    /// guard while this one is in flight.
    pub fn last(&self) -> Option<ScheduledKey> {
        self.last.clone()
    }

    /// Writes the round as one store job. Nothing is delivered yet: see
    /// [`Written::deliver`].
    ///
    /// A shard's next round is admitted, and may be sent, while this one
    /// commits: the writer runs jobs in the order they were sent, so when
    /// the next one runs, this one ran before it, in its transaction or in
    /// an earlier one. If that earlier one failed, this round's messages
    /// fire again later, and a later round's messages of the same channels
    /// must not land ahead of them: so a round writes only if its guard's
    /// row is gone (the round before committed, or that message was
    /// cancelled); else every message is refused `StoreFailed` and fires
    /// again, in order.
    ///
    /// Every admitted message blocks its channel's queue until `committed`
    /// is told its outcome: a round admitted must be written and delivered.
    pub async fn write(self) -> Written {
        let Admitted {
            shard,
            answers,
            admitted,
            jobs,
            guard,
            last: _,
        } = self;
        let n = jobs.len();
        let refused = move || (0..n).map(|_| Err(Refusal::StoreFailed)).collect();
        let outcomes: Vec<persist::Outcome> = if jobs.is_empty() {
            Vec::new()
        } else {
            let written = shard
                .node
                .store
                .write(move |tx| {
                    if let Some(g) = guard {
                        if !tx.scheduled_run(g.post_at, &g.channel, &[g.id])?.is_empty() {
                            return Ok(refused());
                        }
                    }
                    jobs.into_iter().map(|job| job(tx)).collect()
                })
                .await;
            match written {
                Ok(outcomes) => outcomes,
                Err(e) => {
                    tracing::warn!(
                        messages = admitted.len(),
                        "scheduled messages: a round's store write failed: {e}"
                    );
                    refused()
                }
            }
        };
        assert_eq!(outcomes.len(), admitted.len(), "one outcome per message");
        Written {
            shard,
            answers,
            admitted,
            outcomes,
        }
    }
}

/// A round whose commit is known, not delivered yet. Owned by its shard;
/// never crosses cores.
pub struct Written {
    shard: Rc<Shard>,
    answers: Vec<Option<Published>>,
    admitted: Vec<(usize, Id, Ts)>,
    outcomes: Vec<persist::Outcome>,
}

impl Written {
    /// Whether any message failed for a passing reason, at admission or
    /// at the store: it fires again later.
    pub fn failed(&self) -> bool {
        let refused = self.answers.iter().flatten().filter_map(|a| a.err());
        let failed = self
            .outcomes
            .iter()
            .filter_map(|o| o.as_ref().err().copied());
        refused.chain(failed).any(passing)
    }

    /// Delivers what committed (per channel in `ts` order, as any publish)
    /// and answers, in the round's order, what each message became: the
    /// `ts` it was delivered with, or why not.
    pub fn deliver(self) -> Vec<Published> {
        let Written {
            shard,
            mut answers,
            admitted,
            outcomes,
        } = self;
        for ((slot, channel, ts), outcome) in admitted.into_iter().zip(outcomes) {
            answers[slot] = Some(answer(&outcome, ts));
            persist::committed(&shard, channel, ts, outcome);
        }
        answers
            .into_iter()
            .map(|a| a.expect("every firing answered"))
            .collect()
    }
}

/// A refusal that says "not now" rather than "never": the message fires
/// again later.
pub fn passing(refusal: Refusal) -> bool {
    matches!(
        refusal,
        Refusal::StoreFailed | Refusal::Busy | Refusal::Moved
    )
}

fn answer(outcome: &persist::Outcome, ts: Ts) -> Published {
    match outcome {
        Ok(_) => Ok(Some(ts)),
        Err(refusal) => Err(*refusal),
    }
}
