//! Messages a client sends over its websocket (PROTOCOL.md "Client →
//! server"): ping, typing, message, presence_sub, presence_query. Each is
//! answered on the same connection; publishes go to the channel's owner.

use std::rc::Rc;

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::codes::{self, ClientError};
use super::connection::Conn;
use super::frame;
use crate::ids::Id;
use crate::limits;
use crate::ops::auth::AuthUser;
use crate::ops::chat::{post_message, PostMessage};
use crate::ops::OpError;
use crate::shard::message::{EventBody, Msg, Persist, Refusal, Reply};
use crate::shard::Shard;

/// The `id` of a client message, if it has a numeric one (for error replies
/// to frames we otherwise refuse unread).
pub fn reply_id(payload: &[u8]) -> Option<u64> {
    serde_json::from_slice::<Value>(payload)
        .ok()?
        .get("id")?
        .as_u64()
}

/// `{"type":"presence_change",…}` in the single or the batch form.
pub fn presence_frame(user: Id, active: bool, batch: bool) -> Bytes {
    let presence = if active { "active" } else { "away" };
    let v = if batch {
        json!({"type": "presence_change", "users": [user], "presence": presence})
    } else {
        json!({"type": "presence_change", "user": user, "presence": presence})
    };
    frame::encode_text(&serde_json::to_vec(&v).expect("json"))
}

fn refusal_error(r: Refusal) -> ClientError {
    match r {
        Refusal::NotInChannel => codes::ERR_NOT_IN_CHANNEL,
        _ => codes::ERR_CHANNEL_NOT_FOUND,
    }
}

pub async fn handle(shard: &Rc<Shard>, conn: &Rc<Conn>, payload: &[u8]) {
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(payload) else {
        conn.send_now(shard, &codes::ERR_INVALID_JSON.payload(None));
        return;
    };
    let id = obj.get("id").and_then(Value::as_u64);
    let result = match obj.get("type").and_then(Value::as_str) {
        Some("ping") => {
            pong(shard, conn, &obj, id);
            Ok(())
        }
        Some("typing") => typing(shard, conn, &obj).await,
        Some("message") => message(shard, conn, &obj, id).await,
        Some("presence_sub") => presence_sub(shard, conn, &obj),
        Some("presence_query") => presence_query(shard, conn, &obj).await,
        Some(_) => Err(codes::ERR_UNSUPPORTED_TYPE),
        None => Err(codes::ERR_MISSING_FIELD),
    };
    if let Err(e) = result {
        conn.send_now(shard, &e.payload(id));
    }
}

/// `{"type":"pong","reply_to":N}` echoing the ping's other fields (the Node
/// SDK matches on `reply_to`; some clients put a timestamp in the ping).
/// The ping's own `type`, `id` and `reply_to` are not echoed: those fields
/// of the pong are ours.
fn pong(shard: &Rc<Shard>, conn: &Rc<Conn>, obj: &Map<String, Value>, id: Option<u64>) {
    let mut out = Map::new();
    out.insert("type".into(), "pong".into());
    if let Some(id) = id {
        out.insert("reply_to".into(), id.into());
    }
    for (k, v) in obj {
        if !matches!(k.as_str(), "type" | "id" | "reply_to") {
            out.insert(k.clone(), v.clone());
        }
    }
    conn.send_now(shard, &serde_json::to_vec(&out).expect("json"));
}

fn channel_field(obj: &Map<String, Value>) -> Result<Id, ClientError> {
    let s = obj
        .get("channel")
        .and_then(Value::as_str)
        .ok_or(codes::ERR_MISSING_FIELD)?;
    Id::parse(s).ok_or(codes::ERR_CHANNEL_NOT_FOUND)
}

async fn publish(
    shard: &Rc<Shard>,
    channel: Id,
    body: EventBody,
    persist: Persist,
    sender: Id,
    exclude: Option<super::ConnId>,
) -> Result<Option<crate::ts::Ts>, ClientError> {
    let owner = shard.owner(channel);
    match shard
        .call(owner, |req| Msg::Publish {
            req: Some(req),
            channel,
            body,
            persist,
            sender: Some(sender),
            exclude,
        })
        .await
    {
        Ok(Reply::Published(Ok(ts))) => Ok(ts),
        Ok(Reply::Published(Err(r))) => Err(refusal_error(r)),
        _ => Err(codes::ERR_BUSY),
    }
}

async fn typing(
    shard: &Rc<Shard>,
    conn: &Rc<Conn>,
    obj: &Map<String, Value>,
) -> Result<(), ClientError> {
    let channel = channel_field(obj)?;
    let v = json!({"type": "user_typing", "channel": channel, "user": conn.user});
    let body = EventBody {
        json: serde_json::to_vec(&v).expect("json"),
        add_channel: false,
        add_ts: false,
    };
    publish(shard, channel, body, Persist::No, conn.user, Some(conn.id))
        .await
        .map(|_| ())
}

async fn message(
    shard: &Rc<Shard>,
    conn: &Rc<Conn>,
    obj: &Map<String, Value>,
    id: Option<u64>,
) -> Result<(), ClientError> {
    let channel = channel_field(obj)?;
    let text = match obj.get("text") {
        Some(Value::String(t)) if !t.is_empty() => t.clone(),
        _ => return Err(codes::ERR_NO_TEXT),
    };
    let msg = PostMessage {
        text: text.clone(),
        thread_ts: obj
            .get("thread_ts")
            .and_then(Value::as_str)
            .and_then(crate::ts::Ts::parse),
        client_msg_id: obj
            .get("client_msg_id")
            .and_then(Value::as_str)
            .map(str::to_string),
        ..PostMessage::default()
    };
    let user = AuthUser {
        id: conn.user,
        team: conn.team,
        name: String::new(),
        is_bot: conn.is_bot,
    };
    let posted = match post_message(shard, &user, channel, msg).await {
        Ok(m) => m,
        Err(OpError::Refused(r)) => return Err(refusal_error(r)),
        Err(_) => return Err(codes::ERR_BUSY),
    };
    let ts = crate::ts::Ts(posted.ts as u64);
    let mut reply = json!({"ok": true, "ts": ts.to_string(), "text": text});
    if let Some(id) = id {
        reply["reply_to"] = id.into();
    }
    conn.send_now(shard, &serde_json::to_vec(&reply).expect("json"));
    Ok(())
}

fn ids_field(obj: &Map<String, Value>) -> Result<Vec<Id>, ClientError> {
    let ids = obj
        .get("ids")
        .and_then(Value::as_array)
        .ok_or(codes::ERR_MISSING_FIELD)?;
    if ids.len() > limits::PRESENCE_IDS_MAX {
        return Err(codes::ERR_TOO_MANY_IDS);
    }
    let mut out = Vec::with_capacity(ids.len());
    for v in ids {
        let id = v
            .as_str()
            .and_then(Id::parse)
            .filter(|id| id.is_user())
            .ok_or(codes::ERR_MISSING_FIELD)?;
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

/// Replaces the watched set; the presence servers answer each newly
/// watched id with its current state, in order with later changes.
fn presence_sub(
    shard: &Rc<Shard>,
    conn: &Rc<Conn>,
    obj: &Map<String, Value>,
) -> Result<(), ClientError> {
    let users = ids_field(obj)?;
    let (added, gone) = shard.gateway.borrow_mut().set_watching(conn, users);
    for (home, users) in shard.group_by_owner(gone) {
        shard.send(
            home,
            Msg::WatchPresence {
                users,
                watch: false,
                snapshot_for: None,
            },
        );
    }
    for (home, users) in shard.group_by_owner(added) {
        shard.send(
            home,
            Msg::WatchPresence {
                users,
                watch: true,
                snapshot_for: Some(conn.id),
            },
        );
    }
    Ok(())
}

async fn presence_query(
    shard: &Rc<Shard>,
    conn: &Rc<Conn>,
    obj: &Map<String, Value>,
) -> Result<(), ClientError> {
    let users = ids_field(obj)?;
    for (home, users) in shard.group_by_owner(users) {
        let states = match shard
            .call(home, |req| Msg::QueryPresence { req, users })
            .await
        {
            Ok(Reply::Presence(states)) => states,
            _ => return Err(codes::ERR_BUSY),
        };
        for (user, active) in states {
            let f = presence_frame(user, active, conn.batch_presence);
            super::enqueue(shard, &shard.gateway.borrow(), conn, f);
        }
        conn.flush();
    }
    Ok(())
}
