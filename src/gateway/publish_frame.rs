//! A publish-stream frame read without building a JSON tree: the fields the
//! stream needs are borrowed from the frame and the event is kept as the
//! bytes the backend sent.
//!
//! Why: under a deep publish pipeline the stream's reader is a quarter of
//! the shard (1 shard, 100 × 10, 10 publishers × 2,000 in flight, 100 B),
//! half of that building a `serde_json::Value` of every frame, then a
//! `BTreeMap` per event, then serializing it again. Here the frame is
//! scanned once (validated, nothing allocated but the event's bytes).
//!
//! This is a fast path only: anything it does not take as is (a field of an
//! unexpected type, a duplicate field, an event carrying `event_ts`, which
//! the channel server owns) returns `None`, and the caller takes the general
//! path, which decides what is an error. So both paths agree on every frame
//! this one accepts, and the general path alone defines the errors.

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::shard::message::{EventBody, Persist};

/// A publish frame as the fast path takes it.
#[derive(Debug)]
pub struct PublishFrame<'a> {
    pub channel: Cow<'a, str>,
    pub id: Option<u64>,
    pub body: EventBody,
    pub persist: Persist,
}

#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow)]
    channel: Cow<'a, str>,
    #[serde(borrow)]
    event: &'a RawValue,
    #[serde(default)]
    transient: bool,
    id: Option<u64>,
}

/// The keys of the event the stream decides on; the rest is skipped.
#[derive(Deserialize)]
struct EventKeys<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, deserialize_with = "present")]
    ts: bool,
    #[serde(default, deserialize_with = "present")]
    channel: bool,
    #[serde(default, deserialize_with = "present")]
    event_ts: bool,
}

/// A key that is there, whatever its value (`null` included, as
/// `Map::contains_key` says).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(d).map(|_| true)
}

/// Reads `payload` if it is a well-formed publish of an event that needs no
/// rewriting; `None` sends the caller to the general path.
pub fn parse(payload: &[u8]) -> Option<PublishFrame<'_>> {
    let text = std::str::from_utf8(payload).ok()?;
    let fields: Fields = serde_json::from_str(text).ok()?;
    let raw = fields.event.get();
    // Structs also deserialize from arrays: the event must be an object.
    if !raw.starts_with('{') {
        return None;
    }
    let keys: EventKeys = serde_json::from_str(raw).ok()?;
    if keys.event_ts {
        return None; // the general path removes it
    }
    let _ = keys.kind;
    let transient = fields.transient;
    Some(PublishFrame {
        channel: fields.channel,
        id: fields.id,
        body: EventBody {
            add_ts: !transient && !keys.ts,
            add_channel: !keys.channel,
            json: raw.as_bytes().to_vec(),
        },
        persist: if transient {
            Persist::No
        } else {
            Persist::Event
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the general path (`serde_json::Value`, then
    /// `ops::backend_event`) makes of the same frame.
    fn general(payload: &[u8]) -> Option<(String, Option<u64>, EventBody, Persist)> {
        let serde_json::Value::Object(mut obj) = serde_json::from_slice(payload).ok()? else {
            return None;
        };
        let id = obj.get("id").and_then(serde_json::Value::as_u64);
        let channel = obj.get("channel")?.as_str()?.to_string();
        let transient = obj
            .get("transient")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        let Some(serde_json::Value::Object(event)) = obj.remove("event") else {
            return None;
        };
        let (body, persist) = crate::ops::backend_event(event, transient).ok()?;
        Some((channel, id, body, persist))
    }

    fn same_as_general(payload: &str) {
        let fast = parse(payload.as_bytes()).expect("fast path takes it");
        let (channel, id, body, persist) = general(payload.as_bytes()).expect("general takes it");
        assert_eq!(fast.channel, channel, "{payload}");
        assert_eq!(fast.id, id, "{payload}");
        assert_eq!(fast.body.add_ts, body.add_ts, "{payload}");
        assert_eq!(fast.body.add_channel, body.add_channel, "{payload}");
        assert_eq!(
            format!("{:?}", fast.persist),
            format!("{persist:?}"),
            "{payload}"
        );
        // Same event, maybe not the same bytes (key order, escapes).
        let a: serde_json::Value = serde_json::from_slice(&fast.body.json).unwrap();
        let b: serde_json::Value = serde_json::from_slice(&body.json).unwrap();
        assert_eq!(a, b, "{payload}");
    }

    #[test]
    fn agrees_with_the_general_path() {
        for p in [
            r#"{"channel":"C1","event":{"type":"message","text":"hi"}}"#,
            r#"{"channel":"C1","event":{"type":"message","text":"hi"},"transient":true,"id":7}"#,
            r#"{"id":3,"event":{"text":"x","type":"t","ts":"1.2","channel":"C9"},"channel":"C\u0031"}"#,
            r#"{"channel":"C1","event":{"type":"x","ts":null},"transient":false,"extra":[1,{}]}"#,
            r#" { "channel" : "C1" , "event" : { "type" : "x" , "n" : {"type":1} } } "#,
            r#"{"channel":"C1","event":{"type":"é\n","text":"\ud83d\ude00"},"id":null}"#,
        ] {
            same_as_general(p);
        }
    }

    #[test]
    fn leaves_the_rest_to_the_general_path() {
        for p in [
            "not json",
            r#"[1,2]"#,
            r#"{"channel":"C1"}"#,
            r#"{"event":{"type":"x"}}"#,
            r#"{"channel":7,"event":{"type":"x"}}"#,
            r#"{"channel":"C1","event":["message"]}"#,
            r#"{"channel":"C1","event":{"text":"no type"}}"#,
            r#"{"channel":"C1","event":{"type":1}}"#,
            r#"{"channel":"C1","event":{"type":"x","event_ts":"1.2"}}"#,
            r#"{"channel":"C1","event":{"type":"x"},"id":"7"}"#,
            r#"{"channel":"C1","event":{"type":"x"},"id":-1}"#,
            r#"{"channel":"C1","event":{"type":"x"},"transient":"yes"}"#,
            r#"{"channel":"C1","channel":"C2","event":{"type":"x"}}"#,
            r#"{"channel":"C1","event":{"type":"x","type":"y"}}"#,
        ] {
            assert!(parse(p.as_bytes()).is_none(), "{p}");
        }
    }
}
