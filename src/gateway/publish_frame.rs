//! A publish-stream frame read without building a JSON tree: the fields the
//! stream needs are borrowed from the frame and the event is kept as the
//! bytes the backend sent.
//!
//! Why: under a deep publish pipeline the stream's reader is a quarter of
//! the shard (1 shard, 100 × 10, 10 publishers × 2,000 in flight, 100 B),
//! half of that building a `serde_json::Value` of every frame, then a
//! `BTreeMap` per event, then serializing it again. Here the frame is
//! scanned once ([`super::json_scan`]: validated as the general path would,
//! the event's keys read on the way, nothing allocated but the event's
//! bytes).
//!
//! This is a fast path only: anything it does not take as is (a field of an
//! unexpected type, a duplicate field, an event carrying `event_ts`, which
//! the channel server owns, a frame the general path refuses) returns
//! `None`, and the caller takes the general path, which decides what is an
//! error. So both paths agree on every frame this one accepts, and the
//! general path alone defines the errors.

use std::borrow::Cow;
use std::ops::Range;

use super::json_scan::Scanner;
use crate::shard::message::{EventBody, Persist};

/// A publish frame as the fast path takes it.
#[derive(Debug)]
pub struct PublishFrame<'a> {
    pub channel: Cow<'a, str>,
    pub id: Option<u64>,
    pub body: EventBody,
    pub persist: Persist,
}

/// The keys of the event the stream decides on (its `type` must be a
/// string; the others only count if present, `null` included).
#[derive(Default)]
struct EventKeys {
    kind: bool,
    ts: bool,
    channel: bool,
    event_ts: bool,
}

/// Reads `payload` if it is a well-formed publish of an event that needs no
/// rewriting; `None` sends the caller to the general path.
pub fn parse(payload: &[u8]) -> Option<PublishFrame<'_>> {
    let mut s = Scanner::new(payload);
    let mut channel = None;
    let mut event: Option<(Range<usize>, EventKeys)> = None;
    let mut transient = None;
    let mut id = None;
    s.begin_object()?;
    let mut first = true;
    while let Some(key) = s.next_key(&mut first)? {
        // A field named twice is the general path's to judge (it keeps
        // the last); so is a field of another type.
        match &*key.bytes()? {
            b"channel" => {
                once(&channel)?;
                channel = Some(s.string()?.decoded()?);
            }
            b"event" => {
                once(&event)?;
                event = Some(event_keys(&mut s)?);
            }
            b"transient" => {
                once(&transient)?;
                transient = Some(s.bool()?);
            }
            b"id" => {
                once(&id)?;
                id = Some(s.null_or_u64()?);
            }
            _ => s.skip_value()?,
        }
    }
    s.end()?;
    let (event, keys) = event?;
    if !keys.kind || keys.event_ts {
        return None; // the general path refuses it, or removes `event_ts`
    }
    let transient = transient.unwrap_or(false);
    Some(PublishFrame {
        channel: channel?,
        id: id.flatten(),
        body: EventBody {
            add_ts: !transient && !keys.ts,
            add_channel: !keys.channel,
            json: payload[event].to_vec(),
        },
        persist: if transient {
            Persist::No
        } else {
            Persist::Event
        },
    })
}

/// `None` if the field was already read.
fn once<T>(field: &Option<T>) -> Option<()> {
    field.is_none().then_some(())
}

/// Reads the event, which must be an object: where it stands in the frame
/// and which of the keys the stream decides on it has.
fn event_keys(s: &mut Scanner<'_>) -> Option<(Range<usize>, EventKeys)> {
    if s.peek_value()? != b'{' {
        return None;
    }
    let start = s.pos();
    let mut keys = EventKeys::default();
    s.begin_object()?;
    let mut first = true;
    while let Some(key) = s.next_key(&mut first)? {
        let seen = match &*key.bytes()? {
            b"type" => {
                s.string()?;
                &mut keys.kind
            }
            b"ts" => {
                s.skip_value()?;
                &mut keys.ts
            }
            b"channel" => {
                s.skip_value()?;
                &mut keys.channel
            }
            b"event_ts" => {
                s.skip_value()?;
                &mut keys.event_ts
            }
            _ => {
                s.skip_value()?;
                continue;
            }
        };
        if std::mem::replace(seen, true) {
            return None; // named twice
        }
    }
    Some((start..s.pos(), keys))
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

    /// The fast path as it was before the one-pass scanner: serde over
    /// the frame (the event as a `RawValue`), then over the event for its
    /// keys. The scanner must take every frame this took that the general
    /// path takes too, and give the same result.
    mod serde_two_pass {
        use std::borrow::Cow;

        use serde::de::IgnoredAny;
        use serde::{Deserialize, Deserializer};
        use serde_json::value::RawValue;

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

        #[derive(Deserialize)]
        struct EventKeys<'a> {
            #[serde(rename = "type", borrow)]
            _kind: Cow<'a, str>,
            #[serde(default, deserialize_with = "present")]
            ts: bool,
            #[serde(default, deserialize_with = "present")]
            channel: bool,
            #[serde(default, deserialize_with = "present")]
            event_ts: bool,
        }

        fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
            IgnoredAny::deserialize(d).map(|_| true)
        }

        /// (channel, id, add_ts, add_channel, transient, event bytes)
        pub type Read = (String, Option<u64>, bool, bool, bool, Vec<u8>);

        pub fn parse(payload: &[u8]) -> Option<Read> {
            let text = std::str::from_utf8(payload).ok()?;
            let fields: Fields = serde_json::from_str(text).ok()?;
            let raw = fields.event.get();
            if !raw.starts_with('{') {
                return None;
            }
            let keys: EventKeys = serde_json::from_str(raw).ok()?;
            if keys.event_ts {
                return None;
            }
            let t = fields.transient;
            Some((
                fields.channel.into_owned(),
                fields.id,
                !t && !keys.ts,
                !keys.channel,
                t,
                raw.as_bytes().to_vec(),
            ))
        }
    }

    /// The scanner takes a frame exactly when the old fast path and the
    /// general path both do, with the old fast path's result.
    #[track_caller]
    fn as_before(payload: &[u8]) {
        let text = String::from_utf8_lossy(payload);
        let before = serde_two_pass::parse(payload).filter(|_| general(payload).is_some());
        let now = parse(payload).map(|p| {
            let transient = matches!(p.persist, Persist::No);
            let channel = p.channel.into_owned();
            let b = p.body;
            (channel, p.id, b.add_ts, b.add_channel, transient, b.json)
        });
        assert_eq!(now, before, "{text}");
        if now.is_some() {
            same_as_general(std::str::from_utf8(payload).expect("taken, so UTF-8"));
        }
    }

    #[test]
    fn keys_in_any_order_escaped_keys_and_nested_events() {
        for p in [
            r#"{"transient":true,"id":1,"event":{"type":"x"},"channel":"C1"}"#,
            r#"{"event":{"a":{"type":1,"ts":2,"event_ts":3},"type":"x","b":[{"channel":4}]},"channel":"C1"}"#,
            r#"{"ch\u0061nnel":"C1","\u0065vent":{"t\u0079pe":"x","\u0074s":"1.2"},"i\u0064":3}"#,
            r#"{"channel":"C1","event":{"type":"x","\u0065vent_ts":"1.2"}}"#,
            r#"{"channel":"C1","event":{"type":"x","text":"a \"quoted\" }{ ] [ , : text"}}"#,
            r#"{"channel":"C1","event":{"type":"x","text":"\ud83d\ude00 é 😀 \u0000"},"x":{"y":[]}}"#,
            r#"{"channel":"C1","event":{"type":"x","text":"a","text":"b"}}"#,
            r#"{"channel":"C1","event":{"type":"x"},"other":1,"other":2}"#,
            r#"{"channel":"C1","event":{"type":"x"},"id":18446744073709551615}"#,
            r#"{"channel":"C1","event":{"type":"x"},"id":18446744073709551616}"#,
            r#"{"channel":"C1","event":{"type":"x"},"id":1.0}"#,
            r#"{"channel":"C1","event":{"type":"x"},"id":1e2}"#,
            r#"{"channel":"C1","event":{"type":"x"},"id":-0}"#,
            r#"{"channel":"C1","event":{"type":"x"},"id":01}"#,
            r#"{"channel":"C1","event":{"type":"x"},"transient":null}"#,
            r#"{"channel":"C1","event":{"type":"x"},"id":null,"id":null}"#,
            r#"{"channel":"C1","event":{"type":"x","ts":1,"ts":2}}"#,
            r#"{"channel":"C1","event":{"type":"x","channel":1,"channel":2}}"#,
            r#"{"channel":"C1","event":{"type":"x"},"event":{"type":"y"}}"#,
            r#"{"channel":"C1","event":{"type":"x"}} "#,
            r#"{"channel":"C1","event":{"type":"x"}} {}"#,
            r#"{"channel":"C1","event":{"type":"x"}"#,
            r#"{"channel":"C\ud800","event":{"type":"x"}}"#,
            r#"{"channel":"C1","event":{"type":"\udc00"}}"#,
        ] {
            as_before(p.as_bytes());
        }
    }

    #[test]
    fn every_cut_of_a_frame_is_refused() {
        let p = r#"{"channel":"C1","event":{"type":"x","text":"\u00e9 é","n":[1.5e3,{"a":null}]},"transient":true,"id":7}"#;
        assert!(parse(p.as_bytes()).is_some());
        for cut in 0..p.len() {
            assert!(parse(&p.as_bytes()[..cut]).is_none(), "{cut}");
        }
    }

    #[test]
    fn refuses_bytes_that_are_not_utf8() {
        for p in [
            &b"{\"channel\":\"C1\",\"event\":{\"type\":\"x\",\"text\":\"\xff\"}}"[..],
            b"{\"channel\":\"C\xc3\",\"event\":{\"type\":\"x\"}}",
            b"{\"channel\":\"C1\",\"event\":{\"type\":\"x\"},\"\xed\xa0\x80\":1}",
            b"{\"channel\":\"C1\",\"event\":{\"type\":\"x\"}}\xff",
        ] {
            assert!(parse(p).is_none(), "{p:?}");
            as_before(p);
        }
    }

    /// The old fast path took these although the general path refuses
    /// them; a stored one then panicked the channel's shard when it
    /// parsed the event back (`channel::persist`).
    #[test]
    fn refuses_what_the_general_path_refuses() {
        let deep = format!("{}1{}", "[".repeat(126), "]".repeat(126));
        for p in [
            r#"{"channel":"C1","event":{"type":"x","text":"\ud800"}}"#.to_string(),
            r#"{"channel":"C1","event":{"type":"x","n":1e400}}"#.to_string(),
            r#"{"channel":"C1","event":{"type":"x"},"x":"\udc00"}"#.to_string(),
            format!(r#"{{"channel":"C1","event":{{"type":"x","deep":{deep}}}}}"#),
            r#"["C1",{"type":"x"},true,null]"#.to_string(),
        ] {
            assert!(serde_two_pass::parse(p.as_bytes()).is_some(), "{p}");
            assert!(general(p.as_bytes()).is_none(), "{p}");
            assert!(parse(p.as_bytes()).is_none(), "{p}");
        }
        // One bracket less: within serde_json's depth, taken.
        let deep = format!("{}1{}", "[".repeat(125), "]".repeat(125));
        let p = format!(r#"{{"channel":"C1","event":{{"type":"x","deep":{deep}}}}}"#);
        assert!(parse(p.as_bytes()).is_some());
        as_before(p.as_bytes());
    }

    #[test]
    fn mutants_read_as_before() {
        let seeds = [
            r#"{"channel":"C1","event":{"type":"message","text":"hi there, a few words"},"transient":true}"#,
            r#"{"id":3,"event":{"text":"x","type":"t","ts":"1.2","channel":"C9"},"channel":"C\u0031"}"#,
            r#"{"channel":"C1","event":{"type":"x","blocks":[{"type":"section","text":{"t":"é"}}]},"id":7}"#,
        ];
        let mut taken = 0;
        for p in crate::gateway::json_scan::tests::mutants(&seeds, 20_000) {
            as_before(&p);
            taken += usize::from(parse(&p).is_some());
        }
        assert!(taken > 1_000, "{taken}");
    }
}
