//! chat.scheduleMessage, chat.scheduledMessages.list,
//! chat.deleteScheduledMessage (docs/PROTOCOL.md "Scheduled messages").
//!
//! Scheduling checks what chat.postMessage checks (the channel, membership,
//! text and blocks) plus the time, then stores the message
//! ([`ops::schedule`]); it is posted at its time as its author, through the
//! channel's owner, which checks membership again then (`crate::schedule`).
//! A user sees and cancels only the messages they scheduled.

use serde_json::{json, Value};

use super::access::ChannelRef;
use super::chat::content;
use super::context::Ctx;
use super::conversations::{limit, metadata};
use super::cursor::{self, Kind};
use super::error::ApiError;
use crate::limits;
use crate::ops::chat::{message_event, PostMessage};
use crate::ops::schedule;
use crate::store::scheduled::{external_id, parse_external_id, NewScheduled, ScheduledFilter};

/// A Unix time in seconds: an integer, or a decimal whose fraction is
/// dropped (`"1562180400"`, `1562180400`, `"1562180400.5"`).
fn unix_secs(s: &str) -> Option<i64> {
    let s = s.trim();
    let whole = s.split_once('.').map_or(s, |(w, f)| {
        if f.bytes().all(|b| b.is_ascii_digit()) {
            w
        } else {
            "x"
        }
    });
    if whole.is_empty() || whole.len() > 12 || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    whole.parse().ok()
}

/// chat.scheduleMessage: `channel, post_at, text, blocks, thread_ts` →
/// `channel, scheduled_message_id, post_at, message`. Errors beside
/// chat.postMessage's: invalid_time, time_in_past, time_too_far,
/// restricted_too_many.
pub async fn schedule_message(ctx: &Ctx) -> Result<Value, ApiError> {
    let p = &ctx.params;
    let channel = p
        .opt("channel")
        .map(|c| ChannelRef::parse(&c))
        .ok_or_else(|| ApiError::new("channel_not_found"))?;
    let post_at = unix_secs(&p.req("post_at")?).ok_or_else(|| ApiError::new("invalid_time"))?;
    let (text, blocks) = content(ctx)?;
    let thread_ts = p.ts("thread_ts", "thread_not_found")?;
    let now = schedule::check_post_at(post_at).map_err(ApiError::new)?;
    let access = ctx.channel(channel).await?;
    if access.row.is_archived {
        return Err(ApiError::new("is_archived"));
    }
    access.require_member()?;
    let id = access.id()?;
    let msg = PostMessage {
        text,
        blocks,
        thread_ts,
        reply_broadcast: false,
        client_msg_id: None,
    };
    let event = message_event(&ctx.user, id, &msg);
    let new = NewScheduled {
        channel: access.row.id.clone(),
        post_at,
        created: now,
        user: Some(ctx.me()),
        text: msg.text,
        blocks: msg.blocks.as_ref().map(Value::to_string),
        thread_ts: msg.thread_ts.map(|t| t.micros() as i64),
        event: Some(event.to_string()),
    };
    let scheduled = schedule::schedule(&ctx.shard, id, new, true).await?;
    // Slack answers the message as it will look, typed `delayed_message`.
    let mut message = event;
    message["type"] = "delayed_message".into();
    if let Some(m) = message.as_object_mut() {
        m.remove("channel");
    }
    Ok(json!({
        "channel": access.row.id,
        "scheduled_message_id": external_id(scheduled),
        "post_at": post_at,
        "message": message,
    }))
}

/// chat.scheduledMessages.list: `channel` (optional), `latest`, `oldest`
/// (Unix seconds, inclusive), `limit`, `cursor` → the caller's pending
/// messages `scheduled_messages[{id, channel_id, post_at, date_created,
/// text}]`, earliest first, and `response_metadata.next_cursor`.
pub async fn list(ctx: &Ctx) -> Result<Value, ApiError> {
    let p = &ctx.params;
    let time = |key: &str, bad: &'static str| -> Result<Option<i64>, ApiError> {
        match p.opt(key) {
            None => Ok(None),
            Some(s) if s.trim().is_empty() => Ok(None),
            Some(s) => unix_secs(&s).map(Some).ok_or_else(|| ApiError::new(bad)),
        }
    };
    let latest = time("latest", "invalid_latest")?;
    let oldest = time("oldest", "invalid_oldest")?;
    let limit = limit(ctx, limits::SCHEDULED_LIST_LIMIT_DEFAULT)?;
    let after = match p.opt("cursor").filter(|c| !c.trim().is_empty()) {
        None => None,
        Some(c) => Some(decode_cursor(&c)?),
    };
    let channel = match p.opt("channel").filter(|c| !c.trim().is_empty()) {
        None => None,
        Some(c) => Some(ctx.channel(ChannelRef::parse(&c)).await?.row.id),
    };
    let filter = ScheduledFilter {
        channel,
        user: Some(ctx.me()),
        oldest,
        latest,
        after,
    };
    let (rows, more) = schedule::list(&ctx.shard, filter, limit).await?;
    let next = more
        .then(|| rows.last().map(|r| encode_cursor(r.row.post_at, r.id)))
        .flatten();
    let items: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "id": external_id(r.id),
                "channel_id": r.row.channel,
                "post_at": r.row.post_at,
                "date_created": r.row.created,
                "text": r.row.text,
            })
        })
        .collect();
    Ok(json!({"scheduled_messages": items, "response_metadata": metadata(next)}))
}

fn encode_cursor(post_at: i64, id: i64) -> String {
    cursor::encode(Kind::Scheduled, &format!("{post_at}.{id}"))
}

fn decode_cursor(c: &str) -> Result<(i64, i64), ApiError> {
    let key = cursor::decode(Kind::Scheduled, c)?;
    key.split_once('.')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .ok_or_else(|| ApiError::new("invalid_cursor"))
}

/// chat.deleteScheduledMessage: `channel, scheduled_message_id` → `{}`.
/// invalid_scheduled_message_id for an id that is not the caller's pending
/// message in that channel (malformed, unknown, fired, cancelled, someone
/// else's).
pub async fn delete(ctx: &Ctx) -> Result<Value, ApiError> {
    let p = &ctx.params;
    let channel = ChannelRef::parse(&p.req("channel")?);
    let id = parse_external_id(p.req("scheduled_message_id")?.trim())
        .ok_or_else(|| ApiError::new("invalid_scheduled_message_id"))?;
    let access = ctx.channel(channel).await?;
    schedule::cancel(&ctx.shard, id, Some(access.row.id), Some(ctx.me())).await?;
    Ok(json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_seconds_parse_like_slack_sends_them() {
        assert_eq!(unix_secs("1562180400"), Some(1562180400));
        assert_eq!(unix_secs(" 1562180400.75 "), Some(1562180400));
        for bad in ["", "-5", "1e9", "12.x", "abc", "9999999999999"] {
            assert_eq!(unix_secs(bad), None, "{bad}");
        }
    }

    #[test]
    fn cursors_round_trip() {
        let c = encode_cursor(1_700_000_000, 42);
        assert_eq!(decode_cursor(&c).unwrap(), (1_700_000_000, 42));
        assert!(decode_cursor(&cursor::encode(Kind::Scheduled, "x")).is_err());
        assert!(decode_cursor(&cursor::encode(Kind::Users, "U1")).is_err());
    }
}
