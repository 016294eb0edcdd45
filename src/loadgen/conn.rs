//! One load-generator connection: a nonblocking socket bound to a chosen
//! 127.0.0.x source (IP_BIND_ADDRESS_NO_PORT, so each source address has the
//! whole port range per destination), the websocket layer when the protocol
//! rides on one, and the bytes waiting to go out. Owned by its worker's event
//! loop; a worker is one thread.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};

use mio::net::TcpStream;
use socket2::{Domain, Socket, Type};

use crate::loadgen::plan::Proto;
use crate::loadgen::wire::{nats, resp, ws, Codec, Unit};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Not started yet.
    Waiting,
    /// TCP connect in progress.
    Connecting,
    /// Websocket upgrade sent, 101 not yet seen.
    Upgrading,
    /// Transport up, waiting for the protocol's `ready`.
    Opening,
    Ready,
    Closed,
}

/// A connection's write buffer may not grow past this: a server that stops
/// reading fails the connection instead of eating the generator's memory.
const WRITE_BUFFER_MAX: usize = 64 << 20;

pub struct Conn {
    pub stream: Option<TcpStream>,
    pub state: State,
    /// Monotonic ns when the connect started.
    pub started_ns: u64,
    codec: Codec,
    /// Websocket path (with query) when the protocol rides on one.
    ws_path: Option<String>,
    /// `Authorization: Bearer` for the upgrade (the publish stream).
    ws_bearer: Option<String>,
    ws_accept: String,
    /// Bytes read but not yet parsed: a partial frame or response.
    leftover: Vec<u8>,
    /// NATS: websocket payloads not yet parsed as protocol.
    inner: Vec<u8>,
    /// A fragmented websocket message being put together.
    frag: Vec<u8>,
    wbuf: Vec<u8>,
    wpos: usize,
    mask: u32,
    /// Sorted load-generator channels this connection receives, and the
    /// next sequence number expected on each.
    pub channels: Vec<u32>,
    pub next_seq: Vec<u64>,
}

impl Conn {
    pub fn new(proto: &Proto, channels: Vec<u32>, seed: u32) -> Conn {
        let mut ws_bearer = None;
        let (codec, ws_path) = match proto {
            Proto::Slack { path } => (Codec::Slack, Some(path.clone())),
            Proto::PublishStream { token, .. } => {
                ws_bearer = Some(token.clone());
                (Codec::Slack, Some("/publish".to_string()))
            }
            Proto::Nats { path } => (
                Codec::Nats(nats::Session::new(
                    channels.iter().map(|&c| nats::subject(c)).collect(),
                )),
                Some(path.clone()),
            ),
            Proto::Redis => (
                Codec::Redis(resp::Session::new(
                    channels.iter().map(|&c| resp::channel(c)).collect(),
                )),
                None,
            ),
            Proto::AdminHttp { .. } => (Codec::Http, None),
            Proto::WebApi => (Codec::WebApi, None),
        };
        debug_assert!(channels.windows(2).all(|w| w[0] < w[1]), "sorted");
        Conn {
            stream: None,
            state: State::Waiting,
            started_ns: 0,
            codec,
            ws_path,
            ws_bearer,
            ws_accept: String::new(),
            leftover: Vec::new(),
            inner: Vec::new(),
            frag: Vec::new(),
            wbuf: Vec::new(),
            wpos: 0,
            mask: seed | 1,
            next_seq: vec![0; channels.len()],
            channels,
        }
    }

    /// Opens the socket from `source` and starts connecting to `to`.
    pub fn start(&mut self, source: Ipv4Addr, to: SocketAddrV4, now_ns: u64) -> io::Result<()> {
        let s = Socket::new(Domain::IPV4, Type::STREAM.nonblocking(), None)?;
        let one: libc::c_int = 1;
        // SAFETY: setsockopt on a socket we own, with a c_int option value.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&s),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        s.set_tcp_nodelay(true)?;
        s.bind(&SocketAddrV4::new(source, 0).into())?;
        match s.connect(&to.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        self.stream = Some(TcpStream::from_std(s.into()));
        self.state = State::Connecting;
        self.started_ns = now_ns;
        Ok(())
    }

    /// Right after [`Conn::start`], for a protocol on a websocket: queues
    /// the upgrade request and writes what the socket takes. On loopback
    /// the TCP handshake has usually completed inside `connect()`, so the
    /// request leaves at once, without waiting for the writable event and
    /// asking the socket whether the connect worked (SO_ERROR,
    /// `getpeername`); while it has not, the write would block and the
    /// request waits for the writable event like any queued bytes. A
    /// refused connect then shows as the read or write error.
    pub fn upgrade_now(&mut self, host: &str) -> Result<(), String> {
        if self.ws_path.is_none() || self.state != State::Connecting {
            return Ok(());
        }
        self.opened(host, &mut Vec::new());
        self.flush()
    }

    /// The socket is writable: finishes the connect, then flushes.
    pub fn on_writable(&mut self, host: &str, out: &mut Vec<Unit>) -> Result<(), String> {
        if self.state == State::Connecting {
            let stream = self.stream.as_ref().expect("connecting has a stream");
            if let Some(e) = stream.take_error().map_err(|e| e.to_string())? {
                return Err(format!("connect: {e}"));
            }
            if let Err(e) = stream.peer_addr() {
                if e.kind() == io::ErrorKind::NotConnected {
                    return Ok(()); // spurious: still connecting
                }
                return Err(format!("connect: {e}"));
            }
            self.opened(host, out);
        }
        self.flush()
    }

    fn opened(&mut self, host: &str, out: &mut Vec<Unit>) {
        if let Some(path) = &self.ws_path {
            let nonce: [u8; 16] = rand::random();
            let (req, accept) = ws::upgrade_request(host, path, self.ws_bearer.as_deref(), nonce);
            self.ws_accept = accept;
            self.wbuf.extend_from_slice(&req);
            self.state = State::Upgrading;
            return;
        }
        self.state = State::Opening;
        match &self.codec {
            Codec::Redis(s) => s.opening(&mut self.wbuf),
            Codec::Http | Codec::WebApi => out.push(Unit::Ready),
            Codec::Slack | Codec::Nats(_) => unreachable!("websocket protocols have a path"),
        }
    }

    /// Reads everything the socket has (edge-triggered) and parses it into
    /// `out`. `Err` means the connection is over.
    pub fn on_readable(&mut self, scratch: &mut [u8], out: &mut Vec<Unit>) -> Result<(), String> {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                return Ok(());
            };
            let n = match stream.read(scratch) {
                Ok(0) => return Err("closed by server".into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("read: {e}")),
            };
            if self.leftover.is_empty() {
                let used = self.process(&scratch[..n], out)?;
                self.leftover.extend_from_slice(&scratch[used..n]);
            } else {
                let mut data = std::mem::take(&mut self.leftover);
                data.extend_from_slice(&scratch[..n]);
                let used = self.process(&data, out)?;
                data.drain(..used);
                self.leftover = data;
            }
            if n < scratch.len() {
                // A short read drained the socket; skip the EAGAIN round trip.
                return Ok(());
            }
        }
    }

    /// Parses what it can of `data`; returns the bytes used.
    fn process(&mut self, data: &[u8], out: &mut Vec<Unit>) -> Result<usize, String> {
        if !self.codec.over_websocket() {
            return self.codec.parse(data, out);
        }
        let mut at = 0;
        if self.state == State::Upgrading {
            match ws::check_upgrade(data, &self.ws_accept)? {
                None => return Ok(0),
                Some(n) => {
                    at = n;
                    self.state = State::Opening;
                }
            }
        }
        while let Some(f) = ws::parse(&data[at..])? {
            let payload = &data[at + f.payload.start..at + f.payload.end];
            match f.opcode {
                ws::OP_PING => {
                    let mut pong = Vec::new();
                    ws::write_masked(&mut pong, ws::OP_PONG, payload, self.next_mask());
                    self.wbuf.extend_from_slice(&pong);
                }
                ws::OP_PONG => {}
                ws::OP_CLOSE => {
                    let code = payload
                        .get(..2)
                        .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]]));
                    let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or(&[]));
                    return Err(format!("close {code} {reason}"));
                }
                ws::OP_TEXT | ws::OP_BINARY | ws::OP_CONTINUATION => {
                    if f.fin && self.frag.is_empty() {
                        self.message(payload, out)?;
                    } else {
                        self.frag.extend_from_slice(payload);
                        if f.fin {
                            let whole = std::mem::take(&mut self.frag);
                            self.message(&whole, out)?;
                        }
                    }
                }
                op => return Err(format!("unknown websocket opcode {op}")),
            }
            at += f.len;
        }
        Ok(at)
    }

    /// One whole websocket message.
    fn message(&mut self, payload: &[u8], out: &mut Vec<Unit>) -> Result<(), String> {
        if let Codec::Slack = self.codec {
            return self.codec.parse(payload, out).map(|_| ());
        }
        // NATS: the payloads form one protocol stream.
        if self.inner.is_empty() {
            let used = self.codec.parse(payload, out)?;
            self.inner.extend_from_slice(&payload[used..]);
        } else {
            self.inner.extend_from_slice(payload);
            let used = self.codec.parse(&self.inner, out)?;
            self.inner.drain(..used);
        }
        Ok(())
    }

    fn next_mask(&mut self) -> [u8; 4] {
        // xorshift32: masks need not be secret from ourselves, only vary.
        let mut x = self.mask;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.mask = x;
        x.to_ne_bytes()
    }

    /// Queues protocol bytes: in a masked frame when the protocol rides on
    /// a websocket (text for Slack, binary for NATS), raw otherwise.
    pub fn send(&mut self, proto_bytes: &[u8]) {
        match self.codec {
            Codec::Slack | Codec::Nats(_) => {
                let op = if let Codec::Slack = self.codec {
                    ws::OP_TEXT
                } else {
                    ws::OP_BINARY
                };
                let mask = self.next_mask();
                ws::write_masked(&mut self.wbuf, op, proto_bytes, mask);
            }
            Codec::Redis(_) | Codec::Http | Codec::WebApi => {
                self.wbuf.extend_from_slice(proto_bytes)
            }
        }
    }

    /// Queues a websocket close frame with `code` (the client's half of a
    /// clean close; the server answers with its own and closes).
    pub fn send_close(&mut self, code: u16) {
        let mask = self.next_mask();
        ws::write_masked(&mut self.wbuf, ws::OP_CLOSE, &code.to_be_bytes(), mask);
    }

    /// The websocket path (with its query) the next [`Conn::start`] opens:
    /// a reconnect presents a fresh ticket.
    pub fn set_ws_path(&mut self, path: String) {
        self.ws_path = Some(path);
    }

    /// Bytes queued and not yet written.
    pub fn unsent(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    /// Writes what the socket takes; the rest waits for the next writable
    /// edge.
    pub fn flush(&mut self) -> Result<(), String> {
        if self.state == State::Connecting {
            return Ok(());
        }
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        while self.wpos < self.wbuf.len() {
            match stream.write(&self.wbuf[self.wpos..]) {
                Ok(0) => return Err("write returned 0".into()),
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("write: {e}")),
            }
        }
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
        } else if self.wbuf.len() > WRITE_BUFFER_MAX {
            return Err("server stopped reading (64 MiB unsent)".into());
        } else if self.wpos > self.wbuf.len() / 2 {
            self.wbuf.drain(..self.wpos);
            self.wpos = 0;
        }
        Ok(())
    }

    /// Drops the socket; what was buffered is discarded.
    pub fn close(&mut self) {
        self.stream = None;
        self.state = State::Closed;
        self.leftover = Vec::new();
        self.inner = Vec::new();
        self.frag = Vec::new();
        self.wbuf = Vec::new();
        self.wpos = 0;
    }

    /// Checks a delivery's sequence number against what this connection saw
    /// on that channel: `(gap, reordered)`; `None` for a channel it doesn't
    /// receive.
    pub fn check_seq(&mut self, channel: u32, seq: u64) -> Option<(u64, bool)> {
        let i = self.channels.binary_search(&channel).ok()?;
        let next = &mut self.next_seq[i];
        Some(if seq == *next {
            *next += 1;
            (0, false)
        } else if seq > *next {
            let gap = seq - *next;
            *next = seq + 1;
            (gap, false)
        } else {
            (0, true)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_check() {
        let mut c = Conn::new(&Proto::Redis, vec![3, 9], 1);
        assert_eq!(c.check_seq(3, 0), Some((0, false)));
        assert_eq!(c.check_seq(3, 1), Some((0, false)));
        assert_eq!(c.check_seq(3, 4), Some((2, false)));
        assert_eq!(c.check_seq(3, 2), Some((0, true)));
        assert_eq!(c.check_seq(9, 0), Some((0, false)));
        assert_eq!(c.check_seq(4, 0), None);
    }
}
