//! chat.postMessage, chat.update, chat.delete.
//!
//! Everything the request alone can refuse (no text, too long, bad blocks,
//! a malformed ts) is refused before anything is asked of the store or the
//! channel server, so bad input changes nothing. Who may do what (member,
//! author) is checked again by [`ops::chat`] at the channel's owner, which
//! is authoritative.

use serde_json::{json, Value};

use super::access::{self, ChannelRef};
use super::context::Ctx;
use super::error::ApiError;
use super::render;
use crate::ids::Id;
use crate::ops::chat::{self, PostMessage};
use crate::ts::Ts;

/// Slack's limit on `text`, in characters.
pub const TEXT_CHARS_MAX: usize = 40_000;
/// Longest `client_msg_id` we keep (Slack's are UUIDs, 36 characters).
const CLIENT_MSG_ID_MAX: usize = 64;

/// `text` and `blocks` of a post or an edit: `no_text` when both are
/// missing, `msg_too_long`, `invalid_blocks_format` (not a JSON array of
/// objects). An empty `blocks` array counts as missing.
pub(super) fn content(ctx: &Ctx) -> Result<(String, Option<Value>), ApiError> {
    let p = &ctx.params;
    let text = p.opt("text").map(|t| t.into_owned());
    let blocks = match p.json("blocks", "invalid_blocks_format")? {
        None => None,
        Some(Value::Array(a)) if a.is_empty() => None,
        Some(Value::Array(a)) if a.iter().all(Value::is_object) => Some(Value::Array(a)),
        Some(_) => return Err(ApiError::new("invalid_blocks_format")),
    };
    if text.is_none() && blocks.is_none() {
        return Err(ApiError::new("no_text"));
    }
    let text = text.unwrap_or_default();
    if text.chars().count() > TEXT_CHARS_MAX {
        return Err(ApiError::new("msg_too_long"));
    }
    Ok((text, blocks))
}

/// chat.postMessage: `channel` (id or name), `text`, `blocks`, `thread_ts`,
/// `reply_broadcast` → `channel, ts, message`. A `thread_ts` must name a
/// live message of the channel (`thread_not_found`); a reply's ts stands
/// for its thread, so replies never nest.
pub async fn post_message(ctx: &Ctx) -> Result<Value, ApiError> {
    let p = &ctx.params;
    // Slack answers channel_not_found (not invalid_arguments) here.
    let channel = p
        .opt("channel")
        .map(|c| ChannelRef::parse(&c))
        .ok_or_else(|| ApiError::new("channel_not_found"))?;
    let (text, blocks) = content(ctx)?;
    let thread_ts = p.ts("thread_ts", "thread_not_found")?;
    let reply_broadcast = p.flag("reply_broadcast")?;
    let client_msg_id = match p.opt("client_msg_id") {
        Some(id) if id.len() > CLIENT_MSG_ID_MAX => {
            return Err(ApiError::invalid("client_msg_id", "too long"))
        }
        id => id.map(|i| i.into_owned()),
    };
    // Fast path, no store read: a channel named by id and no thread. The
    // channel's owner authorizes from its cache (existence, membership;
    // a private channel is channel_not_found to non-members), which is what
    // the store read below would decide.
    if let (ChannelRef::Id(id), None) = (&channel, thread_ts) {
        let id = Id::parse(id).ok_or_else(|| ApiError::new("channel_not_found"))?;
        let msg = PostMessage {
            text,
            blocks,
            thread_ts: None,
            reply_broadcast: false,
            client_msg_id,
        };
        let row = chat::post_message(&ctx.shard, &ctx.user, id, msg).await?;
        return Ok(json!({
            "channel": id.to_string(),
            "ts": render::ts(row.ts),
            "message": render::message(&row, &ctx.team()),
        }));
    }
    let (team, me) = (ctx.team(), ctx.me());
    let (access, thread_ts) = ctx
        .read(move |c| {
            let a = match access::channel(c, &team, &me, &channel)? {
                Ok(a) => a,
                Err(e) => return Ok(Err(e)),
            };
            if a.row.is_archived {
                return Ok(Err(ApiError::new("is_archived")));
            }
            if let Err(e) = a.require_member() {
                return Ok(Err(e));
            }
            let Some(t) = thread_ts else {
                return Ok(Ok((a, None)));
            };
            // The thread must exist; naming one of its replies names it.
            let Some(m) = c.message(&a.row.id, t.micros() as i64)? else {
                return Ok(Err(ApiError::new("thread_not_found")));
            };
            let parent = match m.thread_ts {
                Some(p) if m.is_reply() => Ts(p.max(0) as u64),
                _ => t,
            };
            Ok(Ok((a, Some(parent))))
        })
        .await?;
    let id = access.id()?;
    let msg = PostMessage {
        text,
        blocks,
        thread_ts,
        reply_broadcast: reply_broadcast && thread_ts.is_some(),
        client_msg_id,
    };
    let row = chat::post_message(&ctx.shard, &ctx.user, id, msg).await?;
    Ok(json!({
        "channel": access.row.id,
        "ts": render::ts(row.ts),
        "message": render::message(&row, &ctx.team()),
    }))
}

/// The `ts` of chat.update / chat.delete: required; malformed is
/// `message_not_found` (no message has that ts).
fn target_ts(ctx: &Ctx) -> Result<Ts, ApiError> {
    ctx.params
        .ts("ts", "message_not_found")?
        .ok_or_else(|| ApiError::missing("ts"))
}

/// chat.update: `channel, ts, text, blocks` → `channel, ts, text, message`.
/// With `blocks` and no `text`, the text becomes empty.
pub async fn update(ctx: &Ctx) -> Result<Value, ApiError> {
    let channel = ChannelRef::parse(&ctx.params.req("channel")?);
    let ts = target_ts(ctx)?;
    let (text, blocks) = content(ctx)?;
    let access = ctx.channel(channel).await?;
    if access.row.is_archived {
        return Err(ApiError::new("is_archived"));
    }
    let id = access.id()?;
    let row = chat::update_message(&ctx.shard, &ctx.user, id, ts, text, blocks).await?;
    Ok(json!({
        "channel": access.row.id,
        "ts": render::ts(row.ts),
        "text": row.text,
        "message": render::message(&row, &ctx.team()),
    }))
}

/// chat.delete: `channel, ts` → `channel, ts`.
pub async fn delete(ctx: &Ctx) -> Result<Value, ApiError> {
    let channel = ChannelRef::parse(&ctx.params.req("channel")?);
    let ts = target_ts(ctx)?;
    let access = ctx.channel(channel).await?;
    if access.row.is_archived {
        return Err(ApiError::new("is_archived"));
    }
    let id = access.id()?;
    chat::delete_message(&ctx.shard, &ctx.user, id, ts).await?;
    Ok(json!({"channel": access.row.id, "ts": ts.to_string()}))
}
