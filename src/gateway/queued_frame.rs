//! A frame in a connection's outbound queue: a `Bytes` of its own, or an
//! event shared by the queues of all its watchers on this shard through a
//! plain (non-atomic) reference count.
//!
//! Why: a `Bytes` clone and its drop are two atomic read-modify-writes on
//! one counter and two calls through its vtable. One per delivery, they
//! were ~13% of a shard delivering 100-byte events to 10 watchers each
//! (tuning/PROFILING.md). An event that reached a gateway shard never
//! leaves it again, so its watchers' queues share it with an `Rc`: the
//! `Bytes` is cloned and let go once per shard, not once per connection.

use std::ops::Deref;
use std::rc::Rc;

use bytes::{Buf, Bytes};

/// Owned by its shard; never crosses cores.
#[derive(Clone)]
pub enum QueuedFrame {
    /// A frame for one connection (`hello`, a reply, a replay, a close),
    /// or an event with a single watcher here.
    Own(Bytes),
    /// An event queued on several connections of this shard.
    Shared(Rc<Bytes>),
}

impl QueuedFrame {
    /// What to queue, one clone each, on the `watchers` connections of
    /// this shard that watch the event's channel.
    pub fn for_watchers(frame: Bytes, watchers: usize) -> QueuedFrame {
        if watchers > 1 {
            QueuedFrame::Shared(Rc::new(frame))
        } else {
            QueuedFrame::Own(frame)
        }
    }

    /// Drops the first `n` bytes, which the socket took. A shared event
    /// becomes this connection's own slice of it: one `Bytes` clone per
    /// partial write, not per delivery.
    pub fn advance(&mut self, n: usize) {
        match self {
            QueuedFrame::Own(bytes) => bytes.advance(n),
            QueuedFrame::Shared(event) => *self = QueuedFrame::Own(event.slice(n..)),
        }
    }
}

impl Deref for QueuedFrame {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        match self {
            QueuedFrame::Own(bytes) => bytes,
            QueuedFrame::Shared(event) => event,
        }
    }
}

impl From<Bytes> for QueuedFrame {
    fn from(bytes: Bytes) -> QueuedFrame {
        QueuedFrame::Own(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_watcher_keeps_the_bytes_several_share_them() {
        let frame = Bytes::from_static(b"event");
        assert!(matches!(
            QueuedFrame::for_watchers(frame.clone(), 1),
            QueuedFrame::Own(_)
        ));
        let shared = QueuedFrame::for_watchers(frame.clone(), 3);
        let copies = [shared.clone(), shared.clone(), shared];
        for c in &copies {
            assert_eq!(&c[..], b"event");
            assert!(matches!(c, QueuedFrame::Shared(_)));
        }
    }

    #[test]
    fn a_partial_write_leaves_the_other_watchers_whole() {
        let shared = QueuedFrame::for_watchers(Bytes::from_static(b"abcdef"), 2);
        let mut written = shared.clone();
        written.advance(2);
        assert_eq!(&written[..], b"cdef");
        assert!(matches!(written, QueuedFrame::Own(_)));
        written.advance(3);
        assert_eq!(&written[..], b"f");
        assert_eq!(&shared[..], b"abcdef");
    }
}
