//! Websocket frames (RFC 6455 §5), sans-IO.
//!
//! Server → client: [`encode_text`], [`encode_close`], [`encode_pong`] build
//! whole unmasked frames in one exact-size allocation. Server frames are never
//! masked, so the bytes of one event are valid for every client: the channel
//! server encodes an event once and every gateway shard queues clones of the
//! same `Bytes`.
//!
//! Client → server: [`FrameReader`] is the per-connection decoder. The gateway
//! reads sockets into a per-shard scratch buffer and calls
//! [`FrameReader::feed`] with what it read; the reader copies out only what it
//! must keep (an unfinished frame or fragmented message), so an idle
//! connection holds no heap memory for reading at all.
//!
//! The header codec is hand-written (2–14 bytes) rather than tungstenite's
//! `FrameHeader::parse`: that one reads through a `Cursor`, reports errors as
//! tungstenite errors we would have to re-classify into close codes, and
//! cannot reject a control frame or an oversize length before the whole header
//! has arrived. The tests check it against tungstenite both ways.

use bytes::Bytes;

/// Largest client message payload, after reassembling fragments.
/// docs/PROTOCOL.md: "Client frames are at most 16 KiB."
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 16 * 1024;

/// RFC 6455 §5.5: control frames carry at most 125 payload bytes.
const MAX_CONTROL_PAYLOAD: usize = 125;
/// 2 fixed bytes + 8 extended length + 4 mask.
const MAX_HEADER: usize = 14;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

const FIN: u8 = 0x80;
const RSV: u8 = 0x70;
const MASKED: u8 = 0x80;

// ---------------------------------------------------------------------------
// Encoding (server → client)
// ---------------------------------------------------------------------------

/// One unmasked, final text frame carrying `payload`, which must be UTF-8
/// (the server only sends serialized JSON). Header and payload share one
/// allocation of exactly the frame's size.
pub fn encode_text(payload: &[u8]) -> Bytes {
    encode_text_parts(&[payload])
}

/// One text frame whose payload is `parts` back to back, each UTF-8 on its
/// own (the channel server's event with the fields it splices in), built
/// in one allocation without assembling the payload first.
pub fn encode_text_parts(parts: &[&[u8]]) -> Bytes {
    debug_assert!(
        parts.iter().all(|p| std::str::from_utf8(p).is_ok()),
        "text frames carry UTF-8"
    );
    encode_parts(OP_TEXT, parts)
}

/// A Close frame with `code` and as much of `reason` as fits the 125-byte
/// control payload (2 bytes of code + at most 123 of reason), cut on a char
/// boundary so the reason stays valid UTF-8 (clients fail the connection with
/// 1007 otherwise).
pub fn encode_close(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason.as_bytes()[..end];
    let mut frame = Vec::with_capacity(2 + 2 + reason.len());
    frame.push(FIN | OP_CLOSE);
    frame.push((2 + reason.len()) as u8);
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(reason);
    Bytes::from(frame)
}

/// A Pong frame echoing a Ping's payload. A payload over 125 bytes cannot
/// come from a Ping we accepted; it is cut to 125 rather than producing a
/// frame every client would reject.
pub fn encode_pong(payload: &[u8]) -> Bytes {
    debug_assert!(payload.len() <= MAX_CONTROL_PAYLOAD);
    encode(OP_PONG, &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)])
}

fn encode(opcode: u8, payload: &[u8]) -> Bytes {
    encode_parts(opcode, &[payload])
}

fn encode_parts(opcode: u8, parts: &[&[u8]]) -> Bytes {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let header_len = match len {
        0..=125 => 2,
        126..=0xFFFF => 4,
        _ => 10,
    };
    let mut frame = Vec::with_capacity(header_len + len);
    frame.push(FIN | opcode);
    // RFC 6455 §5.2: the minimal length encoding; server frames are unmasked.
    match header_len {
        2 => frame.push(len as u8),
        4 => {
            frame.push(126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            frame.push(127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    for part in parts {
        frame.extend_from_slice(part);
    }
    debug_assert_eq!(frame.len(), frame.capacity());
    // `Bytes::from(Vec)` takes over the allocation without copying.
    Bytes::from(frame)
}

// ---------------------------------------------------------------------------
// Decoding (client → server)
// ---------------------------------------------------------------------------

/// One decoded client frame, as the gateway acts on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// A complete text message: fragments reassembled, UTF-8 validated.
    Text(Vec<u8>),
    /// A Ping; answer with [`encode_pong`] of this payload (≤ 125 bytes).
    Ping(Vec<u8>),
    /// A Pong; its payload is dropped (we never need it back).
    Pong,
    /// A Close, with the client's status code if it sent one. The code is a
    /// valid one to receive (1000–1003, 1007–1014, 3000–4999) and the reason
    /// was valid UTF-8; the reader ignores every byte after it.
    Close(Option<u16>),
}

/// Why a client's byte stream was rejected; the connection is then closed
/// with [`FrameError::close_code`].
#[derive(thiserror::Error, Debug, PartialEq, Eq, Clone, Copy)]
pub enum FrameError {
    /// A message (single frame or reassembled) over
    /// [`MAX_CLIENT_MESSAGE_BYTES`], detected from the frame header.
    #[error("client message over {MAX_CLIENT_MESSAGE_BYTES} bytes")]
    TooBig,
    /// A binary data frame: the RTM protocol is JSON text only.
    #[error("binary message")]
    Binary,
    /// A text message or close reason that is not UTF-8.
    #[error("text is not valid UTF-8")]
    InvalidUtf8,
    /// Anything else RFC 6455 says fails the connection: an unmasked frame,
    /// RSV bits (we negotiate no extension), an unknown opcode, a fragmented
    /// or > 125-byte control frame, a continuation with no message open, a new
    /// data frame while a fragmented message is open, a 1-byte close payload,
    /// a close code not allowed on the wire, a 64-bit length with its top bit
    /// set.
    #[error("websocket protocol violation")]
    Protocol,
}

impl FrameError {
    /// The close code (RFC 6455 §7.4.1) to send before closing.
    pub fn close_code(&self) -> u16 {
        match self {
            FrameError::TooBig => 1009,
            FrameError::Binary => 1003,
            FrameError::InvalidUtf8 => 1007,
            FrameError::Protocol => 1002,
        }
    }
}

/// What the payload of the frame being read is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Text or continuation: appended to the open message.
    Data,
    Ping,
    /// Pong payloads are skipped, never copied.
    Pong,
    Close,
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Between frames; the first `len` bytes of the next frame's header are
    /// staged in `buf` because a read ended inside the header. Kept inline so
    /// a connection with a few stray header bytes still owns no heap memory.
    Header { buf: [u8; MAX_HEADER], len: u8 },
    /// Inside a frame's payload.
    Payload {
        kind: Kind,
        /// FIN bit of this frame (only meaningful for data frames; control
        /// frames are always final).
        fin: bool,
        /// Payload bytes still to come. Fits in u32: data frames are checked
        /// against the 16 KiB limit and control frames against 125 bytes
        /// before we get here.
        remaining: u32,
        /// The frame's masking key, rotated so `mask[0]` applies to the next
        /// payload byte (the frame may arrive in pieces of any length).
        mask: [u8; 4],
        /// Where this control frame's payload starts in `data` (after the open
        /// message's bytes, if any).
        start: u32,
    },
}

const BETWEEN_FRAMES: State = State::Header {
    buf: [0; MAX_HEADER],
    len: 0,
};

/// A parsed client frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    fin: bool,
    opcode: u8,
    len: u64,
    mask: [u8; 4],
    /// Header length in bytes (6, 8 or 14: client frames are always masked).
    size: usize,
}

/// Per-connection decoder state for client frames.
///
/// It keeps only what must survive between reads: up to 14 staged header
/// bytes (inline), the frame being read (position, mask), and the unmasked
/// bytes of an unfinished message in one `Vec` that is moved out, not copied,
/// when the message completes. Payload bytes are unmasked straight from the
/// caller's buffer into that `Vec`, so each byte is copied exactly once, and a
/// frame that arrives whole lands in a `Vec` of exactly its size that becomes
/// the [`ClientFrame::Text`] itself.
#[derive(Debug)]
pub struct FrameReader {
    /// Unmasked bytes kept between calls: the open text message so far, then,
    /// while a Ping or Close is being read, that frame's payload after it.
    /// Empty and unallocated whenever no message or frame is unfinished.
    data: Vec<u8>,
    state: State,
    /// A text frame without FIN was read and its final continuation was not:
    /// `data` holds the message so far.
    msg_open: bool,
    /// A Close was decoded; nothing may follow it (RFC 6455 §5.5.1), so any
    /// later bytes are ignored.
    closed: bool,
}

impl Default for FrameReader {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameReader {
    pub const fn new() -> Self {
        FrameReader {
            data: Vec::new(),
            state: BETWEEN_FRAMES,
            msg_open: false,
            closed: false,
        }
    }

    /// Feed newly read bytes. `bytes` is the per-shard scratch buffer, reused
    /// after the call, so only unfinished frames and messages are copied out.
    /// Every complete frame is decoded (unmasked, validated) and pushed to
    /// `out` in order; an incomplete tail is kept for the next call.
    ///
    /// Stops at the first error and returns it; frames decoded before it are
    /// already in `out`. The connection is then closed with the error's close
    /// code and the reader must not be fed again. After a
    /// [`ClientFrame::Close`] the rest of `bytes`, and anything fed later, is
    /// ignored.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<ClientFrame>) -> Result<(), FrameError> {
        loop {
            if self.closed {
                return Ok(());
            }
            if let State::Header { buf, len } = self.state {
                if bytes.is_empty() {
                    return Ok(());
                }
                let len = usize::from(len);
                let header = if len == 0 {
                    // Usual case: the header is parsed in place in the
                    // caller's buffer, nothing staged.
                    match parse_header(bytes)? {
                        Some(h) => {
                            bytes = &bytes[h.size..];
                            h
                        }
                        None => {
                            // Incomplete header: fewer than 14 bytes left.
                            self.stage_header(buf, 0, bytes);
                            return Ok(());
                        }
                    }
                } else {
                    // A previous read ended inside this header: complete it
                    // from the new bytes (copying at most 14 bytes).
                    let mut joined = buf;
                    let take = (MAX_HEADER - len).min(bytes.len());
                    joined[len..len + take].copy_from_slice(&bytes[..take]);
                    match parse_header(&joined[..len + take])? {
                        Some(h) => {
                            bytes = &bytes[h.size - len..];
                            h
                        }
                        None => {
                            self.stage_header(buf, len, &bytes[..take]);
                            return Ok(());
                        }
                    }
                };
                self.begin_frame(header)?;
            }
            // In a payload: runs even with no bytes left, so a frame with an
            // empty payload completes as soon as its header has.
            self.read_payload(&mut bytes, out)?;
            if let State::Payload { .. } = self.state {
                // `bytes` ran out inside this frame.
                return Ok(());
            }
        }
    }

    /// Bytes this reader holds for unfinished frames and messages, for the
    /// gateway's memory accounting: the heap capacity kept for payload bytes
    /// plus header bytes staged inline. 0 for an idle connection.
    pub fn buffered_bytes(&self) -> usize {
        let staged = match self.state {
            State::Header { len, .. } => usize::from(len),
            State::Payload { .. } => 0,
        };
        self.data.capacity() + staged
    }

    fn stage_header(&mut self, mut buf: [u8; MAX_HEADER], len: usize, more: &[u8]) {
        debug_assert!(len + more.len() < MAX_HEADER);
        buf[len..len + more.len()].copy_from_slice(more);
        self.state = State::Header {
            buf,
            len: (len + more.len()) as u8,
        };
    }

    /// Check a complete header against the connection's state and enter its
    /// payload.
    fn begin_frame(&mut self, h: Header) -> Result<(), FrameError> {
        let kind = match h.opcode {
            OP_TEXT | OP_CONTINUATION => {
                let starts = h.opcode == OP_TEXT;
                // RFC 6455 §5.4: a message's fragments may not interleave
                // with another message's.
                if starts == self.msg_open {
                    return Err(FrameError::Protocol);
                }
                // Checked on the declared length, before any payload byte is
                // kept. `data` holds exactly the open message here.
                let total = (self.data.len() as u64).saturating_add(h.len);
                if total > MAX_CLIENT_MESSAGE_BYTES as u64 {
                    return Err(FrameError::TooBig);
                }
                self.msg_open = !h.fin;
                Kind::Data
            }
            OP_BINARY => return Err(FrameError::Binary),
            OP_PING => Kind::Ping,
            OP_PONG => Kind::Pong,
            OP_CLOSE => Kind::Close,
            // parse_header rejects every other opcode.
            _ => return Err(FrameError::Protocol),
        };
        self.state = State::Payload {
            kind,
            fin: h.fin,
            remaining: h.len as u32,
            mask: h.mask,
            start: self.data.len() as u32,
        };
        Ok(())
    }

    /// Take as much of the current frame's payload from `bytes` as is there,
    /// unmasking it into `data`; finish the frame if it is complete.
    fn read_payload(
        &mut self,
        bytes: &mut &[u8],
        out: &mut Vec<ClientFrame>,
    ) -> Result<(), FrameError> {
        let State::Payload {
            kind,
            fin,
            remaining,
            mask,
            start,
        } = self.state
        else {
            return Ok(());
        };
        let n = (remaining as usize).min(bytes.len());
        let (chunk, rest) = bytes.split_at(n);
        *bytes = rest;
        if kind != Kind::Pong {
            self.reserve(n, remaining as usize, kind != Kind::Data || fin);
            let at = self.data.len();
            self.data.extend_from_slice(chunk);
            unmask(&mut self.data[at..], mask);
        }
        let remaining = remaining - n as u32;
        if remaining > 0 {
            self.state = State::Payload {
                kind,
                fin,
                remaining,
                mask: rotate(mask, n),
                start,
            };
            return Ok(());
        }
        self.state = BETWEEN_FRAMES;
        self.finish_frame(kind, fin, start as usize, out)
    }

    /// Make room for `n` more bytes of a frame that has `remaining` bytes
    /// left (n ≤ remaining). Growth doubles, so a message that arrives in
    /// many small reads or fragments costs O(size) copying, but never past
    /// what is known to be needed: the end of this frame when it ends what we
    /// are collecting (`exact_end`: a final data frame, a control frame), else
    /// the message limit.
    fn reserve(&mut self, n: usize, remaining: usize, exact_end: bool) {
        let len = self.data.len();
        let cap = self.data.capacity();
        if cap - len >= n {
            return;
        }
        let ceiling = if exact_end {
            len + remaining
        } else {
            MAX_CLIENT_MESSAGE_BYTES
        };
        let target = (cap * 2).max(len + n).min(ceiling).max(len + n);
        self.data.reserve_exact(target - len);
    }

    fn finish_frame(
        &mut self,
        kind: Kind,
        fin: bool,
        start: usize,
        out: &mut Vec<ClientFrame>,
    ) -> Result<(), FrameError> {
        match kind {
            Kind::Data => {
                if fin {
                    // Validated on the whole message: fragment boundaries may
                    // split a code point.
                    if std::str::from_utf8(&self.data).is_err() {
                        return Err(FrameError::InvalidUtf8);
                    }
                    out.push(ClientFrame::Text(std::mem::take(&mut self.data)));
                }
            }
            Kind::Ping => {
                let payload = if start == 0 {
                    // Nothing else buffered: hand over the exact-size Vec.
                    std::mem::take(&mut self.data)
                } else {
                    // Interleaved in an open message: split it off the end.
                    self.data.split_off(start)
                };
                out.push(ClientFrame::Ping(payload));
            }
            Kind::Pong => out.push(ClientFrame::Pong),
            Kind::Close => {
                let code = parse_close(&self.data[start..])?;
                self.closed = true;
                // The connection is closing: release any open message now.
                self.data = Vec::new();
                self.msg_open = false;
                out.push(ClientFrame::Close(code));
            }
        }
        Ok(())
    }
}

/// Parse a client frame header from the start of `buf`: `Ok(None)` if more
/// bytes are needed. Violations visible in the first two bytes are reported
/// as soon as those arrive.
fn parse_header(buf: &[u8]) -> Result<Option<Header>, FrameError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    // No extension is ever negotiated, so every RSV bit must be 0 (§5.2).
    if b0 & RSV != 0 {
        return Err(FrameError::Protocol);
    }
    let fin = b0 & FIN != 0;
    let opcode = b0 & 0x0F;
    let control = match opcode {
        OP_CONTINUATION | OP_TEXT | OP_BINARY => false,
        OP_CLOSE | OP_PING | OP_PONG => true,
        _ => return Err(FrameError::Protocol),
    };
    // §5.3: every client frame is masked; the server must close otherwise.
    if b1 & MASKED == 0 {
        return Err(FrameError::Protocol);
    }
    let len7 = b1 & 0x7F;
    // §5.5: control frames are final and use the 7-bit length only.
    if control && (!fin || usize::from(len7) > MAX_CONTROL_PAYLOAD) {
        return Err(FrameError::Protocol);
    }
    let (len, ext) = match len7 {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 2),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let len = u64::from_be_bytes(b.try_into().expect("8 bytes"));
                // §5.2: the most significant bit must be 0.
                if len >> 63 != 0 {
                    return Err(FrameError::Protocol);
                }
                (len, 8)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 0),
    };
    let size = 2 + ext + 4;
    let Some(mask) = buf.get(2 + ext..size) else {
        return Ok(None);
    };
    Ok(Some(Header {
        fin,
        opcode,
        len,
        mask: mask.try_into().expect("4 bytes"),
        size,
    }))
}

/// A Close payload: empty, or a 2-byte code and a UTF-8 reason (§5.5.1).
fn parse_close(payload: &[u8]) -> Result<Option<u16>, FrameError> {
    match payload {
        [] => Ok(None),
        [_] => Err(FrameError::Protocol),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            // §7.4: 1004–1006 and 1015 are reserved or must never be sent on
            // the wire; below 1000 and 1016–2999 are unassigned or reserved.
            let allowed = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !allowed {
                return Err(FrameError::Protocol);
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(FrameError::InvalidUtf8);
            }
            Ok(Some(code))
        }
    }
}

/// XOR `buf` with the repeating 4-byte `mask` (which applies from `buf[0]`),
/// eight bytes at a time in safe code; the compiler vectorizes the loop.
fn unmask(buf: &mut [u8], mask: [u8; 4]) {
    let [a, b, c, d] = mask;
    let wide = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let mut words = buf.chunks_exact_mut(8);
    for word in &mut words {
        let v = u64::from_ne_bytes((&*word).try_into().expect("8 bytes")) ^ wide;
        word.copy_from_slice(&v.to_ne_bytes());
    }
    // The tail starts at a multiple of 8, so the mask phase is still 0.
    for (i, byte) in words.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

/// The mask as seen from `n` bytes further into the payload.
fn rotate(mut mask: [u8; 4], n: usize) -> [u8; 4] {
    mask.rotate_left(n & 3);
    mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
    use tungstenite::protocol::frame::{Frame, FrameHeader};
    use tungstenite::protocol::{CloseFrame, Role, WebSocket};
    use tungstenite::Message;

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// Bytes a tungstenite client (random masks) writes for `msgs`.
    fn client_bytes(msgs: Vec<Message>) -> Vec<u8> {
        let mut ws = WebSocket::from_raw_socket(Cursor::new(Vec::new()), Role::Client, None);
        for m in msgs {
            ws.send(m).unwrap();
        }
        ws.get_ref().get_ref().clone()
    }

    /// A masked frame formatted by tungstenite, with any header we like.
    fn raw(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let header = FrameHeader {
            is_final: fin,
            opcode,
            mask: Some(MASK),
            ..FrameHeader::default()
        };
        let mut v = Vec::new();
        Frame::from_payload(header, Bytes::copy_from_slice(payload))
            .format(&mut v)
            .unwrap();
        v
    }

    fn text_op() -> OpCode {
        OpCode::Data(Data::Text)
    }

    fn cont_op() -> OpCode {
        OpCode::Data(Data::Continue)
    }

    fn decode_all(bytes: &[u8]) -> Result<Vec<ClientFrame>, FrameError> {
        let mut r = FrameReader::new();
        let mut out = Vec::new();
        r.feed(bytes, &mut out)?;
        assert_eq!(r.buffered_bytes(), 0, "whole frames leave nothing behind");
        Ok(out)
    }

    /// Payload of exactly `n` bytes, mixing 1-, 2- and 3-byte UTF-8.
    fn utf8_payload(n: usize) -> String {
        let mut s = String::with_capacity(n);
        let pieces = ["a", "é", "€", "z"];
        let mut i = 0;
        while s.len() < n {
            let p = pieces[i % pieces.len()];
            if s.len() + p.len() <= n {
                s.push_str(p);
            } else {
                s.push('x');
            }
            i += 1;
        }
        s
    }

    // ----- encoding ------------------------------------------------------

    #[test]
    fn encode_text_matches_tungstenite_and_decodes() {
        for n in [0, 5, 125, 126, 65535, 65536, 70 * 1024] {
            let payload = utf8_payload(n);
            let ours = encode_text(payload.as_bytes());

            // Byte for byte what tungstenite's own encoder writes.
            let mut theirs = Vec::new();
            Frame::message(payload.clone(), text_op(), true)
                .format(&mut theirs)
                .unwrap();
            assert_eq!(&ours[..], &theirs[..], "payload {n}");

            // tungstenite's header parser agrees on every field.
            let mut cur = Cursor::new(&ours[..]);
            let (h, len) = FrameHeader::parse(&mut cur).unwrap().unwrap();
            assert!(h.is_final && !h.rsv1 && !h.rsv2 && !h.rsv3);
            assert_eq!(h.opcode, text_op());
            assert_eq!(h.mask, None);
            assert_eq!(len, n as u64);
            assert_eq!(cur.position() as usize + n, ours.len());

            // And a tungstenite client reads the message back intact.
            let mut ws = WebSocket::from_raw_socket(Cursor::new(ours.to_vec()), Role::Client, None);
            match ws.read().unwrap() {
                Message::Text(t) => assert_eq!(t.as_str(), payload, "payload {n}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn encode_text_allocates_exactly_one_frame() {
        for n in [5, 126, 65536] {
            let b = encode_text(&vec![b'a'; n]);
            let v: Vec<u8> = b.into();
            assert_eq!(v.capacity(), v.len(), "{n}");
        }
    }

    #[test]
    fn encode_close_round_trips_and_truncates_on_char_boundary() {
        let mut ws = WebSocket::from_raw_socket(
            Cursor::new(encode_close(4000, "slow_consumer").to_vec()),
            Role::Client,
            None,
        );
        match ws.read().unwrap() {
            Message::Close(Some(CloseFrame { code, reason })) => {
                assert_eq!(u16::from(code), 4000);
                assert_eq!(reason.as_str(), "slow_consumer");
            }
            other => panic!("{other:?}"),
        }

        // 100 × "é" is 200 bytes; 123 would split a char, so 122 remain.
        let long = "é".repeat(100);
        let frame = encode_close(1001, &long);
        assert_eq!(frame.len(), 2 + 2 + 122);
        assert!(frame.len() - 2 <= MAX_CONTROL_PAYLOAD);
        let mut ws = WebSocket::from_raw_socket(Cursor::new(frame.to_vec()), Role::Client, None);
        match ws.read().unwrap() {
            Message::Close(Some(CloseFrame { code, reason })) => {
                assert_eq!(code, CloseCode::Away);
                assert_eq!(reason.as_str(), "é".repeat(61));
            }
            other => panic!("{other:?}"),
        }

        // ASCII fills all 123 bytes.
        assert_eq!(encode_close(1000, &"r".repeat(300)).len(), 2 + 125);
    }

    #[test]
    fn encode_pong_round_trips() {
        let mut ws = WebSocket::from_raw_socket(
            Cursor::new(encode_pong(b"hb-42").to_vec()),
            Role::Client,
            None,
        );
        match ws.read().unwrap() {
            Message::Pong(p) => assert_eq!(&p[..], b"hb-42"),
            other => panic!("{other:?}"),
        }
        assert_eq!(&encode_pong(b"")[..], &[0x8A, 0x00]);
    }

    // ----- header codec --------------------------------------------------

    #[test]
    fn header_parse_agrees_with_tungstenite_format() {
        for (fin, op, len) in [
            (true, text_op(), 0u64),
            (false, text_op(), 125),
            (true, cont_op(), 126),
            (true, OpCode::Data(Data::Binary), 65535),
            (false, cont_op(), 65536),
            (true, text_op(), 1 << 40),
        ] {
            let h = FrameHeader {
                is_final: fin,
                opcode: op,
                mask: Some(MASK),
                ..FrameHeader::default()
            };
            let mut v = Vec::new();
            h.format(len, &mut v).unwrap();
            let ours = parse_header(&v).unwrap().unwrap();
            assert_eq!(ours.fin, fin);
            assert_eq!(ours.opcode, u8::from(op));
            assert_eq!(ours.len, len);
            assert_eq!(ours.mask, MASK);
            assert_eq!(ours.size, v.len());
            for cut in 0..v.len() {
                assert_eq!(parse_header(&v[..cut]), Ok(None), "cut at {cut}");
            }
        }
    }

    #[test]
    fn unmask_matches_bytewise_at_every_phase() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        for start in 0..9 {
            for len in [0, 1, 3, 7, 8, 9, 15, 16, 17, 64, 991 - start] {
                let mut fast = data[start..start + len].to_vec();
                let m = rotate(MASK, start);
                unmask(&mut fast, m);
                let slow: Vec<u8> = data[start..start + len]
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ MASK[(start + i) % 4])
                    .collect();
                assert_eq!(fast, slow, "start {start} len {len}");
            }
        }
    }

    // ----- decoding ------------------------------------------------------

    /// A mixed stream and what it decodes to; exercises 7- and 16-bit
    /// lengths, an empty message, control frames inside a fragmented
    /// message, and a Close at the end.
    fn mixed_stream() -> (Vec<u8>, Vec<ClientFrame>) {
        let long = utf8_payload(300);
        let mut bytes = client_bytes(vec![
            Message::Text(r#"{"id":1,"type":"ping"}"#.into()),
            Message::Text(long.clone().into()),
            Message::Text("".into()),
            Message::Ping(Bytes::from_static(b"keepalive")),
        ]);
        bytes.extend(raw(false, text_op(), "frag-€".as_bytes()[..6].as_ref()));
        bytes.extend(client_bytes(vec![Message::Ping(Bytes::new())]));
        bytes.extend(raw(false, cont_op(), &"frag-€".as_bytes()[6..]));
        bytes.extend(client_bytes(vec![Message::Pong(Bytes::from_static(b"x"))]));
        bytes.extend(raw(true, cont_op(), b"-end"));
        bytes.extend(client_bytes(vec![Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        }))]));
        let expected = vec![
            ClientFrame::Text(br#"{"id":1,"type":"ping"}"#.to_vec()),
            ClientFrame::Text(long.into_bytes()),
            ClientFrame::Text(Vec::new()),
            ClientFrame::Ping(b"keepalive".to_vec()),
            ClientFrame::Ping(Vec::new()),
            ClientFrame::Pong,
            ClientFrame::Text("frag-€-end".as_bytes().to_vec()),
            ClientFrame::Close(Some(1000)),
        ];
        (bytes, expected)
    }

    #[test]
    fn decodes_whole_stream_in_one_feed() {
        let (bytes, expected) = mixed_stream();
        assert_eq!(decode_all(&bytes).unwrap(), expected);
    }

    #[test]
    fn every_split_point_decodes_the_same() {
        let (bytes, expected) = mixed_stream();
        for cut in 0..=bytes.len() {
            let mut r = FrameReader::new();
            let mut out = Vec::new();
            r.feed(&bytes[..cut], &mut out).unwrap();
            r.feed(&bytes[cut..], &mut out).unwrap();
            assert_eq!(out, expected, "split at {cut}");
            assert_eq!(r.buffered_bytes(), 0);
        }
    }

    #[test]
    fn one_byte_at_a_time_decodes_the_same() {
        let (bytes, expected) = mixed_stream();
        let mut r = FrameReader::new();
        let mut out = Vec::new();
        for b in &bytes {
            r.feed(std::slice::from_ref(b), &mut out).unwrap();
        }
        assert_eq!(out, expected);
    }

    #[test]
    fn uneven_chunks_of_a_max_size_message() {
        let payload = utf8_payload(MAX_CLIENT_MESSAGE_BYTES);
        let bytes = client_bytes(vec![
            Message::Text(payload.clone().into()),
            Message::Text("next".into()),
        ]);
        for chunk in [1, 2, 3, 5, 7, 13, 1000, 4096] {
            let mut r = FrameReader::new();
            let mut out = Vec::new();
            for piece in bytes.chunks(chunk) {
                r.feed(piece, &mut out).unwrap();
                assert!(r.buffered_bytes() <= MAX_CLIENT_MESSAGE_BYTES + MAX_HEADER);
            }
            assert_eq!(
                out,
                vec![
                    ClientFrame::Text(payload.clone().into_bytes()),
                    ClientFrame::Text(b"next".to_vec()),
                ],
                "chunk {chunk}"
            );
            assert_eq!(r.buffered_bytes(), 0);
        }
    }

    #[test]
    fn whole_frame_lands_in_exact_size_vec_without_staging() {
        let bytes = client_bytes(vec![Message::Text(utf8_payload(1000).into())]);
        let out = decode_all(&bytes).unwrap();
        match &out[..] {
            [ClientFrame::Text(t)] => assert_eq!(t.capacity(), 1000),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn partial_state_is_small_and_released() {
        let bytes = client_bytes(vec![Message::Text(utf8_payload(5000).into())]);
        let mut r = FrameReader::new();
        let mut out = Vec::new();
        // Three header bytes: staged inline, no heap.
        r.feed(&bytes[..3], &mut out).unwrap();
        assert_eq!(r.buffered_bytes(), 3);
        assert_eq!(r.data.capacity(), 0);
        // The rest of the header: still nothing allocated for the payload.
        r.feed(&bytes[3..8], &mut out).unwrap();
        assert_eq!(r.buffered_bytes(), 0);
        // Some payload: only what arrived is held (not the declared 5000).
        r.feed(&bytes[8..108], &mut out).unwrap();
        assert_eq!(r.buffered_bytes(), 100);
        r.feed(&bytes[108..], &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(r.buffered_bytes(), 0);
        assert_eq!(r.data.capacity(), 0);
    }

    #[test]
    fn fragmented_text_reassembles_with_split_code_points() {
        // "€" is E2 82 AC; "😀" is F0 9F 98 80. Cut both mid-character, and
        // make a middle fragment that is not UTF-8 on its own.
        let msg = "a€b😀c".as_bytes();
        let mut bytes = raw(false, text_op(), &msg[..2]); // "a" E2
        bytes.extend(raw(false, cont_op(), &msg[2..3])); // 82
        bytes.extend(raw(false, cont_op(), &msg[3..6])); // AC "b" F0
        bytes.extend(raw(false, cont_op(), &[])); // empty fragment
        bytes.extend(raw(true, cont_op(), &msg[6..])); // 9F 98 80 "c"
        assert_eq!(
            decode_all(&bytes).unwrap(),
            vec![ClientFrame::Text(msg.to_vec())]
        );
        for cut in 0..=bytes.len() {
            let mut r = FrameReader::new();
            let mut out = Vec::new();
            r.feed(&bytes[..cut], &mut out).unwrap();
            r.feed(&bytes[cut..], &mut out).unwrap();
            assert_eq!(out, vec![ClientFrame::Text(msg.to_vec())], "split at {cut}");
        }
    }

    #[test]
    fn ping_with_payload_and_inside_a_fragmented_message() {
        let out = decode_all(&client_bytes(vec![Message::Ping(Bytes::from_static(
            b"are you there",
        ))]))
        .unwrap();
        assert_eq!(out, vec![ClientFrame::Ping(b"are you there".to_vec())]);

        let payload = [7u8; 125];
        let mut bytes = raw(false, text_op(), b"{\"a\":");
        bytes.extend(raw(true, OpCode::Control(Control::Ping), &payload));
        bytes.extend(raw(true, cont_op(), b"1}"));
        assert_eq!(
            decode_all(&bytes).unwrap(),
            vec![
                ClientFrame::Ping(payload.to_vec()),
                ClientFrame::Text(b"{\"a\":1}".to_vec()),
            ]
        );
    }

    #[test]
    fn close_with_and_without_code() {
        let with = client_bytes(vec![Message::Close(Some(CloseFrame {
            code: CloseCode::Away,
            reason: "".into(),
        }))]);
        assert_eq!(
            decode_all(&with).unwrap(),
            vec![ClientFrame::Close(Some(1001))]
        );
        let without = client_bytes(vec![Message::Close(None)]);
        assert_eq!(
            decode_all(&without).unwrap(),
            vec![ClientFrame::Close(None)]
        );
        let private = client_bytes(vec![Message::Close(Some(CloseFrame {
            code: CloseCode::from(4999),
            reason: "ünïcode".into(),
        }))]);
        assert_eq!(
            decode_all(&private).unwrap(),
            vec![ClientFrame::Close(Some(4999))]
        );
    }

    #[test]
    fn bytes_after_close_are_ignored() {
        let mut bytes = client_bytes(vec![Message::Close(None)]);
        bytes.extend(client_bytes(vec![Message::Text("late".into())]));
        bytes.extend([0xff, 0xff, 0xff]); // garbage would otherwise be an error
        let mut r = FrameReader::new();
        let mut out = Vec::new();
        r.feed(&bytes, &mut out).unwrap();
        r.feed(b"more garbage", &mut out).unwrap();
        assert_eq!(out, vec![ClientFrame::Close(None)]);
    }

    #[test]
    fn exactly_16_kib_is_accepted_and_one_more_byte_is_too_big() {
        let max = "a".repeat(MAX_CLIENT_MESSAGE_BYTES);
        let out = decode_all(&client_bytes(vec![Message::Text(max.clone().into())])).unwrap();
        assert_eq!(out, vec![ClientFrame::Text(max.clone().into_bytes())]);

        let over = "a".repeat(MAX_CLIENT_MESSAGE_BYTES + 1);
        let bytes = client_bytes(vec![Message::Text(over.into())]);
        assert_eq!(decode_all(&bytes), Err(FrameError::TooBig));

        // Fragmented: 8 KiB + 8 KiB is fine, 8 KiB + 8 KiB + 1 is not.
        let half = &max.as_bytes()[..MAX_CLIENT_MESSAGE_BYTES / 2];
        let mut ok = raw(false, text_op(), half);
        ok.extend(raw(true, cont_op(), half));
        assert_eq!(
            decode_all(&ok).unwrap(),
            vec![ClientFrame::Text(max.clone().into_bytes())]
        );
        let mut too_big = raw(false, text_op(), half);
        too_big.extend(raw(false, cont_op(), half));
        too_big.extend(raw(true, cont_op(), b"a"));
        assert_eq!(decode_all(&too_big), Err(FrameError::TooBig));
    }

    #[test]
    fn too_big_is_rejected_from_the_header_alone() {
        for len in [MAX_CLIENT_MESSAGE_BYTES as u64 + 1, 16 << 20, 1 << 62] {
            let h = FrameHeader {
                opcode: text_op(),
                mask: Some(MASK),
                ..FrameHeader::default()
            };
            let mut header = Vec::new();
            h.format(len, &mut header).unwrap();
            // Only the header is fed: no payload byte needs to arrive.
            let mut r = FrameReader::new();
            assert_eq!(
                r.feed(&header, &mut Vec::new()),
                Err(FrameError::TooBig),
                "{len}"
            );
            assert_eq!(r.data.capacity(), 0);
        }
    }

    #[test]
    fn binary_is_rejected() {
        let bytes = client_bytes(vec![Message::Binary(Bytes::from_static(b"\x00\x01"))]);
        assert_eq!(decode_all(&bytes), Err(FrameError::Binary));
        assert_eq!(FrameError::Binary.close_code(), 1003);
    }

    #[test]
    fn invalid_utf8_is_rejected() {
        let bytes = raw(true, text_op(), &[b'a', 0xff, b'b']);
        assert_eq!(decode_all(&bytes), Err(FrameError::InvalidUtf8));
        // A message that ends inside a code point.
        let mut bytes = raw(false, text_op(), b"ok");
        bytes.extend(raw(true, cont_op(), &[0xE2, 0x82]));
        assert_eq!(decode_all(&bytes), Err(FrameError::InvalidUtf8));
        // A close reason.
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.push(0xC0);
        let close = raw(true, OpCode::Control(Control::Close), &payload);
        assert_eq!(decode_all(&close), Err(FrameError::InvalidUtf8));
        assert_eq!(FrameError::InvalidUtf8.close_code(), 1007);
    }

    #[test]
    fn protocol_violations_are_rejected() {
        let ping = OpCode::Control(Control::Ping);
        let close = OpCode::Control(Control::Close);
        let with_header = |f: &dyn Fn(&mut FrameHeader), payload: &[u8]| {
            let mut h = FrameHeader {
                opcode: text_op(),
                mask: Some(MASK),
                ..FrameHeader::default()
            };
            f(&mut h);
            let mut v = Vec::new();
            Frame::from_payload(h, Bytes::copy_from_slice(payload))
                .format(&mut v)
                .unwrap();
            v
        };
        let mut open_then_text = raw(false, text_op(), b"a");
        open_then_text.extend(raw(true, text_op(), b"b"));
        let mut huge_len = vec![0x81, 0xFF];
        huge_len.extend((1u64 << 63).to_be_bytes());
        huge_len.extend(MASK);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("unmasked", encode_text(b"hi").to_vec()),
            ("rsv1", with_header(&|h| h.rsv1 = true, b"hi")),
            ("rsv2", with_header(&|h| h.rsv2 = true, b"hi")),
            ("rsv3", with_header(&|h| h.rsv3 = true, b"hi")),
            (
                "opcode 3",
                with_header(&|h| h.opcode = OpCode::from(3), b""),
            ),
            (
                "opcode 0xB",
                with_header(&|h| h.opcode = OpCode::from(0xB), b""),
            ),
            ("fragmented ping", raw(false, ping, b"p")),
            ("126-byte ping", raw(true, ping, &[0; 126])),
            ("continuation without start", raw(true, cont_op(), b"x")),
            ("text while a message is open", open_then_text),
            ("1-byte close", raw(true, close, &[3])),
            ("close code 1005", raw(true, close, &1005u16.to_be_bytes())),
            ("close code 999", raw(true, close, &999u16.to_be_bytes())),
            ("close code 2000", raw(true, close, &2000u16.to_be_bytes())),
            ("64-bit length with top bit", huge_len),
        ];
        for (name, bytes) in cases {
            assert_eq!(decode_all(&bytes), Err(FrameError::Protocol), "{name}");
        }
        assert_eq!(FrameError::Protocol.close_code(), 1002);
        assert_eq!(FrameError::TooBig.close_code(), 1009);
    }

    #[test]
    fn bad_control_header_fails_before_the_rest_arrives() {
        // Two bytes announce a fragmented ping: no need to wait for the mask.
        let mut r = FrameReader::new();
        assert_eq!(
            r.feed(&[0x09, 0x80], &mut Vec::new()),
            Err(FrameError::Protocol)
        );
    }

    #[test]
    fn frames_before_an_error_are_delivered() {
        let mut bytes = client_bytes(vec![Message::Text("first".into())]);
        bytes.extend(client_bytes(vec![Message::Binary(Bytes::from_static(
            b"b",
        ))]));
        let mut r = FrameReader::new();
        let mut out = Vec::new();
        assert_eq!(r.feed(&bytes, &mut out), Err(FrameError::Binary));
        assert_eq!(out, vec![ClientFrame::Text(b"first".to_vec())]);
    }

    #[test]
    fn reader_is_small() {
        let size = std::mem::size_of::<FrameReader>();
        println!("size_of::<FrameReader>() = {size}");
        assert!(size <= 64, "{size}");
        assert_eq!(FrameReader::new().buffered_bytes(), 0);
    }
}
