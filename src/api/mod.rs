//! The Slack-compatible Web API (`/api/<method>`, PROTOCOL.md "Web API
//! envelope" and "Methods"). Stateless like the admin API: every shard
//! serves it; reads go to the store, writes through [`crate::ops`] to the
//! owning shards.
//!
//! A request goes: read the body (bounded) → parameters from the query
//! string and the body ([`envelope`]) → the rate limit of its token
//! ([`ratelimit`], the only non-200 answer besides a path outside `/api/`)
//! → the method's name (`unknown_method`) → the token's user ([`auth`]) →
//! the method, which answers `{"ok":true,…}` or an [`error::ApiError`]
//! (HTTP 200 `{"ok":false,"error":…}`).
//!
//! | method | module | ops |
//! |---|---|---|
//! | api.test | here | — |
//! | auth.test | [`auth`] | `auth::authenticate` |
//! | rtm.connect | [`rtm`] | `ticket_url` |
//! | chat.postMessage / update / delete | [`chat`] | `chat::post_message` / `update_message` / `delete_message` |
//! | conversations.create | [`conversations`] | `create_channel`, `join`, `publish` (`channel_created`) |
//! | conversations.join / invite / leave | [`conversations`] | `join` / `join` / `leave` |
//! | conversations.list / info / members / history / replies | [`conversations`] | — (store) |
//! | reactions.add / remove | [`reactions`] | `chat::react` |
//! | users.info / list | [`users`] | — (store) |
//! | users.getPresence / setPresence | [`users`] | `presence`, `presence_detail` / `set_manual_away` |

mod access;
mod auth;
mod chat;
mod context;
mod conversations;
mod cursor;
// Public for the fuzz targets (fuzz/), which parse envelopes directly.
pub mod envelope;
pub mod error;
mod ratelimit;
mod reactions;
pub mod render;
mod rtm;
mod users;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::HOST;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::http::json::{self, BodyError};
use crate::http::HttpLimits;
use crate::shard::Shard;
use context::Ctx;
use envelope::Params;
use error::ApiError;
use ratelimit::RateLimiter;

type Resp = Response<Full<Bytes>>;

/// Every method we serve.
const METHODS: &[&str] = &[
    "api.test",
    "auth.test",
    "rtm.connect",
    "chat.postMessage",
    "chat.update",
    "chat.delete",
    "conversations.create",
    "conversations.list",
    "conversations.info",
    "conversations.join",
    "conversations.invite",
    "conversations.leave",
    "conversations.members",
    "conversations.history",
    "conversations.replies",
    "reactions.add",
    "reactions.remove",
    "users.info",
    "users.list",
    "users.getPresence",
    "users.setPresence",
];

/// The request handler a shard's API listener runs. The rate limiter lives
/// here: one per shard, owned by its executor.
pub fn handler(
    shard: Rc<Shard>,
) -> impl Fn(Request<Incoming>) -> std::pin::Pin<Box<dyn std::future::Future<Output = Resp>>>
       + Clone
       + 'static {
    let limiter = Rc::new(RefCell::new(RateLimiter::default()));
    move |req| {
        let shard = shard.clone();
        let limiter = limiter.clone();
        Box::pin(async move { route(shard, limiter, req).await })
    }
}

async fn route(
    shard: Rc<Shard>,
    limiter: Rc<RefCell<RateLimiter>>,
    req: Request<Incoming>,
) -> Resp {
    let path = req.uri().path().to_string();
    let Some(method) = path.strip_prefix("/api/") else {
        return json::error(StatusCode::NOT_FOUND, "not_found");
    };
    let (parts, body) = match json::read_body(req, HttpLimits::default().max_body_bytes).await {
        Ok(pb) => pb,
        // 200, not 413: the SDKs retry anything but 200.
        Err(BodyError::TooLarge { .. }) => return ApiError::new("request_too_large").response(),
        Err(BodyError::Io(_)) => return ApiError::new("request_timeout").response(),
    };
    let params = Params::from_request(&parts, &body);
    let token = auth::token(&parts, params.as_ref().ok());
    let verdict = limiter
        .borrow_mut()
        .check(token.as_deref().unwrap_or(""), Instant::now());
    if let Err(retry_after) = verdict {
        return ratelimit::response(retry_after);
    }
    if !METHODS.contains(&method) {
        return ApiError::new("unknown_method").response();
    }
    let params = match params {
        Ok(p) => p,
        Err(e) => return e.response(),
    };
    if method == "api.test" {
        return api_test(&params);
    }
    let user = match auth::authenticate(&shard, token.as_deref()).await {
        Ok(u) => u,
        Err(e) => return e.response(),
    };
    let host = parts
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    let ctx = Ctx {
        shard,
        params,
        user,
        host,
    };
    match call(method, &ctx).await {
        Ok(v) => json::ok_json(v),
        Err(e) => e.response(),
    }
}

async fn call(method: &str, ctx: &Ctx) -> Result<Value, ApiError> {
    match method {
        "auth.test" => auth::test(ctx).await,
        "rtm.connect" => rtm::connect(ctx).await,
        "chat.postMessage" => chat::post_message(ctx).await,
        "chat.update" => chat::update(ctx).await,
        "chat.delete" => chat::delete(ctx).await,
        "conversations.create" => conversations::create(ctx).await,
        "conversations.list" => conversations::list(ctx).await,
        "conversations.info" => conversations::info(ctx).await,
        "conversations.join" => conversations::join(ctx).await,
        "conversations.invite" => conversations::invite(ctx).await,
        "conversations.leave" => conversations::leave(ctx).await,
        "conversations.members" => conversations::members(ctx).await,
        "conversations.history" => conversations::history(ctx).await,
        "conversations.replies" => conversations::replies(ctx).await,
        "reactions.add" => reactions::add(ctx).await,
        "reactions.remove" => reactions::remove(ctx).await,
        "users.info" => users::info(ctx).await,
        "users.list" => users::list(ctx).await,
        "users.getPresence" => users::get_presence(ctx).await,
        "users.setPresence" => users::set_presence(ctx).await,
        _ => Err(ApiError::new("unknown_method")),
    }
}

/// api.test: no token needed; echoes its parameters as `args` and fails
/// with the code given as `error`, as Slack's does.
fn api_test(params: &Params) -> Resp {
    let args = params.echo();
    let mut v = match params.opt("error") {
        Some(code) => ApiError::owned(code.chars().take(100).collect()).body(),
        None => json!({"ok": true}),
    };
    if !args.is_empty() {
        v["args"] = Value::Object(args);
    }
    json::json(StatusCode::OK, &v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_is_dispatched() {
        // `call` answers unknown_method only for names outside METHODS; a
        // method listed but not dispatched would be a silent hole.
        let src = include_str!("mod.rs");
        for m in METHODS.iter().filter(|m| **m != "api.test") {
            assert!(
                src.contains(&format!("\"{m}\" => ")),
                "{m} is listed but not dispatched"
            );
        }
    }
}
