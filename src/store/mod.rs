//! The durable store: teams, users, hashed tokens, channels, memberships,
//! messages with threads, edits, deletions and reactions, in one SQLite file
//! (`<data-dir>/transponder.db`).
//!
//! # Threads
//!
//! Nothing here runs on a shard's executor: SQLite calls block (on locks, on
//! the disk), and a blocked executor stalls every connection of its core.
//! [`Store::open`] starts its own threads instead:
//!
//! - one **writer** thread with the only read-write connection. It commits
//!   the jobs queued for it in groups (group commit, `writer.rs`): one disk
//!   flush per batch, not per write.
//! - two **reader** threads, each with a read-only connection. In WAL mode
//!   readers do not wait for the writer.
//!
//! A [`Store`] is a handle on those threads: cheap to clone, `Send + Sync`,
//! held by every shard. A job is a closure over `&Connection` sent on a
//! bounded queue; its answer comes back on a one-shot channel the caller
//! awaits. flume's async receive works from glommio executors (a foreign
//! thread's wake reaches a parked executor through its eventfd), and a full
//! queue makes the *sender* wait, which is the store's backpressure.
//!
//! The closures use the typed functions of [`users`], [`channels`],
//! [`members`], [`messages`], [`reactions`] and [`teams`], so a web API
//! method that needs several statements runs them in one job, atomically:
//!
//! ```ignore
//! let ts = store
//!     .write(move |c| {
//!         if !members::is_member(c, &channel, &user)? {
//!             return Err(StoreError::NotFound);
//!         }
//!         messages::insert(c, &message)?;
//!         Ok(message.ts)
//!     })
//!     .await?;
//! ```
//!
//! # Conventions
//!
//! Ids are `String`s (`U0G9QF9C6`). Every time is an `i64` of microseconds
//! since the epoch: a Slack `ts` `"1700000000.000123"` is
//! `1700000000000123`, and `created`/`joined` columns use the same unit.
//! Paged lists return `(rows, has_more)`; the next page's cursor is the key
//! of the last row returned.
//!
//! # One owner
//!
//! A server or a bulk import first takes the data dir's [`DataDirLock`]
//! (`lock.rs`): a second one on the same folder stops with a clear error.
//! [`Store::open`] itself takes no lock, so `user add` / `channel add` keep
//! working beside a running server.

mod connection;
mod error;
mod lock;
mod reader;
mod writer;

pub mod channels;
pub mod events;
pub mod import;
pub mod members;
pub mod messages;
pub mod migrations;
pub mod reactions;
pub mod teams;
pub mod users;

#[cfg(test)]
mod bench;
#[cfg(test)]
mod testutil;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::{self, JoinHandle};
use std::time::{SystemTime, UNIX_EPOCH};

pub use channels::{ChannelRow, ChannelTypes};
pub use error::StoreError;
pub use lock::{DataDirLock, LockError, LOCK_FILE};
pub use messages::{MessageRow, NewMessage, Window};
pub use reactions::ReactionRow;
/// The connection type job closures receive, re-exported so callers need no
/// direct `rusqlite` import for it.
pub use rusqlite::Connection;
pub use teams::{TeamRow, DEFAULT_TEAM_ID};
pub use users::UserRow;

use reader::Reader;
use writer::{Answer, ClosureJob, Job, Writer, WriterStats};

/// The database file inside the data folder.
pub const DB_FILE: &str = "transponder.db";

/// Reader threads. Two on the 2-core machines this is built on; reads are
/// short index lookups, more threads would mostly contend for the cores.
const READERS: usize = 2;

/// Jobs queued per kind (writes, reads) before senders wait.
const QUEUE_CAPACITY: usize = 4096;

/// Largest page a list or history query returns, whatever the caller asks.
pub const MAX_PAGE: usize = 1000;

/// What "acknowledged" means for a write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=FULL`: an acknowledged write is on disk and survives
    /// power loss. Costs one flush per batch.
    #[default]
    Full,
    /// `synchronous=NORMAL` in WAL mode: an acknowledged write survives a
    /// process crash; a power loss may lose the last commits (never
    /// corrupts the file).
    Normal,
}

/// A handle on the store. Cheap to clone, `Send + Sync`: every shard holds
/// one. The threads and connections belong to the store (its shared inner
/// part), not to a handle; they stop when [`Store::close`] is called or the
/// last handle is dropped.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// Shared by every handle, dropped with the last one. The job queues' send
/// sides live here; `None` once closed, so a submission after close is
/// refused instead of queued for a thread that is gone.
struct Inner {
    writer: RwLock<Option<flume::Sender<Box<dyn Job>>>>,
    readers: RwLock<Option<flume::Sender<Box<dyn Job>>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    stats: Arc<WriterStats>,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) `dir/transponder.db`, migrates it to the
    /// current schema, makes sure the default team exists and starts the
    /// writer and reader threads. Blocking: call it before the executors
    /// start, or from a blocking thread.
    pub fn open(dir: &Path, durability: Durability) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(DB_FILE);
        let mut conn = connection::open_writer(&path, durability)?;
        migrations::migrate(&mut conn)?;
        teams::ensure_default(&conn, now_micros())?;
        let reader_conns = (0..READERS)
            .map(|_| connection::open_reader(&path))
            .collect::<Result<Vec<_>, _>>()?;

        let stats = Arc::new(WriterStats::default());
        let (write_tx, write_rx) = flume::bounded(QUEUE_CAPACITY);
        let (read_tx, read_rx) = flume::bounded(QUEUE_CAPACITY);
        // If a spawn fails, the senders drop on return and the threads
        // already started see a closed queue and exit.
        let mut threads = Vec::with_capacity(1 + READERS);
        let writer = Writer::new(conn, write_rx, stats.clone());
        threads.push(
            thread::Builder::new()
                .name("store-writer".into())
                .spawn(move || writer.run())?,
        );
        for (i, conn) in reader_conns.into_iter().enumerate() {
            let reader = Reader::new(conn, read_rx.clone());
            threads.push(
                thread::Builder::new()
                    .name(format!("store-reader-{i}"))
                    .spawn(move || reader.run())?,
            );
        }
        tracing::info!(path = %path.display(), ?durability, "store opened");
        Ok(Store {
            inner: Arc::new(Inner {
                writer: RwLock::new(Some(write_tx)),
                readers: RwLock::new(Some(read_tx)),
                threads: Mutex::new(threads),
                stats,
                path,
            }),
        })
    }

    /// Runs `f` on the writer thread, inside the next group-commit batch, and
    /// resolves once that batch is committed (durable per [`Durability`]).
    /// `f` runs in its own savepoint: if it returns `Err`, its changes are
    /// rolled back and the rest of the batch is unaffected. Waits while the
    /// write queue is full.
    ///
    /// Dropping the future does not cancel a write already queued. A panic
    /// in `f` is re-raised here. `f` must not run BEGIN/COMMIT/ROLLBACK.
    pub async fn write<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let (reply, answer) = flume::bounded(1);
        let queue = sender(&self.inner.writer)?;
        queue
            .send_async(Box::new(ClosureJob { f, reply }) as Box<dyn Job>)
            .await
            .map_err(|_| StoreError::Closed)?;
        drop(queue);
        settle(answer.recv_async().await)
    }

    /// Runs `f` on a reader thread in a read transaction (one consistent
    /// snapshot for all its queries). The connection is read-only.
    pub async fn read<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let (reply, answer) = flume::bounded(1);
        let queue = sender(&self.inner.readers)?;
        queue
            .send_async(Box::new(ClosureJob { f, reply }) as Box<dyn Job>)
            .await
            .map_err(|_| StoreError::Closed)?;
        drop(queue);
        settle(answer.recv_async().await)
    }

    /// [`Store::write`] for plain threads (the CLI, tests). Blocks: never call
    /// it on an executor.
    pub fn write_blocking<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let (reply, answer) = flume::bounded(1);
        sender(&self.inner.writer)?
            .send(Box::new(ClosureJob { f, reply }) as Box<dyn Job>)
            .map_err(|_| StoreError::Closed)?;
        settle(answer.recv())
    }

    /// [`Store::read`] for plain threads. Blocks: never call it on an
    /// executor.
    pub fn read_blocking<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let (reply, answer) = flume::bounded(1);
        sender(&self.inner.readers)?
            .send(Box::new(ClosureJob { f, reply }) as Box<dyn Job>)
            .map_err(|_| StoreError::Closed)?;
        settle(answer.recv())
    }

    /// Stops the store for every handle: jobs already queued are run (and
    /// committed) first, later ones get [`StoreError::Closed`]. Returns when
    /// the threads have exited. Blocks: call it from the shutdown path, not
    /// on an executor. Dropping the last handle does the same.
    pub fn close(self) {
        self.inner.shutdown();
    }

    /// Group-commit counters since open: (transactions, jobs committed in
    /// them). jobs / transactions is the mean batch size.
    pub fn stats(&self) -> (u64, u64) {
        self.inner.stats.get()
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Writes waiting in the queue (not yet taken by the writer).
    #[cfg(test)]
    pub(crate) fn queued_writes(&self) -> usize {
        read_lock(&self.inner.writer)
            .as_ref()
            .map_or(0, flume::Sender::len)
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn shutdown(&self) {
        // With their send sides gone, the threads serve what is queued, then
        // see the queue disconnected and return.
        write_lock(&self.writer).take();
        write_lock(&self.readers).take();
        let threads =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        let me = thread::current().id();
        for t in threads {
            // The last handle can be dropped by a job running on a store
            // thread; that thread cannot wait for itself.
            if t.thread().id() == me {
                continue;
            }
            if t.join().is_err() {
                tracing::error!("a store thread panicked");
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

type Queue = RwLock<Option<flume::Sender<Box<dyn Job>>>>;

/// A send side of `queue` for one submission, or `Closed`. Cloned out of the
/// lock so the lock is never held across an `.await`.
fn sender(queue: &Queue) -> Result<flume::Sender<Box<dyn Job>>, StoreError> {
    read_lock(queue).clone().ok_or(StoreError::Closed)
}

fn read_lock(queue: &Queue) -> std::sync::RwLockReadGuard<'_, Option<flume::Sender<Box<dyn Job>>>> {
    // Only `shutdown` writes, and it cannot leave the value half-changed.
    queue.read().unwrap_or_else(PoisonError::into_inner)
}

fn write_lock(
    queue: &Queue,
) -> std::sync::RwLockWriteGuard<'_, Option<flume::Sender<Box<dyn Job>>>> {
    queue.write().unwrap_or_else(PoisonError::into_inner)
}

/// Turns what came back on the answer channel into the caller's result.
fn settle<R>(got: Result<Answer<R>, flume::RecvError>) -> Result<R, StoreError> {
    match got {
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        // The job was dropped without running: its thread stopped.
        Err(flume::RecvError::Disconnected) => Err(StoreError::Closed),
    }
}

/// The wall clock in microseconds since the epoch (the store's time unit).
pub fn now_micros() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// `limit` as a SQL LIMIT for "one more than the page" (to learn
/// `has_more`), with the page clamped to 1..=[`MAX_PAGE`].
pub(crate) fn limit_plus_one(limit: usize) -> i64 {
    limit.clamp(1, MAX_PAGE) as i64 + 1
}

/// Splits the extra row fetched by [`limit_plus_one`] off into `has_more`.
pub(crate) fn page<T>(mut rows: Vec<T>, limit: usize) -> (Vec<T>, bool) {
    let limit = limit.clamp(1, MAX_PAGE);
    let more = rows.len() > limit;
    rows.truncate(limit);
    (rows, more)
}

#[cfg(test)]
mod tests {
    use super::testutil::{block_on, join_all, message, open_temp, user, TempDir};
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    use std::time::Duration;

    #[test]
    fn a_store_handle_can_be_shared_between_threads() {
        fn shared<T: Clone + Send + Sync + 'static>() {}
        fn send<T: Send>(_: &T) {}
        shared::<Store>();
        // The futures are Send too (glommio does not need it; other
        // runtimes, e.g. in tools, might).
        let (_dir, store) = open_temp(Durability::Normal);
        let w = store.write(|_| Ok(()));
        send(&w);
        let r = store.read(|_| Ok(()));
        send(&r);
    }

    #[test]
    fn open_creates_the_folder_and_the_default_team() {
        let dir = TempDir::new("open");
        let nested = dir.path().join("a/b");
        let store = Store::open(&nested, Durability::Normal).unwrap();
        assert!(nested.join(DB_FILE).exists());
        assert_eq!(store.path(), nested.join(DB_FILE));
        let team = store
            .read_blocking(|c| teams::get(c, DEFAULT_TEAM_ID))
            .unwrap()
            .unwrap();
        assert_eq!(
            (team.name.as_str(), team.domain.as_str()),
            ("Transponder", "transponder")
        );
        let mode: String = store
            .read_blocking(|c| Ok(c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(mode, "wal");
        store.close();
        // Reopening keeps the one team.
        let store = Store::open(&nested, Durability::Normal).unwrap();
        let n: i64 = store
            .read_blocking(|c| Ok(c.query_row("SELECT count(*) FROM teams", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn async_write_and_read() {
        let (_dir, store) = open_temp(Durability::Normal);
        let s = store.clone();
        let got = block_on(async move {
            s.write(|c| users::insert(c, &user("U1", "alice"), None))
                .await?;
            s.read(|c| users::get(c, "U1")).await
        })
        .unwrap();
        assert_eq!(got.unwrap().name, "alice");
    }

    #[test]
    fn readers_cannot_write() {
        let (_dir, store) = open_temp(Durability::Normal);
        let e = store
            .read_blocking(|c| users::insert(c, &user("U1", "alice"), None))
            .unwrap_err();
        assert!(matches!(e, StoreError::Sqlite(_)), "{e}");
    }

    #[test]
    fn close_drains_queued_writes_then_refuses_new_ones() {
        let (_dir, store) = open_temp(Durability::Normal);
        let other = store.clone();
        // Queue writes from another thread, then close while they may still
        // be queued: each either committed (Ok) or was refused (Closed),
        // never lost after an Ok.
        let writer = {
            let store = store.clone();
            thread::spawn(move || {
                let mut acked = Vec::new();
                for ts in 1..=2000 {
                    match store
                        .write_blocking(move |c| messages::insert(c, &message("C1", ts, "U1", "x")))
                    {
                        Ok(()) => acked.push(ts),
                        Err(StoreError::Closed) => break,
                        Err(e) => panic!("{e}"),
                    }
                }
                acked
            })
        };
        thread::sleep(Duration::from_millis(20));
        store.close();
        assert!(matches!(
            other.write_blocking(|_| Ok(())),
            Err(StoreError::Closed)
        ));
        assert!(matches!(
            other.read_blocking(|_| Ok(())),
            Err(StoreError::Closed)
        ));
        assert!(matches!(
            block_on(other.write(|_| Ok(()))),
            Err(StoreError::Closed)
        ));
        let acked = writer.join().unwrap();
        let path = other.path().parent().unwrap().to_path_buf();
        drop(other);
        let store = Store::open(&path, Durability::Normal).unwrap();
        let n: i64 = store
            .read_blocking(|c| Ok(c.query_row("SELECT count(*) FROM messages", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(n as usize, acked.len());
    }

    #[test]
    fn durable_writes_survive_reopening() {
        let (dir, store) = open_temp(Durability::Full);
        let writes = (1..=1000i64).map(|ts| {
            let store = store.clone();
            async move {
                store
                    .write(move |c| {
                        messages::insert(c, &message("C1", ts, "U1", &format!("m{ts}")))
                    })
                    .await
            }
        });
        for r in join_all(writes.collect()) {
            r.unwrap();
        }
        drop(store);
        let store = Store::open(dir.path(), Durability::Full).unwrap();
        let texts: Vec<(i64, String)> = store
            .read_blocking(|c| {
                let mut s =
                    c.prepare("SELECT ts, text FROM messages WHERE channel_id = 'C1' ORDER BY ts")?;
                let v = s
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?;
                Ok(v)
            })
            .unwrap();
        assert_eq!(texts.len(), 1000);
        for (i, (ts, text)) in texts.iter().enumerate() {
            assert_eq!(*ts, i as i64 + 1);
            assert_eq!(*text, format!("m{ts}"));
        }
    }

    // ---- crash safety: a child process writing, SIGKILLed at a random moment.

    const CRASH_DIR_ENV: &str = "TRANSPONDER_STORE_CRASH_DIR";
    const CRASH_SYNC_ENV: &str = "TRANSPONDER_STORE_CRASH_SYNC";
    const CRASH_WRITERS: usize = 4;
    const ROUNDS: usize = 5;

    /// The child's side of `crash_safety`; a no-op in a normal test run.
    /// Writes forever from several threads (so batches hold several jobs);
    /// each job inserts a message *and* a reaction on it, to show jobs are
    /// atomic. Prints `ack <channel> <ts>` once a write is acknowledged.
    #[test]
    fn crash_child() {
        let Ok(dir) = std::env::var(CRASH_DIR_ENV) else {
            return;
        };
        let durability = match std::env::var(CRASH_SYNC_ENV).as_deref() {
            Ok("normal") => Durability::Normal,
            _ => Durability::Full,
        };
        let store = Store::open(Path::new(&dir), durability).unwrap();
        let threads: Vec<_> = (0..CRASH_WRITERS)
            .map(|w| {
                let store = store.clone();
                thread::spawn(move || {
                    let channel = format!("C{w}");
                    let ch = channel.clone();
                    // Continue after whatever an earlier round stored.
                    let mut ts = store
                        .read_blocking(move |c| messages::max_ts(c, &ch))
                        .unwrap()
                        .unwrap_or(0);
                    loop {
                        ts += 1;
                        let ch = channel.clone();
                        store
                            .write_blocking(move |c| {
                                messages::insert(c, &message(&ch, ts, "U1", "crash"))?;
                                reactions::add(c, &ch, ts, "ok", "U1", ts)
                            })
                            .unwrap();
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "ack {channel} {ts}").unwrap();
                        out.flush().unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }

    fn crash_safety(durability: Durability, sync: &str) {
        let dir = TempDir::new("crash");
        let exe = std::env::current_exe().unwrap();
        let mut total = 0;
        for round in 0..ROUNDS {
            let mut child = Command::new(&exe)
                .args([
                    "store::tests::crash_child",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CRASH_DIR_ENV, dir.path())
                .env(CRASH_SYNC_ENV, sync)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let stdout = child.stdout.take().unwrap();
            let (first_tx, first_rx) = flume::bounded::<()>(1);
            let lines = thread::spawn(move || {
                let mut acked = Vec::new();
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(rest) = line.strip_prefix("ack ") {
                        let (ch, ts) = rest.split_once(' ').unwrap();
                        acked.push((ch.to_string(), ts.parse::<i64>().unwrap()));
                        let _ = first_tx.try_send(());
                    }
                }
                acked
            });
            first_rx
                .recv_timeout(Duration::from_secs(60))
                .expect("the child never acknowledged a write");
            // A random moment: nanoseconds of the clock, 0..400 ms.
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .subsec_nanos();
            thread::sleep(Duration::from_micros(u64::from(nanos % 400_000)));
            child.kill().unwrap(); // SIGKILL
            let status = child.wait().unwrap();
            {
                use std::os::unix::process::ExitStatusExt;
                assert_eq!(
                    status.signal(),
                    Some(9),
                    "the child ended on its own: {status}"
                );
            }
            let acked = lines.join().unwrap();
            assert!(!acked.is_empty());
            total += acked.len();

            let store = Store::open(dir.path(), durability).unwrap();
            let (missing, integrity, unpaired) = store
                .read_blocking(move |c| {
                    let mut missing = Vec::new();
                    for (ch, ts) in &acked {
                        if messages::get(c, ch, *ts)?.is_none() {
                            missing.push((ch.clone(), *ts));
                        }
                    }
                    let integrity: String =
                        c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
                    // Every job wrote a message and its reaction: a message
                    // without one would be half a job.
                    let unpaired: i64 = c.query_row(
                        "SELECT (SELECT count(*) FROM messages) - (SELECT count(*) FROM reactions)",
                        [],
                        |r| r.get(0),
                    )?;
                    Ok((missing, integrity, unpaired))
                })
                .unwrap();
            assert!(
                missing.is_empty(),
                "round {round}: acknowledged writes lost: {missing:?}"
            );
            assert_eq!(integrity, "ok");
            assert_eq!(unpaired, 0, "a job was half applied");
            store.close();
        }
        eprintln!(
            "crash safety ({sync}): {total} acknowledged writes over {ROUNDS} kills, none lost"
        );
    }

    #[test]
    fn acknowledged_writes_survive_sigkill_full() {
        crash_safety(Durability::Full, "full");
    }

    #[test]
    fn acknowledged_writes_survive_sigkill_normal() {
        crash_safety(Durability::Normal, "normal");
    }

    #[test]
    fn page_helpers() {
        assert_eq!(limit_plus_one(0), 2);
        assert_eq!(limit_plus_one(100), 101);
        assert_eq!(limit_plus_one(1_000_000), MAX_PAGE as i64 + 1);
        assert_eq!(page(vec![1, 2, 3], 2), (vec![1, 2], true));
        assert_eq!(page(vec![1, 2], 2), (vec![1, 2], false));
    }
}
