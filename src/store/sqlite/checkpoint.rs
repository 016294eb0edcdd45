//! WAL checkpoints on their own thread and connection, off the commit path.
//!
//! SQLite's automatic checkpoint runs inside the COMMIT of the transaction
//! that crossed `wal_autocheckpoint`, on the writer's thread: that batch's
//! callers wait for a copy of every hot page into the database file plus
//! its flush (tens of ms), and every write queued behind them waits too.
//! So the writer's connection has `wal_autocheckpoint=0` and a WAL hook
//! that only reports the WAL's size (in pages) after each commit; the
//! `store-checkpoint` thread, with its own connection, checkpoints when the
//! WAL has grown past [`WAL_CHECKPOINT_PAGES`]:
//!
//! - **PASSIVE** past the threshold, then again after each
//!   [`WAL_CHECKPOINT_STEP_PAGES`] more: copies what it can without taking
//!   any lock a writer or reader waits for, so commits go on meanwhile.
//!   SQLite restarts the WAL from its start by itself when the writer begins
//!   a transaction while everything is copied, so after a pause in the
//!   writes the file stops growing. Not after every commit past the
//!   threshold: each checkpoint ends with a flush of the database file, and
//!   hundreds of those a second queue the writer's own flushes behind them
//!   in the filesystem's journal.
//! - Under a write load that never pauses, the writer always committed new
//!   frames while PASSIVE copied the older ones, and the WAL never restarts.
//!   A checkpoint that would restart it (RESTART) needs the write lock, and
//!   the checkpointer cannot get it: the writer takes it again as soon as a
//!   commit releases it (SQLite's busy handler polls, then gives up and
//!   degrades to PASSIVE). So past [`WAL_CAP_PAGES`] the *writer* runs the
//!   RESTART checkpoint itself, in its WAL hook right after the commit that
//!   crossed the cap: the PASSIVE runs copied all but the last
//!   [`WAL_CHECKPOINT_STEP_PAGES`] or so, so it copies little and flushes
//!   the database file once, and the next transaction starts the WAL over.
//!   That batch's callers wait for it, once per [`WAL_CAP_PAGES`] written:
//!   the price of a bounded WAL (reads slow down with a long one, and a
//!   file that keeps growing makes every commit's flush write metadata
//!   too). RESTART, not TRUNCATE: the file keeps its blocks, and later
//!   commits overwrite them instead of growing it again.
//!
//! Crash safety is SQLite's: a checkpoint only copies committed frames,
//! and the WAL's header says which frames are valid, so a kill -9 at any
//! point leaves a database that recovers on open.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::wal::CheckpointMode;
use rusqlite::Connection;

use crate::limits::{WAL_CAP_PAGES, WAL_CHECKPOINT_PAGES, WAL_CHECKPOINT_STEP_PAGES};
use crate::store::error::StoreError;

/// How long the checkpointer sleeps when nothing wakes it: a WAL left over
/// by a burst (under the threshold) is then copied while the store idles.
const IDLE_CHECK: Duration = Duration::from_secs(5);

/// What the writer's WAL hook tells the checkpointer. Shared by the two
/// store threads (the writer's hook writes, the checkpointer reads).
struct WalState {
    /// Pages in the WAL after the last commit.
    pages: u32,
    /// WAL size (pages) at which the next checkpoint is due: the threshold
    /// after the WAL starts over, else what the last checkpoint saw plus
    /// the step.
    due_at: u32,
    /// Commits reported so far: the checkpointer runs again only after a
    /// new one (a checkpoint that could not copy everything would
    /// otherwise spin).
    commits: u64,
    /// The writer's connection is closed: the checkpointer stops.
    closed: bool,
}

struct Shared {
    state: Mutex<WalState>,
    wake: Condvar,
}

impl Default for Shared {
    fn default() -> Shared {
        Shared {
            state: Mutex::new(WalState {
                pages: 0,
                due_at: WAL_CHECKPOINT_PAGES,
                commits: 0,
                closed: false,
            }),
            wake: Condvar::new(),
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, WalState> {
        // The state is plain fields, never half-written.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Owned by the writer connection's WAL hook; dropped when that connection
/// closes, which stops the checkpointer.
struct HookEnd(Arc<Shared>);

impl HookEnd {
    fn committed(&self, pages: u32) {
        let mut s = self.0.lock();
        if pages < s.pages {
            // The WAL started over from its beginning.
            s.due_at = WAL_CHECKPOINT_PAGES;
        }
        s.pages = pages;
        s.commits += 1;
        if pages >= s.due_at {
            self.0.wake.notify_one();
        }
    }
}

impl Drop for HookEnd {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.wake.notify_one();
    }
}

/// Turns SQLite's automatic checkpoint off on the writer's connection and
/// installs the hook that reports the WAL's size; returns the body of the
/// checkpointer thread, which opens its own connection to `path`.
pub(crate) fn attach(writer: &mut Connection, path: &Path) -> Result<Checkpointer, StoreError> {
    // The pragma installs SQLite's own WAL hook: set it first, ours replaces it.
    writer.pragma_update(None, "wal_autocheckpoint", 0)?;
    let shared = Arc::new(Shared::default());
    let end = HookEnd(shared.clone());
    writer.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages: i32| {
        let pages = u32::try_from(pages).unwrap_or(0);
        if pages >= WAL_CAP_PAGES {
            // The write lock is released; no other writer can take it.
            let started = std::time::Instant::now();
            match wal.checkpoint_v2(CheckpointMode::RESTART) {
                Ok((log, done)) => {
                    tracing::debug!(
                        frames = log,
                        copied = done,
                        took_ms = started.elapsed().as_secs_f64() * 1e3,
                        "store: WAL at its cap, restarted"
                    )
                }
                Err(e) => tracing::warn!(error = %e, "store: WAL checkpoint (restart) failed"),
            }
        }
        end.committed(pages);
        // An error here would fail the COMMIT that already happened.
        Ok(())
    }))?;
    let conn = super::connection::open_checkpointer(path)?;
    Ok(Checkpointer { conn, shared })
}

/// The `store-checkpoint` thread's state: its connection and what the
/// writer reports. Owned by that thread.
pub(crate) struct Checkpointer {
    conn: Connection,
    shared: Arc<Shared>,
}

impl Checkpointer {
    /// The thread's body: returns once the writer's connection is closed.
    pub(crate) fn run(self) {
        // The commit count at the last checkpoint.
        let mut seen = 0;
        loop {
            let commits = {
                let s = self.shared.lock();
                let (s, _) = self
                    .shared
                    .wake
                    .wait_timeout_while(s, IDLE_CHECK, |s| {
                        !s.closed && (s.pages < s.due_at || s.commits == seen)
                    })
                    .unwrap_or_else(PoisonError::into_inner);
                if s.closed {
                    break;
                }
                s.commits
            };
            // Woken by a commit past `due_at`, or idle with commits not yet
            // checkpointed.
            if commits != seen {
                seen = commits;
                if let Some(log) = self.checkpoint() {
                    let mut s = self.shared.lock();
                    if s.pages >= log {
                        s.due_at = log.saturating_add(WAL_CHECKPOINT_STEP_PAGES);
                    }
                }
            }
        }
        tracing::debug!("store checkpointer stopped");
    }

    /// One PASSIVE checkpoint. Returns the WAL's size in pages it saw
    /// (None: it failed).
    fn checkpoint(&self) -> Option<u32> {
        match self
            .conn
            .wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE)
        {
            // -1: the connection does not see a WAL (it must have read the
            // database once; `open_checkpointer` does).
            Ok((log, _)) if log < 0 => {
                tracing::warn!("store: WAL checkpoint found no WAL");
                None
            }
            Ok((log, _)) => u32::try_from(log).ok(),
            Err(e) => {
                tracing::warn!(error = %e, "store: WAL checkpoint (passive) failed");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::limits::WAL_CHECKPOINT_PAGES;
    use crate::store::testutil::{message, open_temp};
    use crate::store::{Durability, DB_FILE};
    use std::time::{Duration, Instant};

    /// Bytes of text per message: a few messages fill a 4 KiB page each.
    const TEXT_BYTES: usize = 3000;

    #[test]
    fn the_writer_leaves_checkpoints_to_the_checkpointer() {
        let (dir, store) = open_temp(Durability::Normal);
        let autocheckpoint = store
            .write_blocking(|tx| tx.scalar("PRAGMA wal_autocheckpoint"))
            .unwrap();
        assert_eq!(autocheckpoint, 0, "the writer checkpoints on commit");

        // Well past the threshold, in batches of 100 messages (1 page each).
        let text = "x".repeat(TEXT_BYTES);
        let batches = (WAL_CHECKPOINT_PAGES as i64 * 3 / 2) / 100;
        for b in 0..batches {
            let text = text.clone();
            store
                .write_blocking(move |tx| {
                    for i in 0..100 {
                        tx.insert_message(&message("C1", b * 100 + i + 1, "U1", &text))?;
                    }
                    Ok(())
                })
                .unwrap();
        }
        // The checkpointer copies the WAL into the database file while
        // every connection stays open.
        let db = dir.path().join(DB_FILE);
        let wanted = (batches * 100) as u64 * TEXT_BYTES as u64;
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::fs::metadata(&db).unwrap().len() < wanted {
            assert!(
                Instant::now() < deadline,
                "no checkpoint: database file {} bytes, {wanted} written",
                std::fs::metadata(&db).unwrap().len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        for ts in 1..=50 {
            store
                .write_blocking(move |tx| tx.insert_message(&message("C2", ts, "U1", "small")))
                .unwrap();
        }
        assert_eq!(
            store
                .read_blocking(|tx| tx.scalar("SELECT count(*) FROM messages"))
                .unwrap(),
            batches * 100 + 50
        );
    }
}
