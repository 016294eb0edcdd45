//! Runs: a channel's events of one batch laid back to back in shard-local
//! memory, so each watcher's queue holds one entry per run, not per event.
//!
//! Why: with deep queues a watcher's flush found hundreds of separate
//! frames, each its own allocation. Queueing them was a `VecDeque` push
//! per delivery, and writing them a `memmove` per delivery into the gather
//! buffer, reading events scattered in memory (together ~25% of a shard
//! delivering 100-byte events to 10 watchers each, tuning/PROFILING.md).
//! When a channel's events between two flushes sit contiguous in one
//! [`Chunk`], a watcher whose previous queued frame ends where the next
//! begins just extends that entry ([`QueuedFrame::extend_run`]), and the
//! flush sends the run by reference, one iovec.
//!
//! How: the first event of a channel in a batch is queued as it came (no
//! copy: most channels see one event between flushes). The second starts a
//! chunk, and each chunk that fills is followed by one twice its size, up
//! to [`limits::RUN_CHUNK_BYTES_MAX`]: a chunk's unused tail is at most
//! what the channel already placed. After every flush a run stays open
//! only while some queue still holds it (a watcher whose socket is full:
//! its queue then keeps growing one entry per run), see
//! [`OpenRuns::close_written`]; a chunk is freed by the last queue that
//! lets it go. So what a slow watcher's queue keeps alive beyond its own
//! bytes is at most one chunk's unused tail per channel it holds a run of.
//!
//! The runs table is this shard's alone, like the queues; a frame is
//! copied into it from whichever core encoded it.

use std::cell::{Cell, UnsafeCell};
use std::mem::MaybeUninit;
use std::rc::Rc;

use bytes::Bytes;

use super::queued_frame::QueuedFrame;
use crate::ids::{Id, IdMap};
use crate::limits;

/// An append-only buffer: bytes below `filled` are written once and never
/// change, so queue entries read them while later frames are appended.
/// Owned by its shard; never crosses cores (`Rc`).
pub struct Chunk {
    buf: Box<[UnsafeCell<MaybeUninit<u8>>]>,
    filled: Cell<u32>,
}

impl Chunk {
    fn with_capacity(capacity: usize) -> Rc<Chunk> {
        assert!(capacity <= u32::MAX as usize, "chunks are addressed in u32");
        let buf: Box<[MaybeUninit<u8>]> = Box::new_uninit_slice(capacity);
        // SAFETY: `UnsafeCell<T>` is `repr(transparent)` over `T`: same
        // layout, same allocation.
        let buf =
            unsafe { Box::from_raw(Box::into_raw(buf) as *mut [UnsafeCell<MaybeUninit<u8>>]) };
        Rc::new(Chunk {
            buf,
            filled: Cell::new(0),
        })
    }

    fn capacity(&self) -> usize {
        self.buf.len()
    }

    fn room(&self) -> usize {
        self.capacity() - self.filled.get() as usize
    }

    /// Appends `frame`; returns where it sits.
    fn append(&self, frame: &[u8]) -> (u32, u32) {
        let start = self.filled.get() as usize;
        assert!(frame.len() <= self.room(), "the caller checked the room");
        // SAFETY: `start..start + len` is within the buffer and above
        // `filled`: no reader holds it (readers see only `..filled`), and
        // the frame is a different allocation.
        unsafe {
            let at = UnsafeCell::raw_get(self.buf.as_ptr().add(start)).cast::<u8>();
            std::ptr::copy_nonoverlapping(frame.as_ptr(), at, frame.len());
        }
        let end = start + frame.len();
        self.filled.set(end as u32);
        (start as u32, end as u32)
    }

    /// The written bytes `start..end`.
    #[inline]
    pub fn bytes(&self, start: u32, end: u32) -> &[u8] {
        debug_assert!(
            start <= end && end <= self.filled.get(),
            "only written bytes"
        );
        // SAFETY: below `filled`, so written and never written again; the
        // slice borrows `self`, which the caller's `Rc` keeps alive.
        unsafe {
            let at = UnsafeCell::raw_get(self.buf.as_ptr().add(start as usize)).cast::<u8>();
            std::slice::from_raw_parts(at, (end - start) as usize)
        }
    }
}

/// One channel's place in the current batch.
/// Owned by its shard; never crosses cores.
enum Open {
    /// One event so far, queued as it came.
    One { bytes: u32 },
    /// The chunk the next event goes into, if it has room.
    Run(Rc<Chunk>),
}

/// The channels with events since the last flush, and where their next
/// event goes. A flush empties it of all but the runs a full socket's
/// queue still holds ([`OpenRuns::close_written`]).
/// Owned by its shard; never crosses cores.
#[derive(Default)]
pub struct OpenRuns {
    open: IdMap<Open>,
}

impl OpenRuns {
    /// What to queue, one clone each, on the `watchers` local connections
    /// watching `channel`, for its event `frame`.
    pub fn place(&mut self, channel: Id, frame: Bytes, watchers: usize) -> QueuedFrame {
        let len = frame.len();
        if len > limits::RUN_FRAME_BYTES_MAX {
            return QueuedFrame::for_watchers(frame, watchers);
        }
        let chunk = match self.open.get_mut(&channel) {
            None => {
                self.open.insert(channel, Open::One { bytes: len as u32 });
                return QueuedFrame::for_watchers(frame, watchers);
            }
            Some(open) => match open {
                Open::Run(chunk) if chunk.room() >= len => chunk.clone(),
                Open::One { bytes } => {
                    let chunk = Chunk::with_capacity(next_capacity(*bytes as usize, len));
                    *open = Open::Run(chunk.clone());
                    chunk
                }
                Open::Run(full) => {
                    let chunk = Chunk::with_capacity(next_capacity(full.capacity(), len));
                    *open = Open::Run(chunk.clone());
                    chunk
                }
            },
        };
        let (start, end) = chunk.append(&frame);
        QueuedFrame::run(chunk, start, end)
    }

    /// A flush wrote what the sockets took. A run some queue still holds
    /// (a watcher whose socket is full) stays open, so the channel's next
    /// events continue it there; every other channel starts over, and its
    /// chunk is freed by the last queue that lets it go.
    pub fn close_written(&mut self) {
        self.open.retain(|_, open| match open {
            Open::One { .. } => false,
            Open::Run(chunk) => Rc::strong_count(chunk) > 1,
        });
        // `retain` walks the whole table: after a burst over many channels,
        // give the room back rather than walk it at every flush.
        if self.open.capacity() > OPEN_RUNS_SPARE_MAX.max(8 * self.open.len()) {
            self.open.shrink_to(2 * self.open.len());
        }
    }
}

/// Entries the table keeps room for between flushes, whatever it holds.
const OPEN_RUNS_SPARE_MAX: usize = 4096;

/// The size of a channel's next chunk: twice what came before it in this
/// batch, at least room for `len`, at most [`limits::RUN_CHUNK_BYTES_MAX`].
fn next_capacity(before: usize, len: usize) -> usize {
    (2 * before).min(limits::RUN_CHUNK_BYTES_MAX).max(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: usize, len: usize) -> Bytes {
        Bytes::from((0..len).map(|k| (i * 7 + k) as u8).collect::<Vec<_>>())
    }

    #[test]
    fn a_channels_events_after_the_first_are_laid_back_to_back() {
        let mut runs = OpenRuns::default();
        let c = Id::parse("C1").unwrap();
        let first = runs.place(c, event(0, 100), 3);
        assert!(!first.is_run(), "one event per batch is not copied");
        let mut queued = runs.place(c, event(1, 100), 3);
        for i in 2..50 {
            let next = runs.place(c, event(i, 100), 3);
            assert_eq!(&next[..], &event(i, 100)[..]);
            if !queued.extend_run(&next) {
                // A new chunk: twice the last, up to the cap.
                assert!(next.is_run());
                queued = next;
            }
        }
        let want: Vec<u8> = (1..50).flat_map(|i| event(i, 100).to_vec()).collect();
        assert!(
            want.ends_with(&queued[..]),
            "the last run holds the newest events"
        );
        assert_eq!(queued.len() % 100, 0);
    }

    #[test]
    fn chunks_double_up_to_the_cap_and_never_split_a_frame() {
        let mut runs = OpenRuns::default();
        let c = Id::parse("C1").unwrap();
        let len = 300;
        runs.place(c, event(0, len), 2);
        let mut capacities = Vec::new();
        let mut last: Option<Rc<Chunk>> = None;
        for i in 1..400 {
            let q = runs.place(c, event(i, len), 2);
            let QueuedFrame::Run {
                chunk, start, end, ..
            } = &q
            else {
                panic!("a run");
            };
            assert_eq!(end - start, len as u32, "a frame is never split");
            if !last.as_ref().is_some_and(|l| Rc::ptr_eq(l, chunk)) {
                capacities.push(chunk.capacity());
                last = Some(chunk.clone());
            }
        }
        assert_eq!(capacities[0], 600);
        assert!(capacities
            .windows(2)
            .all(|w| w[1] == (2 * w[0]).min(limits::RUN_CHUNK_BYTES_MAX)));
        assert_eq!(*capacities.last().unwrap(), limits::RUN_CHUNK_BYTES_MAX);
    }

    #[test]
    fn a_flush_closes_every_run_and_large_frames_are_never_copied() {
        let mut runs = OpenRuns::default();
        let c = Id::parse("C1").unwrap();
        runs.place(c, event(0, 10), 2);
        let mut a = runs.place(c, event(1, 10), 2);
        runs.close_written();
        let b = runs.place(c, event(2, 10), 2);
        assert!(a.extend_run(&b), "a queue still holds the run: it goes on");
        drop((a, b));
        runs.close_written();
        let c2 = runs.place(c, event(3, 10), 2);
        assert!(!c2.is_run(), "written: the next batch starts over");
        runs.close_written();
        let big = limits::RUN_FRAME_BYTES_MAX + 1;
        runs.place(c, event(3, big), 2);
        assert!(!runs.place(c, event(4, big), 2).is_run());
    }

    #[test]
    fn a_burst_over_many_channels_gives_its_table_back() {
        let mut runs = OpenRuns::default();
        for i in 0..100_000 {
            let c = Id::parse(&format!("C{i}")).unwrap();
            runs.place(c, event(i, 10), 1);
        }
        assert!(runs.open.capacity() >= 100_000);
        runs.close_written();
        assert!(runs.open.is_empty());
        assert!(
            runs.open.capacity() <= OPEN_RUNS_SPARE_MAX,
            "{}",
            runs.open.capacity()
        );
    }
}
