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

/// Publishes `firings`, which must all be of channels this shard owns and
/// serves now (`ownership::ready`), in
/// their order, as one store job; answers, in the same order, what each
/// became once its commit is known (the `ts` it was delivered with, or
/// why not).
pub async fn fire(shard: &Rc<Shard>, firings: Vec<Firing>) -> Vec<Published> {
    let here = shard.here(shard.id);
    let mut answers: Vec<Option<Published>> = Vec::with_capacity(firings.len());
    let mut admitted = Vec::with_capacity(firings.len());
    let mut jobs = Vec::with_capacity(firings.len());
    for f in firings {
        assert!(
            matches!(f.persist, Persist::Scheduled { .. }),
            "only scheduled messages fire in rounds"
        );
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
                admitted.push((answers.len(), f.channel, ts));
                jobs.push(job);
                answers.push(None);
            }
            Ok(None) => unreachable!("a scheduled message is persisted"),
            Err(refusal) => answers.push(Some(Err(refusal))),
        }
    }
    // Every admitted event now blocks its channel's queue until
    // `committed` is told its outcome: this must run to the end.
    let outcomes = shard
        .node
        .store
        .write(move |tx| jobs.into_iter().map(|job| job(tx)).collect())
        .await;
    let outcomes: Vec<persist::Outcome> = match outcomes {
        Ok(outcomes) => outcomes,
        Err(e) => {
            tracing::warn!(
                messages = admitted.len(),
                "scheduled messages: a round's store write failed: {e}"
            );
            admitted.iter().map(|_| Err(Refusal::StoreFailed)).collect()
        }
    };
    assert_eq!(outcomes.len(), admitted.len(), "one outcome per message");
    for ((slot, channel, ts), outcome) in admitted.into_iter().zip(outcomes) {
        answers[slot] = Some(answer(&outcome, ts));
        persist::committed(shard, channel, ts, outcome);
    }
    answers
        .into_iter()
        .map(|a| a.expect("every firing answered"))
        .collect()
}

fn answer(outcome: &persist::Outcome, ts: Ts) -> Published {
    match outcome {
        Ok(_) => Ok(Some(ts)),
        Err(refusal) => Err(*refusal),
    }
}
