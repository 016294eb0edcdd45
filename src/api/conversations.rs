//! conversations.*: create, list, info, join, invite, leave, members,
//! history, replies.
//!
//! Reads come from the store in one job each (the visibility check and the
//! query see one snapshot); membership changes go through [`ops::join`] /
//! [`ops::leave`], which update the channel server, the user's channel
//! list, live connections, and emit `member_joined_channel` /
//! `member_left_channel`. Rules (see [`super::access`]): private
//! conversations are invisible to non-members; only members read history
//! and replies.

use std::collections::HashSet;

use serde_json::{json, Value};

use super::access::{self, ChannelRef};
use super::context::Ctx;
use super::cursor::{self, Kind};
use super::error::ApiError;
use super::render;
use crate::ids::Id;
use crate::ops::{self, OpError};
use crate::shard::message::Refusal;
use crate::store::{self, ChannelRow, ChannelTypes, Window};

/// Page size when `limit` is absent or 0 (Slack's default for lists and
/// history).
const DEFAULT_LIMIT: usize = 100;
/// conversations.replies' default page (Slack's: 1000).
const DEFAULT_REPLIES_LIMIT: usize = store::MAX_PAGE;
/// Most users one conversations.invite may name (Slack's limit).
const INVITE_USERS_MAX: usize = 1000;
/// Longest conversation name (Slack's rule, also [`ops::valid_channel_name`]).
const NAME_CHARS_MAX: usize = 80;

/// `limit` clamped to 1..=[`store::MAX_PAGE`], `default` when absent or 0.
pub fn limit(ctx: &Ctx, default: usize) -> Result<usize, ApiError> {
    Ok(match ctx.params.count("limit")? {
        None | Some(0) => default,
        Some(n) => n.min(store::MAX_PAGE),
    })
}

/// `{"next_cursor": …}`: `""` at the end.
pub fn metadata(next: Option<String>) -> Value {
    json!({ "next_cursor": next.unwrap_or_default() })
}

/// Slack's naming errors, most specific first: `invalid_name_required`,
/// `invalid_name_maxlength`, `invalid_name_specials` (anything but
/// lowercase letters, digits, `-` and `_`, upper case included),
/// `invalid_name_punctuation` (only `-` and `_`).
pub fn check_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(ApiError::new("invalid_name_required"));
    }
    if name.chars().count() > NAME_CHARS_MAX {
        return Err(ApiError::new("invalid_name_maxlength"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        return Err(ApiError::new("invalid_name_specials"));
    }
    if name.chars().all(|c| c == '-' || c == '_') {
        return Err(ApiError::new("invalid_name_punctuation"));
    }
    if !ops::valid_channel_name(name) {
        return Err(ApiError::new("invalid_name"));
    }
    Ok(())
}

/// conversations.create: `name, is_private` → `channel`. The creator
/// joins; a public channel is announced with `channel_created` on the
/// team's channel.
pub async fn create(ctx: &Ctx) -> Result<Value, ApiError> {
    let name = ctx
        .params
        .opt("name")
        .map(|n| n.into_owned())
        .unwrap_or_default();
    check_name(&name)?;
    let private = ctx.params.flag("is_private")?;
    let me = ctx.user.id;
    let id = match ops::create_channel(&ctx.shard, &name, private, Some(me)).await {
        Ok(id) => id,
        Err(OpError::InvalidName) => return Err(ApiError::new("invalid_name")),
        Err(e) => return Err(e.into()),
    };
    ops::join(&ctx.shard, id, me).await?;
    let (team, sid) = (ctx.team(), id.to_string());
    let stored = ctx
        .read(move |c| Ok(Ok(c.channel(&sid)?)))
        .await?
        .filter(|row| row.team_id == team);
    let row = stored.unwrap_or_else(|| ChannelRow {
        id: id.to_string(),
        team_id: ctx.team(),
        name: name.clone(),
        is_private: private,
        is_archived: false,
        is_general: false,
        created: store::now_micros(),
        creator: ctx.me(),
        topic: String::new(),
        purpose: String::new(),
    });
    if !private {
        announce(ctx, &row).await;
    }
    Ok(json!({ "channel": render::channel(&row, true, None) }))
}

/// `channel_created` to everyone in the team (their connections watch the
/// team's channel). The channel exists whatever happens here, so a failure
/// is logged, not answered.
async fn announce(ctx: &Ctx, row: &ChannelRow) {
    let event = json!({
        "type": "channel_created",
        "channel": {
            "id": row.id,
            "name": row.name,
            "created": render::secs(row.created),
            "creator": row.creator,
        },
    });
    let Value::Object(event) = event else {
        return;
    };
    if let Err(e) = ops::publish(&ctx.shard, ctx.user.team, event, false).await {
        tracing::warn!(channel = %row.id, error = e.code(), "channel_created not published");
    }
}

/// `types` of conversations.list: `public_channel` (the default),
/// `private_channel`; `mpim` and `im` are accepted and match nothing (there
/// are no such conversations yet); anything else is `invalid_types`.
fn channel_types(ctx: &Ctx) -> Result<ChannelTypes, ApiError> {
    let Some(list) = ctx.params.list("types")? else {
        return Ok(ChannelTypes::PUBLIC);
    };
    let mut t = ChannelTypes {
        public: false,
        private: false,
    };
    for item in list {
        match item.as_str() {
            "public_channel" => t.public = true,
            "private_channel" => t.private = true,
            "mpim" | "im" => {}
            _ => return Err(ApiError::new("invalid_types")),
        }
    }
    Ok(t)
}

/// conversations.list: `types, exclude_archived, limit, cursor` →
/// `channels[]`. Private channels appear only to their members.
pub async fn list(ctx: &Ctx) -> Result<Value, ApiError> {
    let types = channel_types(ctx)?;
    let exclude_archived = ctx.params.flag("exclude_archived")?;
    let limit = limit(ctx, DEFAULT_LIMIT)?;
    let after = match ctx.params.opt("cursor") {
        None => None,
        Some(c) => Some(cursor::decode_id(Kind::Channels, &c)?),
    };
    let (team, me) = (ctx.team(), ctx.me());
    let (rows, mine, more) = ctx
        .read(move |c| {
            if !types.public && !types.private {
                return Ok(Ok((Vec::new(), HashSet::new(), false)));
            }
            let (rows, more) =
                c.channels(types, exclude_archived, Some(&me), after.as_deref(), limit)?;
            let mine: HashSet<String> = c.channels_of(&me)?.into_iter().collect();
            Ok(Ok((rows, mine, more)))
        })
        .await?;
    let next = more
        .then(|| rows.last().map(|r| cursor::encode(Kind::Channels, &r.id)))
        .flatten();
    let channels: Vec<Value> = rows
        .iter()
        .filter(|r| r.team_id == team)
        .map(|r| render::channel(r, mine.contains(&r.id), None))
        .collect();
    Ok(json!({"channels": channels, "response_metadata": metadata(next)}))
}

/// conversations.info: `channel, include_num_members` → `channel`.
pub async fn info(ctx: &Ctx) -> Result<Value, ApiError> {
    let r = ChannelRef::parse(&ctx.params.req("channel")?);
    let with_count = ctx.params.flag("include_num_members")?;
    let (team, me) = (ctx.team(), ctx.me());
    let (a, count) = ctx
        .read(move |c| {
            let a = match access::channel(c, &team, &me, &r)? {
                Ok(a) => a,
                Err(e) => return Ok(Err(e)),
            };
            let count = if with_count {
                Some(c.member_count(&a.row.id)?)
            } else {
                None
            };
            Ok(Ok((a, count)))
        })
        .await?;
    Ok(json!({ "channel": render::channel(&a.row, a.member, count) }))
}

/// conversations.join: `channel` → `channel`, with
/// `warning:"already_in_channel"` for a member.
pub async fn join(ctx: &Ctx) -> Result<Value, ApiError> {
    let a = ctx.channel_param("channel").await?;
    if a.row.is_archived {
        return Err(ApiError::new("is_archived"));
    }
    let already = a.member
        || match ops::join(&ctx.shard, a.id()?, ctx.user.id).await {
            Ok(()) => false,
            Err(OpError::Refused(Refusal::AlreadyInChannel)) => true,
            Err(e) => return Err(e.into()),
        };
    let mut v = json!({ "channel": render::channel(&a.row, true, None) });
    if already {
        v["warning"] = "already_in_channel".into();
        v["response_metadata"] = json!({ "warnings": ["already_in_channel"] });
    }
    Ok(v)
}

/// conversations.invite: `channel, users` (comma list) → `channel`. The
/// caller must be a member. Every user is checked before anyone is added,
/// so a refused invitation adds nobody: `cant_invite_self`,
/// `user_not_found`, `already_in_channel` (for the first offending user in
/// the list), `no_user`, `too_many_users`.
pub async fn invite(ctx: &Ctx) -> Result<Value, ApiError> {
    let r = ChannelRef::parse(&ctx.params.req("channel")?);
    let list = ctx
        .params
        .list("users")?
        .ok_or_else(|| ApiError::new("no_user"))?;
    if list.len() > INVITE_USERS_MAX {
        return Err(ApiError::new("too_many_users"));
    }
    let mut invitees: Vec<String> = Vec::with_capacity(list.len());
    for u in list {
        if !invitees.contains(&u) {
            invitees.push(u);
        }
    }
    let (team, me) = (ctx.team(), ctx.me());
    let checked = invitees.clone();
    let a = ctx
        .read(move |c| {
            let a = match access::channel(c, &team, &me, &r)? {
                Ok(a) => a,
                Err(e) => return Ok(Err(e)),
            };
            if !a.member {
                return Ok(Err(ApiError::new("not_in_channel")));
            }
            if a.row.is_archived {
                return Ok(Err(ApiError::new("is_archived")));
            }
            for u in &checked {
                if *u == me {
                    return Ok(Err(ApiError::new("cant_invite_self")));
                }
                let found = Id::parse(u).is_some_and(|id| id.is_user())
                    && c.user(u)?
                        .is_some_and(|row| row.team_id == team && !row.deleted);
                if !found {
                    return Ok(Err(ApiError::new("user_not_found")));
                }
                if c.is_member(&a.row.id, u)? {
                    return Ok(Err(ApiError::new("already_in_channel")));
                }
            }
            Ok(Ok(a))
        })
        .await?;
    let id = a.id()?;
    for u in &invitees {
        let Some(user) = Id::parse(u) else {
            return Err(ApiError::new("user_not_found"));
        };
        match ops::join(&ctx.shard, id, user).await {
            // Joined meanwhile by someone else's doing: the wish holds.
            Ok(()) | Err(OpError::Refused(Refusal::AlreadyInChannel)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(json!({ "channel": render::channel(&a.row, true, None) }))
}

/// conversations.leave: `channel` → `{}`. `not_in_channel` for a
/// non-member, `cant_leave_general` for the general channel.
pub async fn leave(ctx: &Ctx) -> Result<Value, ApiError> {
    let a = ctx.channel_param("channel").await?;
    a.require_member()?;
    if a.row.is_general {
        return Err(ApiError::new("cant_leave_general"));
    }
    match ops::leave(&ctx.shard, a.id()?, ctx.user.id).await {
        Ok(()) => Ok(json!({})),
        Err(OpError::Refused(Refusal::NotInChannel)) => Err(ApiError::new("not_in_channel")),
        Err(e) => Err(e.into()),
    }
}

/// conversations.members: `channel, limit, cursor` → `members[]` (ids).
pub async fn members(ctx: &Ctx) -> Result<Value, ApiError> {
    let r = ChannelRef::parse(&ctx.params.req("channel")?);
    let limit = limit(ctx, DEFAULT_LIMIT)?;
    let after = match ctx.params.opt("cursor") {
        None => None,
        Some(c) => Some(cursor::decode_id(Kind::Members, &c)?),
    };
    let (team, me) = (ctx.team(), ctx.me());
    let (ids, more) = ctx
        .read(move |c| {
            let a = match access::channel(c, &team, &me, &r)? {
                Ok(a) => a,
                Err(e) => return Ok(Err(e)),
            };
            Ok(Ok(c.members(&a.row.id, after.as_deref(), limit)?))
        })
        .await?;
    let next = more
        .then(|| ids.last().map(|u| cursor::encode(Kind::Members, u)))
        .flatten();
    Ok(json!({"members": ids, "response_metadata": metadata(next)}))
}

/// `latest`, `oldest`, `inclusive` of history and replies.
fn window(ctx: &Ctx) -> Result<Window, ApiError> {
    let p = &ctx.params;
    let micros = |ts: crate::ts::Ts| i64::try_from(ts.micros()).unwrap_or(i64::MAX);
    Ok(Window {
        latest: p.ts("latest", "invalid_ts_latest")?.map(micros),
        oldest: p.ts("oldest", "invalid_ts_oldest")?.map(micros),
        inclusive: p.flag("inclusive")?,
    })
}

/// conversations.history: `channel, cursor, latest, oldest, inclusive,
/// limit` → `messages[]` newest first, `has_more`,
/// `response_metadata.next_cursor`. Members only.
pub async fn history(ctx: &Ctx) -> Result<Value, ApiError> {
    let r = ChannelRef::parse(&ctx.params.req("channel")?);
    let window = window(ctx)?;
    let limit = limit(ctx, DEFAULT_LIMIT)?;
    let before = match ctx.params.opt("cursor") {
        None => None,
        Some(c) => Some(cursor::decode_ts(Kind::History, &c)?),
    };
    let (team, me) = (ctx.team(), ctx.me());
    let (rows, more) = ctx
        .read(move |c| {
            let a = match access::member_channel(c, &team, &me, &r)? {
                Ok(a) => a,
                Err(e) => return Ok(Err(e)),
            };
            Ok(Ok(c.history(&a.row.id, window, before, limit)?))
        })
        .await?;
    let next = more
        .then(|| rows.last().map(|m| cursor::encode_ts(Kind::History, m.ts)))
        .flatten();
    let team = ctx.team();
    let msgs: Vec<Value> = rows.iter().map(|m| render::message(m, &team)).collect();
    Ok(json!({
        "messages": msgs,
        "has_more": more,
        "pin_count": 0,
        "response_metadata": metadata(next),
    }))
}

/// conversations.replies: `channel, ts`, window, `limit`, `cursor` → the
/// parent first, then replies oldest first. `ts` may name the parent or any
/// reply of the thread. Members only; `thread_not_found` when there is no
/// such message.
pub async fn replies(ctx: &Ctx) -> Result<Value, ApiError> {
    let r = ChannelRef::parse(&ctx.params.req("channel")?);
    let ts = ctx
        .params
        .ts("ts", "thread_not_found")?
        .ok_or_else(|| ApiError::missing("ts"))?;
    let ts = i64::try_from(ts.micros()).map_err(|_| ApiError::new("thread_not_found"))?;
    let window = window(ctx)?;
    let limit = limit(ctx, DEFAULT_REPLIES_LIMIT)?;
    let after = match ctx.params.opt("cursor") {
        None => None,
        Some(c) => Some(cursor::decode_ts(Kind::Replies, &c)?),
    };
    let (team, me) = (ctx.team(), ctx.me());
    let (rows, more) = ctx
        .read(move |c| {
            let a = match access::member_channel(c, &team, &me, &r)? {
                Ok(a) => a,
                Err(e) => return Ok(Err(e)),
            };
            let Some(m) = c.message(&a.row.id, ts)? else {
                return Ok(Err(ApiError::new("thread_not_found")));
            };
            let parent = if m.is_reply() {
                m.thread_ts.unwrap_or(ts)
            } else {
                ts
            };
            match c.replies(&a.row.id, parent, window, after, limit) {
                Ok(page) => Ok(Ok(page)),
                Err(store::StoreError::NotFound) => Ok(Err(ApiError::new("thread_not_found"))),
                Err(e) => Err(e),
            }
        })
        .await?;
    let next = more
        .then(|| {
            rows.iter()
                .skip(1)
                .last()
                .map(|m| cursor::encode_ts(Kind::Replies, m.ts))
        })
        .flatten();
    let team = ctx.team();
    let msgs: Vec<Value> = rows.iter().map(|m| render::message(m, &team)).collect();
    Ok(json!({
        "messages": msgs,
        "has_more": more,
        "response_metadata": metadata(next),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_slack_checks_them() {
        let code = |n: &str| check_name(n).err().map(|e| e.code().to_string());
        assert_eq!(code("general"), None);
        assert_eq!(code("a-b_c9"), None);
        assert_eq!(code(&"x".repeat(80)), None);
        assert_eq!(code("").as_deref(), Some("invalid_name_required"));
        assert_eq!(
            code(&"x".repeat(81)).as_deref(),
            Some("invalid_name_maxlength")
        );
        assert_eq!(
            code(&"é".repeat(81)).as_deref(),
            Some("invalid_name_maxlength")
        );
        for bad in ["General", "a b", "a.b", "#a", "é", "a\u{0}"] {
            assert_eq!(
                code(bad).as_deref(),
                Some("invalid_name_specials"),
                "{bad:?}"
            );
        }
        for bad in ["-", "__", "-_-"] {
            assert_eq!(
                code(bad).as_deref(),
                Some("invalid_name_punctuation"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn metadata_ends_with_an_empty_cursor() {
        assert_eq!(metadata(None), json!({"next_cursor": ""}));
        assert_eq!(metadata(Some("abc".into())), json!({"next_cursor": "abc"}));
    }
}
