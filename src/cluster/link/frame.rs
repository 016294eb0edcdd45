//! The node link's wire format: length-prefixed binary frames.
//!
//! ```text
//! frame   = length:u32be kind:u8 body        (length counts kind and body)
//! hello   = kind 1: magic "TPL1", node:u16be, epoch:u64be
//! beat    = kind 2: epoch:u64be              (heartbeat, every 100 ms idle)
//! message = kind 3: epoch:u64be from_core:u32be to_core:u32be msg
//! ```
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

const MAGIC: &[u8; 4] = b"TPL1";
const KIND_HELLO: u8 = 1;
const KIND_BEAT: u8 = 2;
const KIND_MESSAGE: u8 = 3;

/// One decoded frame.
#[derive(Debug)]
pub enum Frame {
    Hello {
        node: NodeId,
        epoch: u64,
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

pub fn encode_hello(out: &mut Vec<u8>, node: NodeId, epoch: u64) {
    frame_with(out, KIND_HELLO, |b| {
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&node.to_be_bytes());
        b.extend_from_slice(&epoch.to_be_bytes());
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
            if body.len() != 14 || &body[..4] != MAGIC {
                return Err(FrameError::BadHello);
            }
            body.advance(4);
            let node = body.get_u16();
            let epoch = body.get_u64();
            Ok(Frame::Hello { node, epoch })
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
        encode_hello(&mut out, 12, 7);
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
            assert_eq!(frames.len(), 1 + 2 * msgs.len(), "split {split}");
            assert!(matches!(frames[0], Frame::Hello { node: 12, epoch: 7 }));
            for (i, m) in msgs.iter().enumerate() {
                match &frames[1 + 2 * i] {
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
                assert!(matches!(frames[2 + 2 * i], Frame::Beat { epoch: 7 }));
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
