//! One websocket connection: the opening handshake and ticket check,
//! admission (ticket claim and channel list from the user's home shard,
//! subscriptions at the channel servers, then `hello`), the read loop, and
//! the close sequence.
//!
//! Memory: an idle connection holds this struct, its socket, and one task
//! waiting for readability. Reads go through a per-shard scratch buffer;
//! only the bytes of an unfinished frame are kept per connection.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::codes;
use super::frame::{self, ClientFrame, FrameReader};
use super::handshake::{self, ParseOutcome};
use super::outbound::{Flushed, Outbound};
use crate::ids::Id;
use crate::limits;
use crate::shard::message::{ConnId, Msg, Refusal, Snapshot};
use crate::shard::Shard;
use crate::ticket::{unix_secs_now, TicketError};
use crate::ts::Ts;

/// How long a closing connection may take to flush its close frame and
/// hear the client's before the socket is dropped anyway.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

thread_local! {
    /// Every socket read on this shard lands here first.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; limits::READ_SCRATCH_BYTES].into_boxed_slice());
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Subscriptions in flight; frames wait behind the coming `hello`.
    Opening,
    Open,
    /// A close frame is queued; waiting for it to leave and the client to go.
    Closing,
    /// Done: the reader tears the connection down.
    Closed,
}

/// Owned by its shard; never crosses cores.
pub struct Conn {
    pub id: ConnId,
    pub user: Id,
    pub team: Id,
    pub is_bot: bool,
    pub batch_presence: bool,
    fd: RawFd,
    stream: RefCell<TcpStream>,
    pub out: RefCell<Outbound>,
    pub state: Cell<State>,
    /// Queued on the shard's dirty list since the last flush.
    pub dirty: Cell<bool>,
    /// Channels this connection is in the local index of.
    pub channels: RefCell<Vec<Id>>,
    /// Users whose presence this connection watches (presence_sub).
    pub watching: RefCell<Vec<Id>>,
    /// Channels whose history could not cover the resume.
    pub resync: RefCell<Vec<Id>>,
    pending_acks: Cell<u32>,
    /// The client's close frame arrived: once ours is out, we are done.
    peer_closed: Cell<bool>,
    reader: Cell<Option<Waker>>,
    /// Token bucket for client messages: tokens left and last refill.
    tokens: Cell<u32>,
    refilled: Cell<Instant>,
    refusals: Cell<u32>,
}

fn hello_frame() -> Bytes {
    frame::encode_text(br#"{"type":"hello"}"#)
}

fn goodbye_frame() -> Bytes {
    frame::encode_text(br#"{"type":"goodbye"}"#)
}

impl Conn {
    /// Acknowledgements arrived for `channels` of the connection's
    /// subscriptions; true when that was the last of them. Counted in
    /// channels, not messages: a subscription split on its way (a new
    /// placement) comes back in several acknowledgements.
    pub fn acks_arrived(&self, channels: u32) -> bool {
        let left = self.pending_acks.get();
        debug_assert!(channels <= left, "more acknowledged than subscribed");
        self.pending_acks.set(left.saturating_sub(channels));
        left > 0 && channels >= left && self.state.get() == State::Opening
    }

    /// Puts `hello` (and `resync_required`, if any) first, right after the
    /// handshake's 101, and lets the queued frames go.
    pub fn open(&self) {
        self.state.set(State::Open);
        let mut out = self.out.borrow_mut();
        let resync = std::mem::take(&mut *self.resync.borrow_mut());
        if !resync.is_empty() {
            let v = serde_json::json!({"type": "resync_required", "channels": resync});
            out.push_front(frame::encode_text(&serde_json::to_vec(&v).expect("json")));
        }
        out.push_front(hello_frame());
        out.open = true;
    }

    /// Writes what is queued; if the socket is full, a flusher task waits
    /// for room and carries on.
    pub fn flush(self: &Rc<Self>) {
        if self.state.get() == State::Closed {
            return;
        }
        let mut out = self.out.borrow_mut();
        if !out.open || out.flushing || out.is_empty() {
            return;
        }
        match out.write_to(self.fd) {
            Ok(Flushed::All) => {
                if out.closing {
                    drop(out);
                    self.close_frame_sent();
                }
            }
            Ok(Flushed::Blocked) => {
                out.flushing = true;
                // glommio may poll a new task right away: release the queue
                // first.
                drop(out);
                glommio::spawn_local(flusher(self.clone())).detach();
            }
            Err(_) => {
                drop(out);
                self.set_closed();
            }
        }
    }

    /// Starts the close sequence with `code`. With `drop_queued`, frames not
    /// yet started are discarded (slow consumer, protocol error).
    pub fn begin_close(self: &Rc<Self>, code: u16, reason: &str, drop_queued: bool) {
        if matches!(self.state.get(), State::Closing | State::Closed) {
            return;
        }
        self.state.set(State::Closing);
        {
            let mut out = self.out.borrow_mut();
            let close = frame::encode_close(code, reason);
            if drop_queued {
                out.replace_with_close(close);
            } else {
                let _ = out.push(close, usize::MAX);
                out.closing = true;
            }
            out.open = true;
        }
        self.flush();
        let conn = self.clone();
        glommio::spawn_local(async move {
            glommio::timer::sleep(CLOSE_GRACE).await;
            conn.set_closed();
        })
        .detach();
        self.wake_reader();
    }

    /// `goodbye`, then close with `code` (drain, shutdown).
    pub fn say_goodbye(self: &Rc<Self>, code: u16) {
        self.say_goodbye_with(code, goodbye_frame());
    }

    /// `goodbye` (this one: a region drain's names where to reconnect),
    /// then close with `code`. What was queued before leaves first.
    pub fn say_goodbye_with(self: &Rc<Self>, code: u16, goodbye: Bytes) {
        if matches!(self.state.get(), State::Closing | State::Closed) {
            return;
        }
        let _ = self.out.borrow_mut().push(goodbye, usize::MAX);
        self.begin_close(code, "goodbye", false);
    }

    /// Not yet saying goodbye or closing.
    pub fn is_open(&self) -> bool {
        matches!(self.state.get(), State::Opening | State::Open)
    }

    /// Our close frame has left. If the client's has arrived, the closing
    /// handshake is complete and the server closes first (RFC 6455 7.1.1);
    /// otherwise half-close, so the client sees nothing more will come, and
    /// wait for its close frame (bounded by the grace timer).
    fn close_frame_sent(&self) {
        if self.peer_closed.get() {
            self.set_closed();
        } else {
            // SAFETY: plain syscall on our own socket.
            unsafe { libc::shutdown(self.fd, libc::SHUT_WR) };
        }
    }

    fn set_closed(&self) {
        self.state.set(State::Closed);
        self.wake_reader();
    }

    fn wake_reader(&self) {
        if let Some(w) = self.reader.take() {
            w.wake();
        }
    }

    /// Queues one frame for this connection and writes it now.
    pub fn send_now(self: &Rc<Self>, shard: &Shard, payload: &[u8]) {
        super::enqueue(
            shard,
            &super::this_shard().borrow(),
            self,
            frame::encode_text(payload),
        );
        self.flush();
    }

    /// Takes one token for a client message. `Err(true)` means the client
    /// has been refused so often that it must go.
    fn take_token(&self, per_sec: u32, burst: u32) -> Result<(), bool> {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled.get());
        let earned = (elapsed.as_micros() as u64 * u64::from(per_sec) / 1_000_000) as u32;
        if earned > 0 {
            self.tokens
                .set(self.tokens.get().saturating_add(earned).min(burst));
            self.refilled.set(now);
        }
        if self.tokens.get() > 0 {
            self.tokens.set(self.tokens.get() - 1);
            return Ok(());
        }
        self.refusals.set(self.refusals.get() + 1);
        Err(self.refusals.get() > limits::CLIENT_REFUSALS_MAX)
    }
}

/// Waits for the socket to take more, until the queue is empty.
async fn flusher(conn: Rc<Conn>) {
    loop {
        let wrote = poll_fn(|cx| {
            if conn.state.get() == State::Closed {
                return Poll::Ready(Err(io::Error::from(io::ErrorKind::NotConnected)));
            }
            let out = conn.out.borrow();
            let Some(front) = out.front() else {
                return Poll::Ready(Ok(0));
            };
            let mut stream = conn.stream.borrow_mut();
            futures_lite::AsyncWrite::poll_write(Pin::new(&mut *stream), cx, front)
        })
        .await;
        let mut out = conn.out.borrow_mut();
        match wrote {
            Ok(n) => out.consume(n),
            Err(_) => {
                out.flushing = false;
                drop(out);
                conn.set_closed();
                return;
            }
        }
        match out.write_to(conn.fd) {
            Ok(Flushed::Blocked) => continue,
            Ok(Flushed::All) => {
                out.flushing = false;
                if out.closing {
                    drop(out);
                    conn.close_frame_sent();
                }
                return;
            }
            Err(_) => {
                out.flushing = false;
                drop(out);
                conn.set_closed();
                return;
            }
        }
    }
}

/// What the opening handshake found.
struct Upgrade {
    ticket: String,
    since: Option<Ts>,
    batch_presence: bool,
    key: String,
    /// A publish stream (`GET /publish`) and the bearer token it gave.
    publisher: Option<String>,
    /// Bytes the client sent after its request (already websocket frames).
    leftover: Vec<u8>,
}

pub(super) async fn write_and_close(stream: &mut TcpStream, bytes: &[u8]) {
    let _ = stream.write_all(bytes).await;
    let _ = stream.flush().await;
    let _ = stream.close().await;
}

/// Reads and checks the upgrade request from `source`; answers HTTP errors
/// itself.
async fn read_upgrade(stream: &mut TcpStream, source: Option<IpAddr>) -> Option<Upgrade> {
    // Charged to the shard's unauthenticated budget while the request is
    // read; past the budget the answer is 503 before any read.
    let mut buf = match handshake::RequestBuffer::new(source) {
        Ok(buf) => buf,
        Err(busy) => {
            write_and_close(stream, &busy.response()).await;
            return None;
        }
    };
    let mut chunk = [0u8; limits::HANDSHAKE_READ_BYTES];
    let (request, consumed) = loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => n,
        };
        let parsed = buf
            .extend(&chunk[..n])
            .and_then(|()| handshake::parse_upgrade(&buf));
        match parsed {
            Ok(ParseOutcome::Partial) => continue,
            Ok(ParseOutcome::Complete { request, consumed }) => break (request, consumed),
            Err(e) => {
                write_and_close(stream, &e.response()).await;
                return None;
            }
        }
    };
    if request.path == "/publish" {
        return Some(Upgrade {
            ticket: String::new(),
            since: None,
            batch_presence: false,
            key: request.key,
            publisher: Some(request.bearer.unwrap_or_default()),
            leftover: buf[consumed..].to_vec(),
        });
    }
    let Some(ticket) = request
        .path
        .strip_prefix("/websocket/")
        .filter(|t| !t.is_empty() && !t.contains('/'))
    else {
        let body = r#"{"ok":false,"error":"not_found"}"#;
        write_and_close(stream, &handshake::error_response(404, "Not Found", body)).await;
        return None;
    };
    let since = match handshake::query_param(&request.query, "since") {
        None => None,
        Some(s) => match Ts::parse(&s) {
            Some(ts) => Some(ts),
            None => {
                let body = r#"{"ok":false,"error":"invalid_since"}"#;
                write_and_close(stream, &handshake::error_response(400, "Bad Request", body)).await;
                return None;
            }
        },
    };
    let batch_presence = handshake::query_param(&request.query, "batch_presence_aware")
        .is_some_and(|v| v == "1" || v == "true");
    Some(Upgrade {
        ticket: ticket.to_string(),
        since,
        batch_presence,
        key: request.key,
        publisher: None,
        leftover: buf[consumed..].to_vec(),
    })
}

/// Completes the upgrade only to say why the client may not stay: error 1,
/// then close with `code`.
pub(super) async fn refuse(mut stream: TcpStream, key: &str, code: u16, why: &str) {
    let mut bytes = handshake::accept_response(key);
    bytes.extend_from_slice(&frame::encode_text(&codes::ERR_URL_EXPIRED.payload(None)));
    bytes.extend_from_slice(&frame::encode_close(code, why));
    write_and_close(&mut stream, &bytes).await;
}

/// Serves one accepted socket, from the peer address `source`, from
/// handshake to close.
pub async fn run(shard: Rc<Shard>, stream: TcpStream, source: Option<IpAddr>) {
    // Admission is boxed and freed before the read loop, so an idle
    // connection's task holds only the read loop's small state.
    let Some((conn, since, leftover, channels)) = Box::pin(admit(&shard, stream, source)).await
    else {
        return;
    };
    subscribe_all(&shard, &conn, channels, since);
    read_loop(&shard, &conn, leftover).await;
    teardown(&shard, &conn);
}

/// Handshake, ticket, home-shard admission; registers the connection.
async fn admit(
    shard: &Rc<Shard>,
    mut stream: TcpStream,
    source: Option<IpAddr>,
) -> Option<(Rc<Conn>, Option<Ts>, Vec<u8>, Vec<Id>)> {
    // Nagle is off already: the socket inherited TCP_NODELAY from its
    // listener (`node::listeners`).
    let upgrade = match glommio::timer::timeout(limits::HANDSHAKE_TIMEOUT, async {
        Ok(read_upgrade(&mut stream, source).await)
    })
    .await
    {
        Ok(Some(u)) => u,
        Ok(None) => return None,
        Err(_) => {
            let body = r#"{"ok":false,"error":"handshake_timeout"}"#;
            write_and_close(
                &mut stream,
                &handshake::error_response(408, "Request Timeout", body),
            )
            .await;
            return None;
        }
    };
    if super::this_shard().borrow().draining() {
        refuse(stream, &upgrade.key, codes::CLOSE_DRAIN, "draining").await;
        return None;
    }
    if let Some(token) = &upgrade.publisher {
        super::publisher::serve(shard, stream, &upgrade.key, token, upgrade.leftover).await;
        return None;
    }
    let ticket = match shard
        .node
        .ticket_key
        .verify(&upgrade.ticket, unix_secs_now())
    {
        Ok(t) => t,
        Err(e) => {
            let why = match e {
                TicketError::Expired => "ticket expired",
                TicketError::Malformed | TicketError::BadSignature => "invalid ticket",
            };
            refuse(stream, &upgrade.key, codes::CLOSE_AUTH_FAILED, why).await;
            return None;
        }
    };
    // This node's region drains: the client goes where the drain sends it
    // (a backend's publish stream above stays).
    if crate::cluster::region::draining() {
        super::region_drain::refuse(shard, stream, &upgrade.key, &ticket, upgrade.since).await;
        return None;
    }
    // From here until the connection is registered, joins of the user that
    // the home announces are kept for it (see `Gateway::begin_admission`).
    super::this_shard()
        .borrow_mut()
        .begin_admission(ticket.user);
    let opened = shard
        .call_owner(ticket.user, |reply| Msg::ConnOpen {
            reply,
            user: ticket.user,
            nonce: ticket.nonce,
            expires_unix_secs: ticket.expires_unix_secs,
        })
        .await;
    let opened = match opened {
        Ok(Ok(o)) => o,
        Ok(Err(refusal)) => {
            super::this_shard().borrow_mut().end_admission(ticket.user);
            let why = match refusal {
                Refusal::TicketReused => "ticket already used",
                _ => "unknown user",
            };
            refuse(stream, &upgrade.key, codes::CLOSE_AUTH_FAILED, why).await;
            return None;
        }
        Err(_) => {
            // The home shard did not answer in time. It may still count the
            // connection later; the close below tells it to let go then.
            super::this_shard().borrow_mut().end_admission(ticket.user);
            shard.send_owner(ticket.user, Msg::ConnClosed { user: ticket.user });
            let mut bytes = handshake::accept_response(&upgrade.key);
            bytes.extend_from_slice(&frame::encode_close(codes::CLOSE_INTERNAL_ERROR, "busy"));
            write_and_close(&mut stream, &bytes).await;
            return None;
        }
    };
    // Admitted: register, subscribe, and read until the end. The 101 waits
    // in the queue and leaves with `hello` (see `Outbound::with_preamble`);
    // a client may not send frames before it anyway (RFC 6455 §4.1).
    let config = &shard.node.config;
    let id = super::this_shard().borrow_mut().allocate();
    let conn = Rc::new(Conn {
        id,
        user: ticket.user,
        team: opened.team,
        is_bot: opened.is_bot,
        batch_presence: upgrade.batch_presence,
        fd: stream.as_raw_fd(),
        stream: RefCell::new(stream),
        out: RefCell::new(Outbound::with_preamble(Bytes::from(
            handshake::accept_response(&upgrade.key),
        ))),
        state: Cell::new(State::Opening),
        dirty: Cell::new(false),
        channels: RefCell::new(Vec::new()),
        watching: RefCell::new(Vec::new()),
        resync: RefCell::new(Vec::new()),
        pending_acks: Cell::new(0),
        peer_closed: Cell::new(false),
        reader: Cell::new(None),
        tokens: Cell::new(config.client_msgs_burst),
        refilled: Cell::new(Instant::now()),
        refusals: Cell::new(0),
    });
    // Registered and its list completed in one step, with no await between:
    // a join announced after this finds the connection registered.
    let mut channels = opened.channels;
    let mut gw = super::this_shard().borrow_mut();
    for joined in gw.end_admission(conn.user) {
        if !channels.contains(&joined) {
            channels.push(joined);
        }
    }
    gw.insert(conn.clone());
    drop(gw);
    Some((conn, upgrade.since, upgrade.leftover, channels))
}

/// Subscribes a new connection to its user's conversations, its own user
/// channel and its team channel: one message per owner (a channel server
/// of this node, or of another node through the local shard that relays
/// it), sent to the shard of this node that serves those channels.
fn subscribe_all(shard: &Rc<Shard>, conn: &Rc<Conn>, mut channels: Vec<Id>, since: Option<Ts>) {
    channels.push(conn.user);
    channels.push(conn.team);
    conn.pending_acks.set(channels.len() as u32);
    let groups = shard.group_by_owner_addr(channels);
    for (_, chans) in groups {
        super::this_shard().borrow_mut().add_pending(&chans);
        shard.send(
            shard.owner(chans[0]),
            Msg::Subscribe {
                user: conn.user,
                conns: vec![conn.id],
                channels: chans,
                since,
                notify: None,
                relay_tag: None,
                resync: false,
            },
        );
    }
}

enum ReadOutcome {
    Frames(Vec<ClientFrame>, Option<frame::FrameError>),
    Eof,
    Closed,
}

/// Reads through the shard's scratch buffer, decoding frames as they come.
async fn read_frames(conn: &Conn, reader: &mut FrameReader, failed: bool) -> ReadOutcome {
    poll_fn(|cx| {
        if conn.state.get() == State::Closed {
            return Poll::Ready(ReadOutcome::Closed);
        }
        conn.reader.set(Some(cx.waker().clone()));
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let mut stream = conn.stream.borrow_mut();
            match Pin::new(&mut *stream).poll_read(cx, &mut scratch[..]) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => Poll::Ready(ReadOutcome::Eof),
                Poll::Ready(Ok(n)) if failed => {
                    let _ = n; // a broken stream: discard until the end
                    Poll::Ready(ReadOutcome::Frames(Vec::new(), None))
                }
                Poll::Ready(Ok(n)) => {
                    let mut frames = Vec::new();
                    let err = reader.feed(&scratch[..n], &mut frames).err();
                    Poll::Ready(ReadOutcome::Frames(frames, err))
                }
            }
        })
    })
    .await
}

async fn read_loop(shard: &Rc<Shard>, conn: &Rc<Conn>, leftover: Vec<u8>) {
    let mut reader = FrameReader::new();
    let mut failed = false;
    let mut first = Some(leftover).filter(|l| !l.is_empty());
    loop {
        let outcome = match first.take() {
            Some(bytes) => {
                let mut frames = Vec::new();
                let err = reader.feed(&bytes, &mut frames).err();
                ReadOutcome::Frames(frames, err)
            }
            None => read_frames(conn, &mut reader, failed).await,
        };
        let (frames, err) = match outcome {
            ReadOutcome::Frames(f, e) => (f, e),
            ReadOutcome::Eof | ReadOutcome::Closed => return,
        };
        for f in frames {
            // Boxed: handling a frame awaits other shards, and that state
            // would otherwise sit in every idle connection's task.
            Box::pin(handle_frame(shard, conn, f)).await;
        }
        if let Some(e) = err {
            failed = true;
            conn.begin_close(e.close_code(), &e.to_string(), true);
        }
    }
}

async fn handle_frame(shard: &Rc<Shard>, conn: &Rc<Conn>, f: ClientFrame) {
    if conn.state.get() == State::Closing || conn.state.get() == State::Closed {
        return; // only the client's close (or EOF) matters now
    }
    match f {
        ClientFrame::Close(code) => {
            let code = code
                .filter(|c| (1000..5000).contains(c))
                .unwrap_or(codes::CLOSE_NORMAL);
            conn.begin_close(code, "", false);
        }
        ClientFrame::Ping(payload) => {
            super::enqueue(
                shard,
                &super::this_shard().borrow(),
                conn,
                frame::encode_pong(&payload),
            );
            conn.flush();
        }
        ClientFrame::Pong => {}
        ClientFrame::Text(payload) => {
            let config = &shard.node.config;
            match conn.take_token(config.client_msgs_per_sec, config.client_msgs_burst) {
                Ok(()) => {}
                Err(false) => {
                    conn.send_now(
                        shard,
                        &codes::ERR_RATE_LIMITED.payload(super::client_msg::reply_id(&payload)),
                    );
                    return;
                }
                Err(true) => {
                    conn.begin_close(codes::CLOSE_RATE_LIMITED, "rate limited", false);
                    return;
                }
            }
            // Backpressure at the edge: while this shard's outboxes are
            // congested, stop taking new work from sockets.
            while shard.mesh.congested() {
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            super::client_msg::handle(shard, conn, &payload).await;
        }
    }
}

/// Removes the connection everywhere and tells the shards that cared.
fn teardown(shard: &Rc<Shard>, conn: &Rc<Conn>) {
    conn.state.set(State::Closed);
    // Wakes a blocked flusher (its socket errors) so it lets go.
    unsafe { libc::shutdown(conn.fd, libc::SHUT_RDWR) };
    let (channels, users) = super::this_shard().borrow_mut().remove(conn);
    for (owner, channels) in shard.group_by_owner(channels) {
        shard.send(owner, Msg::Unsubscribe { channels });
    }
    for (home, users) in shard.group_by_owner_addr(users) {
        shard.send_to(
            home,
            Msg::WatchPresence {
                users,
                watch: false,
                snapshot: Snapshot::Nobody,
            },
        );
    }
    shard.send_owner(conn.user, Msg::ConnClosed { user: conn.user });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_state_is_small() {
        // The budget is 4 KiB per idle connection in all; the struct is the
        // part we control directly (the socket, its poll source and the
        // reader task are the rest).
        let conn = std::mem::size_of::<Conn>();
        let stream = std::mem::size_of::<TcpStream>();
        let reader = std::mem::size_of::<FrameReader>();
        eprintln!("Conn {conn} B, TcpStream {stream} B, FrameReader {reader} B");
        assert!(conn <= 512, "Conn is {conn} bytes");
    }
}
