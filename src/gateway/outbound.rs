//! A connection's outbound queue: bounded in bytes, written with one
//! `sendmsg` per flush that gathers every queued frame (no per-frame
//! syscall). Frames are shared ([`QueuedFrame`]): the same encoded event
//! sits in the queues of every connection that watches its channel.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;

use bytes::Bytes;

use super::queued_frame::QueuedFrame;
use crate::limits;

/// Owned by its shard; never crosses cores.
#[derive(Default)]
pub struct Outbound {
    queue: VecDeque<QueuedFrame>,
    bytes: usize,
    /// The front frame was partly written: it must be finished before
    /// anything else, whatever happens to the rest of the queue.
    front_started: bool,
    /// Frames wait until the connection is admitted (`hello` is first).
    pub open: bool,
    /// A flusher task owns the writing until the socket takes everything.
    pub flushing: bool,
    /// A close frame is queued: nothing more is accepted.
    pub closing: bool,
    /// The front of the queue is the handshake's 101 response, not yet
    /// wholly written: it leaves first, whatever is put in front of the
    /// queue or dropped from it later.
    preamble: bool,
}

/// The queue passed its bound.
#[derive(Debug, PartialEq, Eq)]
pub struct Overflow;

#[derive(Debug, PartialEq, Eq)]
pub enum Flushed {
    /// Everything queued reached the socket.
    All,
    /// The socket's buffer is full; wait for it to drain.
    Blocked,
}

impl Outbound {
    /// A queue that starts with `preamble`, the 101 response of the
    /// opening handshake. It waits like any frame until the connection
    /// opens, so the 101 and `hello` leave in one `sendmsg`: one loopback
    /// segment and one wake-up of the client instead of two each
    /// (a connect storm's biggest server cost after the TCP handshake).
    pub fn with_preamble(preamble: Bytes) -> Outbound {
        Outbound {
            bytes: preamble.len(),
            queue: VecDeque::from([preamble.into()]),
            preamble: true,
            ..Outbound::default()
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Queues a frame unless the queue would pass `max_bytes`.
    pub fn push(
        &mut self,
        frame: impl Into<QueuedFrame>,
        max_bytes: usize,
    ) -> Result<(), Overflow> {
        if self.closing {
            return Ok(()); // the connection is going: drop silently
        }
        let frame = frame.into();
        if self.bytes + frame.len() > max_bytes {
            return Err(Overflow);
        }
        self.bytes += frame.len();
        // The channel's previous event here ends where this one begins:
        // the same entry grows (see `event_runs`).
        if let Some(last) = self.queue.back_mut() {
            if last.extend_run(&frame) {
                return Ok(());
            }
        }
        self.queue.push_back(frame);
        Ok(())
    }

    /// Puts a frame first (hello, resync_required), after the preamble if
    /// there is one: only before the connection opens, when nothing has
    /// been written.
    pub fn push_front(&mut self, frame: Bytes) {
        assert!(
            !self.open && !self.front_started,
            "push_front after writing began"
        );
        self.bytes += frame.len();
        self.queue.insert(usize::from(self.preamble), frame.into());
    }

    /// Drops everything not yet started and queues `close` as the last
    /// frame. The preamble stays: a close frame means nothing to a client
    /// that has not seen the 101.
    pub fn replace_with_close(&mut self, close: Bytes) {
        let keep = usize::from(self.front_started || self.preamble);
        self.queue.truncate(keep);
        // A started run is cut after the frame the socket is in.
        if self.front_started && !self.queue[0].keep_started_frame() {
            self.queue.pop_front();
            self.front_started = false;
        }
        self.bytes = self.queue.iter().map(|f| f.len()).sum();
        self.bytes += close.len();
        self.queue.push_back(close.into());
        self.closing = true;
    }

    /// The first unwritten bytes (for a flusher waiting on writability).
    pub fn front(&self) -> Option<&[u8]> {
        self.queue.front().map(|b| &b[..])
    }

    /// Marks `n` bytes as written.
    pub fn consume(&mut self, mut n: usize) {
        assert!(n <= self.bytes, "consumed more than queued");
        self.bytes -= n;
        while n > 0 {
            let front = self.queue.front_mut().expect("bytes accounted for");
            if n >= front.len() {
                n -= front.len();
                self.queue.pop_front();
                self.front_started = false;
                self.preamble = false;
            } else {
                front.advance(n);
                self.front_started = true;
                n = 0;
            }
        }
    }

    /// Writes as much as the socket takes, gathering up to
    /// [`limits::WRITE_IOVECS_MAX`] iovecs per `sendmsg`. Runs of small
    /// frames are first copied back to back into the shard's gather buffer
    /// and leave as one iovec each (see [`limits::WRITE_GATHER_FRAME_BYTES_MAX`]).
    pub fn write_to(&mut self, fd: RawFd) -> io::Result<Flushed> {
        if self.queue.len() <= 1 {
            return self.write_gathered(fd, &mut []); // nothing to gather
        }
        GATHER.with(|gather| {
            let mut gather = gather.borrow_mut();
            self.write_gathered(fd, &mut gather)
        })
    }

    fn write_gathered(&mut self, fd: RawFd, gather: &mut [u8]) -> io::Result<Flushed> {
        // Only the entries a call fills are written: zeroing the whole
        // array (16 KiB at IOV_MAX) on every call would cost more than the
        // frames it gathers when few are queued.
        let mut iov = [const { MaybeUninit::<libc::iovec>::uninit() }; limits::WRITE_IOVECS_MAX];
        // One pointer for every copy and every iovec into the buffer:
        // nothing else touches it during the call.
        let base = gather.as_mut_ptr();
        while !self.queue.is_empty() {
            let mut n = 0;
            let mut total = 0;
            let mut used = 0; // bytes of `gather` filled
                              // Where the run of copies not yet in `iov` starts.
            let mut run: Option<usize> = None;
            for frame in &self.queue {
                let small = frame.len() <= limits::WRITE_GATHER_FRAME_BYTES_MAX;
                if small && used + frame.len() <= gather.len() {
                    // SAFETY: `used + len` is within `gather`, which does
                    // not overlap the frame (a shared, immutable buffer).
                    unsafe {
                        std::ptr::copy_nonoverlapping(frame.as_ptr(), base.add(used), frame.len())
                    };
                    run.get_or_insert(used);
                    used += frame.len();
                    total += frame.len();
                    continue;
                }
                if let Some(start) = run.take() {
                    // SAFETY: `start..used` was filled above.
                    iov[n].write(libc::iovec {
                        iov_base: unsafe { base.add(start) }.cast(),
                        iov_len: used - start,
                    });
                    n += 1;
                }
                if n == limits::WRITE_IOVECS_MAX {
                    break; // the iovecs are full: send these
                }
                // A large frame, or a small one past a full buffer: by
                // reference (still one call, not one more per buffer).
                iov[n].write(libc::iovec {
                    iov_base: frame.as_ptr() as *mut libc::c_void,
                    iov_len: frame.len(),
                });
                total += frame.len();
                n += 1;
                if n == limits::WRITE_IOVECS_MAX {
                    break;
                }
            }
            if let Some(start) = run {
                // SAFETY: as above.
                iov[n].write(libc::iovec {
                    iov_base: unsafe { base.add(start) }.cast(),
                    iov_len: used - start,
                });
                n += 1;
            }
            debug_assert!(n > 0 && n <= limits::WRITE_IOVECS_MAX);
            // SAFETY: `msg` points at the first `n` entries of `iov`, all
            // written above; they point into frames owned by `self.queue`
            // or into `gather`, alive and unmodified for the call.
            let written = unsafe {
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_iov = iov.as_mut_ptr().cast::<libc::iovec>();
                msg.msg_iovlen = n as _;
                libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
            };
            if written < 0 {
                let err = io::Error::last_os_error();
                return match err.kind() {
                    io::ErrorKind::WouldBlock => Ok(Flushed::Blocked),
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(err),
                };
            }
            // The gathered copies are in queue order: what was written is
            // the queue's first `written` bytes either way.
            self.consume(written as usize);
            if (written as usize) < total {
                return Ok(Flushed::Blocked);
            }
        }
        Ok(Flushed::All)
    }
}

thread_local! {
    /// The shard's gather buffer: small frames are copied here right
    /// before a `sendmsg` and forgotten after it. One per shard thread,
    /// reused by every connection's flush, so it stays in cache.
    static GATHER: RefCell<Box<[u8]>> =
        RefCell::new(vec![0u8; limits::WRITE_GATHER_BYTES].into_boxed_slice());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::event_runs::OpenRuns;
    use crate::gateway::frame;
    use crate::ids::Id;

    #[test]
    fn bound_in_bytes() {
        let mut o = Outbound::default();
        assert!(o.push(Bytes::from_static(b"12345"), 8).is_ok());
        assert_eq!(o.push(Bytes::from_static(b"6789"), 8), Err(Overflow));
        assert_eq!(o.bytes(), 5);
    }

    #[test]
    fn close_keeps_a_started_frame() {
        let mut o = Outbound::default();
        o.push(Bytes::from_static(b"abcdef"), 100).unwrap();
        o.push(Bytes::from_static(b"ghij"), 100).unwrap();
        o.consume(2);
        o.replace_with_close(Bytes::from_static(b"X"));
        assert_eq!(o.front(), Some(&b"cdef"[..]));
        assert_eq!(o.bytes(), 5);
        o.consume(4);
        assert_eq!(o.front(), Some(&b"X"[..]));
        assert!(o.push(Bytes::from_static(b"late"), 100).is_ok());
        assert_eq!(o.bytes(), 1, "nothing is queued after close");
    }

    #[test]
    fn the_preamble_leaves_first_and_survives_a_close() {
        let mut o = Outbound::with_preamble(Bytes::from_static(b"101;"));
        o.push(Bytes::from_static(b"event;"), 100).unwrap();
        o.push_front(Bytes::from_static(b"resync;"));
        o.push_front(Bytes::from_static(b"hello;"));
        assert_eq!(o.bytes(), 23);
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        use std::os::fd::AsRawFd;
        assert_eq!(o.write_to(a.as_raw_fd()).unwrap(), Flushed::All);
        let mut got = [0u8; 23];
        std::io::Read::read_exact(&mut b, &mut got).unwrap();
        assert_eq!(&got, b"101;hello;resync;event;");

        // Closed before it opened: the 101, then the close frame.
        let mut o = Outbound::with_preamble(Bytes::from_static(b"101;"));
        o.push(Bytes::from_static(b"event;"), 100).unwrap();
        o.replace_with_close(Bytes::from_static(b"X"));
        assert_eq!(o.front(), Some(&b"101;"[..]));
        o.consume(4);
        assert_eq!(o.front(), Some(&b"X"[..]));
        // Once the 101 is out, a close drops what follows it as usual.
        let mut o = Outbound::with_preamble(Bytes::from_static(b"101;"));
        o.push(Bytes::from_static(b"event;"), 100).unwrap();
        o.consume(4);
        o.replace_with_close(Bytes::from_static(b"X"));
        assert_eq!(o.front(), Some(&b"X"[..]));
        assert_eq!(o.bytes(), 1);
    }

    #[test]
    fn writes_everything_to_a_socket_in_order() {
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut o = Outbound::default();
        for i in 0..200u32 {
            o.push(Bytes::from(format!("frame-{i};")), usize::MAX)
                .unwrap();
        }
        use std::os::fd::AsRawFd;
        assert_eq!(o.write_to(a.as_raw_fd()).unwrap(), Flushed::All);
        assert!(o.is_empty());
        drop(a);
        let mut got = String::new();
        std::io::Read::read_to_string(&mut b, &mut got).unwrap();
        let want: String = (0..200).map(|i| format!("frame-{i};")).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn more_frames_than_one_sendmsg_takes_leave_in_order() {
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut o = Outbound::default();
        let frames = 3 * limits::WRITE_IOVECS_MAX + 7;
        for i in 0..frames {
            o.push(Bytes::from(format!("{i};")), usize::MAX).unwrap();
        }
        use std::os::fd::AsRawFd;
        assert_eq!(o.write_to(a.as_raw_fd()).unwrap(), Flushed::All);
        drop(a);
        let mut got = String::new();
        std::io::Read::read_to_string(&mut b, &mut got).unwrap();
        let want: String = (0..frames).map(|i| format!("{i};")).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn blocked_socket_keeps_the_rest() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut o = Outbound::default();
        let big = Bytes::from(vec![7u8; 1 << 20]);
        for _ in 0..8 {
            o.push(big.clone(), usize::MAX).unwrap();
        }
        use std::os::fd::AsRawFd;
        assert_eq!(o.write_to(a.as_raw_fd()).unwrap(), Flushed::Blocked);
        assert!(o.bytes() > 0 && o.bytes() < 8 << 20);
        drop(b);
    }

    /// Writes everything through a socket pair, reading the peer whenever
    /// the socket is full; returns what the peer read.
    fn write_all_through(o: &mut Outbound) -> Vec<u8> {
        use std::os::fd::AsRawFd;
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut read_all = |b: &mut std::os::unix::net::UnixStream, got: &mut Vec<u8>| {
            while let Ok(n) = std::io::Read::read(b, &mut buf) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
        };
        while o.write_to(a.as_raw_fd()).unwrap() == Flushed::Blocked {
            read_all(&mut b, &mut got);
        }
        assert!(o.is_empty());
        assert_eq!(o.bytes(), 0);
        read_all(&mut b, &mut got);
        got
    }

    #[test]
    fn gathered_and_shared_frames_leave_in_order_through_partial_writes() {
        let mut o = Outbound::default();
        let mut want = Vec::new();
        // Small runs that fill the gather buffer many times over, broken
        // by frames above the threshold, more iovecs than one call takes,
        // and a socket that fills up again and again.
        for i in 0..6 * limits::WRITE_IOVECS_MAX {
            let len = match i % 11 {
                0 => limits::WRITE_GATHER_FRAME_BYTES_MAX + 1 + i % 5,
                1 => limits::WRITE_GATHER_FRAME_BYTES_MAX,
                _ => 3 + i % 150,
            };
            let frame: Vec<u8> = (0..len).map(|k| (i * 31 + k) as u8).collect();
            want.extend_from_slice(&frame);
            o.push(Bytes::from(frame), usize::MAX).unwrap();
        }
        assert_eq!(write_all_through(&mut o), want);
    }

    #[test]
    fn a_close_after_a_gathered_partial_write_finishes_that_frame() {
        let mut o = Outbound::default();
        for i in 0..20 {
            o.push(Bytes::from(format!("<{i}>")), usize::MAX).unwrap();
        }
        o.consume("<0><".len());
        o.replace_with_close(Bytes::from_static(b"X"));
        assert_eq!(write_all_through(&mut o), b"1>X");
    }

    #[test]
    fn an_event_shared_by_two_queues_leaves_whole_from_each_through_partial_writes() {
        let (mut a, mut b) = (Outbound::default(), Outbound::default());
        let mut want = Vec::new();
        for i in 0..3 * limits::WRITE_IOVECS_MAX {
            let len = match i % 7 {
                0 => limits::WRITE_GATHER_FRAME_BYTES_MAX + 1 + i % 300,
                _ => 3 + i % 200,
            };
            let frame: Vec<u8> = (0..len).map(|k| (i * 17 + k) as u8).collect();
            want.extend_from_slice(&frame);
            let event = QueuedFrame::for_watchers(Bytes::from(frame), 2);
            a.push(event.clone(), usize::MAX).unwrap();
            b.push(event, usize::MAX).unwrap();
        }
        assert_eq!(write_all_through(&mut a), want);
        assert_eq!(write_all_through(&mut b), want);
    }

    /// Frames of different lengths (short and 16-bit lengths), in runs of
    /// one channel interleaved with single frames of others.
    fn runs_and_singles(o: &mut Outbound, runs: &mut OpenRuns) -> (Vec<u8>, usize) {
        let (a, b) = (Id::parse("C1").unwrap(), Id::parse("C2").unwrap());
        let mut want = Vec::new();
        let mut frames = 0;
        for i in 0..3_000usize {
            let channel = if i % 13 == 0 { b } else { a };
            let payload: Vec<u8> = (0..(i * 37) % 300)
                .map(|k| b'a' + ((i + k) % 26) as u8)
                .collect();
            let frame = frame::encode_text(&payload);
            want.extend_from_slice(&frame);
            o.push(runs.place(channel, frame, 1), usize::MAX).unwrap();
            frames += 1;
        }
        (want, frames)
    }

    #[test]
    fn a_channels_run_is_one_entry_and_leaves_whole_through_partial_writes() {
        let mut runs = OpenRuns::default();
        let mut o = Outbound::default();
        let (want, frames) = runs_and_singles(&mut o, &mut runs);
        assert!(o.queue.len() < frames / 4, "{} entries", o.queue.len());
        assert_eq!(o.bytes(), want.len());
        assert_eq!(write_all_through(&mut o), want);
    }

    #[test]
    fn a_close_inside_a_run_finishes_the_frame_it_is_in_and_nothing_after() {
        let mut runs = OpenRuns::default();
        let c = Id::parse("C1").unwrap();
        let frames: Vec<Bytes> = (0..10u8)
            .map(|i| frame::encode_text(&vec![b'a' + i; 20 + i as usize * 40]))
            .collect();
        for cut in [1, frames[1].len() - 1, frames[1].len(), frames[1].len() + 5] {
            let mut o = Outbound::default();
            for f in &frames {
                o.push(runs.place(c, f.clone(), 1), usize::MAX).unwrap();
            }
            // The first frame, then runs (a new one per chunk as they double).
            assert!(o.queue.len() < frames.len(), "{} entries", o.queue.len());
            o.consume(frames[0].len() + cut);
            o.replace_with_close(Bytes::from_static(b"X"));
            let mut want: Vec<u8> = frames[1..].concat();
            // What finishes the frame the socket is in, then the close.
            let mut end = 0;
            for f in &frames[1..] {
                if end >= cut {
                    break;
                }
                end += f.len();
            }
            want.truncate(end);
            want.drain(..cut);
            want.push(b'X');
            assert_eq!(write_all_through(&mut o), want, "cut {cut}");
            runs.close_written();
        }
    }

    #[test]
    fn a_close_after_a_partial_write_of_a_shared_event_finishes_it_alone() {
        let event = QueuedFrame::for_watchers(Bytes::from_static(b"<shared>"), 2);
        let mut o = Outbound::default();
        o.push(event.clone(), usize::MAX).unwrap();
        o.push(Bytes::from_static(b"<next>"), usize::MAX).unwrap();
        o.consume(3);
        assert_eq!(o.front(), Some(&b"ared>"[..]));
        o.replace_with_close(Bytes::from_static(b"X"));
        assert_eq!(o.bytes(), 6);
        assert_eq!(write_all_through(&mut o), b"ared>X");
        assert_eq!(&event[..], b"<shared>", "the other watchers' copy is whole");
    }
}
