//! Server side of the RFC 6455 opening handshake, sans-IO.
//!
//! The gateway accumulates the start of a new connection's bytes and calls
//! [`parse_upgrade`] until it is `Complete`, then answers with
//! [`accept_response`] (or [`HandshakeError::response`] /
//! [`error_response`]) and hands any bytes after `consumed` to the frame
//! reader. We never negotiate extensions or subprotocols: permessage-deflate
//! would make each client's bytes different and break encode-once fan-out.
//!
//! The bytes accumulate in a [`RequestBuffer`], which charges them to the
//! shard's unauthenticated budget ([`crate::http::budget`]) until the
//! request has been read: past the budget, a new handshake is answered 503
//! ([`HandshakeError::Busy`]) before anything is read.

use std::borrow::Cow;
use std::ops::Deref;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::http::budget::{self, Reservation};
use crate::limits;

/// Largest upgrade request (request line + headers) we accept.
pub const MAX_REQUEST_BYTES: usize = limits::HANDSHAKE_BYTES_MAX;

/// Most a [`RequestBuffer`] ever holds: a request is refused once
/// [`MAX_REQUEST_BYTES`] have arrived without its end, and one read adds at
/// most [`limits::HANDSHAKE_READ_BYTES`].
const BUFFER_BYTES_MAX: usize = MAX_REQUEST_BYTES + limits::HANDSHAKE_READ_BYTES;

/// Header slots for httparse. Browsers send about 15; more than this is
/// treated as an oversize request.
const MAX_HEADERS: usize = 64;

/// A valid websocket upgrade request: what the gateway needs from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeRequest {
    /// Request path without the query, still percent-encoded; `/` at least.
    pub path: String,
    /// Raw query without the `?`; `""` if none. Read it with [`query_param`].
    pub query: String,
    /// `Sec-WebSocket-Key`, trimmed: 24 base64 characters of a 16-byte nonce.
    pub key: String,
    /// The token of an `Authorization: Bearer …` header (publish streams).
    pub bearer: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseOutcome {
    /// The request is not complete yet; call again with more bytes.
    Partial,
    /// A valid upgrade request occupying the first `consumed` bytes; anything
    /// after them is already websocket frames.
    Complete {
        request: UpgradeRequest,
        consumed: usize,
    },
}

#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    #[error("upgrade request longer than {MAX_REQUEST_BYTES} bytes or with too many headers")]
    TooLarge,
    #[error("malformed HTTP/1.1 request")]
    Malformed,
    #[error("method is not GET")]
    NotGet,
    /// Missing or wrong `Upgrade: websocket` / `Connection: Upgrade`.
    #[error("not a websocket upgrade")]
    NotWebsocket,
    /// `Sec-WebSocket-Version` missing or not 13.
    #[error("unsupported websocket version (13 only)")]
    BadVersion,
    /// `Sec-WebSocket-Key` missing, or not the base64 of 16 bytes.
    #[error("missing or invalid Sec-WebSocket-Key")]
    MissingKey,
    /// The shard's unauthenticated budget cannot hold this request.
    #[error("the shard's budget for unauthenticated work is spent")]
    Busy,
}

impl HandshakeError {
    /// HTTP status to answer with. 426 tells the client to use websocket
    /// version 13 ([`error_response`] adds the headers that go with it,
    /// RFC 6455 §4.2.2 and RFC 9110 §15.5.22); anything else is a 400.
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::NotWebsocket | HandshakeError::BadVersion => 426,
            HandshakeError::Busy => 503,
            _ => 400,
        }
    }

    /// Reason phrase for [`status`](Self::status).
    pub fn reason(&self) -> &'static str {
        match self.status() {
            426 => "Upgrade Required",
            503 => "Service Unavailable",
            _ => "Bad Request",
        }
    }

    /// Short snake_case code for the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            HandshakeError::TooLarge => "request_too_large",
            HandshakeError::Malformed => "malformed_request",
            HandshakeError::NotGet => "method_not_get",
            HandshakeError::NotWebsocket => "not_websocket",
            HandshakeError::BadVersion => "unsupported_version",
            HandshakeError::MissingKey => "missing_key",
            HandshakeError::Busy => budget::BUSY_CODE,
        }
    }

    /// The whole HTTP response for this error, body
    /// `{"ok":false,"error":"<code>"}` like every other error we send. A
    /// 503 is the HTTP listeners' refusal, `Retry-After` included.
    pub fn response(&self) -> Vec<u8> {
        if *self == HandshakeError::Busy {
            return budget::busy_bytes();
        }
        let body = format!(r#"{{"ok":false,"error":"{}"}}"#, self.code());
        error_response(self.status(), self.reason(), &body)
    }
}

/// The start of a connection's bytes while its upgrade request is read,
/// charged to the shard's unauthenticated budget together with the
/// [`limits::HANDSHAKE_READ_BYTES`] read buffer they arrive through and
/// the connection's own cost ([`limits::HANDSHAKE_TASK_BYTES`]). The charge
/// is given back when the buffer is dropped, i.e. once the request is read.
/// It derefs to the bytes, for [`parse_upgrade`].
///
/// Owned by its shard; never crosses cores.
#[derive(Debug)]
pub struct RequestBuffer {
    bytes: Vec<u8>,
    charge: Reservation,
}

impl RequestBuffer {
    /// An empty buffer for a connection from `source`, or
    /// [`HandshakeError::Busy`] if the budget (or the source's share of it)
    /// cannot cover the connection, its read buffer and a first read.
    pub fn new(source: Option<std::net::IpAddr>) -> Result<RequestBuffer, HandshakeError> {
        let first = limits::HANDSHAKE_READ_BYTES;
        let fixed = limits::HANDSHAKE_TASK_BYTES + limits::HANDSHAKE_READ_BYTES;
        let charge = budget::try_reserve(source, fixed + first).ok_or(HandshakeError::Busy)?;
        Ok(RequestBuffer {
            bytes: Vec::with_capacity(first),
            charge,
        })
    }

    /// Appends `more` (one read's worth), growing the charge with the
    /// buffer: [`HandshakeError::Busy`] if the budget cannot cover it.
    pub fn extend(&mut self, more: &[u8]) -> Result<(), HandshakeError> {
        let (len, capacity) = (self.bytes.len(), self.bytes.capacity());
        let needed = len + more.len();
        if needed > capacity {
            // Doubling keeps a trickling client from costing a copy per
            // byte; the cap keeps the charge at what a request may hold.
            let grown = (2 * capacity).min(BUFFER_BYTES_MAX).max(needed);
            if !self.charge.grow(grown - capacity) {
                return Err(HandshakeError::Busy);
            }
            self.bytes.reserve_exact(grown - len);
        }
        self.bytes.extend_from_slice(more);
        Ok(())
    }
}

impl Deref for RequestBuffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Parse the start of a connection's bytes as a websocket upgrade request
/// (RFC 6455 §4.2.1). Header names are case-insensitive; `Connection` and
/// `Upgrade` may be comma lists (Firefox sends `Connection: keep-alive,
/// Upgrade`); their tokens are case-insensitive.
///
/// A request must be complete within [`MAX_REQUEST_BYTES`]: once that many
/// bytes have arrived without the blank line that ends the headers, the
/// answer is `TooLarge`, so a client cannot make us hold more.
pub fn parse_upgrade(buf: &[u8]) -> Result<ParseOutcome, HandshakeError> {
    // Bytes past the limit can only be frames after a complete request, or an
    // oversize request: never parse them as headers.
    let window = &buf[..buf.len().min(MAX_REQUEST_BYTES)];
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let consumed = match req.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_REQUEST_BYTES => {
            return Err(HandshakeError::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(ParseOutcome::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(HandshakeError::TooLarge),
        Err(_) => return Err(HandshakeError::Malformed),
    };

    // httparse fills these in on a complete parse.
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HandshakeError::Malformed);
    };
    // Methods are case-sensitive (RFC 9110 §9.1).
    if method != "GET" {
        return Err(HandshakeError::NotGet);
    }
    // §4.1: HTTP/1.1 or later; httparse reports the minor version.
    if version != 1 {
        return Err(HandshakeError::Malformed);
    }
    let (path, query) = split_target(target).ok_or(HandshakeError::Malformed)?;

    let mut upgrade = false;
    let mut connection = false;
    let mut version_13 = false;
    let mut key: Option<&[u8]> = None;
    let mut bearer = None;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("authorization") {
            bearer = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().strip_prefix("Bearer "))
                .map(|t| t.trim().to_string());
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade |= has_token(h.value, b"websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            connection |= has_token(h.value, b"upgrade");
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            version_13 |= has_token(h.value, b"13");
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            // Two keys: we could not know which one the client will check.
            if key.replace(h.value.trim_ascii()).is_some() {
                return Err(HandshakeError::Malformed);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || (name.eq_ignore_ascii_case("content-length") && h.value.trim_ascii() != b"0")
        {
            // A body would be read as websocket frames: refuse rather than
            // guess where the request ends.
            return Err(HandshakeError::Malformed);
        }
    }
    if !(upgrade && connection) {
        return Err(HandshakeError::NotWebsocket);
    }
    if !version_13 {
        return Err(HandshakeError::BadVersion);
    }
    let key = key
        .filter(|k| is_valid_key(k))
        .ok_or(HandshakeError::MissingKey)?;

    Ok(ParseOutcome::Complete {
        request: UpgradeRequest {
            path: path.to_owned(),
            query: query.to_owned(),
            // is_valid_key checked it is base64, hence ASCII.
            key: String::from_utf8_lossy(key).into_owned(),
            bearer,
        },
        consumed,
    })
}

/// Split a request target into (path, query). Accepts origin-form
/// (`/rtm?x=1`) and, as §4.1 allows, absolute-form (`ws://host/rtm?x=1`).
fn split_target(target: &str) -> Option<(&str, &str)> {
    let rest = if target.starts_with('/') {
        target
    } else {
        let (scheme, after) = target.split_once("://")?;
        if !["ws", "wss", "http", "https"]
            .iter()
            .any(|s| scheme.eq_ignore_ascii_case(s))
        {
            return None;
        }
        // Skip the authority.
        after.find(['/', '?']).map_or("", |i| &after[i..])
    };
    // Fragments are not part of a websocket URI (§3); drop one if sent.
    let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    Some((if path.is_empty() { "/" } else { path }, query))
}

/// Whether a comma-separated header value contains `token`, ignoring ASCII
/// case and optional whitespace.
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// §4.2.1 item 5: the key is base64 of a 16-byte nonce (24 characters).
fn is_valid_key(key: &[u8]) -> bool {
    let mut nonce = [0u8; 24];
    key.len() == 24 && STANDARD.decode_slice(key, &mut nonce) == Ok(16)
}

/// The 101 response accepting a websocket upgrade with this
/// `Sec-WebSocket-Key`. It names no extension and no subprotocol.
pub fn accept_response(key: &str) -> Vec<u8> {
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    format!(
        "HTTP/1.1 101 Switching Protocols\r\n\
         Upgrade: websocket\r\n\
         Connection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\
         \r\n"
    )
    .into_bytes()
}

/// An HTTP error response with a JSON body, after which the gateway closes
/// the connection (`Connection: close`). A 426 also carries `Upgrade:
/// websocket` and `Sec-WebSocket-Version: 13`: RFC 9110 requires the Upgrade
/// header on a 426 and RFC 6455 §4.2.2 the supported version, and websocket
/// 13 is the only upgrade this server offers.
pub fn error_response(status: u16, reason: &str, json_body: &str) -> Vec<u8> {
    // The reason is ours, but a CR or LF in it would end the header early.
    let reason: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let upgrade = if status == 426 {
        "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nConnection: Upgrade, close\r\n"
    } else {
        "Connection: close\r\n"
    };
    format!(
        "HTTP/1.1 {status} {reason}\r\n\
         Content-Type: application/json\r\n\
         Content-Length: {len}\r\n\
         {upgrade}\
         \r\n\
         {json_body}",
        len = json_body.len(),
    )
    .into_bytes()
}

/// The value of the first `name` parameter in a raw query string,
/// percent-decoded (`+` as a space, as in form encoding). A parameter without
/// `=` has the value `""`. Names are compared after decoding too. Borrows
/// when the value has nothing to decode; an invalid escape is kept as is and
/// invalid UTF-8 becomes U+FFFD, as browsers do.
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<Cow<'a, str>> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == name).then(|| percent_decode(v))
        })
}

fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| {
                    let hi = (h[0] as char).to_digit(16)?;
                    let lo = (h[1] as char).to_digit(16)?;
                    Some((hi * 16 + lo) as u8)
                });
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Chrome sends (headers abridged only in their values).
    const CHROME: &str = "GET /rtm?ticket=AAAA-bb_cc&since=1700000000.000100 HTTP/1.1\r\n\
        Host: 127.0.0.1:8080\r\n\
        Connection: Upgrade\r\n\
        Pragma: no-cache\r\n\
        Cache-Control: no-cache\r\n\
        User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36\r\n\
        Upgrade: websocket\r\n\
        Origin: http://localhost:3000\r\n\
        Sec-WebSocket-Version: 13\r\n\
        Accept-Encoding: gzip, deflate, br\r\n\
        Accept-Language: en-US,en;q=0.9\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
        \r\n";

    /// What Firefox sends: a Connection list and lower-case websocket.
    const FIREFOX: &str = "GET /rtm HTTP/1.1\r\n\
        Host: localhost:8080\r\n\
        User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0\r\n\
        Accept: */*\r\n\
        Sec-WebSocket-Version: 13\r\n\
        Origin: http://localhost:3000\r\n\
        Sec-WebSocket-Extensions: permessage-deflate\r\n\
        Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n\
        Connection: keep-alive, Upgrade\r\n\
        Sec-Fetch-Dest: empty\r\n\
        Pragma: no-cache\r\n\
        upgrade: websocket\r\n\
        \r\n";

    fn complete(buf: &[u8]) -> (UpgradeRequest, usize) {
        match parse_upgrade(buf) {
            Ok(ParseOutcome::Complete { request, consumed }) => (request, consumed),
            other => panic!("{other:?}"),
        }
    }

    /// CHROME with one header line replaced (or removed, with "").
    fn chrome_with(header: &str, replacement: &str) -> String {
        let mut out = String::new();
        for line in CHROME.split_inclusive("\r\n") {
            if line
                .to_ascii_lowercase()
                .starts_with(&header.to_ascii_lowercase())
            {
                out.push_str(replacement);
            } else {
                out.push_str(line);
            }
        }
        out
    }

    #[test]
    fn the_request_buffer_is_charged_to_the_budget() {
        // A fresh thread: a budget of its own.
        std::thread::spawn(|| {
            let read = limits::HANDSHAKE_READ_BYTES;
            let fixed = limits::HANDSHAKE_TASK_BYTES + read;
            budget::set_capacity(2 * fixed + read + BUFFER_BYTES_MAX);
            let mut buf = RequestBuffer::new(None).unwrap();
            assert_eq!(
                budget::held_bytes(),
                fixed + read,
                "task, read buffer, first read"
            );
            buf.extend(CHROME.as_bytes()).unwrap();
            assert_eq!(complete(&buf).1, CHROME.len());

            // A request trickling to its limit grows the charge with the
            // buffer, up to what a request may hold.
            let mut slow = RequestBuffer::new(None).unwrap();
            for _ in 1..MAX_REQUEST_BYTES / read {
                slow.extend(&[b'a'; limits::HANDSHAKE_READ_BYTES]).unwrap();
                assert_eq!(parse_upgrade(&slow), Ok(ParseOutcome::Partial));
            }
            slow.extend(&[b'a'; limits::HANDSHAKE_READ_BYTES]).unwrap();
            assert_eq!(parse_upgrade(&slow), Err(HandshakeError::TooLarge));
            assert!(budget::held_bytes() <= 2 * fixed + read + BUFFER_BYTES_MAX);
            // Nothing left for a third handshake.
            assert_eq!(RequestBuffer::new(None).unwrap_err(), HandshakeError::Busy);
            drop((buf, slow));
            assert_eq!(budget::held_bytes(), 0, "all given back");
            assert_eq!(
                HandshakeError::Busy.response(),
                budget::busy_bytes(),
                "the HTTP listeners' refusal"
            );
        })
        .join()
        .unwrap();
    }

    #[test]
    fn accept_key_matches_rfc_6455_example() {
        assert_eq!(
            tungstenite::handshake::derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(
            accept_response("dGhlIHNhbXBsZSBub25jZQ=="),
            b"HTTP/1.1 101 Switching Protocols\r\n\
              Upgrade: websocket\r\n\
              Connection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
              \r\n"
        );
    }

    #[test]
    fn parses_browser_request() {
        let (req, consumed) = complete(CHROME.as_bytes());
        assert_eq!(consumed, CHROME.len());
        assert_eq!(req.path, "/rtm");
        assert_eq!(req.query, "ticket=AAAA-bb_cc&since=1700000000.000100");
        assert_eq!(req.key, "dGhlIHNhbXBsZSBub25jZQ==");
        // Its extension offer is ignored: the answer names none.
        let resp = String::from_utf8(accept_response(&req.key)).unwrap();
        assert!(!resp.to_ascii_lowercase().contains("extensions"));
        assert!(!resp.to_ascii_lowercase().contains("protocol:"));
    }

    #[test]
    fn parses_connection_list_and_lowercase_names() {
        let (req, consumed) = complete(FIREFOX.as_bytes());
        assert_eq!(consumed, FIREFOX.len());
        assert_eq!(req.path, "/rtm");
        assert_eq!(req.query, "");
        assert_eq!(req.key, "x3JJHMbDL1EzLkh9GBhXDw==");

        let shouting = chrome_with("upgrade:", "UPGRADE:   WebSocket  \r\n");
        let shouting = shouting.replace("Connection: Upgrade", "connection: Keep-Alive ,upgrade");
        complete(shouting.as_bytes());
    }

    #[test]
    fn frames_after_the_request_are_not_consumed() {
        let mut buf = CHROME.as_bytes().to_vec();
        buf.extend([0x81, 0x85, 1, 2, 3, 4]);
        let (_, consumed) = complete(&buf);
        assert_eq!(consumed, CHROME.len());
    }

    #[test]
    fn partial_requests_byte_by_byte() {
        let bytes = FIREFOX.as_bytes();
        for end in 0..bytes.len() {
            assert_eq!(
                parse_upgrade(&bytes[..end]),
                Ok(ParseOutcome::Partial),
                "{end}"
            );
        }
        complete(bytes);
    }

    #[test]
    fn oversize_request_is_rejected() {
        // Headers that never end: Partial until the limit, then TooLarge.
        let mut buf = b"GET /rtm HTTP/1.1\r\nHost: x\r\n".to_vec();
        // Long lines, so the header count stays under MAX_HEADERS.
        let filler = format!("X-Filler: {}\r\n", "0123456789".repeat(25));
        while buf.len() + filler.len() < MAX_REQUEST_BYTES {
            buf.extend(filler.as_bytes());
        }
        assert_eq!(parse_upgrade(&buf), Ok(ParseOutcome::Partial));
        buf.resize(MAX_REQUEST_BYTES, b'a');
        assert_eq!(parse_upgrade(&buf), Err(HandshakeError::TooLarge));
        buf.extend(b"\r\n\r\n");
        assert_eq!(parse_upgrade(&buf), Err(HandshakeError::TooLarge));

        // One huge line.
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_REQUEST_BYTES));
        assert_eq!(
            parse_upgrade(long.as_bytes()),
            Err(HandshakeError::TooLarge)
        );

        // More headers than we have slots for, though short in bytes.
        let many = chrome_with("pragma:", &"A: b\r\n".repeat(MAX_HEADERS));
        assert!(many.len() < MAX_REQUEST_BYTES);
        assert_eq!(
            parse_upgrade(many.as_bytes()),
            Err(HandshakeError::TooLarge)
        );
        assert_eq!(HandshakeError::TooLarge.status(), 400);
    }

    #[test]
    fn non_get_is_rejected() {
        let post = CHROME.replacen("GET", "POST", 1);
        assert_eq!(parse_upgrade(post.as_bytes()), Err(HandshakeError::NotGet));
        let lower = CHROME.replacen("GET", "get", 1);
        assert_eq!(parse_upgrade(lower.as_bytes()), Err(HandshakeError::NotGet));
        assert_eq!(HandshakeError::NotGet.status(), 400);
    }

    #[test]
    fn missing_or_invalid_key_is_rejected() {
        for replacement in [
            "",
            "Sec-WebSocket-Key: \r\n",
            "Sec-WebSocket-Key: not base64 at all!!!!!!\r\n",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZQ==\r\n", // 10 bytes
        ] {
            let req = chrome_with("sec-websocket-key:", replacement);
            assert_eq!(
                parse_upgrade(req.as_bytes()),
                Err(HandshakeError::MissingKey),
                "{replacement:?}"
            );
        }
        let twice = chrome_with(
            "sec-websocket-key:",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n",
        );
        assert_eq!(
            parse_upgrade(twice.as_bytes()),
            Err(HandshakeError::Malformed)
        );
        assert_eq!(HandshakeError::MissingKey.code(), "missing_key");
    }

    #[test]
    fn wrong_version_is_rejected() {
        for replacement in [
            "",
            "Sec-WebSocket-Version: 8\r\n",
            "Sec-WebSocket-Version: 14\r\n",
        ] {
            let req = chrome_with("sec-websocket-version:", replacement);
            assert_eq!(
                parse_upgrade(req.as_bytes()),
                Err(HandshakeError::BadVersion),
                "{replacement:?}"
            );
        }
        let e = HandshakeError::BadVersion;
        assert_eq!(e.status(), 426);
        let resp = String::from_utf8(e.response()).unwrap();
        assert!(
            resp.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
            "{resp}"
        );
        assert!(resp.contains("\r\nSec-WebSocket-Version: 13\r\n"), "{resp}");
        assert!(resp.contains("\r\nUpgrade: websocket\r\n"), "{resp}");
    }

    #[test]
    fn non_websocket_requests_are_rejected() {
        let plain = "GET /rtm HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(
            parse_upgrade(plain.as_bytes()),
            Err(HandshakeError::NotWebsocket)
        );
        let h2c = chrome_with("upgrade:", "Upgrade: h2c\r\n");
        assert_eq!(
            parse_upgrade(h2c.as_bytes()),
            Err(HandshakeError::NotWebsocket)
        );
        let no_conn = chrome_with("connection:", "Connection: keep-alive\r\n");
        assert_eq!(
            parse_upgrade(no_conn.as_bytes()),
            Err(HandshakeError::NotWebsocket)
        );
        // A token must match whole, not as a substring.
        let sub = chrome_with("connection:", "Connection: upgraded\r\n");
        assert_eq!(
            parse_upgrade(sub.as_bytes()),
            Err(HandshakeError::NotWebsocket)
        );
        assert_eq!(HandshakeError::NotWebsocket.status(), 426);
        assert_eq!(HandshakeError::NotWebsocket.code(), "not_websocket");
    }

    #[test]
    fn malformed_requests_are_rejected() {
        for bad in [
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..], // a TLS ClientHello
            b"GET /rtm HTTP/1.0\r\n\r\n",
            b"GET rtm HTTP/1.1\r\n\r\n",
            b"GET /rtm HTTP/1.1\r\nBad Header\r\n\r\n",
        ] {
            assert_eq!(
                parse_upgrade(bad),
                Err(HandshakeError::Malformed),
                "{bad:?}"
            );
        }
        let with_body = chrome_with("pragma:", "Content-Length: 5\r\n");
        assert_eq!(
            parse_upgrade(with_body.as_bytes()),
            Err(HandshakeError::Malformed)
        );
        let chunked = chrome_with("pragma:", "Transfer-Encoding: chunked\r\n");
        assert_eq!(
            parse_upgrade(chunked.as_bytes()),
            Err(HandshakeError::Malformed)
        );
        let zero = chrome_with("pragma:", "Content-Length: 0\r\n");
        complete(zero.as_bytes());
    }

    #[test]
    fn request_targets() {
        assert_eq!(split_target("/"), Some(("/", "")));
        assert_eq!(split_target("/a/b?x=1&y"), Some(("/a/b", "x=1&y")));
        assert_eq!(split_target("/a?"), Some(("/a", "")));
        assert_eq!(split_target("/a#frag"), Some(("/a", "")));
        assert_eq!(split_target("ws://host:1/rtm?t=1"), Some(("/rtm", "t=1")));
        assert_eq!(split_target("HTTP://host?t=1"), Some(("/", "t=1")));
        assert_eq!(split_target("http://host"), Some(("/", "")));
        assert_eq!(split_target("ftp://host/x"), None);
        assert_eq!(split_target("*"), None);
    }

    #[test]
    fn error_response_is_well_formed() {
        let body = r#"{"ok":false,"error":"invalid_auth"}"#;
        let resp = error_response(401, "Unauthorized\r\nX-Injected: 1", body);
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut parsed = httparse::Response::new(&mut headers);
        let n = match parsed.parse(&resp).unwrap() {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => panic!("incomplete"),
        };
        assert_eq!(parsed.code, Some(401));
        let get = |name: &str| {
            parsed
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| std::str::from_utf8(h.value).unwrap().to_owned())
        };
        assert_eq!(get("content-type").as_deref(), Some("application/json"));
        assert_eq!(get("content-length"), Some(body.len().to_string()));
        assert_eq!(get("connection").as_deref(), Some("close"));
        assert_eq!(get("x-injected"), None);
        assert_eq!(&resp[n..], body.as_bytes());

        let resp = HandshakeError::MissingKey.response();
        assert!(resp.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
        assert!(resp.ends_with(br#"{"ok":false,"error":"missing_key"}"#));
    }

    /// A tungstenite client completes its handshake against our answer.
    #[test]
    fn tungstenite_client_accepts_our_101() {
        use std::io::{Read, Write};

        /// Captures what the client writes; once the request is complete,
        /// reads return our answer.
        struct Server {
            request: Vec<u8>,
            response: Option<std::io::Cursor<Vec<u8>>>,
            parsed: Option<UpgradeRequest>,
        }
        impl Write for Server {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.request.extend_from_slice(b);
                if let Ok(ParseOutcome::Complete { request, .. }) = parse_upgrade(&self.request) {
                    self.response = Some(std::io::Cursor::new(accept_response(&request.key)));
                    self.parsed = Some(request);
                }
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        impl Read for Server {
            fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
                match &mut self.response {
                    Some(r) => r.read(b),
                    None => Err(std::io::ErrorKind::WouldBlock.into()),
                }
            }
        }
        let server = Server {
            request: Vec::new(),
            response: None,
            parsed: None,
        };
        let (ws, response) =
            tungstenite::client::client("ws://localhost/rtm?ticket=t%2B1&since=5", server)
                .expect("tungstenite accepts the handshake");
        assert_eq!(response.status().as_u16(), 101);
        let req = ws.get_ref().parsed.clone().unwrap();
        assert_eq!(req.path, "/rtm");
        assert_eq!(query_param(&req.query, "ticket").as_deref(), Some("t+1"));
    }

    #[test]
    fn query_params_are_decoded() {
        let q = "ticket=AbC-_9&since=1700000000.000100&name=a%20b%2Bc+d&empty=&flag&pct=100%25";
        assert_eq!(query_param(q, "ticket").as_deref(), Some("AbC-_9"));
        assert!(matches!(query_param(q, "ticket"), Some(Cow::Borrowed(_))));
        assert_eq!(
            query_param(q, "since").as_deref(),
            Some("1700000000.000100")
        );
        assert_eq!(query_param(q, "name").as_deref(), Some("a b+c d"));
        assert_eq!(query_param(q, "empty").as_deref(), Some(""));
        assert_eq!(query_param(q, "flag").as_deref(), Some(""));
        assert_eq!(query_param(q, "pct").as_deref(), Some("100%"));
        assert_eq!(query_param(q, "missing"), None);
        assert_eq!(query_param("", "x"), None);
        // First occurrence wins; names are decoded too.
        assert_eq!(query_param("a=1&a=2", "a").as_deref(), Some("1"));
        assert_eq!(query_param("my%20key=v", "my key").as_deref(), Some("v"));
        // UTF-8 escapes, bad escapes kept, invalid UTF-8 replaced.
        assert_eq!(query_param("u=%E2%82%AC", "u").as_deref(), Some("€"));
        assert_eq!(query_param("u=%zz%4", "u").as_deref(), Some("%zz%4"));
        assert_eq!(query_param("u=%ff", "u").as_deref(), Some("\u{FFFD}"));
    }
}
