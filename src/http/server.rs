//! The per-shard HTTP/1 server: accept loop, connection cap, deadlines and
//! graceful stop, with hyper doing the protocol.
//!
//! # Deadlines
//!
//! hyper's own `header_read_timeout` needs a hyper `rt::Timer`, whose
//! `Sleep` futures must be `Send + Sync`; glommio's timers are `Rc`-based
//! and `!Send`. Beyond that, hyper (1.12, `proto/h1/conn.rs`) starts the
//! header timer as soon as a keep-alive connection goes idle, so the header
//! timeout would also be the idle timeout and a 5 s header limit would close
//! every idle keep-alive connection after 5 s. We therefore leave hyper's
//! timer unset (and its header timeout explicitly off) and enforce the
//! deadlines in an I/O layer under hyper, [`Deadline`], which fails a read
//! that would wait past the current deadline. The service tells it where the
//! connection is ([`ConnClock`]):
//!
//! - new connection: the first request's head must be complete within
//!   `header_timeout` of the accept (a connection that sends nothing is as
//!   much a slowloris as one that sends half a line);
//! - between requests on a keep-alive connection: `idle_timeout` for the
//!   next request's first byte, then `header_timeout` from that byte for the
//!   rest of its head;
//! - while a request is being handled: a read (its body, or hyper's probe
//!   for a closed peer) may wait at most `idle_timeout` without progress.
//!
//! Writes that make no progress for `idle_timeout` fail too (glommio's own
//! per-socket write timeout), so a client that stops reading its responses
//! cannot pin a connection.
//!
//! # Memory before authentication
//!
//! A connection is charged [`limits::HTTP_UNAUTHENTICATED_CONNECTION_BYTES`]
//! (its head buffer, at most [`limits::HTTP_HEAD_BYTES_MAX`]) to the shard's
//! [`budget`] from its accept until the handler marks one of its answers
//! [`budget::Authenticated`]. A connection the budget cannot cover is
//! answered 503 `server_busy` with `Retry-After` before anything is read.
//! So idle slowloris clients pin at most the budget per shard, however
//! many connections they open, while connections that authenticated keep
//! their service.

use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::panic::AssertUnwindSafe;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future::{or, FutureExt};
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::timer::{sleep, Timer};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};

use super::adapter::HyperIo;
use super::budget::{self, Reservation};
use super::json::error;
use super::StopSignal;
use crate::limits;

/// How long to back off after a failed accept. EMFILE/ENFILE leave the
/// connection in the backlog, so the listener stays readable and an
/// immediate retry would spin the core.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// Per-shard HTTP limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// A request head must be complete this long after its first byte
    /// (after the accept, for a connection's first request).
    pub header_timeout: Duration,
    /// A keep-alive connection may sit idle this long between requests; a
    /// read or write may stall this long mid-request.
    pub idle_timeout: Duration,
    /// Connections beyond this many on one shard are accepted and closed at
    /// once.
    pub max_connections_per_shard: usize,
    /// After a stop, in-flight requests get this long to finish.
    pub drain_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            max_connections_per_shard: 10_000,
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// Serves HTTP/1.1 on `listener` until `stop` fires, then stops accepting,
/// lets in-flight requests finish (keep-alive off, so each connection closes
/// after its current response) and returns once every connection is closed
/// or `limits.drain_timeout` has passed, whichever is first.
///
/// `handler` runs on this shard for each request; neither it nor its future
/// needs to be `Send`.
pub async fn serve<H, F>(listener: TcpListener, limits: HttpLimits, handler: H, stop: StopSignal)
where
    H: Fn(Request<Incoming>) -> F + Clone + 'static,
    F: Future<Output = Response<Full<Bytes>>> + 'static,
{
    let live = Rc::new(LiveCount::default());
    let mut accept_warn = WarnLimiter::default();
    let mut reject_warn = WarnLimiter::default();
    let mut busy_warn = WarnLimiter::default();
    let lingering = Rc::new(Cell::new(0usize));
    loop {
        // Stop first: `or` polls its first future first, so a busy listener
        // cannot starve the stop.
        let accepted = or(
            async {
                stop.wait().await;
                None
            },
            async { Some(listener.accept().await) },
        )
        .await;
        let Some(accepted) = accepted else { break };
        match accepted {
            Ok(stream) => {
                if live.get() >= limits.max_connections_per_shard {
                    // Dropping the glommio stream closes the socket. (Dropping
                    // an `AcceptedTcpStream` from `shared_accept` would leak
                    // the fd: it has no `Drop`.)
                    drop(stream);
                    reject_warn.warn(|suppressed| {
                        tracing::warn!(
                            limit = limits.max_connections_per_shard,
                            suppressed,
                            "HTTP connection limit reached; closing new connections"
                        )
                    });
                    continue;
                }
                let guard = live.enter();
                let source = stream.peer_addr().ok().map(|a| a.ip());
                let Some(charge) =
                    budget::try_reserve(source, limits::HTTP_UNAUTHENTICATED_CONNECTION_BYTES)
                else {
                    busy_warn.warn(|suppressed| {
                        tracing::warn!(
                            held_bytes = budget::held_bytes(),
                            suppressed,
                            "unauthenticated budget spent; refusing new HTTP connections with 503"
                        )
                    });
                    let linger = lingering.get() < limits::HTTP_REFUSALS_LINGERING_MAX;
                    let lingering = Rc::clone(&lingering);
                    lingering.set(lingering.get() + usize::from(linger));
                    glommio::spawn_local(async move {
                        refuse(stream, linger).await;
                        lingering.set(lingering.get() - usize::from(linger));
                        drop(guard);
                    })
                    .detach();
                    continue;
                };
                let conn = connection(stream, limits, handler.clone(), stop.clone(), charge);
                glommio::spawn_local(async move {
                    conn.await;
                    drop(guard);
                })
                .detach();
            }
            Err(err) => {
                accept_warn.warn(|suppressed| {
                    tracing::warn!(%err, suppressed, "HTTP accept failed; backing off")
                });
                sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    // Close the listening socket now so new connection attempts are refused
    // instead of waiting in the backlog of a server that will never accept.
    drop(listener);
    // Each connection bounds its own drain by `drain_timeout`; the margin
    // covers the scheduling between its wake-up and ours.
    let margin = Duration::from_millis(100);
    or(live.drained(), sleep(limits.drain_timeout + margin)).await;
}

/// Answers a connection the budget cannot cover, without reading its
/// request: the 503, a FIN, then (if `linger`) a bounded linger that
/// discards what the client sends, because closing a socket with unread
/// input resets it and a client still writing could lose the answer.
async fn refuse(mut stream: TcpStream, linger: bool) {
    if stream.write_all(&budget::busy_bytes()).await.is_err() || !linger {
        return;
    }
    // futures-io close on a glommio socket is shutdown(SHUT_WR): reads go on.
    let _ = stream.close().await;
    let mut sink = [0u8; 1024];
    let discard = async {
        let mut discarded = 0;
        while discarded < limits::HTTP_REFUSAL_LINGER_BYTES_MAX {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => discarded += n,
            }
        }
    };
    or(discard, sleep(limits::HTTP_REFUSAL_LINGER)).await;
}

/// Serves one connection until it closes, fails, times out, or is drained.
/// `charge` is its head buffer's share of the unauthenticated budget, held
/// until one of its requests is answered as authenticated.
async fn connection<H, F>(
    stream: TcpStream,
    limits: HttpLimits,
    handler: H,
    stop: StopSignal,
    charge: Reservation,
) where
    H: Fn(Request<Incoming>) -> F + 'static,
    F: Future<Output = Response<Full<Bytes>>> + 'static,
{
    // glommio's write timeout counts from the first write that could not go
    // out at once and resets on progress: exactly a stall bound.
    if let Err(err) = stream.set_write_timeout(Some(limits.idle_timeout)) {
        tracing::debug!(%err, "set_write_timeout failed");
    }
    // Nagle off: a response is written whole in one send, and Nagle plus the
    // client's delayed ACK could add up to 40 ms whenever a write splits.
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(%err, "TCP_NODELAY failed; closing");
        return;
    }
    let clock = Rc::new(ConnClock::new(limits));
    let io = HyperIo::new(Deadline::new(stream, Rc::clone(&clock)));

    let charge = Rc::new(Cell::new(Some(charge)));
    let svc_clock = Rc::clone(&clock);
    let service = service_fn(move |req: Request<Incoming>| {
        svc_clock.request_started();
        let response = handler(req);
        let clock = Rc::clone(&svc_clock);
        let charge = Rc::clone(&charge);
        async move {
            // glommio runs tasks without `catch_unwind`: a panic would
            // unwind out of the executor and take the whole shard (every
            // connection on this core) down. Contain it to the request.
            let response = match AssertUnwindSafe(response).catch_unwind().await {
                Ok(response) => response,
                Err(_) => {
                    tracing::error!("HTTP handler panicked");
                    error(StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
                }
            };
            if budget::is_authenticated(&response) {
                // A token holder's connection: its next heads are not an
                // anonymous client's memory any more.
                drop(charge.take());
            }
            clock.request_finished();
            Ok::<_, Infallible>(response)
        }
    });
    let mut conn = pin!(http1::Builder::new()
        .keep_alive(true)
        // Off explicitly: a configured timeout without a hyper timer panics,
        // and the 30 s default is silently ignored; we enforce our own.
        .header_read_timeout(None)
        // Also bounds what one body read buffers. hyper's default is
        // ~400 KiB per connection.
        .max_buf_size(limits::HTTP_HEAD_BYTES_MAX)
        // glommio has no vectored send; one flattened buffer, one send.
        .writev(false)
        .serve_connection(io, service));

    let done = or(async { Some(conn.as_mut().await) }, async {
        stop.wait().await;
        None
    })
    .await;
    let result = match done {
        Some(result) => result,
        None if clock.is_idle() => {
            // Nothing in flight (hyper would not close a connection that
            // has not yet sent a request; we can): dropping closes it.
            return;
        }
        None => {
            // Finish the current request, answer it with keep-alive off,
            // then close; give up after the drain timeout.
            conn.as_mut().graceful_shutdown();
            let drained = or(async { Some(conn.as_mut().await) }, async {
                sleep(limits.drain_timeout).await;
                None
            })
            .await;
            match drained {
                Some(result) => result,
                None => {
                    tracing::debug!("HTTP connection still busy after drain timeout; closing");
                    return;
                }
            }
        }
    };
    if let Err(err) = result {
        // Clients vanishing, sending garbage or timing out is routine.
        tracing::debug!(%err, "HTTP connection ended with an error");
    }
}

/// Where a connection is, as far as deadlines go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the first byte of a request head.
    Idle,
    /// Part of a request head has arrived.
    Head,
    /// A request is being handled (its body read, its answer computed).
    Busy,
}

/// Per-connection deadline state, shared by the service (which knows when a
/// request starts and ends) and the [`Deadline`] I/O layer (which sees bytes
/// arrive and enforces the deadline).
///
/// Owned by its shard; never crosses cores.
struct ConnClock {
    phase: Cell<Phase>,
    /// Reads that would wait past this fail with `TimedOut`.
    deadline: Cell<Instant>,
    header_timeout: Duration,
    idle_timeout: Duration,
}

impl ConnClock {
    fn new(limits: HttpLimits) -> Self {
        Self {
            phase: Cell::new(Phase::Idle),
            // The first request's head is due `header_timeout` after accept.
            deadline: Cell::new(Instant::now() + limits.header_timeout),
            header_timeout: limits.header_timeout,
            idle_timeout: limits.idle_timeout,
        }
    }

    fn is_idle(&self) -> bool {
        self.phase.get() == Phase::Idle
    }

    /// hyper parsed a head and called the service.
    fn request_started(&self) {
        self.phase.set(Phase::Busy);
        self.deadline.set(Instant::now() + self.idle_timeout);
    }

    /// The handler produced its answer; hyper writes it and waits for the
    /// next request.
    fn request_finished(&self) {
        self.phase.set(Phase::Idle);
        self.deadline.set(Instant::now() + self.idle_timeout);
    }

    /// A read delivered `n` bytes.
    fn on_read(&self, n: usize) {
        if n == 0 {
            return;
        }
        match self.phase.get() {
            Phase::Idle => {
                // A head has begun: it is due `header_timeout` from now, or
                // sooner if an earlier deadline (the first request's, which
                // counts from the accept) is already nearer.
                self.phase.set(Phase::Head);
                let due = Instant::now() + self.header_timeout;
                self.deadline.set(self.deadline.get().min(due));
            }
            // The head's deadline stands however the bytes trickle in.
            Phase::Head => {}
            // Progress on a body: the stall bound starts over.
            Phase::Busy => self.deadline.set(Instant::now() + self.idle_timeout),
        }
    }
}

/// A futures-io stream whose reads fail with `TimedOut` once they would wait
/// past the connection's [`ConnClock`] deadline.
///
/// Owned by its shard; never crosses cores.
struct Deadline<S> {
    inner: S,
    clock: Rc<ConnClock>,
    /// Wakes the connection task at the deadline; re-armed when it moves.
    timer: Timer,
    armed_for: Option<Instant>,
}

impl<S> Deadline<S> {
    fn new(inner: S, clock: Rc<ConnClock>) -> Self {
        Self {
            inner,
            clock,
            timer: Timer::new(Duration::ZERO),
            armed_for: None,
        }
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "HTTP deadline passed")
}

impl<S: AsyncRead + Unpin> AsyncRead for Deadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(n)) => {
                this.clock.on_read(n);
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => {
                // Only a read that has to wait is checked: data already
                // there is always taken.
                let deadline = this.clock.deadline.get();
                let now = Instant::now();
                if now >= deadline {
                    return Poll::Ready(Err(timed_out()));
                }
                if this.armed_for != Some(deadline) {
                    this.timer.reset(deadline - now);
                    this.armed_for = Some(deadline);
                }
                // Registers our waker for the deadline. If the deadline
                // moved later since the timer was armed, an early wake-up
                // just lands here again and re-arms.
                match Pin::new(&mut this.timer).poll(cx) {
                    Poll::Ready(_) => Poll::Ready(Err(timed_out())),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Deadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// Live connections on this shard, and a waker for when the count reaches
/// zero during a drain.
///
/// Owned by its shard; never crosses cores.
#[derive(Default)]
struct LiveCount {
    count: Cell<usize>,
    on_zero: Cell<Option<Waker>>,
}

impl LiveCount {
    fn get(&self) -> usize {
        self.count.get()
    }

    fn enter(self: &Rc<Self>) -> LiveGuard {
        self.count.set(self.count.get() + 1);
        LiveGuard(Rc::clone(self))
    }

    /// Completes when no connection is left.
    fn drained(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.count.get() == 0 {
                Poll::Ready(())
            } else {
                self.on_zero.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
    }
}

/// Counts one connection while alive.
///
/// Owned by its shard; never crosses cores.
struct LiveGuard(Rc<LiveCount>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        let n = self.0.count.get() - 1;
        self.0.count.set(n);
        if n == 0 {
            if let Some(waker) = self.0.on_zero.take() {
                waker.wake();
            }
        }
    }
}

/// Lets a warning through at most once a second, counting the rest, so an
/// error that repeats on every accept (EMFILE) cannot flood the log.
#[derive(Default)]
struct WarnLimiter {
    last: Option<Instant>,
    suppressed: u64,
}

impl WarnLimiter {
    fn warn(&mut self, emit: impl FnOnce(u64)) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return;
        }
        self.last = Some(now);
        emit(std::mem::take(&mut self.suppressed));
    }
}

#[cfg(test)]
mod tests {
    use super::super::json::{ok_json, read_body};
    use super::*;

    use std::io::{BufRead, BufReader, Read as _, Write as _};
    use std::net::{SocketAddr, TcpStream as StdStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc};

    use glommio::{LocalExecutorBuilder, Placement};
    use hyper::Method;
    use serde_json::json;

    /// A server on its own glommio executor thread, driven from the test
    /// thread with blocking std sockets.
    struct TestServer {
        addr: SocketAddr,
        stop: Arc<AtomicBool>,
        done: mpsc::Receiver<()>,
    }

    async fn handler(req: Request<Incoming>, max: usize) -> Response<Full<Bytes>> {
        match (req.method().clone(), req.uri().path()) {
            (Method::GET, "/hello") => ok_json(json!({"hello": "world"})),
            (Method::GET, "/login") => budget::authenticated(ok_json(json!({"in": true}))),
            (Method::GET, "/panic") => panic!("handler bug (expected by the test)"),
            (Method::GET, "/slow") => {
                sleep(Duration::from_millis(300)).await;
                ok_json(json!({"slow": true}))
            }
            (Method::POST, "/echo") => match read_body(req, max).await {
                Ok((_, body)) => ok_json(json!({"len": body.len()})),
                Err(err) => err.response(),
            },
            _ => error(StatusCode::NOT_FOUND, "not_found"),
        }
    }

    fn start(limits: HttpLimits) -> TestServer {
        start_with_budget(limits, limits::UNAUTHENTICATED_BYTES_MAX_DEFAULT)
    }

    /// A server whose shard has `budget_bytes` for unauthenticated work.
    fn start_with_budget(limits: HttpLimits, budget_bytes: usize) -> TestServer {
        let (addr_tx, addr_rx) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(64 << 10)
            .ring_depth(128)
            .spawn(move || async move {
                budget::set_capacity(budget_bytes);
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let signal = StopSignal::new();
                let trigger = signal.clone();
                // The signal is shard-local; the test thread reaches it
                // through a flag this task watches.
                glommio::spawn_local(async move {
                    while !flag.load(Ordering::SeqCst) {
                        sleep(Duration::from_millis(5)).await;
                    }
                    trigger.trigger();
                })
                .detach();
                serve(listener, limits, move |req| handler(req, MAX_BODY), signal).await;
                let _ = done_tx.send(());
            })
            .unwrap();
        let addr = addr_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        TestServer { addr, stop, done }
    }

    impl TestServer {
        fn connect(&self) -> BufReader<StdStream> {
            let s = StdStream::connect(self.addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            BufReader::new(s)
        }

        /// A connection from another loopback source address.
        fn connect_from(&self, source: std::net::Ipv4Addr) -> BufReader<StdStream> {
            use socket2::{Domain, Socket, Type};
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            s.bind(&std::net::SocketAddr::from((source, 0)).into())
                .unwrap();
            s.connect(&self.addr.into()).unwrap();
            let s: StdStream = s.into();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            BufReader::new(s)
        }

        /// Triggers the stop and asserts that `serve` returns.
        fn stop(self) {
            self.stop.store(true, Ordering::SeqCst);
            self.done
                .recv_timeout(Duration::from_secs(3))
                .expect("serve() returned after stop");
        }
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            // Let the executor thread finish even when a test fails.
            self.stop.store(true, Ordering::SeqCst);
        }
    }

    /// The body bound the test handler passes to `read_body`.
    const MAX_BODY: usize = 1024;

    fn limits() -> HttpLimits {
        HttpLimits {
            header_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_secs(2),
            max_connections_per_shard: 100,
            drain_timeout: Duration::from_secs(1),
        }
    }

    struct Answer {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Answer {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    fn send(conn: &mut BufReader<StdStream>, raw: &[u8]) {
        conn.get_mut().write_all(raw).unwrap();
    }

    fn read_answer(conn: &mut BufReader<StdStream>) -> Answer {
        let mut line = String::new();
        conn.read_line(&mut line).unwrap();
        let status = line
            .split(' ')
            .nth(1)
            .expect("status line")
            .parse()
            .unwrap();
        let mut headers = Vec::new();
        loop {
            line.clear();
            conn.read_line(&mut line).unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').unwrap();
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
        let mut answer = Answer {
            status,
            headers,
            body: String::new(),
        };
        let len: usize = answer.header("content-length").unwrap().parse().unwrap();
        let mut body = vec![0; len];
        conn.read_exact(&mut body).unwrap();
        answer.body = String::from_utf8(body).unwrap();
        answer
    }

    /// True once the server has closed the connection (EOF or reset);
    /// false if it is still open when the client's read timeout expires.
    fn closed_by_server(conn: &mut BufReader<StdStream>) -> bool {
        let mut buf = [0u8; 64];
        match conn.read(&mut buf) {
            Ok(0) => true,
            Ok(n) => panic!("unexpected {n} bytes: {:?}", &buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => true,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                false
            }
            Err(e) => panic!("read failed: {e}"),
        }
    }

    #[test]
    fn warn_limiter_lets_one_warning_a_second_through() {
        let mut limiter = WarnLimiter::default();
        let mut emitted = Vec::new();
        for _ in 0..5 {
            limiter.warn(|suppressed| emitted.push(suppressed));
        }
        assert_eq!(emitted, [0]);
        limiter.last = Some(Instant::now() - Duration::from_secs(2));
        limiter.warn(|suppressed| emitted.push(suppressed));
        assert_eq!(emitted, [0, 4], "reports how many it swallowed");
    }

    const GET_HELLO: &[u8] = b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n";

    #[test]
    fn get_answers_json() {
        let server = start(limits());
        let mut c = server.connect();
        send(
            &mut c,
            b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
        let a = read_answer(&mut c);
        assert_eq!(a.status, 200);
        assert_eq!(
            a.header("content-type"),
            Some("application/json; charset=utf-8")
        );
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(v, json!({"ok": true, "hello": "world"}));
        assert!(closed_by_server(&mut c), "Connection: close honoured");

        let mut c = server.connect();
        send(&mut c, b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n");
        let a = read_answer(&mut c);
        assert_eq!(a.status, 404);
        assert_eq!(a.body, r#"{"ok":false,"error":"not_found"}"#);

        // A panicking handler costs its request, not the shard.
        send(&mut c, b"GET /panic HTTP/1.1\r\nHost: t\r\n\r\n");
        let a = read_answer(&mut c);
        assert_eq!(
            (a.status, a.body.as_str()),
            (500, r#"{"ok":false,"error":"internal_error"}"#)
        );
        send(&mut c, GET_HELLO);
        assert_eq!(read_answer(&mut c).status, 200);
        server.stop();
    }

    #[test]
    fn keep_alive_serves_two_requests_and_idles_past_header_timeout() {
        let server = start(HttpLimits {
            idle_timeout: Duration::from_millis(900),
            ..limits()
        });
        let mut c = server.connect();
        send(&mut c, GET_HELLO);
        assert_eq!(read_answer(&mut c).status, 200);
        // Idle longer than header_timeout (300 ms): the idle bound applies
        // between requests, not the header bound.
        std::thread::sleep(Duration::from_millis(500));
        send(&mut c, GET_HELLO);
        assert_eq!(read_answer(&mut c).status, 200);
        // Then, idle past idle_timeout, the server closes it.
        let t = Instant::now();
        assert!(closed_by_server(&mut c), "idle connection closed");
        assert!(
            t.elapsed() >= Duration::from_millis(500),
            "not before idle_timeout"
        );
        server.stop();
    }

    #[test]
    fn oversized_bodies_get_413() {
        let server = start(limits()); // MAX_BODY = 1024
        let mut c = server.connect();
        let small = format!(
            "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n{}",
            "x".repeat(10)
        );
        send(&mut c, small.as_bytes());
        let a = read_answer(&mut c);
        assert_eq!(
            (a.status, a.body.as_str()),
            (200, r#"{"len":10,"ok":true}"#)
        );

        // Declared too large: refused from Content-Length alone.
        let mut c = server.connect();
        let big = format!(
            "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4096\r\n\r\n{}",
            "x".repeat(4096)
        );
        send(&mut c, big.as_bytes());
        let a = read_answer(&mut c);
        assert_eq!(a.status, 413);
        assert_eq!(a.body, r#"{"ok":false,"error":"request_too_large"}"#);

        // Chunked, no length up front: refused once the total passes the cap.
        let mut c = server.connect();
        let chunk = "y".repeat(800);
        let chunked = format!(
            "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
             320\r\n{chunk}\r\n320\r\n{chunk}\r\n0\r\n\r\n"
        );
        send(&mut c, chunked.as_bytes());
        assert_eq!(read_answer(&mut c).status, 413);
        server.stop();
    }

    #[test]
    fn slowloris_is_disconnected_after_header_timeout() {
        let server = start(limits()); // header_timeout = 300 ms
        let mut half = server.connect();
        let mut silent = server.connect();
        send(&mut half, b"GET /hello HT");
        let t = Instant::now();
        assert!(closed_by_server(&mut half), "half a request line: closed");
        assert!(closed_by_server(&mut silent), "nothing sent: closed");
        // Loose: only that it was the deadline, not an immediate refusal.
        assert!(t.elapsed() >= Duration::from_millis(150));

        // Trickling bytes does not extend the deadline.
        let mut trickle = server.connect();
        let t = Instant::now();
        let mut closed = false;
        for b in b"GET /hello HTTP/1.1\r\nHost: t\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if trickle.get_mut().write_all(&[*b]).is_err() {
                closed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(closed || closed_by_server(&mut trickle));
        assert!(t.elapsed() < Duration::from_secs(2));
        server.stop();
    }

    #[test]
    fn unauthenticated_connections_are_bounded_by_the_budget() {
        // Room for two connections that have not authenticated from one
        // source (its share); a head deadline long enough that silent ones
        // hold their charge.
        let charge = limits::HTTP_UNAUTHENTICATED_CONNECTION_BYTES;
        let retry_after = limits::UNAUTHENTICATED_RETRY_AFTER_SECS.to_string();
        let http_limits = HttpLimits {
            header_timeout: Duration::from_secs(5),
            ..limits()
        };
        let budget_bytes = 2 * charge * limits::UNAUTHENTICATED_SOURCE_SHARE_DIVISOR;
        let server = start_with_budget(http_limits, budget_bytes);
        let mut a = server.connect();
        let b = server.connect();
        let refused = |server: &TestServer| {
            let mut c = server.connect();
            let a = read_answer(&mut c);
            assert_eq!(a.status, 503);
            assert_eq!(a.body, r#"{"ok":false,"error":"server_busy"}"#);
            assert_eq!(a.header("retry-after"), Some(retry_after.as_str()));
            assert!(closed_by_server(&mut c), "a refusal closes");
        };
        // Silent, as slowloris clients are: they still hold their share.
        refused(&server);
        // Another source has a share of its own.
        let mut other = server.connect_from(std::net::Ipv4Addr::new(127, 0, 0, 2));
        send(&mut other, GET_HELLO);
        assert_eq!(
            read_answer(&mut other).status,
            200,
            "another source gets in"
        );
        drop(other);

        // Once a connection authenticates, it no longer counts...
        send(&mut a, b"GET /login HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(read_answer(&mut a).status, 200);
        let mut d = server.connect();
        send(&mut d, GET_HELLO);
        assert_eq!(read_answer(&mut d).status, 200);
        // ...and keeps its service while newcomers are refused.
        refused(&server);
        send(&mut a, GET_HELLO);
        assert_eq!(read_answer(&mut a).status, 200);

        // A connection that goes gives its share back.
        drop(b);
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let mut e = server.connect();
            send(&mut e, GET_HELLO);
            if read_answer(&mut e).status == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "the share was not given back");
            std::thread::sleep(Duration::from_millis(20));
        }
        server.stop();
    }

    #[test]
    fn connections_beyond_the_cap_are_closed() {
        let server = start(HttpLimits {
            max_connections_per_shard: 1,
            ..limits()
        });
        let mut first = server.connect();
        send(&mut first, GET_HELLO);
        assert_eq!(read_answer(&mut first).status, 200);
        let mut second = server.connect();
        assert!(closed_by_server(&mut second), "over the cap: closed");
        // The first is unaffected.
        send(&mut first, GET_HELLO);
        assert_eq!(read_answer(&mut first).status, 200);
        server.stop();
    }

    #[test]
    fn stop_finishes_in_flight_requests_and_closes_the_rest() {
        let server = start(limits());
        let mut idle = server.connect();
        send(&mut idle, GET_HELLO);
        assert_eq!(read_answer(&mut idle).status, 200);
        let mut fresh = server.connect();
        let mut busy = server.connect();
        send(&mut busy, b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n"); // handler sleeps 300 ms
        std::thread::sleep(Duration::from_millis(100));

        let t = Instant::now();
        server.stop(); // asserts serve() returns
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "no waiting out the drain timeout"
        );
        let a = read_answer(&mut busy);
        assert_eq!(
            (a.status, a.body.as_str()),
            (200, r#"{"ok":true,"slow":true}"#)
        );
        assert!(
            closed_by_server(&mut busy),
            "closed after its in-flight answer"
        );
        assert!(closed_by_server(&mut idle), "idle keep-alive closed");
        assert!(
            closed_by_server(&mut fresh),
            "request-less connection closed"
        );
        // And nobody listens any more.
        let refused = StdStream::connect(busy.get_ref().peer_addr().unwrap());
        assert!(refused.is_err(), "listener closed");
    }
}
