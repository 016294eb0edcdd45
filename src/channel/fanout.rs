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
    let json = &body.json;
    assert!(
        json.len() >= 2 && json[0] == b'{' && json[json.len() - 1] == b'}',
        "event bodies are JSON objects"
    );
    let mut out = Vec::with_capacity(json.len() + 80);
    out.extend_from_slice(&json[..json.len() - 1]);
    let mut first = json[1..json.len() - 1].iter().all(u8::is_ascii_whitespace);
    let mut field = |out: &mut Vec<u8>, name: &str, value: &str| {
        if !first {
            out.push(b',');
        }
        first = false;
        out.push(b'"');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":\"");
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    };
    if body.add_channel {
        field(&mut out, "channel", &channel.to_string());
    }
    if let Some(ts) = ts {
        let ts = ts.to_string();
        if body.add_ts {
            field(&mut out, "ts", &ts);
        }
        field(&mut out, "event_ts", &ts);
    }
    out.push(b'}');
    out
}

/// The websocket frame (header and payload, one allocation) for an event.
pub fn encode(body: &EventBody, channel: Id, ts: Option<Ts>) -> Bytes {
    frame::encode_text(&payload(body, channel, ts))
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
