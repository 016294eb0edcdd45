//! The client side of RFC 6455, sans-IO: the upgrade request, the check of
//! the server's 101, server frames parsed in place, and masked client frames.
//! Transponder and nats-server's websocket listener are both spoken through
//! it.

use tungstenite::handshake::derive_accept_key;

/// The upgrade request for `path` (with its query) on `host`, and the
/// Sec-WebSocket-Accept value the server must answer with.
pub fn upgrade_request(
    host: &str,
    path: &str,
    bearer: Option<&str>,
    nonce: [u8; 16],
) -> (Vec<u8>, String) {
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD.encode(nonce);
    let accept = derive_accept_key(key.as_bytes());
    let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{auth}\r\n"
    );
    (req.into_bytes(), accept)
}

/// Checks the 101 response at the start of `buf`. `Ok(None)`: incomplete;
/// `Ok(Some(n))`: the head is `n` bytes long and frames follow it.
pub fn check_upgrade(buf: &[u8], accept: &str) -> Result<Option<usize>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > 16 * 1024 => {
            return Err("oversize upgrade response".into())
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("bad upgrade response: {e}")),
    };
    if resp.code != Some(101) {
        let body = String::from_utf8_lossy(&buf[n..]);
        return Err(format!(
            "upgrade refused: {} {}",
            resp.code.unwrap_or(0),
            body.trim()
        ));
    }
    let ok = resp.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("sec-websocket-accept") && h.value == accept.as_bytes()
    });
    if !ok {
        return Err("wrong Sec-WebSocket-Accept".into());
    }
    Ok(Some(n))
}

pub const OP_CONTINUATION: u8 = 0;
pub const OP_TEXT: u8 = 1;
pub const OP_BINARY: u8 = 2;
pub const OP_CLOSE: u8 = 8;
pub const OP_PING: u8 = 9;
pub const OP_PONG: u8 = 10;

/// One server frame found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    /// The payload's place in the buffer.
    pub payload: std::ops::Range<usize>,
    /// Bytes the whole frame takes.
    pub len: usize,
}

/// Frames a server may send us, at most this big (nats-server's default
/// max_payload is 1 MiB; ours are far smaller).
const FRAME_BYTES_MAX: usize = 8 << 20;

/// Parses the frame at the start of `b`: `Ok(None)` when more bytes are
/// needed.
pub fn parse(b: &[u8]) -> Result<Option<Frame>, String> {
    if b.len() < 2 {
        return Ok(None);
    }
    if b[1] & 0x80 != 0 {
        return Err("masked server frame".into());
    }
    if b[0] & 0x70 != 0 {
        return Err("reserved bits set (compression is not negotiated)".into());
    }
    let (len, off) = match b[1] & 0x7f {
        126 if b.len() < 4 => return Ok(None),
        126 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
        127 if b.len() < 10 => return Ok(None),
        127 => (
            usize::try_from(u64::from_be_bytes(b[2..10].try_into().expect("8 bytes")))
                .unwrap_or(usize::MAX),
            10,
        ),
        l => (l as usize, 2),
    };
    if len > FRAME_BYTES_MAX {
        return Err(format!("server frame of {len} bytes"));
    }
    if b.len() < off + len {
        return Ok(None);
    }
    Ok(Some(Frame {
        fin: b[0] & 0x80 != 0,
        opcode: b[0] & 0x0f,
        payload: off..off + len,
        len: off + len,
    }))
}

/// Appends one final, masked client frame.
pub fn write_masked(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= u16::MAX as usize => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    for (i, b) in out[start..].iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_frame_round_trips_through_tungstenite() {
        use std::io::Cursor;
        use tungstenite::protocol::frame::FrameHeader;
        for n in [0usize, 5, 125, 126, 70_000] {
            let payload: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let mut out = Vec::new();
            write_masked(&mut out, OP_BINARY, &payload, [1, 2, 3, 4]);
            let mut c = Cursor::new(&out[..]);
            let (h, len) = FrameHeader::parse(&mut c).unwrap().unwrap();
            assert_eq!(len as usize, n);
            let mut body = out[c.position() as usize..].to_vec();
            let mask = h.mask.unwrap();
            for (i, b) in body.iter_mut().enumerate() {
                *b ^= mask[i & 3];
            }
            assert_eq!(body, payload);
        }
    }

    #[test]
    fn parses_server_frames() {
        let mut b = vec![0x81, 3, b'a', b'b', b'c', 0x82];
        let f = parse(&b).unwrap().unwrap();
        assert_eq!(
            (f.fin, f.opcode, f.payload.clone(), f.len),
            (true, 1, 2..5, 5)
        );
        assert_eq!(parse(&b[5..]).unwrap(), None);
        b[1] |= 0x80;
        assert!(parse(&b).is_err());
        let mut big = vec![0x01, 126, 0x01, 0x00];
        big.extend(std::iter::repeat_n(b'x', 256));
        let f = parse(&big).unwrap().unwrap();
        assert_eq!((f.fin, f.opcode, f.payload.len()), (false, OP_TEXT, 256));
    }

    #[test]
    fn checks_the_upgrade() {
        let (req, accept) = upgrade_request("h:1", "/?t=1", None, [7; 16]);
        assert!(req.starts_with(b"GET /?t=1 HTTP/1.1\r\n"));
        let mut ok = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        .into_bytes();
        let head = ok.len();
        ok.extend_from_slice(&[0x81, 0x00]);
        assert_eq!(check_upgrade(&ok, &accept).unwrap(), Some(head));
        assert_eq!(check_upgrade(&ok[..20], &accept).unwrap(), None);
        let bad = "HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno";
        assert!(check_upgrade(bad.as_bytes(), &accept)
            .unwrap_err()
            .contains("403"));
    }
}
