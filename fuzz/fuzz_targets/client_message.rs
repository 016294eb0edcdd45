//! Client messages over the websocket (`gateway::client_parse::parse`) and
//! the pong a ping gets (`gateway::client_msg::pong_payload`).
//!
//! Invariants, beyond "never panics":
//! - parsing is deterministic;
//! - a refusal has one of the documented parse error codes (2–8) and
//!   answers the same `id` as `client_msg::reply_id` (what the rate
//!   limiter answers) finds;
//! - a parsed message keeps that `id`; a message's text is never empty;
//!   presence ids are distinct user ids, at most `PRESENCE_IDS_MAX`;
//! - a pong is a JSON object with `type` "pong", `reply_to` the ping's `id`
//!   (absent without one) whatever fields the ping had, and every other
//!   field of the ping.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use transponder::gateway::client_msg::{pong_payload, reply_id};
use transponder::gateway::client_parse::{parse, ClientMessage};
use transponder::limits::PRESENCE_IDS_MAX;

fuzz_target!(|payload: &[u8]| {
    let parsed = parse(payload);
    assert_eq!(parse(payload), parsed, "not deterministic");
    let id = reply_id(payload);
    let msg = match parsed {
        Err(refused) => {
            // The parse-time errors: 2-8, and 11 (a thread_ts that is no ts).
            assert!(
                (2..=8).contains(&refused.error.code) || refused.error.code == 11,
                "{refused:?}"
            );
            assert_eq!(refused.reply_to, id);
            return;
        }
        Ok(msg) => msg,
    };
    assert_eq!(msg.id(), id);
    match msg {
        ClientMessage::Ping { id, echo } => {
            for ours in ["type", "id", "reply_to"] {
                assert!(!echo.contains_key(ours), "echo holds {ours}");
            }
            let pong: Value = serde_json::from_slice(&pong_payload(id, echo.clone())).unwrap();
            let Value::Object(pong) = pong else {
                panic!("pong is not an object")
            };
            assert_eq!(pong["type"], "pong");
            assert_eq!(pong.get("reply_to").map(|v| v.as_u64()), id.map(Some));
            assert_eq!(pong.len(), echo.len() + 1 + usize::from(id.is_some()));
            for (k, v) in &echo {
                assert_eq!(pong.get(k), Some(v), "{k}");
            }
        }
        ClientMessage::Message { text, .. } => assert!(!text.is_empty()),
        ClientMessage::PresenceSub { ids, .. } | ClientMessage::PresenceQuery { ids, .. } => {
            assert!(ids.len() <= PRESENCE_IDS_MAX);
            for (i, user) in ids.iter().enumerate() {
                assert!(user.is_user(), "{user}");
                assert!(!ids[..i].contains(user), "{user} twice");
            }
        }
        ClientMessage::Typing { .. } => {}
    }
});
