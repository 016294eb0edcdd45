//! One shard's link to one other node: the frames waiting to go, and the
//! task that connects, writes them in batches and keeps the link alive.
//!
//! Sending never waits: a message is encoded at once into the link's
//! buffer, and the writer takes the whole buffer per write, so everything
//! sent while the previous write was in flight leaves in one `write`
//! (batching per flush, as the gateway's connections do). The buffer is
//! bounded ([`LINK_BUFFER_BYTES_MAX`]): when a node cannot keep up, what
//! is waiting is dropped and the connection is reset, never silently
//! thinned, so the other side sees the link end and its failure handling
//! takes over (relays resubscribe from the last event they delivered;
//! callers time out). When idle the writer sends a heartbeat every
//! [`LINK_HEARTBEAT_INTERVAL`], so the other side can tell a silent node
//! from a dead one.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::future::or;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::frame;
use crate::placement::NodeId;
use crate::shard::notify::Notify;
use crate::ticket::TicketKey;

/// Most bytes one link may have waiting to be written.
pub const LINK_BUFFER_BYTES_MAX: usize = 64 << 20;
/// How often an idle link says it is alive.
pub const LINK_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);
/// How long a link may go without hearing from its peer (or a write may
/// stall) before it is declared dead: ten missed heartbeats. Shorter finds
/// a paused node sooner but takes a node that is merely starved of CPU for
/// a moment (a busy 2-core VM) for dead.
pub const LINK_SILENCE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Waits between connection attempts to an unreachable node.
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Owned by its shard; never crosses cores.
pub struct Outbound {
    pub node: NodeId,
    /// Where the node listens for links (from the cluster's registry).
    pub addr: Cell<Option<SocketAddr>>,
    /// Encoded frames waiting for the writer.
    buf: RefCell<Vec<u8>>,
    wake: Notify,
    /// The writer has a live connection.
    up: Cell<bool>,
    /// Times frames were dropped (buffer full, link failed).
    pub dropped_frames: Cell<u64>,
    /// Messages queued on the link, and bytes written to it (heartbeats
    /// and hellos included), for `/v1/ring` and `/metrics`.
    pub messages_sent: Cell<u64>,
    pub bytes_sent: Cell<u64>,
    /// Frames were dropped: the connection must end so the peer knows.
    reset: Cell<bool>,
    closed: Cell<bool>,
}

impl Outbound {
    pub fn new(node: NodeId, addr: Option<SocketAddr>) -> Rc<Outbound> {
        Rc::new(Outbound {
            node,
            addr: Cell::new(addr),
            buf: RefCell::new(Vec::new()),
            wake: Notify::new(),
            up: Cell::new(false),
            dropped_frames: Cell::new(0),
            messages_sent: Cell::new(0),
            bytes_sent: Cell::new(0),
            reset: Cell::new(false),
            closed: Cell::new(false),
        })
    }

    pub fn is_up(&self) -> bool {
        self.up.get()
    }

    /// Appends frames with `encode` (which writes whole frames to the end
    /// of the buffer). A buffer over its bound is dropped whole and the
    /// connection reset, so the peer knows it missed something.
    pub fn push(&self, encode: impl FnOnce(&mut Vec<u8>)) {
        let mut buf = self.buf.borrow_mut();
        if buf.len() >= LINK_BUFFER_BYTES_MAX {
            buf.clear();
            self.dropped_frames.set(self.dropped_frames.get() + 1);
            self.reset.set(true);
            tracing::warn!(
                node = self.node,
                "link buffer full: dropped, resetting the link"
            );
        }
        encode(&mut buf);
        drop(buf);
        self.wake.notify();
    }

    /// Stops the writer for good (the node left the cluster).
    pub fn close(&self) {
        self.closed.set(true);
        self.wake.notify();
    }

    /// Waits for frames to send, or for the next heartbeat to be due.
    async fn next_batch(&self, spare: &mut Vec<u8>) {
        if self.buf.borrow().is_empty() {
            or(
                self.wake.wait(),
                glommio::timer::sleep(LINK_HEARTBEAT_INTERVAL),
            )
            .await;
        }
        // To the back of the run queue: what is ready now adds to the batch.
        futures_lite::future::yield_now().await;
        spare.clear();
        std::mem::swap(&mut *self.buf.borrow_mut(), spare);
    }
}

/// The writer: connects, says hello, and writes until the link fails;
/// then reconnects with backoff, and calls `restored` once connected again
/// (what the failed connection carried last may be lost). Runs until the
/// link is closed.
pub async fn run(
    link: Rc<Outbound>,
    me: NodeId,
    key: TicketKey,
    epoch: impl Fn() -> u64,
    restored: impl Fn(),
) {
    let mut backoff = RECONNECT_BACKOFF_MIN;
    let mut batch = Vec::new();
    let mut failed_before = false;
    while !link.closed.get() {
        let Some(addr) = link.addr.get() else {
            glommio::timer::sleep(RECONNECT_BACKOFF_MAX).await;
            continue;
        };
        let stream = match TcpStream::connect_timeout(addr, CONNECT_TIMEOUT).await {
            Ok(s) => s,
            Err(e) => {
                // What waits keeps waiting (up to the buffer's bound): the
                // node may be starting, or briefly unreachable; if it is gone,
                // the placement will drop it and its link.
                tracing::debug!(node = link.node, %addr, "link connect failed: {e}");
                glommio::timer::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                continue;
            }
        };
        backoff = RECONNECT_BACKOFF_MIN;
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(LINK_SILENCE_TIMEOUT));
        link.up.set(true);
        tracing::debug!(node = link.node, %addr, "link up");
        if failed_before {
            // Queued now, so it leaves after what waited, on this connection.
            restored();
        }
        write_until_failure(&link, stream, me, &key, &epoch, &mut batch).await;
        failed_before = true;
        link.up.set(false);
        tracing::info!(node = link.node, %addr, "link down");
    }
}

async fn write_until_failure(
    link: &Outbound,
    mut stream: TcpStream,
    me: NodeId,
    key: &TicketKey,
    epoch: &impl Fn() -> u64,
    batch: &mut Vec<u8>,
) {
    let _ = stream.set_read_timeout(Some(LINK_SILENCE_TIMEOUT));
    let Some(nonce) = read_challenge(&mut stream).await else {
        tracing::info!(node = link.node, "no link challenge from the node");
        return;
    };
    let epoch_now = epoch();
    let mut hello = Vec::new();
    frame::encode_hello(
        &mut hello,
        me,
        epoch_now,
        &key.link_hello_mac(&nonce, me, epoch_now),
    );
    if stream.write_all(&hello).await.is_err() {
        return;
    }
    link.bytes_sent
        .set(link.bytes_sent.get() + hello.len() as u64);
    while !link.closed.get() {
        link.next_batch(batch).await;
        if link.reset.replace(false) {
            // What was dropped is gone; the peer must see this connection end.
            return;
        }
        if batch.is_empty() {
            frame::encode_beat(batch, epoch());
        }
        if stream.write_all(batch).await.is_err() {
            link.dropped_frames.set(link.dropped_frames.get() + 1);
            return;
        }
        link.bytes_sent
            .set(link.bytes_sent.get() + batch.len() as u64);
        // Do not keep a huge buffer around after a burst.
        if batch.capacity() > 4 << 20 {
            *batch = Vec::new();
        }
    }
}

/// Reads the accepting node's challenge: the first frame of a link.
async fn read_challenge(stream: &mut TcpStream) -> Option<[u8; 16]> {
    let mut reader = frame::FrameReader::default();
    let mut frames = Vec::new();
    let mut buf = [0u8; frame::HELLO_BYTES_MAX];
    loop {
        let n = stream.read(&mut buf).await.ok().filter(|&n| n > 0)?;
        reader.feed(&buf[..n], &mut frames).ok()?;
        match frames.first() {
            Some(frame::Frame::Challenge { nonce }) => return Some(*nonce),
            Some(_) => return None,
            None if reader.buffered() > frame::HELLO_BYTES_MAX => return None,
            None => {}
        }
    }
}
