//! The websocket frame reader (`gateway::frame::FrameReader::feed`).
//!
//! Input: one mode byte, then up to seven 2-byte split points, then the
//! stream. With the mode's top bit set the stream is built from frame specs
//! (see `frames_from`), so most inputs are well-formed masked frames and the
//! fuzzer spends its time in reassembly, limits and close handling rather
//! than in header rejection.
//!
//! Invariants, beyond "never panics":
//! - the same frames and the same error whether the stream arrives at once,
//!   split at the chosen points, or one byte at a time;
//! - every text message is valid UTF-8 and at most
//!   `limits::CLIENT_MESSAGE_BYTES_MAX` bytes; a ping payload at most 125;
//! - nothing follows a Close;
//! - the reader never holds more than one message, one control frame and
//!   one header (`buffered_bytes`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use transponder::gateway::frame::{ClientFrame, FrameError, FrameReader};
use transponder::limits::CLIENT_MESSAGE_BYTES_MAX;

/// RFC 6455 §5.5: control frames carry at most 125 bytes.
const CONTROL_PAYLOAD_BYTES_MAX: usize = 125;
/// The most a reader may hold: an open message, a control frame read in
/// the middle of it, and a staged header (at most 14 bytes).
const READER_BYTES_MAX: usize = CLIENT_MESSAGE_BYTES_MAX + CONTROL_PAYLOAD_BYTES_MAX + 14;
/// Streams up to this long are also fed one byte at a time.
const BYTEWISE_STREAM_BYTES_MAX: usize = 512;

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let n_cuts = usize::from(mode & 0x07);
    if rest.len() < 2 * n_cuts {
        return;
    }
    let (cut_bytes, body) = rest.split_at(2 * n_cuts);
    let stream = if mode & 0x80 != 0 {
        frames_from(body)
    } else {
        body.to_vec()
    };
    let mut cuts: Vec<usize> = cut_bytes
        .chunks(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (stream.len() + 1))
        .collect();
    cuts.sort_unstable();

    let whole = decode([&stream[..]]);
    check_frames(&whole.0);

    let mut pieces = Vec::with_capacity(cuts.len() + 1);
    let mut at = 0;
    for cut in cuts {
        pieces.push(&stream[at..cut]);
        at = cut;
    }
    pieces.push(&stream[at..]);
    assert_eq!(decode(pieces), whole, "split at points");

    if stream.len() <= BYTEWISE_STREAM_BYTES_MAX {
        assert_eq!(decode(stream.chunks(1)), whole, "one byte at a time");
    }
});

/// Feeds every piece in order until the first error, as the gateway does.
fn decode<'a>(
    pieces: impl IntoIterator<Item = &'a [u8]>,
) -> (Vec<ClientFrame>, Result<(), FrameError>) {
    let mut reader = FrameReader::new();
    let mut out = Vec::new();
    for piece in pieces {
        let result = reader.feed(piece, &mut out);
        assert!(
            reader.buffered_bytes() <= READER_BYTES_MAX,
            "reader holds {} bytes",
            reader.buffered_bytes()
        );
        if result.is_err() {
            return (out, result);
        }
    }
    (out, Ok(()))
}

fn check_frames(frames: &[ClientFrame]) {
    for (i, frame) in frames.iter().enumerate() {
        match frame {
            ClientFrame::Text(t) => {
                assert!(t.len() <= CLIENT_MESSAGE_BYTES_MAX, "{} bytes", t.len());
                assert!(std::str::from_utf8(t).is_ok(), "text is not UTF-8");
            }
            ClientFrame::Ping(p) => assert!(p.len() <= CONTROL_PAYLOAD_BYTES_MAX),
            ClientFrame::Pong => {}
            ClientFrame::Close(code) => {
                assert_eq!(i, frames.len() - 1, "a frame after Close");
                if let Some(code) = code {
                    assert!(matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999));
                }
            }
        }
    }
}

/// Builds a stream of client frames from specs. Each spec is a flags byte,
/// a length, a mask byte, then payload bytes (zero-padded when the input
/// runs out). Flags: bit 7 FIN; bit 6 the 16-bit length form even when 7
/// bits would do; bits 4–5 the length class; bits 0–3 the kind.
fn frames_from(mut spec: &[u8]) -> Vec<u8> {
    let mut take = |n: usize| -> Vec<u8> {
        let n = n.min(spec.len());
        let (head, tail) = spec.split_at(n);
        spec = tail;
        head.to_vec()
    };
    let mut stream = Vec::new();
    loop {
        let Some(&flags) = take(1).first() else {
            return stream;
        };
        let fin = flags & 0x80 != 0;
        let byte = |v: &[u8]| v.first().copied().unwrap_or(0);
        let len: u64 = match (flags >> 4) & 0x03 {
            0 => u64::from(byte(&take(1)) & 0x7F),
            1 => u64::from(byte(&take(1))),
            // Around the message limit, either side of it.
            2 => {
                let v = take(2);
                let delta = u16::from_le_bytes([byte(&v), byte(v.get(1..).unwrap_or(&[]))]) % 512;
                (CLIENT_MESSAGE_BYTES_MAX as u64 - 256) + u64::from(delta)
            }
            _ => u64::from(byte(&take(1))) << 56,
        };
        let (b0, masked) = match flags & 0x0F {
            0..=3 => (0x1, true),     // text
            4 | 5 => (0x0, true),     // continuation
            6 => (0x9, true),         // ping
            7 => (0xA, true),         // pong
            8 => (0x8, true),         // close
            9 => (0x2, true),         // binary
            10 => (0x1 | 0x40, true), // text with RSV1
            11 => (0x1, false),       // unmasked text
            k => (k + 0x3, true),     // 0xF–0x12: reserved opcodes and beyond
        };
        stream.push(if fin { 0x80 } else { 0 } | (b0 & 0x7F));
        let mask_bit = if masked { 0x80 } else { 0 };
        if len < 126 && flags & 0x40 == 0 {
            stream.push(mask_bit | len as u8);
        } else if len <= 0xFFFF {
            stream.push(mask_bit | 126);
            stream.extend((len as u16).to_be_bytes());
        } else {
            stream.push(mask_bit | 127);
            stream.extend(len.to_be_bytes());
        }
        let m = byte(&take(1));
        let mask = [m, m ^ 0x5A, m.wrapping_add(1), !m];
        if masked {
            stream.extend(mask);
        }
        // Huge declared lengths are rejected from the header: send none of it.
        let payload_len = if len > 2 * CLIENT_MESSAGE_BYTES_MAX as u64 {
            0
        } else {
            len as usize
        };
        let mut payload = take(payload_len);
        payload.resize(payload_len, 0);
        if masked {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
        }
        stream.extend(payload);
    }
}
