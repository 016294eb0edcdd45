//! users.info, users.list, users.getPresence, users.setPresence.
//!
//! A user of another team does not exist for the caller
//! (`user_not_found`).

use serde_json::{json, Value};

use super::context::Ctx;
use super::conversations::{limit, metadata};
use super::cursor::{self, Kind};
use super::error::ApiError;
use super::render;
use crate::ids::Id;
use crate::ops;
use crate::store::{self, UserRow};
use crate::ticket::unix_secs_now;

/// The user `raw` names, if the caller's team has it.
async fn find(ctx: &Ctx, raw: &str) -> Result<UserRow, ApiError> {
    let raw = raw.trim();
    if !Id::parse(raw).is_some_and(|id| id.is_user()) {
        return Err(ApiError::new("user_not_found"));
    }
    let (id, team) = (raw.to_string(), ctx.team());
    ctx.read(move |c| {
        Ok(c.user(&id)?
            .filter(|u| u.team_id == team)
            .ok_or_else(|| ApiError::new("user_not_found")))
    })
    .await
}

/// users.info: `user` → `user{…}`.
pub async fn info(ctx: &Ctx) -> Result<Value, ApiError> {
    let u = find(ctx, &ctx.params.req("user")?).await?;
    Ok(json!({ "user": render::user(&u) }))
}

/// users.list: `limit, cursor` → `members[]`. Without `limit`, one page of
/// the most the store returns ([`store::MAX_PAGE`]).
pub async fn list(ctx: &Ctx) -> Result<Value, ApiError> {
    let limit = limit(ctx, store::MAX_PAGE)?;
    let after = match ctx.params.opt("cursor") {
        None => None,
        Some(c) => Some(cursor::decode_id(Kind::Users, &c)?),
    };
    let (rows, more) = ctx
        .read(move |c| Ok(Ok(c.users(after.as_deref(), limit)?)))
        .await?;
    let next = more
        .then(|| rows.last().map(|u| cursor::encode(Kind::Users, &u.id)))
        .flatten();
    let team = ctx.team();
    let members: Vec<Value> = rows
        .iter()
        .filter(|u| u.team_id == team)
        .map(render::user)
        .collect();
    Ok(json!({
        "members": members,
        "cache_ts": unix_secs_now(),
        "response_metadata": metadata(next),
    }))
}

fn presence_word(active: bool) -> &'static str {
    if active {
        "active"
    } else {
        "away"
    }
}

/// users.getPresence: `user` (default: the caller) → `presence`; for the
/// caller also `online, auto_away, manual_away, connection_count,
/// last_activity`.
pub async fn get_presence(ctx: &Ctx) -> Result<Value, ApiError> {
    let me = ctx.me();
    let target = ctx.params.opt("user").map(|u| u.trim().to_string());
    match target {
        Some(u) if u != me => {
            let row = find(ctx, &u).await?;
            let id = Id::parse(&row.id).ok_or_else(|| ApiError::new("user_not_found"))?;
            let states = ops::presence(&ctx.shard, vec![id]).await?;
            let active = states.iter().any(|(u, a)| *u == id && *a);
            Ok(json!({ "presence": presence_word(active) }))
        }
        _ => {
            let d = ops::presence_detail(&ctx.shard, ctx.user.id).await?;
            let online = d.connections > 0;
            Ok(json!({
                "presence": presence_word(d.active),
                "online": online,
                "auto_away": false,
                "manual_away": d.manual_away,
                "connection_count": d.connections,
                // Not tracked yet: "now" while connected, 0 otherwise.
                "last_activity": if online { unix_secs_now() } else { 0 },
            }))
        }
    }
}

/// users.setPresence: `presence` = `auto` or `away`, else
/// `invalid_presence`.
pub async fn set_presence(ctx: &Ctx) -> Result<Value, ApiError> {
    let away = match ctx.params.req("presence")?.trim() {
        "away" => true,
        "auto" => false,
        _ => return Err(ApiError::new("invalid_presence")),
    };
    ops::set_manual_away(&ctx.shard, ctx.user.id, away).await?;
    Ok(json!({}))
}
