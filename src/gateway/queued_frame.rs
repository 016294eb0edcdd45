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
//! A channel's later events of the same batch sit back to back in a chunk
//! (`event_runs`), and a queue holds a run of them as one entry.

use std::ops::Deref;
use std::rc::Rc;

use bytes::{Buf, Bytes};

use super::event_runs::Chunk;

/// Owned by its shard; never crosses cores.
#[derive(Clone)]
pub enum QueuedFrame {
    /// A frame for one connection (`hello`, a reply, a replay, a close),
    /// or an event with a single watcher here.
    Own(Bytes),
    /// An event queued on several connections of this shard.
    Shared(Rc<Bytes>),
    /// Whole frames back to back in a chunk, `start..end`: one event, or
    /// consecutive events of one channel this connection watches. `start`
    /// moves on as the socket takes bytes; a chunk holds whole frames from
    /// its first byte, so frame boundaries can always be found again.
    Run {
        chunk: Rc<Chunk>,
        start: u32,
        end: u32,
    },
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

    /// One frame at `start..end` of `chunk`.
    pub fn run(chunk: Rc<Chunk>, start: u32, end: u32) -> QueuedFrame {
        QueuedFrame::Run { chunk, start, end }
    }

    pub fn is_run(&self) -> bool {
        matches!(self, QueuedFrame::Run { .. })
    }

    /// Takes `next` into this entry if it continues this run in the same
    /// chunk (the connection's previous frame ends where `next` begins).
    #[inline]
    pub fn extend_run(&mut self, next: &QueuedFrame) -> bool {
        match (self, next) {
            (
                QueuedFrame::Run { chunk, end, .. },
                QueuedFrame::Run {
                    chunk: next_chunk,
                    start: next_start,
                    end: next_end,
                    ..
                },
            ) if *end == *next_start && Rc::ptr_eq(chunk, next_chunk) => {
                *end = *next_end;
                true
            }
            _ => false,
        }
    }

    /// Drops the first `n` bytes, which the socket took. A shared event
    /// becomes this connection's own slice of it: one `Bytes` clone per
    /// partial write, not per delivery.
    pub fn advance(&mut self, n: usize) {
        match self {
            QueuedFrame::Own(bytes) => bytes.advance(n),
            QueuedFrame::Shared(event) => *self = QueuedFrame::Own(event.slice(n..)),
            QueuedFrame::Run { start, end, .. } => {
                assert!(n <= (*end - *start) as usize, "advanced past the run");
                *start += n as u32;
            }
        }
    }

    /// Keeps only what finishes the frame the socket is in the middle of
    /// (a run may hold many frames after it): what must still leave before
    /// a close frame. False if nothing is left (the socket stopped exactly
    /// between two frames).
    pub fn keep_started_frame(&mut self) -> bool {
        let QueuedFrame::Run { chunk, start, end } = self else {
            return !self.is_empty(); // a single frame: all of its rest
        };
        let bytes = chunk.bytes(0, *end);
        let mut boundary = 0usize;
        while boundary < *start as usize {
            boundary += frame_len(&bytes[boundary..]);
        }
        *end = boundary as u32;
        start < end
    }
}

/// The length (header and payload) of the server frame `bytes` starts with:
/// unmasked, as every frame this server builds.
fn frame_len(bytes: &[u8]) -> usize {
    assert!(bytes.len() >= 2 && bytes[1] & 0x80 == 0, "a server frame");
    match bytes[1] & 0x7f {
        126 => 4 + u16::from_be_bytes([bytes[2], bytes[3]]) as usize,
        127 => 10 + u64::from_be_bytes(bytes[2..10].try_into().expect("8 bytes")) as usize,
        n => 2 + n as usize,
    }
}

impl Deref for QueuedFrame {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        match self {
            QueuedFrame::Own(bytes) => bytes,
            QueuedFrame::Shared(event) => event,
            QueuedFrame::Run {
                chunk, start, end, ..
            } => chunk.bytes(*start, *end),
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
