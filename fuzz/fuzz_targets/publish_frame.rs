//! The publish stream's frame (`gateway::publisher::read_publish`): its
//! one-pass fast path (`gateway::publish_frame::parse` over
//! `gateway::json_scan::Scanner`) against the general path
//! (`serde_json::Value`, then `ops::backend_event`).
//!
//! Invariants, beyond "never panics":
//! - the scanner takes a text exactly when `serde_json::from_slice::<Value>`
//!   does (the input as a whole JSON text);
//! - the fast path is deterministic, and a frame it takes the general path
//!   takes too, with the same channel, `id`, stored-or-not and fields to
//!   splice, and an event equal as JSON;
//! - a taken event is the frame's own bytes, a JSON object, and the event
//!   the channel server makes of it (`fanout::payload`, which a stored
//!   event is parsed back from) is valid JSON;
//! - `read_publish` answers the fast path's result when it takes a frame.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use transponder::channel::fanout;
use transponder::gateway::json_scan::Scanner;
use transponder::gateway::publish_frame::parse;
use transponder::gateway::publisher::read_publish;
use transponder::ids::Id;
use transponder::shard::message::Persist;
use transponder::ts::Ts;

fuzz_target!(|payload: &[u8]| {
    let mut scanner = Scanner::new(payload);
    let scanned = scanner.skip_value().and_then(|()| scanner.end()).is_some();
    let value = serde_json::from_slice::<Value>(payload);
    assert_eq!(scanned, value.is_ok(), "scanner and Value disagree");

    let Some(fast) = parse(payload) else {
        return;
    };
    let again = parse(payload).expect("deterministic");
    assert_eq!(fast.channel, again.channel);
    assert_eq!(fast.body.json, again.body.json);

    let Ok(Value::Object(mut frame)) = value else {
        panic!("the fast path took a frame that is not a JSON object")
    };
    assert_eq!(frame.get("channel").and_then(Value::as_str), Some(&*fast.channel));
    assert_eq!(frame.get("id").and_then(Value::as_u64), fast.id);
    let transient = frame.get("transient").and_then(Value::as_bool).unwrap_or(false);
    assert_eq!(transient, matches!(fast.persist, Persist::No));
    let Some(Value::Object(event)) = frame.remove("event") else {
        panic!("the fast path took a frame whose event is not an object")
    };
    let (body, persist) = transponder::ops::backend_event(event.clone(), transient)
        .expect("the general path takes the event");
    assert_eq!(format!("{persist:?}"), format!("{:?}", fast.persist));
    assert_eq!(body.add_ts, fast.body.add_ts);
    assert_eq!(body.add_channel, fast.body.add_channel);
    assert!(!event.contains_key("event_ts"));

    let json = &fast.body.json;
    assert!(payload.windows(json.len()).any(|w| w == &json[..]));
    assert_eq!(
        serde_json::from_slice::<Value>(json).expect("the event is JSON"),
        Value::Object(event)
    );
    let channel = Id::parse("C024BE91L").expect("id");
    let stored = fanout::payload(&fast.body, channel, Some(Ts(1_700_000_000_000_123)));
    serde_json::from_slice::<Value>(&stored).expect("a stored event parses back");

    match (Id::parse(&fast.channel), read_publish(payload)) {
        (Some(id), Ok((read, rid, rbody, _))) => {
            assert_eq!((read, rid, &rbody.json), (id, fast.id, json));
        }
        (None, Err((_, rid))) => assert_eq!(rid, fast.id),
        (id, read) => panic!("read_publish disagrees: {id:?}, {:?}", read.err()),
    }
});
