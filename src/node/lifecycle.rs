//! What the main thread hears from its shards: each reports once when it
//! serves and once when it has ended, however it ends. So a start in which
//! one shard fails (its executor cannot be built, it panics) stops at once
//! with that shard's own error, instead of the main thread waiting out a
//! timeout while the other shards wait for the failed one in the mesh.

use std::any::Any;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use glommio::ExecutorJoinHandle;

use crate::limits;
use crate::shard::message::ShardId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Ready(ShardId),
    Ended(ShardId),
}

/// A shard's line to the main thread. It travels into the shard's thread
/// with the rest of its start-up state and sends [`Event::Ended`] when it is
/// dropped: when the shard returns, when it panics, and also when glommio
/// could not even build the executor (it then drops the shard's future
/// unstarted, and this with it).
/// Owned by its shard; never crosses cores after the start.
pub struct Reporter {
    id: ShardId,
    events: mpsc::Sender<Event>,
}

impl Reporter {
    pub fn new(id: ShardId, events: mpsc::Sender<Event>) -> Reporter {
        Reporter { id, events }
    }

    /// Every listener of this shard is accepting.
    pub fn ready(&self) {
        let _ = self.events.send(Event::Ready(self.id));
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        let _ = self.events.send(Event::Ended(self.id));
    }
}

/// Returns once every shard is ready. Fails as soon as a shard ends before
/// that, with its error, or when no shard made progress for
/// [`limits::SHARD_START_QUIET_TIMEOUT`], naming the silent ones.
pub fn wait_ready(
    events: &mpsc::Receiver<Event>,
    handles: Vec<ExecutorJoinHandle<()>>,
) -> Result<(), String> {
    let mut ready = vec![false; handles.len()];
    let mut handles: Vec<Option<_>> = handles.into_iter().map(Some).collect();
    while ready.iter().any(|r| !r) {
        match events.recv_timeout(limits::SHARD_START_QUIET_TIMEOUT) {
            Ok(Event::Ready(id)) => ready[id as usize] = true,
            Ok(Event::Ended(id)) => {
                let handle = handles[id as usize].take();
                return Err(why_it_ended(id, handle));
            }
            Err(_) => {
                let silent: Vec<String> = (0..ready.len())
                    .filter(|&i| !ready[i])
                    .map(|i| i.to_string())
                    .collect();
                return Err(format!(
                    "shard(s) {} of {} neither started nor failed within {} s",
                    silent.join(", "),
                    ready.len(),
                    limits::SHARD_START_QUIET_TIMEOUT.as_secs()
                ));
            }
        }
    }
    Ok(())
}

/// Waits until `shards` shards have ended or `deadline` passed; false if
/// some are still running then.
pub fn wait_ended(events: &mpsc::Receiver<Event>, shards: usize, deadline: Instant) -> bool {
    let mut ended = 0;
    while ended < shards {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(Event::Ended(_)) => ended += 1,
            Ok(Event::Ready(_)) => {}
            Err(_) => return false,
        }
    }
    true
}

/// The error of a shard that ended during the start. Its thread is ending
/// (its reporter is gone), so the join is short; it is still bounded, so
/// that a surprise cannot hang the start.
fn why_it_ended(id: ShardId, handle: Option<ExecutorJoinHandle<()>>) -> String {
    let stopped = format!("shard {id} stopped before it was ready");
    let Some(handle) = handle else {
        return stopped;
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(handle.join());
    });
    match rx.recv_timeout(Duration::from_secs(2)) {
        Ok(Err(glommio::GlommioError::BuilderError(glommio::BuilderErrorKind::ThreadPanic(
            payload,
        )))) => format!(
            "shard {id} panicked while starting: {}",
            panic_text(&*payload)
        ),
        Ok(Err(e)) => format!("shard {id} could not start: {e}"),
        Ok(Ok(())) | Err(_) => stopped,
    }
}

fn panic_text(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}
