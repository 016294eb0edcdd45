//! The Slack-compatible Web API (`/api/<method>`). This issue serves the
//! envelope — every answer is HTTP 200 JSON with `ok` — and `api.test`;
//! the methods of PROTOCOL.md arrive with the store.

use std::rc::Rc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::json;

use crate::http::json;
use crate::shard::Shard;

type Resp = Response<Full<Bytes>>;

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

async fn route(_shard: Rc<Shard>, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_string();
    let Some(method) = path.strip_prefix("/api/") else {
        return json::error(StatusCode::NOT_FOUND, "not_found");
    };
    match method {
        "api.test" => json::ok_json(json!({})),
        _ => json::json(
            StatusCode::OK,
            &json!({"ok": false, "error": "unknown_method"}),
        ),
    }
}
