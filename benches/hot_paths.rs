//! Criterion micro-benchmarks of the hot paths, for regression detection.
//!
//! Each group calls the crate's own functions on the path one event takes
//! (docs/DESIGN.md "The journeys"): the channel's owner on the ring, the event's
//! JSON and the fields the channel server splices in, the websocket frame
//! encoded once, the `Msg::Deliver` crossing cores on the real mesh, the
//! frame appended to every local watcher's queue, a queue's flush into its
//! socket, the end of a websocket handshake (the 101 and `hello`), the
//! client frame the gateway parses and unmasks, and a backend's
//! publish-stream frame.
//!
//! `cargo bench --bench hot_paths` takes about two minutes on the 2-core VM;
//! criterion keeps the last run in `target/criterion` and reports a change
//! against it. `cargo bench --bench hot_paths -- ring` runs one group;
//! `-- --test` (and `cargo test --benches`) runs every benchmark once.
//! Plots are off: they cost more time than the measurements here.
//!
//! Unlike the other benches (which print figures for the README), these
//! only exist to show regressions; the machines are shared and noisy, so
//! compare runs on the same machine, back to back.

use std::cell::RefCell;
use std::hint::black_box;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures_lite::future::yield_now;
use glommio::{LocalExecutorBuilder, Placement};
use rand::rngs::StdRng;
use rand::SeedableRng;

use transponder::channel::fanout;
use transponder::events;
use transponder::gateway::frame::{self, ClientFrame, FrameReader, MAX_CLIENT_MESSAGE_BYTES};
use transponder::gateway::outbound::{Flushed, Outbound};
use transponder::gateway::publisher;
use transponder::gateway::queued_frame::QueuedFrame;
use transponder::ids::Id;
use transponder::limits;
use transponder::ops;
use transponder::ring::{self, Ring};
use transponder::shard::mesh::{self, Mesh};
use transponder::shard::message::{EventBody, Msg};
use transponder::store::messages::MessageRow;
use transponder::store::reactions::ReactionRow;
use transponder::ts::Ts;

/// The server's allocator (src/main.rs): frame encoding, the splice, the
/// JSON builders and the fan-out copy all allocate, and those figures
/// should be the server's, not the system allocator's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CHANNEL: &str = "C024BE91L";
const USER: &str = "U0G9QF9C6";
const TEAM: &str = "T024BE7LD";
/// 2023-11-14T22:13:20.000123Z: a ts with every digit position in use.
const TS_MICROS: u64 = 1_700_000_000_000_123;

/// A chat.postMessage body as `ops::chat::post_message` serializes it
/// (`type`, `channel`, `user`, `text`, `team`, `client_msg_id`; the channel
/// server adds `ts` and `event_ts`). The text is a typical short chat line.
fn post_body() -> EventBody {
    let v = serde_json::json!({
        "type": "message",
        "channel": CHANNEL,
        "user": USER,
        "text": "The quick brown fox jumps over the lazy dog; a typical short chat line.",
        "team": TEAM,
        "client_msg_id": "5e3a1f2c-8b4d-4e6f-9a0b-1c2d3e4f5a6b",
    });
    EventBody {
        json: serde_json::to_vec(&v).expect("json"),
        add_channel: false,
        add_ts: true,
    }
}

/// The frame of a posted message, exactly as the channel server encodes it
/// for delivery (274 bytes).
fn message_frame() -> Bytes {
    fanout::encode(
        &post_body(),
        Id::parse(CHANNEL).expect("id"),
        Some(Ts(TS_MICROS)),
    )
}

/// A JSON object of exactly `len` bytes (`len >= 28`), ASCII, as the
/// server's text frames carry.
fn json_payload(len: usize) -> Vec<u8> {
    let head = br#"{"type":"message","text":""#;
    let tail = br#""}"#;
    assert!(len >= head.len() + tail.len());
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(head);
    let fill = len - head.len() - tail.len();
    v.extend((0..fill).map(|i| b"abcdefghijklmnopqrstuvwxyz "[i % 27]));
    v.extend_from_slice(tail);
    debug_assert_eq!(v.len(), len);
    v
}

fn size_label(bytes: usize) -> String {
    if bytes >= 1024 {
        format!("{}KiB", bytes / 1024)
    } else {
        format!("{bytes}B")
    }
}

// ---------------------------------------------------------------------------
// 1. Ring lookup
// ---------------------------------------------------------------------------

/// Mirrors `Shard::owner` (`ring.owner(id.raw())`), which every publish,
/// subscribe and user lookup runs at least once, and `Shard::name_owner`
/// (`hash_bytes` of a channel name).
///
/// Member counts: 2 is this VM's node; 16 a typical many-core host; 64 the
/// largest ring the module's spread guarantee covers (2 MiB of tables, so
/// lookups also show how well the bucket table keeps probes short). Keys are
/// 65,536 random Slack-style channel ids (512 KiB), visited in order, so
/// most lookups miss the cache as they do on a shard that serves millions of
/// channels; that is also how the "Cost" figures in src/ring.rs were taken.
fn ring_lookup(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(0x5EED);
    let keys: Vec<u64> = (0..1 << 16)
        .map(|_| Id::generate('C', &mut rng).raw())
        .collect();
    let mask = keys.len() - 1;

    let mut g = c.benchmark_group("ring");
    g.bench_function("hash_key", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & mask;
            ring::hash_key(black_box(keys[i]))
        })
    });
    // A channel name of typical length (19 bytes).
    g.bench_function("hash_bytes/name", |b| {
        b.iter(|| ring::hash_bytes(black_box(b"project-transponder")))
    });
    for members in [2u32, 16, 64] {
        let ring = Ring::single_node(members);
        g.bench_with_input(BenchmarkId::new("owner", members), &ring, |b, ring| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & mask;
                ring.owner(black_box(keys[i]))
            })
        });
    }
    g.finish();
}

// ---------------------------------------------------------------------------
// 2. Websocket frames
// ---------------------------------------------------------------------------

/// Encode: `frame::encode_text`, which the channel server runs once per
/// event (`fanout::encode`) and the gateway for its own frames. Sizes: 64 B
/// is a typing or presence event, 512 B a message with some text or
/// blocks, 4 KiB a long message, 64 KiB a large Block Kit payload (the
/// 8-byte length form). Throughput is payload bytes.
///
/// Parse: `FrameReader::feed` of one whole masked client text frame, as the
/// read loop calls it with what one read returned: header parse, unmask into
/// the message's own exact-size `Vec`, UTF-8 check. Sizes stop at the 16 KiB
/// client message limit (`MAX_CLIENT_MESSAGE_BYTES`); clients send mostly
/// the small ones (ping, typing, a message). The input frames are encoded
/// by tungstenite, not by us.
///
/// Read the 4 KiB and larger figures with care on the project's VMs (AMD
/// EPYC, glibc 2.36): glibc copies 2,112 bytes and more with `rep movsb`
/// (`glibc.cpu.x86_rep_movsb_threshold` is 0x840), which is slow there and
/// depends on how the two buffers happen to be aligned. encode_text/4KiB
/// measured 1.2–2.2 µs in most runs and ~64 ns in one, 64KiB ~20 µs; with
/// `GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=4000000` they were
/// 60–100 ns and ~1.3 µs. A jump at these sizes alone, with the small sizes
/// unchanged, is more likely the copy than the codec.
fn websocket_frames(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame");
    for len in [64usize, 512, 4 << 10, 64 << 10] {
        let payload = json_payload(len);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(
            BenchmarkId::new("encode_text", size_label(len)),
            &payload,
            |b, p| b.iter(|| frame::encode_text(black_box(p))),
        );
    }
    for len in [64usize, 512, 4 << 10, MAX_CLIENT_MESSAGE_BYTES] {
        let payload = json_payload(len);
        let wire = masked_client_frame(&payload);
        // The input really is one frame that decodes to the payload.
        let mut check = Vec::new();
        FrameReader::new()
            .feed(&wire, &mut check)
            .expect("valid frame");
        assert_eq!(check, vec![ClientFrame::Text(payload.clone())]);

        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(
            BenchmarkId::new("parse_client_text", size_label(len)),
            &wire,
            |b, wire| {
                let mut reader = FrameReader::new();
                let mut out = Vec::with_capacity(1);
                b.iter(|| {
                    reader.feed(black_box(wire), &mut out).expect("valid");
                    // Dropping the decoded message is part of handling it.
                    out.clear();
                })
            },
        );
    }
    g.finish();
}

/// One final, masked client text frame carrying `payload`, encoded by
/// tungstenite.
fn masked_client_frame(payload: &[u8]) -> Vec<u8> {
    use tungstenite::protocol::frame::coding::{Data, OpCode};
    use tungstenite::protocol::frame::{Frame, FrameHeader};
    let header = FrameHeader {
        opcode: OpCode::Data(Data::Text),
        mask: Some([0x37, 0xfa, 0x21, 0x3d]),
        ..FrameHeader::default()
    };
    let mut wire = Vec::new();
    Frame::from_payload(header, Bytes::copy_from_slice(payload))
        .format(&mut wire)
        .expect("format");
    wire
}

// ---------------------------------------------------------------------------
// 3. Cross-shard send
// ---------------------------------------------------------------------------

/// The real mesh (`shard::mesh`: `mesh::build`, `Mesh::connect`,
/// `Mesh::send`) between two executors pinned to cores 0 and 1 and built as
/// the node builds them (`limits::IO_MEMORY_BYTES`, `RING_DEPTH`,
/// `SPIN_BEFORE_PARK_DEFAULT`). Shard 0 plays the channel server sending
/// `Msg::Deliver` to gateway shard 1, which drains its receiver as
/// `dispatch::receive_from` does, minus the dispatch.
///
/// One criterion iteration is one message: a sample sends a batch of
/// `iters` messages and is timed from before the first send on core 0 to
/// the receipt of the last on core 1 (clocks read on the executors, so the
/// bench thread's own wake-ups are not in it). Batches are long (a sample
/// is hundreds of thousands of messages), so the one wake of a parked
/// executor per sample (40–90 µs in these VMs) is noise. This is the
/// pipelined per-message cost; the round trip, and shared_channel against
/// other queues, are in benches/mesh.rs.
///
/// The sender never has more than `MESH_QUEUE_MESSAGES` in flight: it
/// checks, every 256 sends, a count the receiver publishes every 256
/// receipts, and spins until there is room. So every `Mesh::send` takes the
/// fast path (`try_send` into the queue) and the outbox stays empty, which
/// the bench asserts. Without that, a sender that outruns the receiver
/// spills into the outbox, whose pump is woken through the reactor, and a
/// task that keeps yielding (as a bench loop does) starves the reactor for
/// up to ~100 ms: that measures the spill, not the queue.
///
/// Two variants of the same message: `deliver_static_frame` carries a
/// static `Bytes` (no refcount), so it is the queue alone;
/// `deliver_shared_frame` clones one refcounted 274-byte frame per message
/// on core 0 and drops it on core 1, the refcount traffic of a real
/// delivery. Every message sharing one frame makes its refcount line bounce
/// more than per-event frames do, so that variant is a worst case.
fn cross_shard_send(c: &mut Criterion) {
    let rig = match MeshRig::start() {
        Ok(rig) => rig,
        Err(e) => {
            eprintln!("cross_shard: skipped, two pinned executors unavailable: {e}");
            return;
        }
    };
    let mut g = c.benchmark_group("cross_shard");
    g.throughput(Throughput::Elements(1));
    for (name, shared) in [
        ("deliver_static_frame", false),
        ("deliver_shared_frame", true),
    ] {
        g.bench_function(name, |b| b.iter_custom(|iters| rig.run(iters, shared)));
    }
    g.finish();
    rig.stop();
}

/// Sends between checks of the receiver's progress (the size of one
/// `dispatch::receive_from` batch).
const PACING_CHUNK: u64 = limits::MESH_BATCH_MESSAGES_MAX as u64;

struct MeshRig {
    /// To the sending shard: send this many messages (shared frame or not).
    send: flume::Sender<(u64, bool)>,
    /// To the receiving shard: expect this many.
    expect: flume::Sender<u64>,
    started: flume::Receiver<Instant>,
    finished: flume::Receiver<Instant>,
    handles: Vec<glommio::ExecutorJoinHandle<()>>,
}

fn pinned(core: usize, name: &str) -> LocalExecutorBuilder {
    LocalExecutorBuilder::new(Placement::Fixed(core))
        .name(name)
        .io_memory(limits::IO_MEMORY_BYTES)
        .ring_depth(limits::RING_DEPTH)
        .spin_before_park(limits::SPIN_BEFORE_PARK_DEFAULT)
}

impl MeshRig {
    fn start() -> Result<MeshRig, String> {
        let mut ends = mesh::build(2).into_iter();
        let (ends0, ends1) = (ends.next().expect("2"), ends.next().expect("2"));
        let (send_tx, send_rx) = flume::unbounded::<(u64, bool)>();
        let (expect_tx, expect_rx) = flume::unbounded::<u64>();
        let (started_tx, started_rx) = flume::unbounded();
        let (finished_tx, finished_rx) = flume::unbounded();

        // Messages shard 1 has received so far, published every
        // `PACING_CHUNK` receipts and at the end of each batch.
        let received = Arc::new(AtomicU64::new(0));
        let received_by_1 = received.clone();

        let sender = pinned(0, "bench-shard-0")
            .spawn(move || async move {
                let (mesh, _from_peer) = Mesh::connect(0, ends0).await;
                let mesh = Rc::new(mesh);
                // As `node::shard_main` does; the pacing below keeps it idle.
                let pump = mesh.clone();
                glommio::spawn_local(async move { pump.pump(1).await }).detach();
                let channel = Id::parse(CHANNEL).expect("id");
                let shared = message_frame();
                let fixed = Bytes::from_static(b"\x81\x10{\"type\":\"hello\"}");
                let queue = limits::MESH_QUEUE_MESSAGES as u64;
                let mut sent = 0u64;
                while let Ok((n, use_shared)) = send_rx.recv_async().await {
                    let t0 = Instant::now();
                    for i in 0..n {
                        if i.is_multiple_of(PACING_CHUNK) {
                            while sent + PACING_CHUNK > received.load(Ordering::Acquire) + queue {
                                yield_now().await;
                            }
                        }
                        let frame = if use_shared {
                            shared.clone()
                        } else {
                            fixed.clone()
                        };
                        mesh.send(
                            1,
                            Msg::Deliver {
                                channel,
                                frame,
                                exclude: None,
                                ts: None,
                            },
                        );
                        sent += 1;
                    }
                    assert_eq!(mesh.outbox_len(), 0, "the pacing keeps the outbox empty");
                    let _ = started_tx.send(t0);
                }
            })
            .map_err(|e| e.to_string())?;
        let receiver = pinned(1, "bench-shard-1").spawn(move || async move {
            let (_mesh, mut from_peer) = Mesh::connect(1, ends1).await;
            let (from, rx) = from_peer.pop().expect("a receiver from shard 0");
            assert_eq!(from, 0);
            let mut total = 0u64;
            while let Ok(n) = expect_rx.recv_async().await {
                for _ in 0..n {
                    match rx.recv().await {
                        Some(Msg::Deliver { frame, .. }) => {
                            black_box(frame.len());
                        }
                        Some(other) => panic!("unexpected {other:?}"),
                        None => panic!("shard 0 went away"),
                    }
                    total += 1;
                    if total.is_multiple_of(PACING_CHUNK) {
                        received_by_1.store(total, Ordering::Release);
                    }
                }
                received_by_1.store(total, Ordering::Release);
                let _ = finished_tx.send(Instant::now());
            }
        });
        let receiver = match receiver {
            Ok(h) => h,
            Err(e) => {
                // The sending shard waits in `Mesh::connect` for a peer that
                // will never come: leave its thread behind rather than hang
                // joining it.
                drop(sender);
                return Err(e.to_string());
            }
        };
        Ok(MeshRig {
            send: send_tx,
            expect: expect_tx,
            started: started_rx,
            finished: finished_rx,
            handles: vec![sender, receiver],
        })
    }

    /// Sends `n` messages from shard 0 to shard 1; the time from the first
    /// send to the last receipt.
    fn run(&self, n: u64, shared: bool) -> Duration {
        self.expect.send(n).expect("receiving shard alive");
        self.send.send((n, shared)).expect("sending shard alive");
        let t0 = self.started.recv().expect("sending shard alive");
        let t1 = self.finished.recv().expect("receiving shard alive");
        t1.saturating_duration_since(t0)
    }

    fn stop(self) {
        let MeshRig {
            send,
            expect,
            handles,
            ..
        } = self;
        drop((send, expect));
        for h in handles {
            h.join().expect("bench shard exited cleanly");
        }
    }
}

// ---------------------------------------------------------------------------
// 4. Fan-out into connection queues
// ---------------------------------------------------------------------------

/// What `gateway::on_deliver` does with one `Msg::Deliver`: the frame
/// made a `QueuedFrame` once (shared by a shard-local `Rc` when the channel
/// has several watchers here), then, for each local watcher of the channel,
/// a clone of it appended to that connection's bounded outbound queue
/// (`Outbound::push` behind the connection's `RefCell`).
///
/// This is the layer below `on_deliver`, not `on_deliver` itself: that needs
/// a `Shard` (mesh, store) and a `Gateway` of `Conn`s, and a `Conn` can only
/// be built by `connection::admit` around a live socket (its fields are
/// private; 10,000 of them would be 10,000 fds). So the loop below mirrors
/// `on_deliver` + `enqueue` over the real `Outbound`; not measured are the
/// channel's index lookup (one hash probe per delivery), the `exclude`
/// comparison and `Gateway::mark_dirty` (an `Rc` clone and a `Vec` push per
/// connection per batch).
///
/// N watchers on one gateway shard: 1 (a DM), 10 (a team channel), 1,000
/// (a large channel), 10,000 (an announcement channel on a busy shard).
/// Throughput is per watcher. The frame is a posted message (274 B), queues
/// are bounded at the default `OUTBOUND_QUEUE_BYTES_MAX_DEFAULT`, and they
/// are emptied between timed batches (up to 1,024 frames per batch, so a
/// queue never holds more than a writer would find after a busy batch);
/// `deliver_then_consume` times the emptying too.
fn fan_out(c: &mut Criterion) {
    let frame = message_frame();
    let max = limits::OUTBOUND_QUEUE_BYTES_MAX_DEFAULT;
    let mut g = c.benchmark_group("fan_out");
    for n in [1usize, 10, 1_000, 10_000] {
        let queues: Vec<RefCell<Outbound>> =
            (0..n).map(|_| RefCell::new(Outbound::default())).collect();
        // Deliveries per timed batch: about 1,024 queue appends.
        let batch = (1024 / n).max(1) as u64;
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("deliver", n), &queues, |b, queues| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let k = left.min(batch);
                    let t0 = Instant::now();
                    for _ in 0..k {
                        deliver(black_box(&frame), queues, max);
                    }
                    elapsed += t0.elapsed();
                    left -= k;
                    for q in queues {
                        let mut q = q.borrow_mut();
                        let bytes = q.bytes();
                        q.consume(bytes);
                    }
                }
                elapsed
            })
        });
        // The same, with the queues' consumption timed too: what
        // `Outbound::write_to` does once the socket took the frames (each
        // queued reference dropped). Per delivery, the queue's reference
        // is taken here and let go here. (Before `QueuedFrame`, a frame
        // from another shard was also copied first; from this shard's own
        // channel server it was not.)
        g.bench_with_input(
            BenchmarkId::new("deliver_then_consume", n),
            &queues,
            |b, queues| {
                b.iter_custom(|iters| {
                    let t0 = Instant::now();
                    let mut left = iters;
                    while left > 0 {
                        let k = left.min(batch);
                        for _ in 0..k {
                            deliver(black_box(&frame), queues, max);
                        }
                        left -= k;
                        for q in queues {
                            let mut q = q.borrow_mut();
                            let bytes = q.bytes();
                            q.consume(bytes);
                        }
                    }
                    t0.elapsed()
                })
            },
        );
    }
    g.finish();
}

/// `gateway::on_deliver` over bare queues. The clone of `frame` stands
/// for the `Msg::Deliver`'s own reference (its channel server keeps one).
fn deliver(frame: &Bytes, queues: &[RefCell<Outbound>], max_queue_bytes: usize) {
    let frame = QueuedFrame::for_watchers(frame.clone(), queues.len());
    let (last, others) = queues.split_last().expect("a watcher");
    for q in others {
        q.borrow_mut()
            .push(frame.clone(), max_queue_bytes)
            .expect("queues are emptied between batches");
    }
    last.borrow_mut()
        .push(frame, max_queue_bytes)
        .expect("queues are emptied between batches");
}

// ---------------------------------------------------------------------------
// 5. A connection's flush
// ---------------------------------------------------------------------------

/// `Outbound::write_to`: one connection's flush of `n` queued frames (the
/// 274 B posted message) into a loopback TCP socket. Throughput is per
/// frame: what a flush costs per delivery once frames are queued, the
/// kernel's TCP send (and, on loopback, its receive) included. How many
/// frames one flush finds is how deep coalescing got; how many one
/// `sendmsg` takes is `limits::WRITE_IOVECS_MAX`. The peer is drained on
/// the same thread between timed flushes, so no thread wake-up is timed.
fn flush(c: &mut Criterion) {
    let frame = message_frame();
    let (sender, mut peer) = loopback_pair();
    let mut sink = vec![0u8; 1 << 20];
    let mut g = c.benchmark_group("flush");
    for n in [1usize, 16, 64, 256, 1_024] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("write_to", n), &n, |b, &n| {
            let mut out = Outbound::default();
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    for _ in 0..n {
                        out.push(frame.clone(), usize::MAX).expect("unbounded");
                    }
                    elapsed += flush_timed(&mut out, &sender, &mut peer, &mut sink);
                }
                elapsed
            })
        });
    }
    g.finish();
}

/// A deep batch as the 100 × 10 fan-out makes it: `n` events of one
/// channel, each queued on 10 watchers, then each watcher flushed into a
/// loopback socket. `shared`: every event its own entry (an `Rc` shared
/// by the 10 queues), copied into the gather buffer at the flush;
/// `runs`: the events after the first laid back to back in the channel's
/// run (`gateway::event_runs`), a handful of entries per queue, sent by
/// reference. Throughput is per delivery (n × 10); the peer is drained
/// untimed, as in `flush`.
fn deep_batch(c: &mut Criterion) {
    use transponder::gateway::event_runs::OpenRuns;
    let frame = message_frame();
    let channel = Id::parse(CHANNEL).expect("id");
    let (sender, mut peer) = loopback_pair();
    let mut sink = vec![0u8; 1 << 20];
    let mut g = c.benchmark_group("deep_batch");
    const WATCHERS: usize = 10;
    for n in [16usize, 200] {
        g.throughput(Throughput::Elements((n * WATCHERS) as u64));
        for runs_on in [false, true] {
            let name = if runs_on { "runs" } else { "shared" };
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, &n| {
                let mut queues: Vec<Outbound> =
                    (0..WATCHERS).map(|_| Outbound::default()).collect();
                let mut runs = OpenRuns::default();
                b.iter_custom(|iters| {
                    let mut elapsed = Duration::ZERO;
                    for _ in 0..iters {
                        let t0 = Instant::now();
                        for _ in 0..n {
                            let queued = if runs_on {
                                runs.place(channel, frame.clone(), WATCHERS)
                            } else {
                                QueuedFrame::for_watchers(frame.clone(), WATCHERS)
                            };
                            for q in &mut queues {
                                q.push(queued.clone(), usize::MAX).expect("unbounded");
                            }
                        }
                        elapsed += t0.elapsed();
                        for q in &mut queues {
                            elapsed += flush_timed(q, &sender, &mut peer, &mut sink);
                        }
                        let t = Instant::now();
                        runs.close_written();
                        elapsed += t.elapsed();
                    }
                    elapsed
                })
            });
        }
    }
    g.finish();
}

/// The end of a websocket handshake on the gateway: the upgrade request
/// parsed, the 101 built (SHA-1 of the key) and written with `hello` over
/// loopback, as two sends (the 101 at once, `hello` later: before) or as
/// one gathered `sendmsg` (`Outbound::with_preamble`: now). The peer is
/// drained untimed, as in `flush`. A connect storm does this once per
/// connection; the sends are most of it.
fn handshake_answer(c: &mut Criterion) {
    use transponder::gateway::handshake::{self, ParseOutcome};
    let request = b"GET /websocket/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA HTTP/1.1\r\n\
        Host: 127.0.0.1:7770\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let hello = frame::encode_text(br#"{"type":"hello"}"#);
    let key = || match handshake::parse_upgrade(black_box(request)) {
        Ok(ParseOutcome::Complete { request, .. }) => request.key,
        other => panic!("{other:?}"),
    };
    let (sender, mut peer) = loopback_pair();
    let mut sink = vec![0u8; 1 << 16];
    let mut g = c.benchmark_group("handshake_answer");
    g.bench_function("parse_and_101", |b| {
        b.iter(|| handshake::accept_response(&key()))
    });
    g.bench_function("101_then_hello_apart", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                let t0 = Instant::now();
                std::io::Write::write_all(&mut &sender, &handshake::accept_response(&key()))
                    .expect("write");
                let mut out = Outbound::default();
                out.open = true;
                out.push(hello.clone(), usize::MAX).expect("unbounded");
                assert_eq!(
                    out.write_to(sender.as_raw_fd()).expect("write"),
                    Flushed::All
                );
                elapsed += t0.elapsed();
                drain(&mut peer, &mut sink);
            }
            elapsed
        })
    });
    g.bench_function("101_with_hello", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                let t0 = Instant::now();
                let mut out =
                    Outbound::with_preamble(Bytes::from(handshake::accept_response(&key())));
                out.push_front(hello.clone());
                out.open = true;
                assert_eq!(
                    out.write_to(sender.as_raw_fd()).expect("write"),
                    Flushed::All
                );
                elapsed += t0.elapsed();
                drain(&mut peer, &mut sink);
            }
            elapsed
        })
    });
    g.finish();
}

/// A connected loopback TCP socket (no Nagle, as the gateway's) and its
/// peer, non-blocking.
fn loopback_pair() -> (std::net::TcpStream, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let sender =
        std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    sender.set_nodelay(true).expect("nodelay");
    let (peer, _) = listener.accept().expect("accept");
    peer.set_nonblocking(true).expect("nonblocking");
    (sender, peer)
}

/// Flushes `out` into `sender` until all of it left, draining the peer
/// between calls; returns the time spent in `write_to` alone.
fn flush_timed(
    out: &mut Outbound,
    sender: &std::net::TcpStream,
    peer: &mut std::net::TcpStream,
    sink: &mut [u8],
) -> Duration {
    let mut elapsed = Duration::ZERO;
    loop {
        let t0 = Instant::now();
        let flushed = out.write_to(sender.as_raw_fd()).expect("write");
        elapsed += t0.elapsed();
        drain(peer, sink);
        if flushed == Flushed::All {
            return elapsed;
        }
    }
}

/// Reads what the peer holds.
fn drain(peer: &mut std::net::TcpStream, sink: &mut [u8]) {
    while std::io::Read::read(peer, sink).is_ok_and(|n| n > 0) {}
}

// ---------------------------------------------------------------------------
// 6. A publish-stream frame
// ---------------------------------------------------------------------------

/// `publisher::read_publish`: one publish-stream frame read into what the
/// channel server takes (a backend's transient message of a 100 B text, as
/// loadgen sends it; `/1KiB`: of a 1 KiB text), against the general path it had before the fast one
/// (`serde_json::Value`, then `ops::backend_event`), which it still takes
/// for frames the fast path leaves.
fn publish_stream_frame(c: &mut Criterion) {
    let text = "x".repeat(100);
    let payload = format!(
        r#"{{"channel":"{CHANNEL}","event":{{"type":"message","text":"{text}"}},"transient":true}}"#
    )
    .into_bytes();
    let mut g = c.benchmark_group("publish_frame");
    g.throughput(Throughput::Elements(1));
    g.bench_function("read_publish", |b| {
        b.iter(|| publisher::read_publish(black_box(&payload)).expect("valid"))
    });
    // The matrix's other event size: the scan's per-byte cost shows.
    let text_1k = "x".repeat(1024);
    let payload_1k = format!(
        r#"{{"channel":"{CHANNEL}","event":{{"type":"message","text":"{text_1k}"}},"transient":true}}"#
    )
    .into_bytes();
    g.bench_function("read_publish/1KiB", |b| {
        b.iter(|| publisher::read_publish(black_box(&payload_1k)).expect("valid"))
    });
    g.bench_function("general", |b| {
        b.iter(|| {
            let serde_json::Value::Object(mut obj) =
                serde_json::from_slice(black_box(&payload)).expect("json")
            else {
                unreachable!("an object")
            };
            let channel = Id::parse(obj["channel"].as_str().expect("channel")).expect("id");
            let transient = obj["transient"].as_bool().expect("bool");
            let Some(serde_json::Value::Object(event)) = obj.remove("event") else {
                unreachable!("an event")
            };
            (
                channel,
                ops::backend_event(event, transient).expect("event"),
            )
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------
// 7. JSON event encoding
// ---------------------------------------------------------------------------

/// Building event JSON with `events` (then `serde_json::to_vec`, as
/// `persist::json_body` and the Web API do): `message_object` of a plain
/// message (history pages build one per message) and of a thread parent
/// with replies, an edit and reactions; `message_changed` (the event of an
/// edit, two message objects); `reaction` (`reaction_added`).
///
/// The splice: `fanout::payload`, which the channel server runs once per
/// persisted event to add `ts` and `event_ts` to a chat.postMessage body
/// without re-parsing it, and `fanout::encode`, the same plus the frame
/// (what `deliver_persisted` calls). The body of a posted message is built
/// inline in `ops::chat::post_message`, so it is not benched itself; the
/// body here is its output.
fn json_events(c: &mut Criterion) {
    let channel = Id::parse(CHANNEL).expect("id");
    let user = Id::parse("U0G9QF9C7").expect("id");
    let team = Id::parse(TEAM).expect("id");
    let plain = plain_row();
    let parent = thread_parent_row();
    let mut edited = plain_row();
    edited.text.push_str(" (edited)");
    edited.edited = Some((TS_MICROS as i64 + 5_000_000, USER.into()));

    let mut g = c.benchmark_group("json");
    g.bench_function("message_object/plain", |b| {
        b.iter(|| to_vec(&events::message_object(black_box(&plain), TEAM)))
    });
    g.bench_function("message_object/thread_parent", |b| {
        b.iter(|| to_vec(&events::message_object(black_box(&parent), TEAM)))
    });
    g.bench_function("message_changed", |b| {
        b.iter(|| {
            to_vec(&events::message_changed(
                channel,
                black_box(&plain),
                &edited,
                team,
            ))
        })
    });
    g.bench_function("reaction_added", |b| {
        b.iter(|| {
            to_vec(&events::reaction(
                channel,
                user,
                "thumbsup",
                black_box(&plain),
                true,
            ))
        })
    });

    let body = post_body();
    let ts = Some(Ts(TS_MICROS));
    g.bench_function("splice/message", |b| {
        b.iter(|| fanout::payload(black_box(&body), channel, ts))
    });
    g.bench_function("splice_and_frame/message", |b| {
        b.iter(|| fanout::encode(black_box(&body), channel, ts))
    });
    g.finish();
}

fn to_vec(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("json")
}

fn plain_row() -> MessageRow {
    MessageRow {
        channel: CHANNEL.into(),
        ts: TS_MICROS as i64,
        user: USER.into(),
        text: "The quick brown fox jumps over the lazy dog; a typical short chat line.".into(),
        blocks: None,
        thread_ts: None,
        subtype: None,
        client_msg_id: Some("5e3a1f2c-8b4d-4e6f-9a0b-1c2d3e4f5a6b".into()),
        edited: None,
        reply_count: 0,
        reply_users: Vec::new(),
        latest_reply: None,
        reactions: Vec::new(),
    }
}

fn thread_parent_row() -> MessageRow {
    let users: Vec<String> = ["U0G9QF9C7", "U0G9QF9C8", "U0G9QF9C9"]
        .map(String::from)
        .to_vec();
    MessageRow {
        thread_ts: Some(TS_MICROS as i64),
        edited: Some((TS_MICROS as i64 + 5_000_000, USER.into())),
        reply_count: 12,
        reply_users: users.clone(),
        latest_reply: Some(TS_MICROS as i64 + 60_000_000),
        reactions: vec![
            ReactionRow {
                name: "thumbsup".into(),
                users: users.clone(),
                count: 3,
            },
            ReactionRow {
                name: "eyes".into(),
                users: users[..1].to_vec(),
                count: 1,
            },
        ],
        ..plain_row()
    }
}

// ---------------------------------------------------------------------------

/// Short runs: the whole bench stays near two minutes on 2 cores. A 5%
/// noise threshold, because this VM is shared and a 1% "change" here is
/// weather, not a regression.
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
        .noise_threshold(0.05)
        .without_plots()
}

criterion_group! {
    name = hot_paths;
    config = config();
    targets = ring_lookup, websocket_frames, cross_shard_send, fan_out, flush, deep_batch, handshake_answer, publish_stream_frame, json_events
}
criterion_main!(hot_paths);
