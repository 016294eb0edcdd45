//! A single-waiter wake-up flag for tasks on one shard (outbox pumps, the
//! local dispatcher, connection flushers). Cheaper than a channel: one
//! `Cell` and one optional `Waker`.

use std::cell::Cell;
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// Owned by its shard; never crosses cores.
#[derive(Default)]
pub struct Notify {
    set: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Notify {
    pub fn new() -> Notify {
        Notify::default()
    }

    /// Sets the flag and wakes the waiter, if any.
    pub fn notify(&self) {
        self.set.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Waits until the flag is set, then clears it. One waiter at a time.
    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.set.replace(false) {
                Poll::Ready(())
            } else {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }
}
