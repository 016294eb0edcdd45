//! Cross-core message path benchmark for Transponder's shard mesh.
//!
//! Two glommio executors pinned on cores 0 and 1 exchange a 32-byte message
//! over three candidate queues:
//!
//! * glommio `channels::shared_channel` (bounded SPSC, reactor-driven wakes),
//! * flume bounded (`try_send`/`send_async`, `recv_async`),
//! * crossbeam `ArrayQueue` plus a hand-written waker slot (below).
//!
//! It measures (1) one-way throughput, (2) ping-pong round-trip latency at
//! several `spin_before_park` settings and (3) the time for a 256-message
//! burst to reach a consumer that drains greedily. It prints tables and never
//! asserts on a time; it only checks that every message arrived in order.
//!
//! `cargo bench --bench mesh` runs the full sizes (15-20 s on the 2-core VM).
//! `cargo bench --bench mesh -- rtt` runs only the named sections
//! (`throughput`, `rtt`, `bursts`); `MESH_RTT_SPINS=0,50` picks the round-trip
//! spin settings. Run without `--bench` (as `cargo test --all-targets` does) it
//! makes a smoke pass with tiny counts, under a second, so CI keeps the code
//! paths exercised. A watchdog exits with status 2 if a run hangs for 600 s.

use std::future::Future;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::task::{Poll, Waker};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam::queue::ArrayQueue;
use futures_lite::future::poll_fn;
use glommio::channels::shared_channel::{self, ConnectedReceiver, ConnectedSender};
use glommio::{GlommioError, LocalExecutorBuilder, Placement, ResourceType};

/// The shape of what shards send each other: four words, 32 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
struct Msg {
    a: u64,
    b: u64,
    c: u64,
    d: u64,
}

const _: () = assert!(std::mem::size_of::<Msg>() == 32);

impl Msg {
    fn new(seq: u64) -> Self {
        Msg {
            a: seq,
            b: seq ^ 0x5a5a_5a5a,
            c: seq.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            d: !seq,
        }
    }

    fn is_valid(&self, seq: u64) -> bool {
        *self == Msg::new(seq)
    }
}

// ---------------------------------------------------------------------------
// Queue abstraction: halves that are created on the main thread, moved to an
// executor thread and "connected" there (glommio needs that), then used.
// ---------------------------------------------------------------------------

enum TrySend {
    Full(Msg),
    Closed,
}

trait Sender {
    fn try_put(&self, m: Msg) -> Result<(), TrySend>;
    /// Waits for room; `false` when the receiver is gone.
    fn put(&self, m: Msg) -> impl Future<Output = bool>;
}

trait Receiver {
    /// `None` once the sender is gone and the queue is empty.
    fn take(&self) -> impl Future<Output = Option<Msg>>;
}

trait Queue: 'static {
    const NAME: &'static str;
    type TxHalf: Send + 'static;
    type RxHalf: Send + 'static;
    type Tx: Sender;
    type Rx: Receiver;
    fn pair(capacity: usize) -> (Self::TxHalf, Self::RxHalf);
    fn connect_tx(half: Self::TxHalf) -> impl Future<Output = Self::Tx>;
    fn connect_rx(half: Self::RxHalf) -> impl Future<Output = Self::Rx>;
}

/// The sending pattern the shards use: `try_send` while there is room, await
/// the async send only when the queue is full.
async fn send<T: Sender>(tx: &T, m: Msg) -> bool {
    match tx.try_put(m) {
        Ok(()) => true,
        Err(TrySend::Full(m)) => tx.put(m).await,
        Err(TrySend::Closed) => false,
    }
}

// --- glommio shared_channel -------------------------------------------------

struct GlommioShared;

impl Queue for GlommioShared {
    const NAME: &'static str = "glommio shared_channel";
    type TxHalf = shared_channel::SharedSender<Msg>;
    type RxHalf = shared_channel::SharedReceiver<Msg>;
    type Tx = ConnectedSender<Msg>;
    type Rx = ConnectedReceiver<Msg>;

    fn pair(capacity: usize) -> (Self::TxHalf, Self::RxHalf) {
        shared_channel::new_bounded(capacity)
    }
    async fn connect_tx(half: Self::TxHalf) -> Self::Tx {
        half.connect().await
    }
    async fn connect_rx(half: Self::RxHalf) -> Self::Rx {
        half.connect().await
    }
}

impl Sender for ConnectedSender<Msg> {
    fn try_put(&self, m: Msg) -> Result<(), TrySend> {
        match self.try_send(m) {
            Ok(()) => Ok(()),
            Err(GlommioError::WouldBlock(ResourceType::Channel(m))) => Err(TrySend::Full(m)),
            Err(_) => Err(TrySend::Closed),
        }
    }
    async fn put(&self, m: Msg) -> bool {
        self.send(m).await.is_ok()
    }
}

impl Receiver for ConnectedReceiver<Msg> {
    async fn take(&self) -> Option<Msg> {
        self.recv().await
    }
}

// --- flume bounded ----------------------------------------------------------

struct Flume;

impl Queue for Flume {
    const NAME: &'static str = "flume bounded";
    type TxHalf = flume::Sender<Msg>;
    type RxHalf = flume::Receiver<Msg>;
    type Tx = flume::Sender<Msg>;
    type Rx = flume::Receiver<Msg>;

    fn pair(capacity: usize) -> (Self::TxHalf, Self::RxHalf) {
        flume::bounded(capacity)
    }
    async fn connect_tx(half: Self::TxHalf) -> Self::Tx {
        half
    }
    async fn connect_rx(half: Self::RxHalf) -> Self::Rx {
        half
    }
}

impl Sender for flume::Sender<Msg> {
    fn try_put(&self, m: Msg) -> Result<(), TrySend> {
        match self.try_send(m) {
            Ok(()) => Ok(()),
            Err(flume::TrySendError::Full(m)) => Err(TrySend::Full(m)),
            Err(flume::TrySendError::Disconnected(_)) => Err(TrySend::Closed),
        }
    }
    async fn put(&self, m: Msg) -> bool {
        self.send_async(m).await.is_ok()
    }
}

impl Receiver for flume::Receiver<Msg> {
    async fn take(&self) -> Option<Msg> {
        self.recv_async().await.ok()
    }
}

// --- crossbeam ArrayQueue + waker slot --------------------------------------

/// One parked task's waker. The fast path is one fence and one relaxed load;
/// the mutex is touched only by a side that is about to park or by the side
/// that wakes it. Each slot has exactly one registering thread and one waking
/// thread (SPSC). Lost wake-ups are excluded Dekker-style: the parking side
/// does `armed = true; fence; re-check queue`, the other side does
/// `push/pop; fence; check armed`.
struct WakerSlot {
    armed: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl WakerSlot {
    fn new() -> Self {
        WakerSlot {
            armed: AtomicBool::new(false),
            waker: Mutex::new(None),
        }
    }

    fn register(&self, w: &Waker) {
        {
            let mut slot = self.waker.lock().unwrap();
            match &*slot {
                Some(old) if old.will_wake(w) => {}
                _ => *slot = Some(w.clone()),
            }
        }
        self.armed.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    fn disarm(&self) {
        self.armed.store(false, Ordering::Relaxed);
    }

    fn wake(&self) {
        fence(Ordering::SeqCst);
        if self.armed.load(Ordering::Relaxed) && self.armed.swap(false, Ordering::AcqRel) {
            let w = self.waker.lock().unwrap().take();
            if let Some(w) = w {
                w.wake();
            }
        }
    }
}

struct CbShared {
    q: ArrayQueue<Msg>,
    rx_waiting: WakerSlot,
    tx_waiting: WakerSlot,
    tx_gone: AtomicBool,
    rx_gone: AtomicBool,
}

struct CbTx(Arc<CbShared>);
struct CbRx(Arc<CbShared>);

impl Drop for CbTx {
    fn drop(&mut self) {
        self.0.tx_gone.store(true, Ordering::SeqCst);
        self.0.rx_waiting.wake();
    }
}

impl Drop for CbRx {
    fn drop(&mut self) {
        self.0.rx_gone.store(true, Ordering::SeqCst);
        self.0.tx_waiting.wake();
    }
}

struct CrossbeamArray;

impl Queue for CrossbeamArray {
    const NAME: &'static str = "crossbeam ArrayQueue+waker";
    type TxHalf = CbTx;
    type RxHalf = CbRx;
    type Tx = CbTx;
    type Rx = CbRx;

    fn pair(capacity: usize) -> (Self::TxHalf, Self::RxHalf) {
        let shared = Arc::new(CbShared {
            q: ArrayQueue::new(capacity),
            rx_waiting: WakerSlot::new(),
            tx_waiting: WakerSlot::new(),
            tx_gone: AtomicBool::new(false),
            rx_gone: AtomicBool::new(false),
        });
        (CbTx(shared.clone()), CbRx(shared))
    }
    async fn connect_tx(half: Self::TxHalf) -> Self::Tx {
        half
    }
    async fn connect_rx(half: Self::RxHalf) -> Self::Rx {
        half
    }
}

impl Sender for CbTx {
    fn try_put(&self, m: Msg) -> Result<(), TrySend> {
        let s = &self.0;
        if s.rx_gone.load(Ordering::Relaxed) {
            return Err(TrySend::Closed);
        }
        match s.q.push(m) {
            Ok(()) => {
                s.rx_waiting.wake();
                Ok(())
            }
            Err(m) => Err(TrySend::Full(m)),
        }
    }

    async fn put(&self, mut m: Msg) -> bool {
        let s = &self.0;
        loop {
            match self.try_put(m) {
                Ok(()) => return true,
                Err(TrySend::Closed) => return false,
                Err(TrySend::Full(back)) => m = back,
            }
            poll_fn(|cx| {
                let ready = || !s.q.is_full() || s.rx_gone.load(Ordering::SeqCst);
                if ready() {
                    return Poll::Ready(());
                }
                s.tx_waiting.register(cx.waker());
                if ready() {
                    s.tx_waiting.disarm();
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
        }
    }
}

impl Receiver for CbRx {
    async fn take(&self) -> Option<Msg> {
        let s = &self.0;
        poll_fn(|cx| {
            if let Some(m) = s.q.pop() {
                s.tx_waiting.wake();
                return Poll::Ready(Some(m));
            }
            if s.tx_gone.load(Ordering::SeqCst) {
                return Poll::Ready(s.q.pop());
            }
            s.rx_waiting.register(cx.waker());
            if let Some(m) = s.q.pop() {
                s.rx_waiting.disarm();
                s.tx_waiting.wake();
                Poll::Ready(Some(m))
            } else if s.tx_gone.load(Ordering::SeqCst) {
                s.rx_waiting.disarm();
                Poll::Ready(s.q.pop())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

/// Reference floor: the same `ArrayQueue`, but the receiver busy-polls and
/// never returns `Pending`, so neither executor ever parks or wakes. What is
/// left is the cache-line round trip between the cores plus glommio's task
/// poll; the gap to the rows above is the executor's wake/park path.
struct CrossbeamBusyPoll;

struct BusyRx(CbRx);

impl Queue for CrossbeamBusyPoll {
    const NAME: &'static str = "ArrayQueue busy-poll (floor)";
    type TxHalf = CbTx;
    type RxHalf = CbRx;
    type Tx = CbTx;
    type Rx = BusyRx;

    fn pair(capacity: usize) -> (Self::TxHalf, Self::RxHalf) {
        CrossbeamArray::pair(capacity)
    }
    async fn connect_tx(half: Self::TxHalf) -> Self::Tx {
        half
    }
    async fn connect_rx(half: Self::RxHalf) -> Self::Rx {
        BusyRx(half)
    }
}

impl Receiver for BusyRx {
    async fn take(&self) -> Option<Msg> {
        let s = &(self.0).0;
        loop {
            if let Some(m) = s.q.pop() {
                s.tx_waiting.wake();
                return Some(m);
            }
            if s.tx_gone.load(Ordering::SeqCst) {
                return s.q.pop();
            }
            std::hint::spin_loop();
        }
    }
}

// ---------------------------------------------------------------------------
// Executors, clocks and statistics
// ---------------------------------------------------------------------------

fn builder(core: usize, spin: Duration, name: &str) -> LocalExecutorBuilder {
    LocalExecutorBuilder::new(Placement::Fixed(core))
        .io_memory(64 << 10)
        .ring_depth(128)
        .spin_before_park(spin)
        .name(name)
}

/// Runs `a` on an executor pinned to core 0 and `b` on one pinned to core 1,
/// and joins both. If one side fails its queue halves are dropped, which
/// closes the queues and lets the other side finish too.
fn run_pair<FA, FB, A, B, RA, RB>(spin: Duration, a: FA, b: FB) -> (RA, RB)
where
    FA: FnOnce() -> A + Send + 'static,
    FB: FnOnce() -> B + Send + 'static,
    A: Future<Output = RA> + 'static,
    B: Future<Output = RB> + 'static,
    RA: Send + 'static,
    RB: Send + 'static,
{
    let ha = builder(0, spin, "mesh-core0").spawn(a);
    let hb = builder(1, spin, "mesh-core1").spawn(b);
    // Join both before judging either, so no thread is left behind.
    let ra = ha.and_then(|h| h.join());
    let rb = hb.and_then(|h| h.join());
    match (ra, rb) {
        (Ok(a), Ok(b)) => (a, b),
        (ra, rb) => {
            let why =
                |r: glommio::Result<(), ()>| r.map_or_else(|e| e.to_string(), |()| "ok".into());
            panic!(
                "executor pair failed: core 0: {}; core 1: {}",
                why(ra.map(drop)),
                why(rb.map(drop)),
            )
        }
    }
}

#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

extern "C" {
    fn clock_gettime(clock_id: i32, tp: *mut Timespec) -> i32;
}

/// CPU time this thread has used, in ns: `CLOCK_THREAD_CPUTIME_ID`, which is
/// exact (schedstat and /proc stat only move at scheduler ticks).
fn thread_cpu_ns() -> Option<u64> {
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec (64-bit Linux layout).
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// Measures one side's CPU use over a window of wall time.
struct CpuMeter {
    cpu0: Option<u64>,
    t0: Instant,
}

impl CpuMeter {
    fn start() -> Self {
        CpuMeter {
            cpu0: thread_cpu_ns(),
            t0: Instant::now(),
        }
    }
    /// Busy share of the window, in percent.
    fn percent(&self) -> Option<f64> {
        let wall = self.t0.elapsed().as_nanos() as f64;
        let used = thread_cpu_ns()?.checked_sub(self.cpu0?)? as f64;
        Some(100.0 * used / wall.max(1.0))
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |p| format!("{p:.0}%"))
}

/// Nearest-rank percentile of sorted nanos, returned in µs.
fn percentile_us(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1e3
}

fn mean_us(v: &[u64]) -> f64 {
    v.iter().sum::<u64>() as f64 / v.len().max(1) as f64 / 1e3
}

fn spin_label(spin: Duration) -> String {
    format!("{} us", spin.as_micros())
}

// ---------------------------------------------------------------------------
// 1. One-way throughput
// ---------------------------------------------------------------------------

struct Throughput {
    msgs_per_sec: f64,
    tx_cpu: Option<f64>,
    rx_cpu: Option<f64>,
}

fn throughput<Q: Queue>(n: u64, capacity: usize, spin: Duration) -> Throughput {
    let (txh, rxh) = Q::pair(capacity);
    let start = Arc::new(Barrier::new(2));
    let start_rx = start.clone();
    let ((t0, tx_cpu), (t_end, got, rx_cpu)) = run_pair(
        spin,
        move || async move {
            let tx = Q::connect_tx(txh).await;
            start.wait(); // both sides connected; blocking here is fine
            let cpu = CpuMeter::start();
            let t0 = Instant::now();
            for i in 0..n {
                if !send(&tx, Msg::new(i)).await {
                    break;
                }
            }
            (t0, cpu.percent())
        },
        move || async move {
            let rx = Q::connect_rx(rxh).await;
            start_rx.wait();
            let cpu = CpuMeter::start();
            let mut got = 0u64;
            while got < n {
                match rx.take().await {
                    Some(m) if m.is_valid(got) => got += 1,
                    Some(m) => panic!("{}: out of order: {m:?} at {got}", Q::NAME),
                    None => break,
                }
            }
            (Instant::now(), got, cpu.percent())
        },
    );
    assert_eq!(got, n, "{}: lost messages", Q::NAME);
    let secs = t_end.saturating_duration_since(t0).as_secs_f64();
    Throughput {
        msgs_per_sec: n as f64 / secs,
        tx_cpu,
        rx_cpu,
    }
}

// ---------------------------------------------------------------------------
// 2. Round trip (ping-pong, one message in flight)
// ---------------------------------------------------------------------------

struct RoundTrip {
    sorted_ns: Vec<u64>,
    ping_cpu: Option<f64>,
    pong_cpu: Option<f64>,
}

fn round_trip<Q: Queue>(warmup: u64, samples: u64, spin: Duration) -> RoundTrip {
    let (ping_tx, ping_rx) = Q::pair(1024);
    let (pong_tx, pong_rx) = Q::pair(1024);
    let start = Arc::new(Barrier::new(2));
    let start_b = start.clone();
    let ((mut ns, ping_cpu), pong_cpu) = run_pair(
        spin,
        move || async move {
            // Connect in the same order as the other side (ping, then pong):
            // glommio's connect waits for the peer half.
            let tx = Q::connect_tx(ping_tx).await;
            let rx = Q::connect_rx(pong_rx).await;
            start.wait();
            let cpu = CpuMeter::start();
            let mut ns = Vec::with_capacity(samples as usize);
            for i in 0..warmup + samples {
                let t = Instant::now();
                assert!(send(&tx, Msg::new(i)).await, "{}: ponger gone", Q::NAME);
                match rx.take().await {
                    Some(m) if m.is_valid(i) => {}
                    other => panic!("{}: bad pong {other:?} for {i}", Q::NAME),
                }
                if i >= warmup {
                    ns.push(t.elapsed().as_nanos() as u64);
                }
            }
            let p = cpu.percent();
            drop(tx); // closes ping: the ponger's receive returns None
            (ns, p)
        },
        move || async move {
            let rx = Q::connect_rx(ping_rx).await;
            let tx = Q::connect_tx(pong_tx).await;
            start_b.wait();
            let cpu = CpuMeter::start();
            while let Some(m) = rx.take().await {
                if !send(&tx, m).await {
                    break;
                }
            }
            cpu.percent()
        },
    );
    ns.sort_unstable();
    RoundTrip {
        sorted_ns: ns,
        ping_cpu,
        pong_cpu,
    }
}

// ---------------------------------------------------------------------------
// 3. Bursts: one producer, 256-message bursts, consumer drains greedily
// ---------------------------------------------------------------------------

struct Bursts {
    /// First send of a burst to the consumer receiving its last message.
    sorted_total_ns: Vec<u64>,
    /// Time the producer spent enqueueing one burst.
    sorted_enqueue_ns: Vec<u64>,
    prod_cpu: Option<f64>,
    cons_cpu: Option<f64>,
}

/// After each burst the consumer acks with the instant (ns since `base`) it
/// received the burst's last message; the producer waits for the ack, then
/// idles for `gap` before the next burst. The ack's own latency is excluded.
fn bursts<Q: Queue>(
    warmup: u64,
    count: u64,
    len: u64,
    capacity: usize,
    spin: Duration,
    gap: Duration,
) -> Bursts {
    let (data_tx, data_rx) = Q::pair(capacity);
    let (ack_tx, ack_rx) = Q::pair(16);
    let base = Instant::now();
    let start = Arc::new(Barrier::new(2));
    let start_b = start.clone();
    let ((mut total, mut enqueue, prod_cpu), cons_cpu) = run_pair(
        spin,
        move || async move {
            let tx = Q::connect_tx(data_tx).await;
            let acks = Q::connect_rx(ack_rx).await;
            start.wait();
            let cpu = CpuMeter::start();
            let mut total = Vec::with_capacity(count as usize);
            let mut enqueue = Vec::with_capacity(count as usize);
            let mut seq = 0u64;
            for burst in 0..warmup + count {
                if !gap.is_zero() {
                    glommio::timer::sleep(gap).await;
                }
                let t0 = Instant::now();
                for _ in 0..len {
                    assert!(send(&tx, Msg::new(seq)).await, "{}: consumer gone", Q::NAME);
                    seq += 1;
                }
                let t_sent = Instant::now();
                let ack = acks.take().await.expect("consumer closed the ack queue");
                assert_eq!(ack.a, burst, "{}: ack out of order", Q::NAME);
                let t_done = base + Duration::from_nanos(ack.b);
                if burst >= warmup {
                    total.push(t_done.saturating_duration_since(t0).as_nanos() as u64);
                    enqueue.push((t_sent - t0).as_nanos() as u64);
                }
            }
            (total, enqueue, cpu.percent())
        },
        move || async move {
            let rx = Q::connect_rx(data_rx).await;
            let acks = Q::connect_tx(ack_tx).await;
            start_b.wait();
            let cpu = CpuMeter::start();
            let (mut seq, mut burst, mut left) = (0u64, 0u64, len);
            while let Some(m) = rx.take().await {
                assert!(m.is_valid(seq), "{}: out of order at {seq}", Q::NAME);
                seq += 1;
                left -= 1;
                if left == 0 {
                    let done = base.elapsed().as_nanos() as u64;
                    let ack = Msg {
                        a: burst,
                        b: done,
                        c: 0,
                        d: 0,
                    };
                    if !send(&acks, ack).await {
                        break;
                    }
                    burst += 1;
                    left = len;
                }
            }
            cpu.percent()
        },
    );
    total.sort_unstable();
    enqueue.sort_unstable();
    Bursts {
        sorted_total_ns: total,
        sorted_enqueue_ns: enqueue,
        prod_cpu,
        cons_cpu,
    }
}

// ---------------------------------------------------------------------------
// Driver and report
// ---------------------------------------------------------------------------

struct Config {
    full: bool,
    /// Section names given on the command line; empty runs all.
    sections: Vec<String>,
    tp_msgs: u64,
    tp_spins: &'static [u64],
    capacity: usize,
    rtt_warmup: u64,
    rtt_samples: u64,
    rtt_spins: Vec<u64>,
    burst_warmup: u64,
    bursts: u64,
    burst_len: u64,
}

/// `MESH_RTT_SPINS=0,50` overrides the round-trip spin settings (in µs).
fn spins_env() -> Option<Vec<u64>> {
    let v = std::env::var("MESH_RTT_SPINS").ok()?;
    let spins: Vec<u64> = v.split(',').filter_map(|s| s.trim().parse().ok()).collect();
    (!spins.is_empty()).then_some(spins)
}

impl Config {
    fn from_args() -> Self {
        // `cargo bench` passes --bench; `cargo test --benches` does not.
        let full = std::env::args().any(|a| a == "--bench");
        let sections = std::env::args()
            .skip(1)
            .filter(|a| !a.starts_with('-'))
            .collect();
        if full {
            Config {
                full,
                sections,
                tp_msgs: 5_000_000,
                tp_spins: &[0, 50],
                capacity: 1024,
                rtt_warmup: 2_000,
                rtt_samples: 20_000,
                rtt_spins: spins_env().unwrap_or_else(|| vec![0, 10, 50, 200]),
                burst_warmup: 50,
                bursts: 1_000,
                burst_len: 256,
            }
        } else {
            Config {
                full,
                sections,
                tp_msgs: 20_000,
                tp_spins: &[0],
                capacity: 1024,
                rtt_warmup: 20,
                rtt_samples: 200,
                rtt_spins: spins_env().unwrap_or_else(|| vec![0, 50]),
                burst_warmup: 2,
                bursts: 20,
                burst_len: 256,
            }
        }
    }
}

fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn machine() -> String {
    let nproc = thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "?".into(), |s| s.trim().to_string());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    format!("nproc {nproc} | uname -r {kernel} | cpu {cpu}")
}

/// Whole-machine CPU accounting from /proc/stat and this process's share
/// from /proc/self/stat, both in clock ticks: says how noisy a run was.
#[derive(Clone, Copy)]
struct MachineTicks {
    busy: u64,
    total: u64,
    steal: u64,
    own: u64,
}

impl MachineTicks {
    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let f: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest is in user).
        let (idle, iowait, steal) = (*f.get(3)?, *f.get(4)?, *f.get(7)?);
        let total: u64 = f.iter().take(8).sum();
        let own_stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // utime and stime are fields 14 and 15 (1-based); after the
        // parenthesised command name the list starts at field 3 (state).
        let rest: Vec<&str> = own_stat.rsplit_once(')')?.1.split_whitespace().collect();
        let field = |n: usize| rest.get(n - 3)?.parse::<u64>().ok();
        let own = field(14)? + field(15)?;
        Some(MachineTicks {
            busy: total - idle - iowait,
            total,
            steal,
            own,
        })
    }

    fn summary(start: Option<Self>) -> String {
        let (Some(a), Some(b)) = (start, Self::read()) else {
            return "n/a".into();
        };
        let total = (b.total - a.total).max(1) as f64;
        let busy = (b.busy - a.busy) as f64;
        let own = (b.own - a.own) as f64;
        let steal = (b.steal - a.steal) as f64;
        format!(
            "all cores busy {:.0}%: this benchmark {:.0}%, other processes {:.0}%, steal {:.0}%",
            100.0 * busy / total,
            100.0 * own / total,
            (100.0 * (busy - own - steal) / total).max(0.0),
            100.0 * steal / total,
        )
    }
}

fn report_throughput<Q: Queue>(cfg: &Config) {
    for &spin_us in cfg.tp_spins {
        let spin = Duration::from_micros(spin_us);
        let r = throughput::<Q>(cfg.tp_msgs, cfg.capacity, spin);
        println!(
            "{:<28} {:>8} {:>10.2} {:>8.1} {:>7} {:>7}",
            Q::NAME,
            spin_label(spin),
            r.msgs_per_sec / 1e6,
            1e9 / r.msgs_per_sec,
            pct(r.tx_cpu),
            pct(r.rx_cpu),
        );
    }
}

fn report_round_trip<Q: Queue>(cfg: &Config) {
    report_round_trip_spins::<Q>(cfg, &cfg.rtt_spins);
}

fn report_round_trip_spins<Q: Queue>(cfg: &Config, spins: &[u64]) {
    for &spin_us in spins {
        let spin = Duration::from_micros(spin_us);
        let r = round_trip::<Q>(cfg.rtt_warmup, cfg.rtt_samples, spin);
        let s = &r.sorted_ns;
        println!(
            "{:<28} {:>8} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>7} {:>7}",
            Q::NAME,
            spin_label(spin),
            percentile_us(s, 50.0),
            percentile_us(s, 99.0),
            percentile_us(s, 99.9),
            mean_us(s),
            pct(r.ping_cpu),
            pct(r.pong_cpu),
        );
    }
}

fn report_bursts<Q: Queue>(cfg: &Config) {
    let cases = [
        (0u64, 0u64, "none"),
        (50, 0, "none"),
        (0, 1_000, "1 ms"),
        (50, 1_000, "1 ms"),
    ];
    for (spin_us, gap_us, gap_label) in cases {
        let spin = Duration::from_micros(spin_us);
        let gap = Duration::from_micros(gap_us);
        let r = bursts::<Q>(
            cfg.burst_warmup,
            cfg.bursts,
            cfg.burst_len,
            cfg.capacity,
            spin,
            gap,
        );
        let t = &r.sorted_total_ns;
        println!(
            "{:<28} {:>8} {:>5} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.0} {:>7} {:>7}",
            Q::NAME,
            spin_label(spin),
            gap_label,
            percentile_us(t, 50.0),
            percentile_us(t, 99.0),
            mean_us(t),
            percentile_us(&r.sorted_enqueue_ns, 50.0),
            percentile_us(t, 50.0) * 1e3 / cfg.burst_len as f64,
            pct(r.prod_cpu),
            pct(r.cons_cpu),
        );
    }
}

fn section_throughput(cfg: &Config) {
    println!();
    println!(
        "1) one-way throughput: {} messages, core 0 -> core 1",
        cfg.tp_msgs
    );
    println!(
        "{:<28} {:>8} {:>10} {:>8} {:>7} {:>7}",
        "queue", "spin", "M msg/s", "ns/msg", "tx CPU", "rx CPU"
    );
    report_throughput::<GlommioShared>(cfg);
    report_throughput::<Flume>(cfg);
    report_throughput::<CrossbeamArray>(cfg);
}

fn section_round_trip(cfg: &Config) {
    println!();
    println!(
        "2) round trip, one message in flight: {} samples after {} warm-up (us)",
        cfg.rtt_samples, cfg.rtt_warmup
    );
    println!(
        "{:<28} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7}",
        "queue", "spin", "p50", "p99", "p99.9", "mean", "ping CPU", "pong CPU"
    );
    report_round_trip::<GlommioShared>(cfg);
    report_round_trip::<Flume>(cfg);
    report_round_trip::<CrossbeamArray>(cfg);
    report_round_trip_spins::<CrossbeamBusyPoll>(cfg, &[0]);
}

fn section_bursts(cfg: &Config) {
    println!();
    println!(
        "3) bursts: {} bursts of {} messages (after {} warm-up); the consumer drains greedily and \
         acks each burst; the next burst starts after the ack plus the gap",
        cfg.bursts, cfg.burst_len, cfg.burst_warmup
    );
    println!(
        "   burst = first send -> consumer has the last message (us); enq = producer time to \
         enqueue one burst; ns/msg = p50 / {}",
        cfg.burst_len
    );
    println!(
        "{:<28} {:>8} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7}",
        "queue", "spin", "gap", "p50", "p99", "mean", "enq p50", "ns/msg", "prd CPU", "con CPU"
    );
    report_bursts::<GlommioShared>(cfg);
    report_bursts::<Flume>(cfg);
    report_bursts::<CrossbeamArray>(cfg);
}

/// A report section: its name (for the command-line filter) and its runner.
type Section = (&'static str, fn(&Config));

fn main() {
    let cfg = Config::from_args();
    let began = Instant::now();
    let ticks = MachineTicks::read();

    // Watchdog: if anything hangs, say so and exit non-zero instead of
    // hanging the caller. Joined at the end like every other thread.
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let watchdog = thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(Duration::from_secs(600))
        {
            eprintln!("mesh: benchmark hung for 600 s; aborting");
            std::process::exit(2);
        }
    });

    println!("Transponder mesh benchmark: cross-core message path (glommio 0.9)");
    println!("date  {}", utc_now());
    println!("host  {}", machine());
    println!(
        "setup executors pinned on cores 0 and 1 (io_memory 64 KiB, ring_depth 128); \
         message {} B; queue capacity {}; mode {}",
        std::mem::size_of::<Msg>(),
        cfg.capacity,
        if cfg.full {
            "full (cargo bench)"
        } else {
            "smoke (run with --bench for full sizes)"
        }
    );
    println!(
        "      spin = spin_before_park on both executors; \
         CPU = that side's thread CPU time / its wall time"
    );

    // Optional section filter: `cargo bench --bench mesh -- rtt bursts`.
    let sections: [Section; 3] = [
        ("throughput", section_throughput),
        ("rtt", section_round_trip),
        ("bursts", section_bursts),
    ];
    for (name, run) in sections {
        if cfg.sections.is_empty() || cfg.sections.iter().any(|s| name.starts_with(s.as_str())) {
            run(&cfg);
        }
    }

    println!();
    println!("total {:.1} s", began.elapsed().as_secs_f64());
    println!("load  {}", MachineTicks::summary(ticks));
    let _ = done_tx.send(());
    watchdog.join().expect("watchdog thread panicked");
}
