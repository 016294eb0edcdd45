//! Test helpers: temporary folders, a migrated in-memory connection, sample
//! rows, and a minimal executor to drive the async API from a plain thread.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

use rusqlite::Connection;

use super::messages::NewMessage;
use super::{channels::ChannelRow, migrations, users::UserRow, Durability, Store};

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

/// A migrated in-memory database for the query functions' tests.
pub(crate) fn mem() -> Connection {
    let mut conn = Connection::open_in_memory().unwrap();
    migrations::migrate(&mut conn).unwrap();
    conn
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
