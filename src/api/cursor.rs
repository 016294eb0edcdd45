//! Pagination cursors (docs/PROTOCOL.md: `limit` + `cursor`, answered with
//! `response_metadata.next_cursor`, `""` at the end).
//!
//! A cursor is opaque to clients: the URL-safe base64 (no padding) of
//! `<kind>:<key>`, like Slack's `dXNlcjpVMDYxTkZUVDI=` (`user:U061NFTT2`).
//! The key is where the next page starts, exclusive: the last id of the
//! previous page for lists, the last `ts` (microseconds) for history and
//! replies. The kind stops a cursor of one list from being fed to another.
//! Decoding also takes the standard alphabet, with or without padding, and
//! a `+` that a careless client let turn into a space.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::error::ApiError;
use crate::ids::Id;

/// What a cursor pages through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// conversations.list: channel ids.
    Channels,
    /// users.list: user ids.
    Users,
    /// conversations.members: user ids.
    Members,
    /// conversations.history: the next page is strictly older than this ts.
    History,
    /// conversations.replies: the next page is strictly newer than this ts.
    Replies,
    /// chat.scheduledMessages.list: `<post_at>.<id>` of the last message.
    Scheduled,
}

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Kind::Channels => "channel",
            Kind::Users => "user",
            Kind::Members => "member",
            Kind::History => "history",
            Kind::Replies => "replies",
            Kind::Scheduled => "scheduled",
        }
    }
}

/// Longest key we accept back (ids are ≤ 12 characters, ts ≤ 19 digits).
const KEY_MAX: usize = 32;

pub fn encode(kind: Kind, key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{key}", kind.tag()))
}

/// A ts key.
pub fn encode_ts(kind: Kind, ts: i64) -> String {
    encode(kind, &ts.to_string())
}

/// The key of `cursor`, or `invalid_cursor`.
pub fn decode(kind: Kind, cursor: &str) -> Result<String, ApiError> {
    let bad = || ApiError::new("invalid_cursor");
    let normalized: String = cursor
        .trim()
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '+' | ' ' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    if normalized.len() > 4 * KEY_MAX {
        return Err(bad());
    }
    let bytes = URL_SAFE_NO_PAD.decode(normalized).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let key = text
        .strip_prefix(kind.tag())
        .and_then(|k| k.strip_prefix(':'))
        .ok_or_else(bad)?;
    if key.is_empty() || key.len() > KEY_MAX {
        return Err(bad());
    }
    Ok(key.to_string())
}

/// An id key (channel or user lists).
pub fn decode_id(kind: Kind, cursor: &str) -> Result<String, ApiError> {
    let key = decode(kind, cursor)?;
    match Id::parse(&key) {
        Some(_) => Ok(key),
        None => Err(ApiError::new("invalid_cursor")),
    }
}

/// A ts key (history, replies).
pub fn decode_ts(kind: Kind, cursor: &str) -> Result<i64, ApiError> {
    decode(kind, cursor)?
        .parse::<i64>()
        .ok()
        .filter(|t| *t >= 0)
        .ok_or_else(|| ApiError::new("invalid_cursor"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    #[test]
    fn round_trips() {
        let c = encode(Kind::Users, "U061NFTT2");
        assert_eq!(c, "dXNlcjpVMDYxTkZUVDI");
        assert_eq!(decode(Kind::Users, &c).unwrap(), "U061NFTT2");
        assert_eq!(decode_id(Kind::Users, &c).unwrap(), "U061NFTT2");
        let c = encode_ts(Kind::History, 1_700_000_000_000_123);
        assert_eq!(decode_ts(Kind::History, &c).unwrap(), 1_700_000_000_000_123);
        assert!(!c.contains(['+', '/', '=']), "URL-safe: {c}");
    }

    #[test]
    fn accepts_slack_style_standard_base64() {
        // Slack's own example cursor, padding and all.
        assert_eq!(
            decode(Kind::Users, "dXNlcjpVMDYxTkZUVDI=").unwrap(),
            "U061NFTT2"
        );
        // Bytes chosen so the standard alphabet needs '+' and '/'.
        let key = "C>>>???";
        let std = STANDARD.encode(format!("channel:{key}"));
        assert!(std.contains('+') || std.contains('/'), "{std}");
        assert_eq!(decode(Kind::Channels, &std).unwrap(), key);
        assert_eq!(decode(Kind::Channels, &std.replace('+', " ")).unwrap(), key);
    }

    #[test]
    fn rejects_garbage_and_other_kinds() {
        let users = encode(Kind::Users, "U1");
        for (kind, c) in [
            (Kind::Channels, users.as_str()),
            (Kind::Users, "!!!"),
            (Kind::Users, "dXNlcjo"), // "user:" with no key
            (Kind::Users, "/w"),      // invalid UTF-8
        ] {
            assert_eq!(decode(kind, c).unwrap_err().code(), "invalid_cursor", "{c}");
        }
        assert!(decode(Kind::Users, &"A".repeat(1000)).is_err());
        assert!(decode_id(Kind::Users, &encode(Kind::Users, "not an id")).is_err());
        assert!(decode_ts(Kind::History, &encode(Kind::History, "12x")).is_err());
        assert!(decode_ts(Kind::History, &encode(Kind::History, "-5")).is_err());
        assert!(decode_ts(Kind::Replies, &encode_ts(Kind::History, 5)).is_err());
    }
}
