//! The Slack-compatible Web API (`/api/<method>`, docs/PROTOCOL.md "Web
//! API": "Envelope" and "Methods"). Stateless like the admin API: every shard
//! serves it; reads go to the store, writes through [`crate::ops`] to the
//! owning shards.
//!
//! A request goes: the method's name (`unknown_method`), then
//!
//! - with an `Authorization: Bearer` header (what the SDKs send): the rate
//!   limit of its token ([`ratelimit`]) → the token's user ([`auth`]) →
//!   only then the body, up to [`limits::HTTP_BODY_BYTES_MAX`]: a refused
//!   token costs no body, and its connection is closed if one was coming;
//! - without one (the token is a `token` parameter, or there is none; and
//!   always for api.test): the body first, since it may hold the token, up
//!   to [`limits::API_TOKENLESS_BODY_BYTES_MAX`] and charged to the shard's
//!   unauthenticated budget ([`crate::http::budget`]; spent: 503
//!   `server_busy`) until the token is checked → the rate limit → the
//!   token's user;
//!
//! → parameters from the query string and the body ([`envelope`]) → the
//! method, which answers `{"ok":true,…}` or an [`error::ApiError`] (HTTP 200
//! `{"ok":false,"error":…}`). The only non-200 answers are 429 (rate limit),
//! 503 (budget) and 404 (a path outside `/api/`).
//!
//! | method | module | ops |
//! |---|---|---|
//! | api.test | here | — |
//! | auth.test | [`auth`] | `auth::authenticate` |
//! | rtm.connect | [`rtm`] | `ticket_url` |
//! | chat.postMessage / update / delete | [`chat`] | `chat::post_message` / `update_message` / `delete_message` |
//! | chat.scheduleMessage / scheduledMessages.list / deleteScheduledMessage | [`scheduled`] | `schedule::schedule` / `list` / `cancel` |
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
mod scheduled;
mod users;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Incoming};
use hyper::header::HOST;
use hyper::http::request::Parts;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::http::budget;
use crate::http::json::{self, BodyError};
use crate::limits;
use crate::ops::auth::AuthUser;
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
    "chat.scheduleMessage",
    "chat.scheduledMessages.list",
    "chat.deleteScheduledMessage",
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
        let resp = json::error(StatusCode::NOT_FOUND, "not_found");
        return json::closing_if_unread(resp, req.body());
    };
    if !METHODS.contains(&method) {
        let resp = ApiError::new("unknown_method").response();
        return json::closing_if_unread(resp, req.body());
    }
    match json::bearer_token_in(req.headers()) {
        // api.test takes no token: whatever the header says, its body is
        // an anonymous client's.
        Some(token) if method != "api.test" => {
            let token = token.to_string();
            authenticate_then_read(shard, &limiter, method, token, req).await
        }
        _ => read_then_authenticate(shard, &limiter, method, req).await,
    }
}

/// A request whose head names its token: rate limit and authenticate it,
/// and only then read the body.
async fn authenticate_then_read(
    shard: Rc<Shard>,
    limiter: &RefCell<RateLimiter>,
    method: &str,
    token: String,
    req: Request<Incoming>,
) -> Resp {
    if let Some(resp) = rate_limited(limiter, Some(&token)) {
        return json::closing_if_unread(resp, req.body());
    }
    let user = match auth::authenticate(&shard, Some(&token)).await {
        Ok(u) => u,
        Err(e) => return json::closing_if_unread(e.response(), req.body()),
    };
    let resp = match read_body(req, limits::HTTP_BODY_BYTES_MAX).await {
        Ok((parts, body)) => match Params::from_request(&parts, &body) {
            Ok(params) => serve(shard, method, params, user, &parts).await,
            Err(e) => e.response(),
        },
        Err(resp) => resp,
    };
    budget::authenticated(resp)
}

/// A request whose token, if any, is a parameter: the body has to be read
/// to find it, so it is read under the tokenless bound and charged to the
/// shard's unauthenticated budget until the token is checked.
async fn read_then_authenticate(
    shard: Rc<Shard>,
    limiter: &RefCell<RateLimiter>,
    method: &str,
    req: Request<Incoming>,
) -> Resp {
    let max = limits::API_TOKENLESS_BODY_BYTES_MAX;
    let hint = req.body().size_hint();
    if hint.lower() > max as u64 {
        return json::closing(ApiError::new("request_too_large").response());
    }
    // A declared length is what the body will hold; a chunked one may take
    // the whole bound. No body charges nothing, even with the budget spent.
    let declared = hint.exact().map_or(max, |n| n as usize);
    // Charged to the shard, not to a source: the connection that carries it
    // already holds a source's share, which bounds how many such bodies one
    // source can have in flight.
    let Some(charge) = budget::try_reserve(None, declared) else {
        return budget::busy_response();
    };
    let (parts, body) = match read_body(req, max).await {
        Ok(pb) => pb,
        Err(resp) => return resp,
    };
    let params = Params::from_request(&parts, &body);
    let token = auth::token(&parts, params.as_ref().ok());
    if let Some(resp) = rate_limited(limiter, token.as_deref()) {
        return resp;
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
    // From here the parameters are an authenticated caller's.
    drop((body, charge));
    budget::authenticated(serve(shard, method, params, user, &parts).await)
}

/// The body, bounded, or the Web API's answer to a body that cannot be
/// read: still HTTP 200, since the SDKs retry anything but 200.
async fn read_body(req: Request<Incoming>, max: usize) -> Result<(Parts, Bytes), Resp> {
    json::read_body(req, max).await.map_err(|e| match e {
        BodyError::TooLarge { .. } => json::closing(ApiError::new("request_too_large").response()),
        BodyError::Io(_) => ApiError::new("request_timeout").response(),
    })
}

/// The 429 answer if `token` (or the anonymous bucket) is over its rate.
fn rate_limited(limiter: &RefCell<RateLimiter>, token: Option<&str>) -> Option<Resp> {
    let verdict = limiter
        .borrow_mut()
        .check(token.unwrap_or(""), Instant::now());
    verdict.err().map(ratelimit::response)
}

/// Runs an authenticated call.
async fn serve(
    shard: Rc<Shard>,
    method: &str,
    params: Params,
    user: AuthUser,
    parts: &Parts,
) -> Resp {
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
        "chat.scheduleMessage" => scheduled::schedule_message(ctx).await,
        "chat.scheduledMessages.list" => scheduled::list(ctx).await,
        "chat.deleteScheduledMessage" => scheduled::delete(ctx).await,
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
