//! The SQLite backend: one file, `<data-dir>/transponder.db`, in WAL mode.
//! The embedded default for a single node.
//!
//! One writer connection (the writer thread's) and one read-only connection
//! per reader thread; in WAL mode readers never wait for the writer. The
//! SQL lives in one module per table; `SqliteTx` is the [`Tx`] over a
//! connection.

mod channels;
mod checkpoint;
mod connection;
mod events;
mod import;
mod members;
mod messages;
pub(crate) mod migrations;
mod reactions;
mod scheduled;
mod teams;
mod users;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::Path;

use rusqlite::Connection;

use super::channels::{ChannelRow, ChannelTypes};
use super::error::StoreError;
use super::import::Importer;
use super::messages::{MessageRow, NewMessage, ReplierSummary};
use super::scheduled::{NewScheduled, ScheduledFilter, ScheduledKey, ScheduledRow};
use super::session::{JobEnd, Session};
use super::teams::TeamRow;
use super::tx::{TokenHash, Tx};
use super::users::UserRow;
use super::Durability;
use crate::limits;

pub use import::IMPORT_CACHE_BYTES;

/// A SQLite connection as a [`Tx`] and a store thread's [`Session`].
/// Owned by the store thread that uses it.
pub(crate) struct SqliteTx {
    pub(crate) conn: Connection,
    /// Ids of scheduled messages that fired, whose entries in
    /// `scheduled_ids` wait for [`Session::deferred_work`] (the writer's).
    unswept: UnsweptIds,
}

/// Fired scheduled messages' ids, swept in ascending order in batches (a
/// min-heap: no pause to sort a spike's worth at once). Bounded: past
/// [`limits::SCHEDULED_UNSWEPT_IDS_MAX`] the writer sweeps a batch after
/// every commit, jobs waiting or not.
#[derive(Default)]
struct UnsweptIds {
    ids: BinaryHeap<Reverse<i64>>,
    /// An id was added since the writer last asked.
    grown: bool,
}

impl UnsweptIds {
    fn push(&mut self, id: i64) {
        self.ids.push(Reverse(id));
        self.grown = true;
    }

    /// The smallest `n` ids, ascending.
    fn take_smallest(&mut self, n: usize) -> Vec<i64> {
        let mut batch = Vec::with_capacity(n.min(self.ids.len()));
        while batch.len() < n {
            match self.ids.pop() {
                Some(Reverse(id)) => batch.push(id),
                None => break,
            }
        }
        if self.ids.is_empty() {
            // A spike's worth of capacity is not kept for the next one.
            self.ids = BinaryHeap::new();
        }
        batch
    }
}

impl SqliteTx {
    pub(crate) fn new(conn: Connection) -> SqliteTx {
        SqliteTx {
            conn,
            unswept: UnsweptIds::default(),
        }
    }
}

pub(crate) use checkpoint::Checkpointer;

/// Opens (creating if needed) and migrates the file, makes sure the default
/// team exists, and returns the writer's session, `readers` reader
/// sessions and the checkpointer (the body of its thread).
pub(crate) fn open(
    path: &Path,
    durability: Durability,
    readers: usize,
    now: i64,
) -> Result<(SqliteTx, Vec<SqliteTx>, Checkpointer), StoreError> {
    let mut conn = connection::open_writer(path, durability)?;
    migrations::migrate(&mut conn)?;
    teams::ensure_default(&conn, now)?;
    let checkpointer = checkpoint::attach(&mut conn, path)?;
    let readers = (0..readers)
        .map(|_| connection::open_reader(path).map(SqliteTx::new))
        .collect::<Result<Vec<_>, _>>()?;
    let swept = scheduled::sweep_all_ids(&conn)?;
    if swept > 0 {
        tracing::info!(
            swept,
            "store: swept the ids of scheduled messages fired before the last stop"
        );
    }
    Ok((SqliteTx::new(conn), readers, checkpointer))
}

/// The journal mode of the file at `path`, for tests.
#[cfg(test)]
pub(crate) fn journal_mode(path: &Path) -> Result<String, StoreError> {
    let conn = Connection::open(path)?;
    Ok(conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?)
}

/// SQLite's own check of the file at `path` (`"ok"`), for tests.
#[cfg(test)]
pub(crate) fn integrity_check(path: &Path) -> Result<String, StoreError> {
    let conn = Connection::open(path)?;
    Ok(conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
}

impl SqliteTx {
    /// A migrated in-memory database, for tests.
    #[cfg(test)]
    pub(crate) fn memory() -> SqliteTx {
        let mut conn = Connection::open_in_memory().unwrap();
        migrations::migrate(&mut conn).unwrap();
        SqliteTx::new(conn)
    }

    /// Runs one transaction-control statement, cached: these run several
    /// times per batch.
    fn control(&self, sql: &str) -> Result<(), StoreError> {
        self.conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    }
}

impl Session for SqliteTx {
    fn begin_write(&mut self) -> Result<(), StoreError> {
        // IMMEDIATE: take the write lock now, not at the first write, so a
        // batch never fails half-way on a lock another process holds.
        self.control("BEGIN IMMEDIATE")
    }

    fn begin_read(&mut self) -> Result<(), StoreError> {
        self.control("BEGIN")
    }

    fn savepoint(&mut self) -> Result<(), StoreError> {
        self.control("SAVEPOINT job")
    }

    fn release(&mut self) -> Result<(), StoreError> {
        self.control("RELEASE job")
    }

    fn rollback_to_savepoint(&mut self) -> Result<(), StoreError> {
        self.control("ROLLBACK TO job")?;
        self.control("RELEASE job")
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        self.control("COMMIT")
    }

    fn rollback(&mut self) -> Result<(), StoreError> {
        if self.conn.is_autocommit() {
            return Ok(());
        }
        self.control("ROLLBACK")
    }

    fn job_end(&mut self) -> JobEnd {
        // A job's hard failure (disk full, I/O error…) makes SQLite roll
        // back the whole transaction: the earlier jobs' work is gone.
        if self.conn.is_autocommit() {
            JobEnd::BatchLost
        } else {
            JobEnd::Intact
        }
    }

    fn tx(&mut self) -> &mut dyn Tx {
        self
    }

    fn deferred_work(&mut self) -> Result<(), StoreError> {
        let batch = self
            .unswept
            .take_smallest(limits::SCHEDULED_ID_SWEEP_BATCH_MAX);
        if let Err(e) = scheduled::sweep_ids(&self.conn, &batch) {
            // Not lost: tried again later (and the next open sweeps
            // whatever is left).
            self.unswept.ids.extend(batch.into_iter().map(Reverse));
            return Err(e);
        }
        Ok(())
    }

    fn has_deferred_work(&self) -> bool {
        !self.unswept.ids.is_empty()
    }

    fn deferred_work_overdue(&self) -> bool {
        self.unswept.ids.len() > limits::SCHEDULED_UNSWEPT_IDS_MAX
    }

    fn deferred_work_interrupted(&mut self) -> bool {
        std::mem::take(&mut self.unswept.grown)
    }
}

impl Tx for SqliteTx {
    fn insert_team(&mut self, team: &TeamRow) -> Result<(), StoreError> {
        teams::insert(&self.conn, team)
    }
    fn team(&mut self, id: &str) -> Result<Option<TeamRow>, StoreError> {
        teams::get(&self.conn, id)
    }

    fn insert_user(&mut self, user: &UserRow, hash: Option<&TokenHash>) -> Result<(), StoreError> {
        users::insert(&self.conn, user, hash)
    }
    fn user(&mut self, id: &str) -> Result<Option<UserRow>, StoreError> {
        users::get(&self.conn, id)
    }
    fn user_by_name(&mut self, team_id: &str, name: &str) -> Result<Option<UserRow>, StoreError> {
        users::by_name(&self.conn, team_id, name)
    }
    fn user_by_token_hash(&mut self, hash: &TokenHash) -> Result<Option<UserRow>, StoreError> {
        users::by_token_hash(&self.conn, hash)
    }
    fn users(
        &mut self,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<UserRow>, bool), StoreError> {
        users::list(&self.conn, cursor, limit)
    }
    fn token_hash_of(&mut self, id: &str) -> Result<Option<TokenHash>, StoreError> {
        users::token_hash_of(&self.conn, id)
    }
    fn set_token_hash(&mut self, id: &str, hash: Option<&TokenHash>) -> Result<(), StoreError> {
        users::set_token_hash(&self.conn, id, hash)
    }
    fn each_user(
        &mut self,
        f: &mut dyn FnMut(UserRow, Option<TokenHash>),
    ) -> Result<u64, StoreError> {
        users::all(&self.conn, f)
    }

    fn insert_channel(&mut self, channel: &ChannelRow) -> Result<(), StoreError> {
        channels::insert(&self.conn, channel)
    }
    fn channel(&mut self, id: &str) -> Result<Option<ChannelRow>, StoreError> {
        channels::get(&self.conn, id)
    }
    fn channel_by_name(
        &mut self,
        team_id: &str,
        name: &str,
    ) -> Result<Option<ChannelRow>, StoreError> {
        channels::by_name(&self.conn, team_id, name)
    }
    fn channels(
        &mut self,
        types: ChannelTypes,
        exclude_archived: bool,
        member_of: Option<&str>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ChannelRow>, bool), StoreError> {
        channels::list(
            &self.conn,
            types,
            exclude_archived,
            member_of,
            cursor,
            limit,
        )
    }
    fn set_archived(&mut self, id: &str, archived: bool) -> Result<(), StoreError> {
        channels::set_archived(&self.conn, id, archived)
    }
    fn each_channel_id(&mut self, f: &mut dyn FnMut(&str, bool)) -> Result<u64, StoreError> {
        channels::for_each_id(&self.conn, f)
    }

    fn add_member(&mut self, channel: &str, user: &str, joined: i64) -> Result<bool, StoreError> {
        members::add(&self.conn, channel, user, joined)
    }
    fn remove_member(&mut self, channel: &str, user: &str) -> Result<bool, StoreError> {
        members::remove(&self.conn, channel, user)
    }
    fn is_member(&mut self, channel: &str, user: &str) -> Result<bool, StoreError> {
        members::is_member(&self.conn, channel, user)
    }
    fn members(
        &mut self,
        channel: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<String>, bool), StoreError> {
        members::list_members(&self.conn, channel, cursor, limit)
    }
    fn channels_of(&mut self, user: &str) -> Result<Vec<String>, StoreError> {
        members::channels_of(&self.conn, user)
    }
    fn member_count(&mut self, channel: &str) -> Result<usize, StoreError> {
        members::count(&self.conn, channel)
    }
    fn each_member(&mut self, f: &mut dyn FnMut(&str, &str)) -> Result<u64, StoreError> {
        members::all(&self.conn, f)
    }

    fn insert_message(&mut self, m: &NewMessage) -> Result<(), StoreError> {
        messages::insert(&self.conn, m)
    }
    fn thread_of(&mut self, channel: &str, ts: i64) -> Result<Option<i64>, StoreError> {
        messages::thread_of(&self.conn, channel, ts)
    }
    fn message_exists(&mut self, channel: &str, ts: i64) -> Result<bool, StoreError> {
        messages::exists(&self.conn, channel, ts)
    }
    fn update_text(
        &mut self,
        channel: &str,
        ts: i64,
        text: &str,
        blocks: Option<&serde_json::Value>,
        editor: &str,
        edited_ts: i64,
    ) -> Result<(), StoreError> {
        messages::update_text(&self.conn, channel, ts, text, blocks, editor, edited_ts)
    }
    fn mark_deleted(&mut self, channel: &str, ts: i64) -> Result<(), StoreError> {
        messages::mark_deleted(&self.conn, channel, ts)
    }
    fn max_ts(&mut self, channel: &str) -> Result<Option<i64>, StoreError> {
        messages::max_ts(&self.conn, channel)
    }
    fn message_row(&mut self, channel: &str, ts: i64) -> Result<Option<MessageRow>, StoreError> {
        messages::row(&self.conn, channel, ts)
    }
    fn history_rows(
        &mut self,
        channel: &str,
        lower: i64,
        upper: i64,
        n: i64,
    ) -> Result<Vec<MessageRow>, StoreError> {
        messages::history_rows(&self.conn, channel, lower, upper, n)
    }
    fn reply_rows(
        &mut self,
        channel: &str,
        thread_ts: i64,
        lower: i64,
        upper: i64,
        n: i64,
    ) -> Result<Vec<MessageRow>, StoreError> {
        messages::reply_rows(&self.conn, channel, thread_ts, lower, upper, n)
    }
    fn reply_summaries(
        &mut self,
        channel: &str,
        lo: i64,
        hi: i64,
    ) -> Result<Vec<ReplierSummary>, StoreError> {
        messages::reply_summaries(&self.conn, channel, lo, hi)
    }

    fn insert_reaction(
        &mut self,
        channel: &str,
        ts: i64,
        name: &str,
        user: &str,
        created: i64,
    ) -> Result<(), StoreError> {
        reactions::insert(&self.conn, channel, ts, name, user, created)
    }
    fn delete_reaction(
        &mut self,
        channel: &str,
        ts: i64,
        name: &str,
        user: &str,
    ) -> Result<bool, StoreError> {
        reactions::delete(&self.conn, channel, ts, name, user)
    }
    fn reaction_rows(
        &mut self,
        channel: &str,
        lo: i64,
        hi: i64,
    ) -> Result<Vec<(i64, String, String)>, StoreError> {
        reactions::rows(&self.conn, channel, lo, hi)
    }

    fn insert_event(&mut self, channel: &str, ts: i64, json: &str) -> Result<(), StoreError> {
        events::insert(&self.conn, channel, ts, json)
    }
    fn each_channel_max_ts(&mut self, f: &mut dyn FnMut(&str, i64)) -> Result<(), StoreError> {
        events::max_ts_all(&self.conn, f)
    }
    fn events_after(
        &mut self,
        channel: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        events::after(&self.conn, channel, after, limit)
    }
    fn last_events(
        &mut self,
        channel: &str,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        events::last(&self.conn, channel, limit)
    }
    fn channel_max_ts(&mut self, channel: &str) -> Result<Option<i64>, StoreError> {
        events::channel_max_ts(&self.conn, channel)
    }
    fn insert_scheduled(&mut self, row: &NewScheduled) -> Result<i64, StoreError> {
        scheduled::insert(&self.conn, row)
    }
    fn scheduled(&mut self, id: i64) -> Result<Option<ScheduledRow>, StoreError> {
        scheduled::get(&self.conn, id)
    }
    fn scheduled_between(
        &mut self,
        post_at: i64,
        channel: &str,
        lo: i64,
        hi: i64,
    ) -> Result<Vec<ScheduledRow>, StoreError> {
        scheduled::between(&self.conn, post_at, channel, lo, hi)
    }
    fn delete_scheduled(&mut self, id: i64) -> Result<bool, StoreError> {
        scheduled::delete(&self.conn, id)
    }
    fn retire_scheduled(&mut self, key: &ScheduledKey) -> Result<bool, StoreError> {
        let retired = scheduled::retire(&self.conn, key)?;
        if retired {
            self.unswept.push(key.id);
        }
        Ok(retired)
    }
    fn scheduled_list(
        &mut self,
        filter: &ScheduledFilter,
        limit: usize,
    ) -> Result<(Vec<ScheduledRow>, bool), StoreError> {
        scheduled::list(&self.conn, filter, limit)
    }
    fn scheduled_count_between(
        &mut self,
        channel: &str,
        lo: i64,
        hi: i64,
    ) -> Result<i64, StoreError> {
        scheduled::count_between(&self.conn, channel, lo, hi)
    }
    fn each_scheduled(&mut self, f: &mut dyn FnMut(i64, &str, i64)) -> Result<u64, StoreError> {
        scheduled::each(&self.conn, f)
    }
    fn label_session(&mut self, _node: u16) -> Result<(), StoreError> {
        Ok(()) // one node, one writer: nobody to fence out
    }
    fn claim_member(
        &mut self,
        member: u32,
        epoch: u64,
        _deposed: &[u16],
    ) -> Result<bool, StoreError> {
        events::claim_member(&self.conn, member, epoch)
    }
    fn member_epoch_holds(&mut self, member: u32, epoch: u64) -> Result<bool, StoreError> {
        events::member_epoch_holds(&self.conn, member, epoch)
    }

    fn importer(
        &mut self,
        team_id: &str,
        created: i64,
    ) -> Result<Box<dyn Importer + '_>, StoreError> {
        Ok(Box::new(import::SqliteImporter::new(
            &self.conn, team_id, created,
        )?))
    }

    #[cfg(test)]
    fn scalar(&mut self, sql: &str) -> Result<i64, StoreError> {
        Ok(self.conn.query_row(sql, [], |r| r.get(0))?)
    }
    #[cfg(test)]
    fn exec(&mut self, sql: &str) -> Result<(), StoreError> {
        self.conn.execute_batch(sql)?;
        Ok(())
    }
}
