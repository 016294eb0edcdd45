//! The parse step of a client message (PROTOCOL.md "Client → server"): the
//! payload of one text frame in, a typed [`ClientMessage`] or the error to
//! answer with out. It is pure (no shard, no connection, no I/O) so that it
//! can be unit-tested here and fuzzed (`fuzz/fuzz_targets/client_message.rs`);
//! [`super::client_msg::handle`] dispatches on what it returns.
//!
//! The error codes are the README's "Websocket protocol" table (2–8), and
//! which one a malformed message gets is decided in this order: not a JSON
//! object (3), no string `type` (7), unknown `type` (4), then the fields of
//! that type in the order they are read below.

use serde_json::{Map, Value};

use super::codes::{self, ClientError};
use crate::ids::Id;
use crate::limits;
use crate::ts::Ts;

/// A client message whose fields have been checked. Every variant keeps the
/// message's `id` (when it is a non-negative integer): replies and errors
/// that come later, from other shards, still answer `reply_to` it.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// `{"type":"ping","id":N,…}`. `echo` is every other field of the ping,
    /// to be sent back in the pong. It never holds `type`, `id` or
    /// `reply_to`: those fields of the pong are the server's, and a client's
    /// own `reply_to` would otherwise claim to answer some other message.
    Ping {
        id: Option<u64>,
        echo: Map<String, Value>,
    },
    /// `{"type":"typing","channel":C}`.
    Typing { id: Option<u64>, channel: Id },
    /// `{"type":"message","channel":C,"text":…}`. `text` is never empty. A
    /// `thread_ts` that is not a ts names no message: `thread_not_found`, as
    /// chat.postMessage answers; a `client_msg_id` that is not a string is
    /// ignored.
    Message {
        id: Option<u64>,
        channel: Id,
        text: String,
        thread_ts: Option<Ts>,
        client_msg_id: Option<String>,
    },
    /// `{"type":"presence_sub","ids":[U…]}`: user ids, duplicates removed,
    /// at most [`limits::PRESENCE_IDS_MAX`].
    PresenceSub { id: Option<u64>, ids: Vec<Id> },
    /// `{"type":"presence_query","ids":[U…]}`: as for `PresenceSub`.
    PresenceQuery { id: Option<u64>, ids: Vec<Id> },
}

impl ClientMessage {
    /// The message's `id`, which replies and errors answer with `reply_to`.
    pub fn id(&self) -> Option<u64> {
        match self {
            ClientMessage::Ping { id, .. }
            | ClientMessage::Typing { id, .. }
            | ClientMessage::Message { id, .. }
            | ClientMessage::PresenceSub { id, .. }
            | ClientMessage::PresenceQuery { id, .. } => *id,
        }
    }
}

/// A message refused by [`parse`]: the error, and the `id` to answer it to
/// (`None` when the message had none or was not a JSON object at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub error: ClientError,
    pub reply_to: Option<u64>,
}

impl Refused {
    /// The error frame's payload.
    pub fn payload(self) -> Vec<u8> {
        self.error.payload(self.reply_to)
    }
}

/// Parses one client message. Never panics, whatever the bytes.
pub fn parse(payload: &[u8]) -> Result<ClientMessage, Refused> {
    let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(payload) else {
        return Err(Refused {
            error: codes::ERR_INVALID_JSON,
            reply_to: None,
        });
    };
    let id = obj.get("id").and_then(Value::as_u64);
    let refused = |error| Refused {
        error,
        reply_to: id,
    };
    let Some(Value::String(kind)) = obj.remove("type") else {
        return Err(refused(codes::ERR_MISSING_FIELD));
    };
    match kind.as_str() {
        "ping" => {
            // Ours, not the client's (see ClientMessage::Ping); `type` is
            // gone already.
            obj.remove("id");
            obj.remove("reply_to");
            Ok(ClientMessage::Ping { id, echo: obj })
        }
        "typing" => Ok(ClientMessage::Typing {
            id,
            channel: channel_field(&obj).map_err(refused)?,
        }),
        "message" => {
            let channel = channel_field(&obj).map_err(refused)?;
            let text = match obj.remove("text") {
                Some(Value::String(t)) if !t.is_empty() => t,
                _ => return Err(refused(codes::ERR_NO_TEXT)),
            };
            let thread_ts = match obj.get("thread_ts") {
                None | Some(Value::Null) => None,
                Some(t) => Some(
                    t.as_str()
                        .and_then(Ts::parse)
                        .ok_or(refused(codes::ERR_THREAD_NOT_FOUND))?,
                ),
            };
            Ok(ClientMessage::Message {
                id,
                channel,
                text,
                thread_ts,
                client_msg_id: match obj.remove("client_msg_id") {
                    Some(Value::String(s)) => Some(s),
                    _ => None,
                },
            })
        }
        "presence_sub" => Ok(ClientMessage::PresenceSub {
            id,
            ids: ids_field(&obj).map_err(refused)?,
        }),
        "presence_query" => Ok(ClientMessage::PresenceQuery {
            id,
            ids: ids_field(&obj).map_err(refused)?,
        }),
        _ => Err(refused(codes::ERR_UNSUPPORTED_TYPE)),
    }
}

/// `channel`: absent or not a string is a missing field; a string that is
/// no id cannot name a channel that exists.
fn channel_field(obj: &Map<String, Value>) -> Result<Id, ClientError> {
    let s = obj
        .get("channel")
        .and_then(Value::as_str)
        .ok_or(codes::ERR_MISSING_FIELD)?;
    Id::parse(s).ok_or(codes::ERR_CHANNEL_NOT_FOUND)
}

/// `ids`: an array of user ids. The count is checked before the ids, so an
/// oversize request is refused without reading it.
fn ids_field(obj: &Map<String, Value>) -> Result<Vec<Id>, ClientError> {
    let ids = obj
        .get("ids")
        .and_then(Value::as_array)
        .ok_or(codes::ERR_MISSING_FIELD)?;
    if ids.len() > limits::PRESENCE_IDS_MAX {
        return Err(codes::ERR_TOO_MANY_IDS);
    }
    let mut out = Vec::with_capacity(ids.len());
    for v in ids {
        let id = v
            .as_str()
            .and_then(Id::parse)
            .filter(|id| id.is_user())
            .ok_or(codes::ERR_MISSING_FIELD)?;
        // Quadratic, but over at most PRESENCE_IDS_MAX small integers.
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_json(v: Value) -> Result<ClientMessage, Refused> {
        parse(v.to_string().as_bytes())
    }

    fn refused(v: Value) -> (u16, Option<u64>) {
        let r = parse_json(v).unwrap_err();
        (r.error.code, r.reply_to)
    }

    fn id_of(s: &str) -> Id {
        Id::parse(s).unwrap()
    }

    #[test]
    fn not_a_json_object_is_error_3_without_reply_to() {
        for bad in [
            &b"hello"[..],
            b"{\"id\": 2, \"type\": \"ping\"",
            b"[1]",
            b"\"s\"",
            b"",
            b"\xff",
        ] {
            let r = parse(bad).unwrap_err();
            assert_eq!(r.error, codes::ERR_INVALID_JSON, "{bad:?}");
            assert_eq!(r.reply_to, None, "{bad:?}");
        }
    }

    #[test]
    fn type_missing_or_unknown() {
        assert_eq!(refused(json!({"id": 1})), (7, Some(1)));
        assert_eq!(refused(json!({"id": 1, "type": 5})), (7, Some(1)));
        assert_eq!(refused(json!({"id": 2, "type": "teleport"})), (4, Some(2)));
        assert_eq!(refused(json!({"type": "teleport"})), (4, None));
        // Only a non-negative integer id is answered.
        assert_eq!(refused(json!({"id": -1, "type": "x"})), (4, None));
        assert_eq!(refused(json!({"id": "3", "type": "x"})), (4, None));
        assert_eq!(refused(json!({"id": 1.5, "type": "x"})), (4, None));
    }

    #[test]
    fn ping_echoes_other_fields_but_never_ours() {
        let m = parse_json(json!({
            "id": 7, "type": "ping", "time": 1234, "note": "echo me",
            "reply_to": 999, "nested": {"reply_to": 1}
        }))
        .unwrap();
        let ClientMessage::Ping { id, echo } = m else {
            panic!("{m:?}")
        };
        assert_eq!(id, Some(7));
        assert_eq!(
            Value::Object(echo),
            json!({"time": 1234, "note": "echo me", "nested": {"reply_to": 1}})
        );
        let m = parse_json(json!({"type": "ping", "reply_to": "x", "id": "y"})).unwrap();
        assert_eq!(
            m,
            ClientMessage::Ping {
                id: None,
                echo: Map::new()
            }
        );
    }

    /// Found by fuzz/fuzz_targets/client_message.rs: without serde_json's
    /// `float_roundtrip`, `184467440736.52634` parsed one ulp off and the
    /// pong echoed `184467440736.5263`, another number.
    #[test]
    fn ping_echoes_numbers_exactly() {
        for number in ["184467440736.52634", "0.1", "1e-7", "-2.5e300", "123"] {
            let ping = format!(r#"{{"id":1,"type":"ping","x":{number}}}"#);
            let Ok(ClientMessage::Ping { echo, .. }) = parse(ping.as_bytes()) else {
                panic!("{ping}")
            };
            let echoed: f64 = serde_json::to_string(&echo["x"]).unwrap().parse().unwrap();
            assert_eq!(echoed, number.parse::<f64>().unwrap(), "{number}");
        }
    }

    #[test]
    fn typing_needs_a_channel() {
        assert_eq!(
            parse_json(json!({"id": 1, "type": "typing", "channel": "C1"})).unwrap(),
            ClientMessage::Typing {
                id: Some(1),
                channel: id_of("C1")
            }
        );
        assert_eq!(refused(json!({"id": 1, "type": "typing"})), (7, Some(1)));
        assert_eq!(
            refused(json!({"id": 1, "type": "typing", "channel": 5})),
            (7, Some(1))
        );
        assert_eq!(
            refused(json!({"id": 1, "type": "typing", "channel": "general"})),
            (5, Some(1))
        );
    }

    #[test]
    fn message_fields_in_order() {
        let m = parse_json(json!({
            "id": 4, "type": "message", "channel": "C1", "text": "hi",
            "thread_ts": "1700000000.000100", "client_msg_id": "abc"
        }))
        .unwrap();
        assert_eq!(
            m,
            ClientMessage::Message {
                id: Some(4),
                channel: id_of("C1"),
                text: "hi".into(),
                thread_ts: Ts::parse("1700000000.000100"),
                client_msg_id: Some("abc".into()),
            }
        );
        // A client_msg_id that is no string is ignored; a thread_ts that is
        // no ts names no thread.
        let m = parse_json(json!({
            "type": "message", "channel": "C1", "text": "hi", "client_msg_id": 5
        }))
        .unwrap();
        assert!(matches!(
            m,
            ClientMessage::Message {
                id: None,
                thread_ts: None,
                client_msg_id: None,
                ..
            }
        ));
        assert_eq!(
            refused(
                json!({"id": 8, "type": "message", "channel": "C1", "text": "hi", "thread_ts": "yesterday"})
            ),
            (11, Some(8))
        );
        // The channel is checked before the text.
        assert_eq!(
            refused(json!({"id": 6, "type": "message", "text": "x"})),
            (7, Some(6))
        );
        assert_eq!(
            refused(json!({"id": 6, "type": "message", "channel": "nope"})),
            (5, Some(6))
        );
        for text in [json!(null), json!(""), json!(5)] {
            let msg = json!({"id": 1, "type": "message", "channel": "C1", "text": text});
            assert_eq!(refused(msg), (2, Some(1)), "{text}");
        }
        assert_eq!(
            refused(json!({"type": "message", "channel": "C1"})),
            (2, None)
        );
    }

    #[test]
    fn presence_ids() {
        let m = parse_json(json!({"type": "presence_sub", "ids": ["U1", "W2", "U1"]})).unwrap();
        assert_eq!(
            m,
            ClientMessage::PresenceSub {
                id: None,
                ids: vec![id_of("U1"), id_of("W2")]
            }
        );
        let m = parse_json(json!({"id": 3, "type": "presence_query", "ids": []})).unwrap();
        assert_eq!(
            m,
            ClientMessage::PresenceQuery {
                id: Some(3),
                ids: vec![]
            }
        );
        for bad in [
            json!(null),
            json!("U1"),
            json!(["C1"]),
            json!([1]),
            json!(["u1"]),
        ] {
            let msg = json!({"id": 2, "type": "presence_sub", "ids": bad});
            assert_eq!(refused(msg), (7, Some(2)), "{bad}");
        }
        let max: Vec<String> = (0..limits::PRESENCE_IDS_MAX)
            .map(|i| format!("U{i}"))
            .collect();
        let m = parse_json(json!({"type": "presence_query", "ids": max})).unwrap();
        assert!(matches!(m, ClientMessage::PresenceQuery { ids, .. } if ids.len() == 500));
        // Over the limit is error 8 even when the ids themselves are bad.
        let over: Vec<u32> = (0..=limits::PRESENCE_IDS_MAX as u32).collect();
        assert_eq!(
            refused(json!({"id": 8, "type": "presence_sub", "ids": over})),
            (8, Some(8))
        );
    }

    #[test]
    fn refused_payload_is_the_error_frame() {
        let r = parse(br#"{"id":3,"type":"teleport"}"#).unwrap_err();
        assert_eq!(r.payload(), codes::ERR_UNSUPPORTED_TYPE.payload(Some(3)));
    }
}
