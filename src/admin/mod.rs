//! The admin API (docs/PROTOCOL.md "Admin API"): JSON over HTTP for the
//! operator and for a backend that keeps its own database. Stateless: every shard
//! serves it and forwards to the owning shards through [`crate::ops`].
//!
//! Every route but `/healthz` and `/metrics` checks the bearer token from
//! the request head before reading the body: a refused request costs no
//! body, and its connection is closed when a body was on its way.

pub mod cluster;
pub mod metrics;
pub mod schedule;

use std::rc::Rc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::budget;
use crate::http::json::{self, BodyError};
use crate::ids::Id;
use crate::limits;
use crate::ops::{self, OpError};
use crate::shard::message::Refusal;
use crate::shard::Shard;

type Resp = Response<Full<Bytes>>;

/// The request handler a shard's admin listener runs.
pub fn handler(
    shard: Rc<Shard>,
) -> impl Fn(Request<Incoming>) -> std::pin::Pin<Box<dyn std::future::Future<Output = Resp>>>
       + Clone
       + 'static {
    move |req| {
        let shard = shard.clone();
        Box::pin(async move { route(shard, req).await })
    }
}

fn op_error(e: OpError) -> Resp {
    let status = match e {
        OpError::Refused(Refusal::UserNotFound) | OpError::Refused(Refusal::ChannelNotFound) => {
            StatusCode::NOT_FOUND
        }
        OpError::Refused(Refusal::NameTaken) | OpError::Refused(Refusal::AlreadyInChannel) => {
            StatusCode::CONFLICT
        }
        OpError::Busy => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    json::error(status, e.code())
}

fn bad_request(code: &str) -> Resp {
    json::error(StatusCode::BAD_REQUEST, code)
}

/// Constant-time comparison of the bearer token.
pub(crate) fn token_matches(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn route(shard: Rc<Shard>, req: Request<Incoming>) -> Resp {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    // Unauthenticated probes first.
    match (&method, path.as_str()) {
        (&Method::GET, "/healthz") => {
            return if ops::healthy(&shard).await {
                json::text(StatusCode::OK, "ok\n".into(), "text/plain; charset=utf-8")
            } else {
                json::text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unhealthy\n".into(),
                    "text/plain; charset=utf-8",
                )
            };
        }
        (&Method::GET, "/metrics") => {
            return match ops::stats(&shard).await {
                Ok(stats) => {
                    let view = cluster::ClusterView::gather(&shard, &stats);
                    json::text(
                        StatusCode::OK,
                        metrics::render(&stats, &view),
                        "text/plain; version=0.0.4",
                    )
                }
                Err(e) => op_error(e),
            };
        }
        _ => {}
    }
    // Authenticate from the head alone: a missing or wrong token is
    // answered before a byte of its body is read, and the connection is
    // closed rather than kept for a body nobody will read.
    let refused = match json::bearer_token_in(req.headers()) {
        None => Some("not_authed"),
        Some(t) if !token_matches(t, &shard.node.admin_token) => Some("invalid_auth"),
        Some(_) => None,
    };
    if let Some(code) = refused {
        let resp = json::error(StatusCode::UNAUTHORIZED, code);
        return json::closing_if_unread(resp, req.body());
    }
    let resp = match json::read_body(req, limits::HTTP_BODY_BYTES_MAX).await {
        Ok((parts, body)) => authorized(&shard, &method, &path, &parts, &body).await,
        Err(e @ BodyError::TooLarge { .. }) => json::closing(e.response()),
        Err(e) => e.response(),
    };
    budget::authenticated(resp)
}

/// The routes that need the admin token, once it has been checked.
async fn authorized(
    shard: &Rc<Shard>,
    method: &Method,
    path: &str,
    parts: &Parts,
    body: &Bytes,
) -> Resp {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::POST, ["v1", "users"]) => create_user(shard, body).await,
        (&Method::POST, ["v1", "channels"]) => create_channel(shard, body).await,
        (&Method::POST, ["v1", "channels", id, "members"]) => add_member(shard, id, body).await,
        (&Method::DELETE, ["v1", "channels", id, "members", user]) => {
            remove_member(shard, id, user).await
        }
        (&Method::POST, ["v1", "tickets"]) => ticket(shard, body).await,
        (&Method::POST, ["v1", "publish"]) => publish(shard, body).await,
        (&Method::POST, ["v1", "schedule"]) => schedule::create(shard, body).await,
        (&Method::GET, ["v1", "schedule"]) => schedule::list(shard, &parts.uri).await,
        (&Method::DELETE, ["v1", "schedule", id]) => schedule::delete(shard, id).await,
        (&Method::GET, ["v1", "presence"]) => presence(shard, &parts.uri).await,
        (&Method::GET, ["v1", "stats"]) => match ops::stats(shard).await {
            Ok(stats) => json::ok_json(json!({ "shards": stats })),
            Err(e) => op_error(e),
        },
        (&Method::GET, ["v1", "ring"]) => ring(shard).await,
        (&Method::POST | &Method::DELETE, ["v1", "drain"]) => {
            cluster::drain(shard, method, &parts.uri).await
        }
        (_, ["v1", ..]) => json::error(StatusCode::NOT_FOUND, "unknown_route"),
        _ => json::error(StatusCode::NOT_FOUND, "not_found"),
    }
}

/// Parses a JSON body into `T`, or answers `invalid_json`.
fn parse<'a, T: Deserialize<'a>>(body: &'a Bytes) -> Result<T, Box<Resp>> {
    serde_json::from_slice(body).map_err(|_| Box::new(bad_request("invalid_json")))
}

fn parse_id(s: &str, not_found: Refusal) -> Result<Id, Box<Resp>> {
    Id::parse(s).ok_or_else(|| Box::new(op_error(OpError::Refused(not_found))))
}

async fn create_user(shard: &Rc<Shard>, body: &Bytes) -> Resp {
    #[derive(Deserialize)]
    struct Body {
        name: String,
        #[serde(default)]
        bot: bool,
    }
    let b: Body = match parse(body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    match ops::create_user(shard, &b.name, b.bot).await {
        Ok(u) => json::ok_json(json!({"user": {"id": u.id, "name": b.name}, "token": u.token})),
        Err(e) => op_error(e),
    }
}

async fn create_channel(shard: &Rc<Shard>, body: &Bytes) -> Resp {
    #[derive(Deserialize)]
    struct Body {
        name: String,
        #[serde(default)]
        private: bool,
    }
    let b: Body = match parse(body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    match ops::create_channel(shard, &b.name, b.private, None).await {
        Ok(id) => json::ok_json(json!({"channel": {"id": id, "name": b.name}})),
        Err(e) => op_error(e),
    }
}

async fn add_member(shard: &Rc<Shard>, channel: &str, body: &Bytes) -> Resp {
    #[derive(Deserialize)]
    struct Body {
        user: String,
    }
    let b: Body = match parse(body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let (channel, user) = match (
        parse_id(channel, Refusal::ChannelNotFound),
        parse_id(&b.user, Refusal::UserNotFound),
    ) {
        (Ok(c), Ok(u)) => (c, u),
        (Err(r), _) | (_, Err(r)) => return *r,
    };
    match ops::join(shard, channel, user).await {
        Ok(()) => json::ok_json(json!({})),
        Err(e) => op_error(e),
    }
}

async fn remove_member(shard: &Rc<Shard>, channel: &str, user: &str) -> Resp {
    let (channel, user) = match (
        parse_id(channel, Refusal::ChannelNotFound),
        parse_id(user, Refusal::UserNotFound),
    ) {
        (Ok(c), Ok(u)) => (c, u),
        (Err(r), _) | (_, Err(r)) => return *r,
    };
    match ops::leave(shard, channel, user).await {
        Ok(()) => json::ok_json(json!({})),
        Err(e) => op_error(e),
    }
}

async fn ticket(shard: &Rc<Shard>, body: &Bytes) -> Resp {
    #[derive(Deserialize)]
    struct Body {
        user: String,
    }
    let b: Body = match parse(body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let user = match parse_id(&b.user, Refusal::UserNotFound) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    match ops::ticket_url(shard, user).await {
        Ok(url) => json::ok_json(json!({ "url": url })),
        Err(e) => op_error(e),
    }
}

async fn publish(shard: &Rc<Shard>, body: &Bytes) -> Resp {
    #[derive(Deserialize)]
    struct Body {
        channel: String,
        event: serde_json::Map<String, Value>,
        #[serde(default)]
        transient: bool,
    }
    let b: Body = match parse(body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let channel = match parse_id(&b.channel, Refusal::ChannelNotFound) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    match ops::publish(shard, channel, b.event, b.transient).await {
        Ok(Some(ts)) => json::ok_json(json!({ "ts": ts.to_string() })),
        Ok(None) => json::ok_json(json!({})),
        Err(e) => op_error(e),
    }
}

async fn presence(shard: &Rc<Shard>, uri: &hyper::Uri) -> Resp {
    let users: Option<Vec<Id>> = json::query_pairs(uri)
        .into_iter()
        .filter(|(k, _)| k == "users")
        .flat_map(|(_, v)| v.split(',').map(str::to_string).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .map(|s| Id::parse(&s).filter(|id| id.is_user()))
        .collect();
    let Some(users) = users.filter(|u| !u.is_empty() && u.len() <= crate::limits::PRESENCE_IDS_MAX)
    else {
        return bad_request("invalid_users");
    };
    match ops::presence(shard, users).await {
        Ok(states) => {
            let map: serde_json::Map<String, Value> = states
                .into_iter()
                .map(|(u, active)| {
                    (
                        u.to_string(),
                        Value::from(if active { "active" } else { "away" }),
                    )
                })
                .collect();
            json::ok_json(json!({ "presence": map }))
        }
        Err(e) => op_error(e),
    }
}

/// The placement, and the cluster as this node sees it: its id and
/// region, the drain of its region, every node with the health of this
/// node's links to it.
///
/// The placement is this shard's own and always answers; the link figures
/// come from every shard, and a shard that does not answer within the
/// health timeout leaves them out (`links_complete: false`) rather than
/// hold up a view operators poll during failures.
async fn ring(shard: &Rc<Shard>) -> Resp {
    let stats = glommio::timer::timeout(limits::HEALTH_TIMEOUT, async {
        Ok(ops::stats(shard).await)
    })
    .await;
    let (stats, links_complete) = match stats {
        Ok(Ok(stats)) => (stats, true),
        _ => (Vec::new(), false),
    };
    let view = cluster::ClusterView::gather(shard, &stats);
    let placement = shard.placement();
    let ring = placement.ring();
    let assignment: Vec<Value> = placement
        .assignment()
        .map(|(m, a)| json!({"member": m, "node": a.node, "core": a.core}))
        .collect();
    json::ok_json(json!({
        "ring": {
            "version": placement.version(),
            "members": ring.members(),
            "vnodes": ring.vnodes(),
            "points": ring.points(),
            "assignment": assignment,
            "hash": "splitmix64 finalizer over the packed id (see src/ring.rs)",
        },
        "node": view.node,
        "region": view.region,
        "drain": view.drain,
        "nodes": view.nodes_json(),
        "links_complete": links_complete,
    }))
}
