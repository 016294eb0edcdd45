//! `POST /v1/schedule`, `GET /v1/schedule`, `DELETE /v1/schedule/<id>`:
//! a backend schedules any persisted event for a channel at a time (its
//! reminders), stored and fired like chat.scheduleMessage's messages
//! (`crate::schedule`), as if `POST /v1/publish` had been called then.

use std::rc::Rc;

use bytes::Bytes;
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{bad_request, op_error, parse, parse_id, Resp};
use crate::http::json;
use crate::ops::{self, schedule, OpError};
use crate::shard::message::Refusal;
use crate::shard::Shard;
use crate::store::scheduled::{external_id, parse_external_id, NewScheduled, ScheduledFilter};

/// Most entries one `GET /v1/schedule` page holds.
const PAGE_MAX: usize = 1000;

/// `POST /v1/schedule` `{"channel", "post_at": <Unix seconds>, "event": {…,
/// "type"}}` → `{"id": "Q…", "post_at"}`. Refused: `channel_not_found`
/// (404), `invalid_event`, `time_in_past`, `time_too_far` (400).
pub async fn create(shard: &Rc<Shard>, body: &Bytes) -> Resp {
    #[derive(Deserialize)]
    struct Body {
        channel: String,
        post_at: i64,
        event: serde_json::Map<String, Value>,
    }
    let b: Body = match parse(body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let channel = match parse_id(&b.channel, Refusal::ChannelNotFound) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    // The event must be one `POST /v1/publish` would take, now: a bad one
    // is refused here, not dropped at its time.
    if let Err(e) = ops::backend_event(b.event.clone(), false) {
        return op_error(e);
    }
    let now = match schedule::check_post_at(b.post_at) {
        Ok(now) => now,
        Err(code) => return bad_request(code),
    };
    if channel.is_conversation() {
        let key = channel.to_string();
        match shard.node.store.read(move |tx| tx.channel(&key)).await {
            Ok(Some(_)) => {}
            Ok(None) => return op_error(OpError::Refused(Refusal::ChannelNotFound)),
            Err(e) => {
                tracing::error!("admin schedule: store read failed: {e}");
                return op_error(OpError::Refused(Refusal::StoreFailed));
            }
        }
    }
    let text = b
        .event
        .get("text")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let new = NewScheduled {
        channel: channel.to_string(),
        post_at: b.post_at,
        created: now,
        user: None,
        text: text.to_string(),
        blocks: None,
        thread_ts: None,
        event: Some(Value::Object(b.event).to_string()),
    };
    match schedule::schedule(shard, channel, new, false).await {
        Ok(id) => json::ok_json(json!({"id": external_id(id), "post_at": b.post_at})),
        Err(e) => op_error(e),
    }
}

/// `GET /v1/schedule?channel=C…&limit=N&after=Q…` → `{"scheduled": [{id,
/// channel, post_at, created, user, text, event}], "next": "Q…" | null}`:
/// every pending message (Web API and admin alike), earliest first.
pub async fn list(shard: &Rc<Shard>, uri: &hyper::Uri) -> Resp {
    let mut filter = ScheduledFilter::default();
    let mut limit = PAGE_MAX;
    let mut after = None;
    for (k, v) in json::query_pairs(uri) {
        match k.as_str() {
            "channel" => match parse_id(&v, Refusal::ChannelNotFound) {
                Ok(c) => filter.channel = Some(c.to_string()),
                Err(r) => return *r,
            },
            "limit" => match v.parse::<usize>() {
                Ok(n) if n > 0 => limit = n.min(PAGE_MAX),
                _ => return bad_request("invalid_limit"),
            },
            "after" => match parse_external_id(&v) {
                Some(id) => after = Some(id),
                None => return bad_request("invalid_after"),
            },
            _ => {}
        }
    }
    if let Some(id) = after {
        // Resumes after that message, if it is still pending; else from
        // the start (a page cursor that fired meanwhile).
        let row = shard.node.store.read(move |tx| tx.scheduled(id)).await;
        if let Ok(Some(r)) = row {
            filter.after = Some((r.row.post_at, r.id));
        }
    }
    let (rows, more) = match schedule::list(shard, filter, limit).await {
        Ok(x) => x,
        Err(e) => return op_error(e),
    };
    let next = more
        .then(|| rows.last().map(|r| external_id(r.id)))
        .flatten();
    let items: Vec<Value> = rows
        .iter()
        .map(|r| {
            let event = r
                .row
                .event
                .as_deref()
                .and_then(|e| serde_json::from_str::<Value>(e).ok());
            json!({
                "id": external_id(r.id),
                "channel": r.row.channel,
                "post_at": r.row.post_at,
                "created": r.row.created,
                "user": r.row.user,
                "text": r.row.text,
                "event": event,
            })
        })
        .collect();
    json::ok_json(json!({"scheduled": items, "next": next}))
}

/// `DELETE /v1/schedule/<id>` → `{}`; 404 `invalid_scheduled_message_id`
/// when it is not pending (fired, cancelled, unknown).
pub async fn delete(shard: &Rc<Shard>, id: &str) -> Resp {
    let Some(id) = parse_external_id(id) else {
        return json::error(StatusCode::NOT_FOUND, "invalid_scheduled_message_id");
    };
    match schedule::cancel(shard, id, None, None).await {
        Ok(()) => json::ok_json(json!({})),
        Err(OpError::Refused(Refusal::ScheduledGone)) => {
            json::error(StatusCode::NOT_FOUND, "invalid_scheduled_message_id")
        }
        Err(e) => op_error(e),
    }
}
