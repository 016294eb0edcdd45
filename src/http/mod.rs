//! HTTP plumbing shared by the admin API and the Slack Web API: hyper 1.x
//! HTTP/1 served on glommio sockets, one listener per shard.
//!
//! - [`adapter`]: glommio (futures-io) streams as hyper I/O.
//! - [`server`]: the per-shard accept loop, connection limits and deadlines.
//! - [`budget`]: the shard's bound on what unauthenticated work may hold,
//!   shared by the HTTP listeners and the gateway's handshakes.
//! - [`json`]: request/response helpers every handler uses.
//!
//! [`StopSignal`] lives here because more than the HTTP servers use it (the
//! shard's gateway listener stops on the same signal).

pub mod adapter;
pub mod budget;
pub mod json;
pub mod server;

pub use server::{serve, HttpLimits};

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// A one-shot, shard-local broadcast: once [`trigger`](Self::trigger)ed it
/// stays triggered, and every [`wait`](Self::wait) future — past, present
/// and future — completes. Cloning is cheap (an `Rc`); every clone sees the
/// same signal.
///
/// Waiters live in a slab so that a future polled many times (as a
/// connection task polls it every time it wakes for I/O) keeps one slot and
/// updates its waker instead of piling up entries, and a dropped waiter gives
/// its slot back. Ten thousand idle connections therefore cost ten thousand
/// slots, not one per wake-up.
///
/// Owned by its shard; never crosses cores.
#[derive(Clone, Default)]
pub struct StopSignal {
    inner: Rc<StopInner>,
}

// Owned by its shard; never crosses cores.
#[derive(Default)]
struct StopInner {
    stopped: Cell<bool>,
    waiters: RefCell<Slab>,
}

/// Waker slots. A slot is in use exactly while some [`Stopped`] holds its
/// key; `None` inside a used slot means "not polled yet" or "already woken".
#[derive(Default)]
struct Slab {
    slots: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl StopSignal {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether [`trigger`](Self::trigger) has been called.
    pub fn stopped(&self) -> bool {
        self.inner.stopped.get()
    }

    /// Fire the signal and wake every waiter. Idempotent.
    pub fn trigger(&self) {
        if self.inner.stopped.replace(true) {
            return;
        }
        // Take the wakers out before waking so no RefCell borrow is held
        // while foreign code runs.
        let wakers: Vec<Waker> = self
            .inner
            .waiters
            .borrow_mut()
            .slots
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        for waker in wakers {
            waker.wake();
        }
    }

    /// Completes once the signal has been triggered (at once if it already
    /// was). The future owns a handle to the signal, so it does not borrow
    /// `self` and can be stored or moved into a task.
    pub fn wait(&self) -> Stopped {
        Stopped {
            inner: Rc::clone(&self.inner),
            key: None,
        }
    }
}

/// The future returned by [`StopSignal::wait`].
///
/// Owned by its shard; never crosses cores.
pub struct Stopped {
    inner: Rc<StopInner>,
    key: Option<usize>,
}

impl Stopped {
    fn release(&mut self) {
        if let Some(key) = self.key.take() {
            let mut slab = self.inner.waiters.borrow_mut();
            slab.slots[key] = None;
            slab.free.push(key);
        }
    }
}

impl Future for Stopped {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.inner.stopped.get() {
            self.release();
            return Poll::Ready(());
        }
        let this = &mut *self;
        let mut slab = this.inner.waiters.borrow_mut();
        match this.key {
            Some(key) => match &mut slab.slots[key] {
                Some(w) if w.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            },
            None => {
                let waker = Some(cx.waker().clone());
                let key = match slab.free.pop() {
                    Some(key) => {
                        slab.slots[key] = waker;
                        key
                    }
                    None => {
                        slab.slots.push(waker);
                        slab.slots.len() - 1
                    }
                };
                this.key = Some(key);
            }
        }
        Poll::Pending
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn stop_signal_wakes_waiters_and_reuses_slots() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);
        let stop = StopSignal::new();

        let mut a = Box::pin(stop.wait());
        let mut b = Box::pin(stop.clone().wait());
        for _ in 0..10 {
            // Re-polling keeps one slot per waiter.
            assert!(a.as_mut().poll(&mut cx).is_pending());
            assert!(b.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(stop.inner.waiters.borrow().slots.len(), 2);
        drop(b);
        let mut c = Box::pin(stop.wait());
        assert!(c.as_mut().poll(&mut cx).is_pending());
        assert_eq!(stop.inner.waiters.borrow().slots.len(), 2, "slot reused");

        assert!(!stop.stopped());
        stop.trigger();
        stop.trigger();
        assert!(stop.stopped());
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            2,
            "each live waiter woken once"
        );
        assert!(a.as_mut().poll(&mut cx).is_ready());
        assert!(c.as_mut().poll(&mut cx).is_ready());
        // A waiter created after the trigger completes at once.
        assert!(Box::pin(stop.wait()).as_mut().poll(&mut cx).is_ready());
    }
}
