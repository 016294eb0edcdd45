//! Encode once: the channel server turns a published event into the exact
//! websocket frame every subscriber gets, adding the fields it owns
//! (`channel`, `ts`, `event_ts`) by splicing them before the closing brace,
//! so the event is never parsed or re-serialized on the hot path.

use bytes::Bytes;

use crate::gateway::frame;
use crate::ids::Id;
use crate::shard::message::EventBody;
use crate::ts::Ts;

/// The final JSON payload of an event: `body` with the fields the channel
/// server adds. `ts` is `None` for transient events.
pub fn payload(body: &EventBody, channel: Id, ts: Option<Ts>) -> Vec<u8> {
    let splice = Splice::new(body, channel, ts);
    let open = open_object(body);
    let mut out = Vec::with_capacity(open.len() + splice.len + 1);
    out.extend_from_slice(open);
    out.extend_from_slice(splice.bytes());
    out.push(b'}');
    out
}

/// The websocket frame (header and payload, one allocation) for an event:
/// the payload is never assembled on its own.
pub fn encode(body: &EventBody, channel: Id, ts: Option<Ts>) -> Bytes {
    let splice = Splice::new(body, channel, ts);
    frame::encode_text_parts(&[open_object(body), splice.bytes(), b"}"])
}

/// The body without its closing brace.
fn open_object(body: &EventBody) -> &[u8] {
    let json = &body.json;
    assert!(
        json.len() >= 2 && json[0] == b'{' && json[json.len() - 1] == b'}',
        "event bodies are JSON objects"
    );
    &json[..json.len() - 1]
}

/// The longest splice: `,"channel":"` and 12 characters, `,"ts":"` and
/// `,"event_ts":"` with 21 each, their quotes.
const SPLICE_BYTES_MAX: usize = 128;

/// The fields the channel server adds, as they go before the closing
/// brace, written on the stack (no allocation per event).
struct Splice {
    buf: [u8; SPLICE_BYTES_MAX],
    len: usize,
}

impl Splice {
    fn new(body: &EventBody, channel: Id, ts: Option<Ts>) -> Splice {
        let mut s = Splice {
            buf: [0; SPLICE_BYTES_MAX],
            len: 0,
        };
        let json = &body.json;
        let mut first = json[1..json.len() - 1].iter().all(u8::is_ascii_whitespace);
        let mut field = |s: &mut Splice, name: &[u8], value: &[u8]| {
            if !first {
                s.push(b",");
            }
            first = false;
            s.push(b"\"");
            s.push(name);
            s.push(b"\":\"");
            s.push(value);
            s.push(b"\"");
        };
        if body.add_channel {
            field(&mut s, b"channel", &channel.ascii());
        }
        if let Some(ts) = ts {
            let ts = ts.ascii();
            if body.add_ts {
                field(&mut s, b"ts", &ts);
            }
            field(&mut s, b"event_ts", &ts);
        }
        s
    }

    fn push(&mut self, bytes: &[u8]) {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str, add_channel: bool, add_ts: bool) -> EventBody {
        EventBody {
            json: json.as_bytes().to_vec(),
            add_channel,
            add_ts,
        }
    }

    #[test]
    fn splices_fields() {
        let c = Id::parse("C1").unwrap();
        let p = payload(
            &body(r#"{"type":"message","text":"}"}"#, true, true),
            c,
            Some(Ts(1_500_000)),
        );
        let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(v["type"], "message");
        assert_eq!(v["text"], "}");
        assert_eq!(v["channel"], "C1");
        assert_eq!(v["ts"], "0000000001.500000");
        assert_eq!(v["event_ts"], "0000000001.500000");
    }

    #[test]
    fn the_frame_carries_the_payload() {
        let c = Id::parse("C0123456789A").unwrap();
        for (json, ch, add_ts, ts) in [
            (
                r#"{"type":"message","text":"hi"}"#,
                true,
                true,
                Some(Ts(1_700_000_000_123_456)),
            ),
            ("{ }", true, false, Some(Ts(u64::MAX))),
            (r#"{"type":"user_typing"}"#, true, false, None),
            ("{}", false, false, None),
        ] {
            let b = body(json, ch, add_ts);
            let want = frame::encode_text(&payload(&b, c, ts));
            assert_eq!(encode(&b, c, ts), want);
        }
        let long = body(
            &format!(r#"{{"text":"{}"}}"#, "x".repeat(70_000)),
            true,
            true,
        );
        let p = payload(&long, c, Some(Ts(1)));
        assert_eq!(encode(&long, c, Some(Ts(1))), frame::encode_text(&p));
    }

    #[test]
    fn empty_object_and_transient() {
        let c = Id::parse("C1").unwrap();
        assert_eq!(
            payload(&body("{}", true, false), c, None),
            br#"{"channel":"C1"}"#.to_vec()
        );
        assert_eq!(
            payload(&body(r#"{"a":1}"#, false, true), c, None),
            br#"{"a":1}"#.to_vec()
        );
        let p = payload(&body("{ }", false, false), c, Some(Ts(1)));
        assert!(serde_json::from_slice::<serde_json::Value>(&p).is_ok());
    }
}
