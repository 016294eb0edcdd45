//! The one interface to the store: [`Tx`], the transaction a job runs in.
//!
//! Every store job — a closure sent to [`Store::write`](super::Store::write)
//! or [`Store::read`](super::Store::read) — receives `&mut dyn Tx`, whatever
//! the backend: SQLite ([`super::sqlite`]) or PostgreSQL
//! ([`super::pg`]). Nothing outside `src/store/` names a database
//! crate; a job only calls these methods, so the same job runs on either.
//!
//! A method is one query the rest of the code needs, named after what it
//! returns (`user`, `channels_of`) or does (`insert_message`). They are
//! grouped by table below. A few (`message`, `history`, `replies`,
//! `add_reaction`, …) are provided here once, on top of a backend's
//! building blocks, so the two backends cannot disagree on what a thread
//! summary or a reaction list is.
//!
//! Errors: [`StoreError::Conflict`] when a unique key or name is taken,
//! [`StoreError::NotFound`] when the row an update refers to is missing;
//! anything else is the backend's own error. A job may recover from
//! `Conflict` and `NotFound` and go on: neither leaves the transaction
//! unusable on either backend.

use super::channels::{ChannelRow, ChannelTypes};
use super::error::StoreError;
use super::import::Importer;
use super::messages::{self, MessageRow, NewMessage, ReplierSummary, Window};
use super::reactions::{self, ReactionRow};
use super::scheduled::{NewScheduled, ScheduledFilter, ScheduledKey, ScheduledRow};
use super::teams::TeamRow;
use super::users::{UserRow, TOKEN_HASH_LEN};
use super::{limit_plus_one, page, MAX_PAGE};

/// A token hash as stored (SHA-256 of the token's secret).
pub type TokenHash = [u8; TOKEN_HASH_LEN];

/// A transaction on the store, as a job sees it. Implemented by each
/// backend's connection; lives on the store thread that runs the job.
pub trait Tx {
    // ---- teams -----------------------------------------------------------

    /// Adds a team; `Conflict` if the id exists.
    fn insert_team(&mut self, team: &TeamRow) -> Result<(), StoreError>;
    fn team(&mut self, id: &str) -> Result<Option<TeamRow>, StoreError>;

    // ---- users -----------------------------------------------------------

    /// Adds a user. `Conflict` if the id, the name within the team, or the
    /// token hash is taken.
    fn insert_user(
        &mut self,
        user: &UserRow,
        token_hash: Option<&TokenHash>,
    ) -> Result<(), StoreError>;
    fn user(&mut self, id: &str) -> Result<Option<UserRow>, StoreError>;
    fn user_by_name(&mut self, team_id: &str, name: &str) -> Result<Option<UserRow>, StoreError>;
    /// The user whose token hashes to `hash` (authenticating a request).
    fn user_by_token_hash(&mut self, hash: &TokenHash) -> Result<Option<UserRow>, StoreError>;
    /// Users ordered by id, after `cursor` (the last id of the previous
    /// page), and whether more follow.
    fn users(
        &mut self,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<UserRow>, bool), StoreError>;
    /// The user's token hash: `None` if the user does not exist or has no
    /// token.
    fn token_hash_of(&mut self, id: &str) -> Result<Option<TokenHash>, StoreError>;
    /// Replaces (or, with `None`, revokes) a user's token. `NotFound` if no
    /// such user; `Conflict` if another user has that hash.
    fn set_token_hash(&mut self, id: &str, hash: Option<&TokenHash>) -> Result<(), StoreError>;
    /// Calls `f` for every user with its token hash, without collecting
    /// them (the directory caches at start). Returns how many.
    fn each_user(
        &mut self,
        f: &mut dyn FnMut(UserRow, Option<TokenHash>),
    ) -> Result<u64, StoreError>;

    // ---- channels --------------------------------------------------------

    /// Adds a channel. `Conflict` if the id or the name within the team is
    /// taken (`name_taken`).
    fn insert_channel(&mut self, channel: &ChannelRow) -> Result<(), StoreError>;
    fn channel(&mut self, id: &str) -> Result<Option<ChannelRow>, StoreError>;
    fn channel_by_name(
        &mut self,
        team_id: &str,
        name: &str,
    ) -> Result<Option<ChannelRow>, StoreError>;
    /// Channels ordered by id, after `cursor` (the last id of the previous
    /// page). Private channels are listed only if `types` asks for them
    /// and, when `member_of` is a user, only those that user belongs to
    /// (`member_of: None` is the operator's view: all of them).
    fn channels(
        &mut self,
        types: ChannelTypes,
        exclude_archived: bool,
        member_of: Option<&str>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ChannelRow>, bool), StoreError>;
    /// Archives or unarchives a channel. `NotFound` if no such channel.
    fn set_archived(&mut self, id: &str, archived: bool) -> Result<(), StoreError>;
    /// Calls `f(id, is_private)` for every channel, without collecting them
    /// (warming the channel servers: there may be millions). Returns how
    /// many.
    fn each_channel_id(&mut self, f: &mut dyn FnMut(&str, bool)) -> Result<u64, StoreError>;

    // ---- members ---------------------------------------------------------

    /// Adds `user` to `channel`; `false` if they already were a member.
    fn add_member(&mut self, channel: &str, user: &str, joined: i64) -> Result<bool, StoreError>;
    /// Removes `user` from `channel`; `false` if they were not a member.
    fn remove_member(&mut self, channel: &str, user: &str) -> Result<bool, StoreError>;
    fn is_member(&mut self, channel: &str, user: &str) -> Result<bool, StoreError>;
    /// A channel's members ordered by user id, after `cursor`.
    fn members(
        &mut self,
        channel: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<String>, bool), StoreError>;
    /// Every channel `user` belongs to, ordered by id.
    fn channels_of(&mut self, user: &str) -> Result<Vec<String>, StoreError>;
    fn member_count(&mut self, channel: &str) -> Result<usize, StoreError>;
    /// Calls `f(channel, user)` for every membership, ordered by channel
    /// then user, without collecting them. Returns how many.
    fn each_member(&mut self, f: &mut dyn FnMut(&str, &str)) -> Result<u64, StoreError>;

    // ---- messages --------------------------------------------------------

    /// Stores a new message. `Conflict` if the channel already has a message
    /// at that ts (deleted or not: a ts is never reused). This uniqueness is
    /// also what fences a stale channel owner in a cluster.
    fn insert_message(&mut self, m: &NewMessage) -> Result<(), StoreError>;
    /// The thread a new reply to `ts` belongs to: its parent's ts, which is
    /// `ts` itself unless `ts` is a reply; `None` when no live message is at
    /// (channel, ts).
    fn thread_of(&mut self, channel: &str, ts: i64) -> Result<Option<i64>, StoreError>;
    /// Whether a live message exists at (channel, ts).
    fn message_exists(&mut self, channel: &str, ts: i64) -> Result<bool, StoreError>;
    /// chat.update. `NotFound` if there is no live message at (channel, ts).
    #[allow(clippy::too_many_arguments)]
    fn update_text(
        &mut self,
        channel: &str,
        ts: i64,
        text: &str,
        blocks: Option<&serde_json::Value>,
        editor: &str,
        edited_ts: i64,
    ) -> Result<(), StoreError>;
    /// chat.delete: marks the message deleted (its ts stays taken).
    /// `NotFound` if there is no live message at (channel, ts).
    fn mark_deleted(&mut self, channel: &str, ts: i64) -> Result<(), StoreError>;
    /// The newest ts ever stored in `channel`, deleted messages included.
    fn max_ts(&mut self, channel: &str) -> Result<Option<i64>, StoreError>;

    // Building blocks of `message`, `history` and `replies` (below): rows
    // as stored, without thread summaries or reactions.

    /// The live message at (channel, ts), undecorated.
    fn message_row(&mut self, channel: &str, ts: i64) -> Result<Option<MessageRow>, StoreError>;
    /// Live top-level messages and broadcasts with `lower < ts < upper`,
    /// newest first, at most `n`.
    fn history_rows(
        &mut self,
        channel: &str,
        lower: i64,
        upper: i64,
        n: i64,
    ) -> Result<Vec<MessageRow>, StoreError>;
    /// Live replies of `thread_ts` with `lower < ts < upper`, oldest first,
    /// at most `n`.
    fn reply_rows(
        &mut self,
        channel: &str,
        thread_ts: i64,
        lower: i64,
        upper: i64,
        n: i64,
    ) -> Result<Vec<MessageRow>, StoreError>;
    /// Per (thread, replier) with `lo <= thread_ts <= hi`: live replies,
    /// first and newest ts.
    fn reply_summaries(
        &mut self,
        channel: &str,
        lo: i64,
        hi: i64,
    ) -> Result<Vec<ReplierSummary>, StoreError>;

    // ---- reactions -------------------------------------------------------

    /// Building block of [`Tx::add_reaction`]: the row alone. `Conflict` if
    /// it exists.
    fn insert_reaction(
        &mut self,
        channel: &str,
        ts: i64,
        name: &str,
        user: &str,
        created: i64,
    ) -> Result<(), StoreError>;
    /// Building block of [`Tx::remove_reaction`]: `false` if absent.
    fn delete_reaction(
        &mut self,
        channel: &str,
        ts: i64,
        name: &str,
        user: &str,
    ) -> Result<bool, StoreError>;
    /// Building block: `(ts, name, user)` of every reaction on messages of
    /// `channel` with `lo <= ts <= hi`, in the order they were added.
    fn reaction_rows(
        &mut self,
        channel: &str,
        lo: i64,
        hi: i64,
    ) -> Result<Vec<(i64, String, String)>, StoreError>;

    // ---- events ----------------------------------------------------------

    /// Stores a persisted event's final JSON. `Conflict` if the channel
    /// already has an event at `ts`.
    fn insert_event(&mut self, channel: &str, ts: i64, json: &str) -> Result<(), StoreError>;
    /// The stored events of `channel` with a ts after `after`, oldest
    /// first, at most `limit` (a new owner replaying what a relay missed).
    fn events_after(
        &mut self,
        channel: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StoreError>;
    /// The newest `limit` stored events of `channel`, oldest first (a new
    /// owner's resume history).
    fn last_events(
        &mut self,
        channel: &str,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StoreError>;
    /// The newest ts of `channel`, events and messages alike (a new owner
    /// continues after it).
    fn channel_max_ts(&mut self, channel: &str) -> Result<Option<i64>, StoreError>;

    // ---- scheduled messages ----------------------------------------------

    /// Adds a pending scheduled message; its id (never reused).
    fn insert_scheduled(&mut self, row: &NewScheduled) -> Result<i64, StoreError>;
    /// The pending scheduled message `id`, if it is still pending.
    fn scheduled(&mut self, id: i64) -> Result<Option<ScheduledRow>, StoreError>;
    /// The pending messages of `channel` due at `post_at` with `ids`
    /// (ascending), in id order: a firing round's rows of one channel, in
    /// one range read.
    fn scheduled_run(
        &mut self,
        post_at: i64,
        channel: &str,
        ids: &[i64],
    ) -> Result<Vec<ScheduledRow>, StoreError> {
        let (Some(&lo), Some(&hi)) = (ids.first(), ids.last()) else {
            return Ok(Vec::new());
        };
        let mut rows = self.scheduled_between(post_at, channel, lo, hi)?;
        rows.retain(|r| ids.binary_search(&r.id).is_ok());
        Ok(rows)
    }
    /// The pending messages of `channel` due at `post_at` with ids in
    /// `lo..=hi`, in id order.
    fn scheduled_between(
        &mut self,
        post_at: i64,
        channel: &str,
        lo: i64,
        hi: i64,
    ) -> Result<Vec<ScheduledRow>, StoreError>;
    /// Cancels the pending message `id`: false if it was not pending
    /// (fired, cancelled, never existed).
    fn delete_scheduled(&mut self, id: i64) -> Result<bool, StoreError>;
    /// Deletes the pending message under `key` because it fires: false if
    /// it was not pending. The firing transaction calls this first and
    /// writes the message only if it was true.
    fn retire_scheduled(&mut self, key: &ScheduledKey) -> Result<bool, StoreError>;
    /// Pending messages matching `filter` in `(post_at, id)` order, at most
    /// `limit`, and whether more follow.
    fn scheduled_list(
        &mut self,
        filter: &ScheduledFilter,
        limit: usize,
    ) -> Result<(Vec<ScheduledRow>, bool), StoreError>;
    /// How many messages of `channel` are pending with `lo <= post_at <= hi`
    /// (Slack's per-channel limit, `restricted_too_many`).
    fn scheduled_count_between(
        &mut self,
        channel: &str,
        lo: i64,
        hi: i64,
    ) -> Result<i64, StoreError>;
    /// Calls `f(id, channel, post_at)` for every pending message (a shard
    /// loads its timers at start; a cluster owner, those of what it takes
    /// over).
    fn each_scheduled(&mut self, f: &mut dyn FnMut(i64, &str, i64)) -> Result<u64, StoreError>;

    // ---- ownership (a cluster's fencing) -----------------------------------

    /// Names this connection after the cluster node that writes through it
    /// (and every reconnection of it), so that a successor can fence out a
    /// deposed node's transactions (`claim_member`'s `deposed`). Called on
    /// the writer once the node's id is known. PostgreSQL: the session's
    /// `application_name`; SQLite (one node): nothing.
    fn label_session(&mut self, node: u16) -> Result<(), StoreError>;
    /// Records that logical member `member`'s channels are owned at
    /// `epoch` from now on (an owner taking them over). Epochs only grow:
    /// false, and nothing changed, if a later epoch has claimed it.
    ///
    /// The claim waits for the transactions of earlier owners that checked
    /// the member (`member_epoch_holds`). An owner that the placement
    /// removed (`deposed`: nodes that left it) may be paused in the middle
    /// of one, holding it open for as long as it is paused; after a short
    /// wait the claim ends the sessions of those nodes (their open
    /// transactions roll back: nothing of theirs was acknowledged) rather
    /// than wait for them to wake.
    fn claim_member(
        &mut self,
        member: u32,
        epoch: u64,
        deposed: &[u16],
    ) -> Result<bool, StoreError>;
    /// Whether `epoch` is still the newest claim of `member` (or a newer
    /// one, not yet claimed): an owner's writes check this in their own
    /// transaction, and a newer claim waits for them, so a deposed owner
    /// (paused, partitioned) can never commit after its successor took
    /// over.
    fn member_epoch_holds(&mut self, member: u32, epoch: u64) -> Result<bool, StoreError>;
    /// Calls `f(channel, newest ts)` for every channel with a stored event
    /// or message (warm-up: a restarted channel server continues after it).
    fn each_channel_max_ts(&mut self, f: &mut dyn FnMut(&str, i64)) -> Result<(), StoreError>;

    // ---- bulk import -----------------------------------------------------

    /// An importer of conversations in bulk for `transponder channel
    /// import`, valid for this job (see [`super::import`]).
    fn importer(
        &mut self,
        team_id: &str,
        created: i64,
    ) -> Result<Box<dyn Importer + '_>, StoreError>;

    // ---- tests -----------------------------------------------------------

    /// Runs `sql` (portable SQL) and returns the first column of its first
    /// row: tests count and inspect rows through it on either backend.
    #[cfg(test)]
    fn scalar(&mut self, sql: &str) -> Result<i64, StoreError>;
    /// Runs `sql` (portable SQL); tests damage rows through it.
    #[cfg(test)]
    fn exec(&mut self, sql: &str) -> Result<(), StoreError>;

    // ---- provided: the same on every backend -----------------------------

    /// A live (not deleted) message, with its thread summary and reactions.
    fn message(&mut self, channel: &str, ts: i64) -> Result<Option<MessageRow>, StoreError> {
        let Some(m) = self.message_row(channel, ts)? else {
            return Ok(None);
        };
        let mut found = [m];
        decorate(self, channel, &mut found)?;
        let [m] = found;
        Ok(Some(m))
    }

    /// conversations.history: the channel's top-level messages and thread
    /// broadcasts in `window`, newest first, at most `limit` (clamped to
    /// 1..=[`MAX_PAGE`]), strictly older than `cursor` (the last ts of the
    /// previous page). Returns the page and whether older messages remain
    /// in the window. Parents carry their thread summary.
    fn history(
        &mut self,
        channel: &str,
        window: Window,
        cursor: Option<i64>,
        limit: usize,
    ) -> Result<(Vec<MessageRow>, bool), StoreError> {
        let (lower, mut upper) = window.bounds();
        if let Some(c) = cursor {
            upper = upper.min(c);
        }
        let rows = self.history_rows(channel, lower, upper, limit_plus_one(limit))?;
        let (mut rows, more) = page(rows, limit);
        decorate(self, channel, &mut rows)?;
        Ok((rows, more))
    }

    /// conversations.replies: the thread's parent first (on every page),
    /// then its live replies in `window`, oldest first, at most `limit`,
    /// strictly newer than `cursor`. `has_more` is about replies.
    /// `NotFound` if there is no live message at `thread_ts`.
    fn replies(
        &mut self,
        channel: &str,
        thread_ts: i64,
        window: Window,
        cursor: Option<i64>,
        limit: usize,
    ) -> Result<(Vec<MessageRow>, bool), StoreError> {
        let parent = self
            .message(channel, thread_ts)?
            .ok_or(StoreError::NotFound)?;
        let (mut lower, upper) = window.bounds();
        if let Some(c) = cursor {
            lower = lower.max(c);
        }
        let replies = self.reply_rows(channel, thread_ts, lower, upper, limit_plus_one(limit))?;
        let (mut replies, more) = page(replies, limit.clamp(1, MAX_PAGE));
        decorate(self, channel, &mut replies)?;
        let mut out = Vec::with_capacity(replies.len() + 1);
        out.push(parent);
        out.append(&mut replies);
        Ok((out, more))
    }

    /// reactions.add. `NotFound` if there is no live message at (channel,
    /// ts) (`message_not_found`); `Conflict` if `user` already reacted with
    /// `name` (`already_reacted`).
    fn add_reaction(
        &mut self,
        channel: &str,
        ts: i64,
        name: &str,
        user: &str,
        created: i64,
    ) -> Result<(), StoreError> {
        if !self.message_exists(channel, ts)? {
            return Err(StoreError::NotFound);
        }
        self.insert_reaction(channel, ts, name, user, created)
    }

    /// reactions.remove. `false` if `user` had not reacted with `name`
    /// (`no_reaction`); `NotFound` if there is no live message at (channel,
    /// ts).
    fn remove_reaction(
        &mut self,
        channel: &str,
        ts: i64,
        name: &str,
        user: &str,
    ) -> Result<bool, StoreError> {
        if !self.message_exists(channel, ts)? {
            return Err(StoreError::NotFound);
        }
        self.delete_reaction(channel, ts, name, user)
    }

    /// The reactions on one message, aggregated as Slack shows them.
    fn reactions_of(&mut self, channel: &str, ts: i64) -> Result<Vec<ReactionRow>, StoreError> {
        let rows = self.reaction_rows(channel, ts, ts)?;
        Ok(reactions::aggregate(rows).remove(&ts).unwrap_or_default())
    }
}

/// Fills in the derived fields of `rows` (all from `channel`): thread
/// summaries for parents, reactions for all. Two range queries over the
/// page's ts span, whatever the page size.
fn decorate<T: Tx + ?Sized>(
    tx: &mut T,
    channel: &str,
    rows: &mut [MessageRow],
) -> Result<(), StoreError> {
    let (Some(lo), Some(hi)) = (
        rows.iter().map(|m| m.ts).min(),
        rows.iter().map(|m| m.ts).max(),
    ) else {
        return Ok(());
    };
    let summaries = tx.reply_summaries(channel, lo, hi)?;
    messages::summarize_threads(rows, summaries);
    let mut reactions = reactions::aggregate(tx.reaction_rows(channel, lo, hi)?);
    for m in rows.iter_mut() {
        if let Some(r) = reactions.remove(&m.ts) {
            m.reactions = r;
        }
    }
    Ok(())
}

#[cfg(test)]
mod fencing_tests {
    use crate::store::testutil::each_backend;

    #[test]
    fn a_later_claim_fences_earlier_owners() {
        each_backend(|tx| {
            // Nobody claimed member 3 yet: any epoch may write.
            assert!(tx.member_epoch_holds(3, 1).unwrap());
            assert!(tx.claim_member(3, 5, &[]).unwrap());
            assert!(tx.member_epoch_holds(3, 5).unwrap(), "the claimer writes");
            assert!(
                tx.member_epoch_holds(3, 6).unwrap(),
                "a newer epoch may too"
            );
            assert!(
                !tx.member_epoch_holds(3, 4).unwrap(),
                "an older owner is fenced"
            );
            // Epochs only grow.
            assert!(!tx.claim_member(3, 4, &[]).unwrap());
            assert!(!tx.member_epoch_holds(3, 4).unwrap());
            assert!(tx.claim_member(3, 7, &[]).unwrap());
            assert!(!tx.member_epoch_holds(3, 5).unwrap());
            // Other members are untouched.
            assert!(tx.member_epoch_holds(4, 1).unwrap());
        });
    }

    #[test]
    fn the_event_log_replays_in_order() {
        each_backend(|tx| {
            for ts in [30, 10, 20, 40] {
                tx.insert_event("C1", ts, &format!("{{\"ts\":{ts}}}"))
                    .unwrap();
            }
            tx.insert_event("C2", 15, "{}").unwrap();
            let after: Vec<i64> = tx
                .events_after("C1", 10, 10)
                .unwrap()
                .iter()
                .map(|e| e.0)
                .collect();
            assert_eq!(after, vec![20, 30, 40]);
            let last: Vec<i64> = tx
                .last_events("C1", 2)
                .unwrap()
                .iter()
                .map(|e| e.0)
                .collect();
            assert_eq!(last, vec![30, 40], "the newest, oldest first");
            assert_eq!(tx.channel_max_ts("C1").unwrap(), Some(40));
            assert_eq!(tx.channel_max_ts("C9").unwrap(), None);
        });
    }
}
