//! Test helpers: temporary folders, fresh stores and transactions on every
//! backend, sample rows, and a minimal executor to drive the async API from
//! a plain thread.
//!
//! # PostgreSQL in tests
//!
//! Every store test runs on SQLite and on PostgreSQL. The PostgreSQL server
//! is given by `TRANSPONDER_TEST_PG` (a `postgres://` URL of a database the
//! tests may create schemas in); `tests/with_pg.sh` starts a private one for
//! a command (`tests/with_pg.sh cargo test --lib store`), and `tests/run.sh`
//! runs the whole suite under it. Without the variable, a test that needs
//! PostgreSQL fails with that explanation: it never skips silently. Each
//! test gets its own schema (dropped at the end), so tests run in parallel
//! on one database.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

use super::messages::NewMessage;
use super::pg::PgTx;
use super::sqlite::SqliteTx;
use super::{channels::ChannelRow, users::UserRow, Backend, Durability, Store, Tx};

/// The variable naming the test PostgreSQL server.
pub(crate) const TEST_PG_ENV: &str = "TRANSPONDER_TEST_PG";

/// A folder under the system temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "transponder-store-{tag}-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            super::now_micros()
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn open_temp(durability: Durability) -> (TempDir, Store) {
    let dir = TempDir::new("store");
    let store = Store::open(dir.path(), durability).unwrap();
    (dir, store)
}

/// The test PostgreSQL server's URL; panics with how to get one.
pub(crate) fn test_pg_url() -> String {
    match std::env::var(TEST_PG_ENV) {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "{TEST_PG_ENV} is not set: this test runs on PostgreSQL too. Run it under \
             tests/with_pg.sh (e.g. `tests/with_pg.sh cargo test --lib store`), which \
             starts a private PostgreSQL, or set {TEST_PG_ENV} to a postgres:// URL"
        ),
    }
}

/// A schema of its own on the test PostgreSQL server, dropped on drop.
pub(crate) struct PgSchema {
    name: String,
    url: String,
}

impl PgSchema {
    pub(crate) fn new(tag: &str) -> PgSchema {
        static N: AtomicU64 = AtomicU64::new(0);
        let base = test_pg_url();
        let name = format!(
            "t_{tag}_{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            super::now_micros()
        );
        let mut admin = PgTx::plain(&base);
        admin
            .exec(&format!("CREATE SCHEMA {name}"))
            .unwrap_or_else(|e| panic!("cannot create a test schema on {base}: {e}"));
        // Every connection of the store uses the schema (libpq `options`),
        // and is named after it (to find them in pg_stat_activity).
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{name}&application_name={name}");
        PgSchema { name, url }
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Ends every server session of the stores using this schema, as a
    /// restart of the server would; returns how many.
    pub(crate) fn kill_connections(&self) -> i64 {
        kill_sessions(&self.name)
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }
}

/// Ends every server session named `application_name` on the test server,
/// and waits until they are gone: `pg_terminate_backend` only signals, and
/// a session still ending could take one more statement (a test of "the
/// next job reconnects" would then see that job fail instead).
pub(crate) fn kill_sessions(application_name: &str) -> i64 {
    let mut admin = PgTx::plain(&test_pg_url());
    let killed = admin
        .scalar(&format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name = '{application_name}'"
        ))
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while admin
        .scalar(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{application_name}'"
        ))
        .unwrap()
        > 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "sessions still there 10 s after they were terminated"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    killed
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let mut admin = PgTx::plain(&test_pg_url());
        let _ = admin.exec(&format!("DROP SCHEMA {} CASCADE", self.name));
    }
}

/// What keeps a temporary store's data alive: its folder or its schema.
pub(crate) enum TempStore {
    Dir(TempDir),
    Schema(PgSchema),
}

impl TempStore {
    /// The backend to (re)open the same store.
    pub(crate) fn backend(&self) -> Backend {
        match self {
            TempStore::Dir(d) => Backend::Sqlite(d.path().to_path_buf()),
            TempStore::Schema(s) => Backend::Postgres(s.url().to_string()),
        }
    }

    pub(crate) fn open(&self, durability: Durability) -> Store {
        Store::open_backend(&self.backend(), durability).unwrap()
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            TempStore::Dir(_) => "sqlite",
            TempStore::Schema(_) => "postgres",
        }
    }
}

/// A fresh store on each backend: SQLite in a temporary folder, then
/// PostgreSQL in a schema of its own.
pub(crate) fn temp_stores(durability: Durability) -> Vec<(TempStore, Store)> {
    [
        TempStore::Dir(TempDir::new("store")),
        TempStore::Schema(PgSchema::new("store")),
    ]
    .into_iter()
    .map(|t| {
        let store = t.open(durability);
        (t, store)
    })
    .collect()
}

/// Runs `f` on a fresh, migrated, empty transaction of each backend: an
/// in-memory SQLite database, then a PostgreSQL schema of its own.
pub(crate) fn each_backend(f: impl Fn(&mut dyn Tx)) {
    f(&mut SqliteTx::memory());
    let schema = PgSchema::new("tx");
    let mut pg = PgTx::plain(schema.url());
    super::pg::migrations::migrate(pg.client_mut()).unwrap();
    f(&mut pg);
}

pub(crate) fn user(id: &str, name: &str) -> UserRow {
    UserRow {
        id: id.into(),
        team_id: super::DEFAULT_TEAM_ID.into(),
        name: name.into(),
        real_name: format!("{name} real"),
        is_bot: false,
        deleted: false,
        tz: "Europe/Paris".into(),
        created: 1_700_000_000_000_000,
        profile: serde_json::json!({"display_name": name}),
    }
}

pub(crate) fn channel(id: &str, name: &str, private: bool) -> ChannelRow {
    ChannelRow {
        id: id.into(),
        team_id: super::DEFAULT_TEAM_ID.into(),
        name: name.into(),
        is_private: private,
        is_archived: false,
        is_general: false,
        created: 1_700_000_000_000_000,
        creator: "U1".into(),
        topic: String::new(),
        purpose: String::new(),
    }
}

pub(crate) fn message(channel: &str, ts: i64, user: &str, text: &str) -> NewMessage {
    NewMessage {
        channel: channel.into(),
        ts,
        user: user.into(),
        text: text.into(),
        blocks: None,
        thread_ts: None,
        subtype: None,
        client_msg_id: None,
    }
}

pub(crate) fn reply(channel: &str, ts: i64, thread_ts: i64, user: &str) -> NewMessage {
    NewMessage {
        thread_ts: Some(thread_ts),
        ..message(channel, ts, user, "reply")
    }
}

/// Which tasks were woken since the executor last looked, and the thread
/// to unpark.
struct Ready {
    woken: Mutex<Vec<usize>>,
    thread: Thread,
}

struct TaskWaker {
    task: usize,
    ready: Arc<Ready>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.woken.lock().unwrap().push(self.task);
        self.ready.thread.unpark();
    }
}

/// Runs every future on the current thread until all are done, polling
/// only those that were woken: a minimal executor, enough to hold many
/// store requests in flight from one thread the way a shard does.
pub(crate) fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let ready = Arc::new(Ready {
        woken: Mutex::new((0..futures.len()).collect()),
        thread: thread::current(),
    });
    let wakers: Vec<Waker> = (0..futures.len())
        .map(|task| {
            Waker::from(Arc::new(TaskWaker {
                task,
                ready: ready.clone(),
            }))
        })
        .collect();
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    let mut pending = futures.len();
    while pending > 0 {
        let woken = std::mem::take(&mut *ready.woken.lock().unwrap());
        if woken.is_empty() {
            thread::park();
            continue;
        }
        for task in woken {
            if out[task].is_some() {
                continue;
            }
            let mut cx = Context::from_waker(&wakers[task]);
            if let Poll::Ready(v) = futures[task].as_mut().poll(&mut cx) {
                out[task] = Some(v);
                pending -= 1;
            }
        }
    }
    out.into_iter().map(Option::unwrap).collect()
}

pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    join_all(vec![future]).pop().unwrap()
}
