//! Every close code and error code a websocket client can get, in one table.
//! The README reproduces it.
//!
//! Close codes (websocket close frame). The range says what a client should
//! do: 1000-1011 are RFC 6455's; 4000-4499 mean "reconnect (with `since` to
//! resume)"; 4500-4999 mean "do not reconnect with the same URL".
//!
//! | code | name | when | client should |
//! |---|---|---|---|
//! | 1000 | normal | the client closed | — |
//! | 1001 | going_away | server shutdown (SIGTERM/SIGINT), after `goodbye` | reconnect later, resume with `since` |
//! | 1002 | protocol_error | malformed frame: unmasked, RSV bits, bad opcode, bad fragmentation | fix the client |
//! | 1003 | unsupported_data | binary frame | send text frames |
//! | 1007 | invalid_payload | text frame that is not UTF-8 | fix the client |
//! | 1009 | message_too_big | client message over 16 KiB | send smaller messages |
//! | 1011 | internal_error | a server fault | reconnect, resume |
//! | 4000 | slow_consumer | the connection's outbound queue passed its bound | reconnect, resume with `since` |
//! | 4001 | drain | the node is draining (`POST /v1/drain`), or its region is (the goodbye then names `reconnect_url`), after `goodbye` | reconnect (elsewhere), resume |
//! | 4002 | rate_limited | the client kept sending past its message rate | back off, reconnect |
//! | 4003 | handshake_timeout | the upgrade request did not arrive in time | reconnect |
//! | 4500 | auth_failed | the ticket is malformed, forged, expired or used | call rtm.connect for a new URL |
//!
//! Error codes, in `{"type":"error","error":{"code":N,"msg":…}}` or in a
//! reply `{"ok":false,"reply_to":N,"error":{"code":N,"msg":…}}`. The
//! connection stays open.
//!
//! | code | msg | when |
//! |---|---|---|
//! | 1 | Socket URL has expired | (before close 4500) the ticket was refused (Slack's code) |
//! | 2 | message text is missing | `message` without `text` (Slack's code) |
//! | 3 | invalid JSON | the frame is not a JSON object |
//! | 4 | unsupported type | unknown `type` |
//! | 5 | channel_not_found | no such channel |
//! | 6 | not_in_channel | the user is not a member |
//! | 7 | missing field | a required field is absent or of the wrong type |
//! | 8 | too many ids | more than 500 ids in presence_sub / presence_query |
//! | 9 | rate limited | over the message rate; this message was dropped |
//! | 10 | server busy | the server could not answer in time; retry |

pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_GOING_AWAY: u16 = 1001;
pub const CLOSE_INTERNAL_ERROR: u16 = 1011;
pub const CLOSE_SLOW_CONSUMER: u16 = 4000;
pub const CLOSE_DRAIN: u16 = 4001;
pub const CLOSE_RATE_LIMITED: u16 = 4002;
pub const CLOSE_HANDSHAKE_TIMEOUT: u16 = 4003;
pub const CLOSE_AUTH_FAILED: u16 = 4500;

/// An error code and its message, as sent to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientError {
    pub code: u16,
    pub msg: &'static str,
}

pub const ERR_URL_EXPIRED: ClientError = ClientError {
    code: 1,
    msg: "Socket URL has expired",
};
pub const ERR_NO_TEXT: ClientError = ClientError {
    code: 2,
    msg: "message text is missing",
};
pub const ERR_INVALID_JSON: ClientError = ClientError {
    code: 3,
    msg: "invalid JSON",
};
pub const ERR_UNSUPPORTED_TYPE: ClientError = ClientError {
    code: 4,
    msg: "unsupported type",
};
pub const ERR_CHANNEL_NOT_FOUND: ClientError = ClientError {
    code: 5,
    msg: "channel_not_found",
};
pub const ERR_NOT_IN_CHANNEL: ClientError = ClientError {
    code: 6,
    msg: "not_in_channel",
};
pub const ERR_MISSING_FIELD: ClientError = ClientError {
    code: 7,
    msg: "missing field",
};
pub const ERR_TOO_MANY_IDS: ClientError = ClientError {
    code: 8,
    msg: "too many ids",
};
pub const ERR_RATE_LIMITED: ClientError = ClientError {
    code: 9,
    msg: "rate limited",
};
pub const ERR_BUSY: ClientError = ClientError {
    code: 10,
    msg: "server busy",
};
pub const ERR_THREAD_NOT_FOUND: ClientError = ClientError {
    code: 11,
    msg: "thread_not_found",
};

impl ClientError {
    /// The frame payload for this error, as a reply to `id` or standalone.
    pub fn payload(self, reply_to: Option<u64>) -> Vec<u8> {
        let err = serde_json::json!({"code": self.code, "msg": self.msg});
        let v = match reply_to {
            Some(id) => serde_json::json!({"ok": false, "reply_to": id, "error": err}),
            None => serde_json::json!({"type": "error", "error": err}),
        };
        serde_json::to_vec(&v).expect("json")
    }
}
