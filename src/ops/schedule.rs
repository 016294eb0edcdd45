//! Scheduled messages, from any shard: schedule (a row in the store, then a
//! timer entry on the channel's owner), cancel (the row only: the owner's
//! entry is skipped when it comes due and finds no row), list. Firing is
//! the owner's business (`crate::schedule`).

use std::rc::Rc;

use super::OpError;
use crate::ids::Id;
use crate::limits;
use crate::shard::message::{Msg, Refusal};
use crate::shard::Shard;
use crate::store::scheduled::{NewScheduled, ScheduledFilter, ScheduledRow};
use crate::store::StoreError;

/// Stores `new` for `channel` and hands its timer to the channel's owner;
/// its row id. With `limited` (the Web API), Slack's per-channel limit
/// applies: `restricted_too_many`, checked and inserted in one transaction
/// so two racing requests cannot both slip under it.
pub async fn schedule(
    shard: &Rc<Shard>,
    channel: Id,
    new: NewScheduled,
    limited: bool,
) -> Result<i64, OpError> {
    let post_at_secs = new.post_at;
    let id = shard
        .node
        .store
        .write(move |tx| {
            if limited {
                let w = limits::SCHEDULE_WINDOW_SECS;
                let near = tx.scheduled_count_between(
                    &new.channel,
                    new.post_at - w + 1,
                    new.post_at + w - 1,
                )?;
                if near >= limits::SCHEDULED_PER_CHANNEL_WINDOW_MAX {
                    return Ok(None);
                }
            }
            tx.insert_scheduled(&new).map(Some)
        })
        .await
        .map_err(store_failed)?
        .ok_or(OpError::RestrictedTooMany)?;
    // Committed first: an owner that never hears of it (a crash right now)
    // finds the row at its next start.
    shard.send_owner(
        channel,
        Msg::Schedule {
            channel,
            post_at_secs,
            id,
        },
    );
    Ok(id)
}

/// Whether a message may be scheduled for `post_at` (Unix seconds): not in
/// the past, at most [`limits::SCHEDULE_AHEAD_SECS_MAX`] ahead. `Ok(now)`,
/// or Slack's error code (`time_in_past`, `time_too_far`).
pub fn check_post_at(post_at: i64) -> Result<i64, &'static str> {
    let now = crate::ticket::unix_secs_now() as i64;
    if post_at < now {
        return Err("time_in_past");
    }
    if post_at > now + limits::SCHEDULE_AHEAD_SECS_MAX {
        return Err("time_too_far");
    }
    Ok(now)
}

/// Cancels the pending message `id`, if it is pending in `channel` (when
/// given) and was scheduled by `user` (when given); anything else is
/// `invalid_scheduled_message_id`, whether or not such an id exists.
pub async fn cancel(
    shard: &Rc<Shard>,
    id: i64,
    channel: Option<String>,
    user: Option<String>,
) -> Result<(), OpError> {
    let cancelled = shard
        .node
        .store
        .write(move |tx| {
            let Some(row) = tx.scheduled(id)? else {
                return Ok(false);
            };
            let theirs = channel.is_none_or(|c| c == row.row.channel)
                && user.is_none_or(|u| Some(u) == row.row.user);
            if !theirs {
                return Ok(false);
            }
            tx.delete_scheduled(id)
        })
        .await
        .map_err(store_failed)?;
    if cancelled {
        Ok(())
    } else {
        Err(OpError::Refused(Refusal::ScheduledGone))
    }
}

/// Pending messages matching `filter`, in `(post_at, id)` order, and
/// whether more follow.
pub async fn list(
    shard: &Rc<Shard>,
    filter: ScheduledFilter,
    limit: usize,
) -> Result<(Vec<ScheduledRow>, bool), OpError> {
    shard
        .node
        .store
        .read(move |tx| tx.scheduled_list(&filter, limit))
        .await
        .map_err(store_failed)
}

fn store_failed(e: StoreError) -> OpError {
    tracing::error!("scheduled messages: store failed: {e}");
    OpError::Refused(Refusal::StoreFailed)
}
