//! The node link's wire format: length-prefixed binary frames.
//!
//! ```text
//! frame     = length:u32be kind:u8 body      (length counts kind and body)
//! challenge = kind 4: nonce[16]              (accepting side, first)
//! hello     = kind 1: magic "TPL2", node:u16be, epoch:u64be, mac[32]
//! beat      = kind 2: epoch:u64be            (heartbeat, every 100 ms idle)
//! message   = kind 3: epoch:u64be from_core:u32be to_core:u32be msg
//! ```
//!
//! **Authentication.** The accepting node speaks first: a challenge with
//! a fresh random nonce. The connecting node answers with its hello, whose
//! `mac` is HMAC-SHA256 under the key every node derives from the shared
//! admin token, over the nonce, its id and its epoch
//! (`TicketKey::link_hello_mac`). A hello that does not verify ends the
//! link before any message is read: only a node of this cluster can speak
//! for a node, and a recorded hello is worthless (the next challenge
//! differs). Until its hello, a link may hold at most [`HELLO_BYTES_MAX`].
//! The link is not encrypted: run it on a private network.
//!
//! `msg` is a [`Msg`] in postcard (serde, compact varints; ids as packed
//! `u64`s, JSON values as their text). Every frame says which epoch its
//! sender is in, so a receiver can tell a message sent on an older
//! placement. The first frame of a link is `hello`; a frame over
//! [`LINK_FRAME_BYTES_MAX`] or of an unknown kind ends the link.

use bytes::Buf;

use crate::placement::NodeId;
use crate::shard::message::Msg;

/// Largest frame either side sends or accepts: a subscribe acknowledgement
/// with a full resume replay is the biggest message (64 events of at most a
/// few hundred KiB each would still fit).
pub const LINK_FRAME_BYTES_MAX: usize = 16 << 20;

/// The most a link may send before its hello has verified: the hello
/// frame itself.
pub const HELLO_BYTES_MAX: usize = 4 + HELLO_BODY_BYTES;

const MAGIC: &[u8; 4] = b"TPL2";
const KIND_HELLO: u8 = 1;
const KIND_BEAT: u8 = 2;
const KIND_MESSAGE: u8 = 3;
const KIND_CHALLENGE: u8 = 4;
/// kind, magic, node, epoch, mac.
const HELLO_BODY_BYTES: usize = 1 + 4 + 2 + 8 + 32;

/// One decoded frame.
#[derive(Debug)]
pub enum Frame {
    Challenge {
        nonce: [u8; 16],
    },
    Hello {
        node: NodeId,
        epoch: u64,
        mac: [u8; 32],
    },
    Beat {
        epoch: u64,
    },
    Message {
        epoch: u64,
        from_core: u32,
        to_core: u32,
        msg: Msg,
    },
}

/// Why a link's input cannot be read any further (the link ends).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("empty frame")]
    Empty,
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("bad hello")]
    BadHello,
    #[error("frame body too short")]
    Short,
    #[error("undecodable message: {0}")]
    Decode(String),
}

/// Appends the frame's bytes to `out`.
fn frame_with(out: &mut Vec<u8>, kind: u8, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.push(kind);
    body(out);
    let len = out.len() - start - 4;
    assert!(len <= LINK_FRAME_BYTES_MAX, "link frame of {len} bytes");
    out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
}

pub fn encode_challenge(out: &mut Vec<u8>, nonce: &[u8; 16]) {
    frame_with(out, KIND_CHALLENGE, |b| b.extend_from_slice(nonce));
}

pub fn encode_hello(out: &mut Vec<u8>, node: NodeId, epoch: u64, mac: &[u8; 32]) {
    frame_with(out, KIND_HELLO, |b| {
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&node.to_be_bytes());
        b.extend_from_slice(&epoch.to_be_bytes());
        b.extend_from_slice(mac);
    });
}

pub fn encode_beat(out: &mut Vec<u8>, epoch: u64) {
    frame_with(out, KIND_BEAT, |b| {
        b.extend_from_slice(&epoch.to_be_bytes())
    });
}

/// Appends a message frame; `Err` (nothing appended) if the message would
/// make a frame over the limit.
pub fn encode_message(
    out: &mut Vec<u8>,
    epoch: u64,
    from_core: u32,
    to_core: u32,
    msg: &Msg,
) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.push(KIND_MESSAGE);
    out.extend_from_slice(&epoch.to_be_bytes());
    out.extend_from_slice(&from_core.to_be_bytes());
    out.extend_from_slice(&to_core.to_be_bytes());
    if let Err(e) = postcard::to_io(msg, &mut *out) {
        out.truncate(start);
        return Err(FrameError::Decode(e.to_string()));
    }
    let len = out.len() - start - 4;
    if len > LINK_FRAME_BYTES_MAX {
        out.truncate(start);
        return Err(FrameError::TooLarge(len));
    }
    out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Reassembles frames from what a link reads, however it is split.
/// Owned by its shard; never crosses cores.
#[derive(Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// Bytes read but not yet a whole frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Takes `bytes`, appends every complete frame to `out`; an error ends
    /// the link (frames before it are still in `out`).
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Frame>) -> Result<(), FrameError> {
        self.buf.extend_from_slice(bytes);
        let mut at = 0;
        let result = loop {
            let rest = &self.buf[at..];
            if rest.len() < 4 {
                break Ok(());
            }
            let len = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
            if len > LINK_FRAME_BYTES_MAX {
                break Err(FrameError::TooLarge(len));
            }
            if rest.len() < 4 + len {
                break Ok(());
            }
            match decode(&rest[4..4 + len]) {
                Ok(frame) => out.push(frame),
                Err(e) => break Err(e),
            }
            at += 4 + len;
        };
        self.buf.drain(..at);
        // A link that once carried a huge frame should not keep its buffer.
        if self.buf.is_empty() && self.buf.capacity() > 1 << 20 {
            self.buf = Vec::new();
        }
        result
    }
}

fn decode(frame: &[u8]) -> Result<Frame, FrameError> {
    let (&kind, mut body) = frame.split_first().ok_or(FrameError::Empty)?;
    match kind {
        KIND_HELLO => {
            if body.len() != HELLO_BODY_BYTES - 1 || &body[..4] != MAGIC {
                return Err(FrameError::BadHello);
            }
            body.advance(4);
            let node = body.get_u16();
            let epoch = body.get_u64();
            let mac = body.try_into().expect("32 bytes left");
            Ok(Frame::Hello { node, epoch, mac })
        }
        KIND_CHALLENGE => {
            let nonce = body.try_into().map_err(|_| FrameError::Short)?;
            Ok(Frame::Challenge { nonce })
        }
        KIND_BEAT => {
            if body.len() != 8 {
                return Err(FrameError::Short);
            }
            Ok(Frame::Beat {
                epoch: body.get_u64(),
            })
        }
        KIND_MESSAGE => {
            if body.len() < 16 {
                return Err(FrameError::Short);
            }
            let epoch = body.get_u64();
            let from_core = body.get_u32();
            let to_core = body.get_u32();
            let msg = postcard::from_bytes(body).map_err(|e| FrameError::Decode(e.to_string()))?;
            Ok(Frame::Message {
                epoch,
                from_core,
                to_core,
                msg,
            })
        }
        other => Err(FrameError::UnknownKind(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Id;
    use crate::shard::message::{ConnId, EventBody, Exclude, MessageFields, Persist, ReplyTo};

    fn sample() -> Vec<Msg> {
        let c = Id::parse("C0123456789").unwrap();
        let u = Id::parse("U0123456789").unwrap();
        vec![
            Msg::Deliver {
                channel: c,
                frame: bytes::Bytes::from_static(b"\x81\x05hello"),
                exclude: Some(Exclude {
                    shard: 3,
                    conn: ConnId {
                        slot: 7,
                        generation: 2,
                    },
                }),
                ts: Some(crate::ts::Ts(1_700_000_000_000_001)),
            },
            Msg::Publish {
                reply: Some(ReplyTo::new(4, 1, 99)),
                channel: c,
                body: EventBody {
                    json: br#"{"type":"message"}"#.to_vec(),
                    add_channel: true,
                    add_ts: true,
                },
                persist: Persist::Message(Box::new(MessageFields {
                    user: u,
                    text: "hi".into(),
                    blocks: Some(serde_json::json!([{"type": "section", "n": 1.5}])),
                    thread_ts: None,
                    subtype: None,
                    client_msg_id: Some("x".into()),
                })),
                sender: Some(u),
                exclude: None,
            },
            Msg::Unsubscribe {
                channels: vec![c, u],
            },
        ]
    }

    fn encode_all(msgs: &[Msg]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_challenge(&mut out, &[5; 16]);
        encode_hello(&mut out, 12, 7, &[9; 32]);
        for (i, m) in msgs.iter().enumerate() {
            encode_message(&mut out, 7, i as u32, 1, m).unwrap();
            encode_beat(&mut out, 7);
        }
        out
    }

    #[test]
    fn frames_round_trip_however_they_are_split() {
        let msgs = sample();
        let bytes = encode_all(&msgs);
        for split in [1, 2, 3, 7, 64, bytes.len()] {
            let mut reader = FrameReader::default();
            let mut frames = Vec::new();
            for chunk in bytes.chunks(split) {
                reader.feed(chunk, &mut frames).unwrap();
            }
            assert_eq!(frames.len(), 2 + 2 * msgs.len(), "split {split}");
            assert!(matches!(frames[0], Frame::Challenge { nonce } if nonce == [5; 16]));
            assert!(matches!(
                frames[1],
                Frame::Hello { node: 12, epoch: 7, mac } if mac == [9; 32]
            ));
            for (i, m) in msgs.iter().enumerate() {
                match &frames[2 + 2 * i] {
                    Frame::Message {
                        epoch: 7,
                        from_core,
                        to_core: 1,
                        msg,
                    } => {
                        assert_eq!(*from_core, i as u32);
                        assert_eq!(format!("{msg:?}"), format!("{m:?}"), "split {split}");
                    }
                    other => panic!("expected a message, got {other:?}"),
                }
                assert!(matches!(frames[3 + 2 * i], Frame::Beat { epoch: 7 }));
            }
        }
    }

    #[test]
    fn bad_input_ends_the_link_with_a_reason() {
        let mut frames = Vec::new();
        let too_big = ((LINK_FRAME_BYTES_MAX + 1) as u32).to_be_bytes();
        assert_eq!(
            FrameReader::default().feed(&too_big, &mut frames),
            Err(FrameError::TooLarge(LINK_FRAME_BYTES_MAX + 1))
        );
        assert_eq!(
            FrameReader::default().feed(&[0, 0, 0, 1, 9], &mut frames),
            Err(FrameError::UnknownKind(9))
        );
        // A hello of the old format (no MAC) is refused.
        let mut old = vec![0, 0, 0, 15, KIND_HELLO];
        old.extend_from_slice(b"TPL1");
        old.extend_from_slice(&[0; 10]);
        assert_eq!(
            FrameReader::default().feed(&old, &mut frames),
            Err(FrameError::BadHello)
        );
        assert_eq!(
            FrameReader::default().feed(&[0, 0, 0, 2, KIND_CHALLENGE, 1], &mut frames),
            Err(FrameError::Short)
        );
        assert_eq!(
            FrameReader::default().feed(&[0, 0, 0, 1, 10], &mut frames),
            Err(FrameError::UnknownKind(10))
        );
        assert_eq!(
            FrameReader::default().feed(&[0, 0, 0, 3, 1, b'T', b'P'], &mut frames),
            Err(FrameError::BadHello)
        );
        let mut garbage = vec![0, 0, 0, 20, KIND_MESSAGE];
        garbage.extend_from_slice(&[0xff; 19]);
        assert!(matches!(
            FrameReader::default().feed(&garbage, &mut frames),
            Err(FrameError::Decode(_))
        ));
        assert!(frames.is_empty());
    }
}
