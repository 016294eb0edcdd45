//! The durable store: teams, users, hashed tokens, channels, memberships,
//! messages with threads, edits, deletions and reactions, behind one
//! interface, [`Tx`], with two backends:
//!
//! - **SQLite** ([`sqlite`]), the embedded default: one file,
//!   `<data-dir>/transponder.db`, for one node.
//! - **PostgreSQL** ([`pg`]), `--store postgres://user@host:port/db`: one
//!   database several nodes can share.
//!
//! No database crate is named outside this folder: callers send jobs that
//! take `&mut dyn Tx`, and the same job runs on either backend.
//!
//! # Threads
//!
//! Nothing here runs on a shard's executor: database calls block (on locks,
//! on the disk, on the network), and a blocked executor stalls every
//! connection of its core. [`Store::open`] starts its own threads instead,
//! each with its own connection:
//!
//! - one **writer** thread with the only read-write connection. It commits
//!   the jobs queued for it in groups (group commit, `writer.rs`): one
//!   transaction and one disk flush per batch, not per write.
//! - two **reader** threads, each with a read-only connection. Readers do
//!   not wait for the writer.
//! - with SQLite, one **checkpoint** thread with its own connection: it
//!   copies the WAL into the database file off the commit path
//!   (`sqlite/checkpoint.rs`).
//!
//! Where these threads may run, so that they do not take the shards' CPU
//! time, is [`ThreadPlacement`] (`threads.rs`).
//!
//! A [`Store`] is a handle on those threads: cheap to clone, `Send + Sync`,
//! held by every shard. A job is a closure over `&mut dyn Tx` sent on a
//! bounded queue; its answer comes back on a one-shot channel the caller
//! awaits. flume's async receive works from glommio executors (a foreign
//! thread's wake reaches a parked executor through its eventfd), and a full
//! queue makes the *sender* wait, which is the store's backpressure.
//!
//! A web API method that needs several statements runs them in one job,
//! atomically:
//!
//! ```ignore
//! let ts = store
//!     .write(move |tx| {
//!         if !tx.is_member(&channel, &user)? {
//!             return Err(StoreError::NotFound);
//!         }
//!         tx.insert_message(&message)?;
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

mod error;
mod lock;
mod reader;
mod session;
mod threads;
mod tx;
mod writer;

pub mod channels;
pub mod events;
pub mod import;
pub mod members;
pub mod messages;
pub mod pg;
pub mod reactions;
pub mod scheduled;
pub mod sqlite;
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
pub use import::{Importer, Refused};
pub use lock::{DataDirLock, LockError, LOCK_FILE};
pub use messages::{MessageRow, NewMessage, Window};
pub use reactions::ReactionRow;
pub use teams::{TeamRow, DEFAULT_TEAM_ID};
pub use threads::{ThreadPlacement, CHECKPOINTER_NICE};
pub use tx::{TokenHash, Tx};
pub use users::UserRow;

use reader::Reader;
use session::Session;
use writer::{Answer, ClosureJob, Job, Writer, WriterStats};

/// The SQLite database file inside the data folder.
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
    /// An acknowledged write is on disk and survives power loss. Costs one
    /// flush per batch (SQLite `synchronous=FULL`; PostgreSQL
    /// `synchronous_commit=on`).
    #[default]
    Full,
    /// An acknowledged write survives a crash of this process; a power loss
    /// (or, on PostgreSQL, a crash of the database server) may lose the last
    /// commits, never corrupts (SQLite `synchronous=NORMAL` in WAL mode;
    /// PostgreSQL `synchronous_commit=off`).
    Normal,
}

/// Where the store lives.
#[derive(Clone, PartialEq, Eq)]
pub enum Backend {
    /// SQLite: `<dir>/transponder.db`.
    Sqlite(PathBuf),
    /// PostgreSQL: a `postgres://user[:password]@host[:port]/db` URL
    /// (`postgresql://` too; libpq's query parameters such as
    /// `connect_timeout` or `options` are understood).
    Postgres(String),
}

impl Backend {
    /// The `--store` setting: a `postgres://` or `postgresql://` URL, or
    /// `sqlite` / none for SQLite in `data_dir`.
    pub fn parse(store: Option<&str>, data_dir: &Path) -> Result<Backend, String> {
        match store.map(str::trim) {
            None | Some("") | Some("sqlite") => Ok(Backend::Sqlite(data_dir.to_path_buf())),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(Backend::Postgres(url.to_string()))
            }
            Some(other) => Err(format!(
                "--store must be `sqlite` or a postgres://user@host:port/db URL, not {:?}",
                redacted(other)
            )),
        }
    }
}

/// Shows where the store is without the password a URL may carry.
impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backend::Sqlite(dir) => write!(f, "{}", dir.join(DB_FILE).display()),
            Backend::Postgres(url) => f.write_str(&redacted(url)),
        }
    }
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `url` with the password between `user:` and `@` replaced by `***`.
fn redacted(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let Some(at) = rest.find('@') else {
        return url.to_string();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_string(),
    }
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
    backend: Backend,
}

impl Store {
    /// Opens (creating if needed) `dir/transponder.db`: [`Store::open_backend`]
    /// with SQLite.
    pub fn open(dir: &Path, durability: Durability) -> Result<Store, StoreError> {
        Store::open_backend(&Backend::Sqlite(dir.to_path_buf()), durability)
    }

    /// Opens the store, migrates it to the current schema, makes sure the
    /// default team exists and starts the writer and reader threads, each
    /// with its connection. Blocking: call it before the executors start,
    /// or from a blocking thread.
    pub fn open_backend(backend: &Backend, durability: Durability) -> Result<Store, StoreError> {
        Store::open_placed(backend, durability, &ThreadPlacement::default())
    }

    /// [`Store::open_backend`] with the store's threads placed per
    /// `placement` (the server keeps them off its shards' CPUs).
    pub fn open_placed(
        backend: &Backend,
        durability: Durability,
        placement: &ThreadPlacement,
    ) -> Result<Store, StoreError> {
        type Sessions = (
            Box<dyn Session>,
            Vec<Box<dyn Session>>,
            Option<sqlite::Checkpointer>,
        );
        let (writer, readers, checkpointer): Sessions = match backend {
            Backend::Sqlite(dir) => {
                std::fs::create_dir_all(dir)?;
                let (w, rs, c) =
                    sqlite::open(&dir.join(DB_FILE), durability, READERS, now_micros())?;
                (
                    Box::new(w),
                    rs.into_iter().map(|r| Box::new(r) as _).collect(),
                    Some(c),
                )
            }
            // PostgreSQL checkpoints by itself, in its own processes.
            Backend::Postgres(url) => {
                let (w, rs) = pg::open(url, durability, READERS, now_micros())?;
                (
                    Box::new(w),
                    rs.into_iter().map(|r| Box::new(r) as _).collect(),
                    None,
                )
            }
        };

        let stats = Arc::new(WriterStats::default());
        let (write_tx, write_rx) = flume::bounded(QUEUE_CAPACITY);
        let (read_tx, read_rx) = flume::bounded(QUEUE_CAPACITY);
        // If a spawn fails, the senders drop on return and the threads
        // already started see a closed queue and exit.
        // The checkpointer stops when the writer's connection closes.
        let mut threads = Vec::with_capacity(2 + READERS);
        let writer = Writer::new(writer, write_rx, stats.clone());
        threads.push(threads::spawn(
            "store-writer".into(),
            placement,
            0,
            move || writer.run(),
        )?);
        if let Some(c) = checkpointer {
            threads.push(threads::spawn(
                "store-checkpoint".into(),
                placement,
                CHECKPOINTER_NICE,
                move || c.run(),
            )?);
        }
        for (i, session) in readers.into_iter().enumerate() {
            let reader = Reader::new(session, read_rx.clone());
            threads.push(threads::spawn(
                format!("store-reader-{i}"),
                placement,
                0,
                move || reader.run(),
            )?);
        }
        tracing::info!(store = %backend, ?durability, "store opened");
        Ok(Store {
            inner: Arc::new(Inner {
                writer: RwLock::new(Some(write_tx)),
                readers: RwLock::new(Some(read_tx)),
                threads: Mutex::new(threads),
                stats,
                backend: backend.clone(),
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
        F: FnOnce(&mut dyn Tx) -> Result<R, StoreError> + Send + 'static,
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
        F: FnOnce(&mut dyn Tx) -> Result<R, StoreError> + Send + 'static,
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
        F: FnOnce(&mut dyn Tx) -> Result<R, StoreError> + Send + 'static,
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
        F: FnOnce(&mut dyn Tx) -> Result<R, StoreError> + Send + 'static,
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

    /// Where the store lives.
    pub fn backend(&self) -> &Backend {
        &self.inner.backend
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
            .field("backend", &self.inner.backend)
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

/// A migrated, empty in-memory SQLite transaction, for tests of job code
/// outside the store.
#[cfg(test)]
pub(crate) fn memory_tx() -> Box<dyn Tx> {
    Box::new(sqlite::SqliteTx::memory())
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
    use super::testutil::{
        self, block_on, join_all, message, open_temp, temp_stores, user, PgSchema, TempDir,
        TempStore,
    };
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
        assert_eq!(store.backend(), &Backend::Sqlite(nested.clone()));
        let mode = sqlite::journal_mode(&nested.join(DB_FILE)).unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn open_creates_the_default_team_once() {
        for (temp, store) in temp_stores(Durability::Normal) {
            let team = store
                .read_blocking(|tx| tx.team(DEFAULT_TEAM_ID))
                .unwrap()
                .unwrap();
            assert_eq!(
                (team.name.as_str(), team.domain.as_str()),
                ("Transponder", "transponder")
            );
            store.close();
            // Reopening keeps the one team.
            let store = temp.open(Durability::Normal);
            let n = store
                .read_blocking(|tx| tx.scalar("SELECT count(*) FROM teams"))
                .unwrap();
            assert_eq!(n, 1, "{}", temp.name());
        }
    }

    #[test]
    fn the_store_setting_names_the_backend() {
        let dir = Path::new("/d");
        assert_eq!(
            Backend::parse(None, dir).unwrap(),
            Backend::Sqlite(dir.into())
        );
        assert_eq!(
            Backend::parse(Some("sqlite"), dir).unwrap(),
            Backend::Sqlite(dir.into())
        );
        let url = "postgres://tp:secret@db:5432/tp";
        assert_eq!(
            Backend::parse(Some(url), dir).unwrap(),
            Backend::Postgres(url.into())
        );
        assert_eq!(
            Backend::Postgres(url.into()).to_string(),
            "postgres://tp:***@db:5432/tp"
        );
        let e = Backend::parse(Some("mysql://tp:secret@db/tp"), dir).unwrap_err();
        assert!(e.contains("postgres://") && !e.contains("secret"), "{e}");
    }

    #[test]
    fn a_bad_postgres_url_or_a_dead_server_is_an_error_not_a_hang() {
        let e = Store::open_backend(
            &Backend::Postgres("postgres://x@[::1".into()),
            Durability::Full,
        )
        .unwrap_err();
        assert!(matches!(e, StoreError::Corrupt(_)), "{e}");
        // Nothing listens on port 1.
        let e = Store::open_backend(
            &Backend::Postgres("postgres://x@127.0.0.1:1/db".into()),
            Durability::Full,
        )
        .unwrap_err();
        assert!(matches!(e, StoreError::Postgres(_)), "{e}");
    }

    #[test]
    fn async_write_and_read() {
        for (_temp, store) in temp_stores(Durability::Normal) {
            let s = store.clone();
            let got = block_on(async move {
                s.write(|tx| tx.insert_user(&user("U1", "alice"), None))
                    .await?;
                s.read(|tx| tx.user("U1")).await
            })
            .unwrap();
            assert_eq!(got.unwrap().name, "alice");
        }
    }

    #[test]
    fn a_lost_postgres_connection_fails_a_job_at_most_and_the_next_reconnects() {
        let schema = PgSchema::new("reconnect");
        let backend = Backend::Postgres(schema.url().to_string());
        let store = Store::open_backend(&backend, Durability::Full).unwrap();
        store
            .write_blocking(|tx| tx.insert_user(&user("U1", "alice"), None))
            .unwrap();
        // The writer and both readers lose their connections between jobs
        // (a server restart): BEGIN notices and reconnects, nothing fails.
        assert_eq!(schema.kill_connections(), 3);
        store
            .write_blocking(|tx| tx.insert_user(&user("U2", "bob"), None))
            .unwrap();
        for _ in 0..8 {
            assert!(store.read_blocking(|tx| tx.user("U2")).unwrap().is_some());
        }
        // Lost in the middle of a job: that job fails with the store's
        // error and wrote nothing; the next one reconnects.
        let name = schema.name().to_string();
        let e = store
            .write_blocking(move |tx| {
                tx.insert_user(&user("U3", "carol"), None)?;
                assert!(testutil::kill_sessions(&name) >= 1);
                tx.insert_user(&user("U4", "dave"), None)
            })
            .unwrap_err();
        assert!(matches!(e, StoreError::Postgres(_)), "{e}");
        store
            .write_blocking(|tx| tx.insert_user(&user("U5", "erin"), None))
            .unwrap();
        let (carol, erin) = store
            .read_blocking(|tx| Ok((tx.user("U3")?, tx.user("U5")?)))
            .unwrap();
        assert!(carol.is_none(), "a failed job's work is not committed");
        assert!(erin.is_some());
    }

    #[test]
    fn readers_cannot_write() {
        for (temp, store) in temp_stores(Durability::Normal) {
            let e = store
                .read_blocking(|tx| tx.insert_user(&user("U1", "alice"), None))
                .unwrap_err();
            assert!(
                matches!(e, StoreError::Sqlite(_) | StoreError::Postgres(_)),
                "{}: {e}",
                temp.name()
            );
            // The reader is still fine afterwards.
            assert_eq!(store.read_blocking(|tx| tx.user("U1")).unwrap(), None);
        }
    }

    #[test]
    fn close_drains_queued_writes_then_refuses_new_ones() {
        for (temp, store) in temp_stores(Durability::Normal) {
            close_drains(&temp, store);
        }
    }

    fn close_drains(temp: &TempStore, store: Store) {
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
                        .write_blocking(move |tx| tx.insert_message(&message("C1", ts, "U1", "x")))
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
        drop(other);
        let store = temp.open(Durability::Normal);
        let n = store
            .read_blocking(|tx| tx.scalar("SELECT count(*) FROM messages"))
            .unwrap();
        assert_eq!(n as usize, acked.len(), "{}", temp.name());
    }

    #[test]
    fn durable_writes_survive_reopening() {
        for (temp, store) in temp_stores(Durability::Full) {
            let writes = (1..=1000i64).map(|ts| {
                let store = store.clone();
                async move {
                    store
                        .write(move |tx| {
                            tx.insert_message(&message("C1", ts, "U1", &format!("m{ts}")))
                        })
                        .await
                }
            });
            for r in join_all(writes.collect()) {
                r.unwrap();
            }
            drop(store);
            let store = temp.open(Durability::Full);
            let (rows, more) = store
                .read_blocking(|tx| tx.history("C1", Window::default(), None, MAX_PAGE))
                .unwrap();
            assert!(!more);
            assert_eq!(rows.len(), 1000, "{}", temp.name());
            for (i, m) in rows.iter().rev().enumerate() {
                assert_eq!(m.ts, i as i64 + 1);
                assert_eq!(m.text, format!("m{}", m.ts));
            }
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
                        .read_blocking(move |tx| tx.max_ts(&ch))
                        .unwrap()
                        .unwrap_or(0);
                    loop {
                        ts += 1;
                        let ch = channel.clone();
                        store
                            .write_blocking(move |tx| {
                                tx.insert_message(&message(&ch, ts, "U1", "crash"))?;
                                tx.add_reaction(&ch, ts, "ok", "U1", ts)
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
            let (missing, unpaired) = store
                .read_blocking(move |tx| {
                    let mut missing = Vec::new();
                    for (ch, ts) in &acked {
                        if tx.message(ch, *ts)?.is_none() {
                            missing.push((ch.clone(), *ts));
                        }
                    }
                    // Every job wrote a message and its reaction: a message
                    // without one would be half a job.
                    let unpaired = tx.scalar(
                        "SELECT (SELECT count(*) FROM messages) - (SELECT count(*) FROM reactions)",
                    )?;
                    Ok((missing, unpaired))
                })
                .unwrap();
            let integrity = sqlite::integrity_check(&dir.path().join(DB_FILE)).unwrap();
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
