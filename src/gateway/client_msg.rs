//! Messages a client sends over its websocket (docs/PROTOCOL.md "Client →
//! server"): ping, typing, message, presence_sub, presence_query. Each is
//! answered on the same connection; publishes go to the channel's owner.
//! [`super::client_parse`] turns the frame into a typed message first.

use std::rc::Rc;

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::client_parse::{self, ClientMessage};
use super::codes::{self, ClientError};
use super::connection::Conn;
use super::frame;
use crate::ids::Id;
use crate::ops::auth::AuthUser;
use crate::ops::chat::{post_message, PostMessage};
use crate::ops::OpError;
use crate::shard::message::{EventBody, Msg, Persist, Refusal, Snapshot};
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
        Refusal::ThreadNotFound => codes::ERR_THREAD_NOT_FOUND,
        Refusal::ChannelNotFound => codes::ERR_CHANNEL_NOT_FOUND,
        _ => codes::ERR_BUSY,
    }
}

pub async fn handle(shard: &Rc<Shard>, conn: &Rc<Conn>, payload: &[u8]) {
    let msg = match client_parse::parse(payload) {
        Ok(msg) => msg,
        Err(refused) => {
            conn.send_now(shard, &refused.payload());
            return;
        }
    };
    let id = msg.id();
    let result = match msg {
        ClientMessage::Ping { id, echo } => {
            conn.send_now(shard, &pong_payload(id, echo));
            Ok(())
        }
        ClientMessage::Typing { channel, .. } => typing(shard, conn, channel).await,
        ClientMessage::Message {
            id,
            channel,
            text,
            thread_ts,
            client_msg_id,
        } => message(shard, conn, channel, text, thread_ts, client_msg_id, id).await,
        ClientMessage::PresenceSub { ids, .. } => presence_sub(shard, conn, ids),
        ClientMessage::PresenceQuery { ids, .. } => presence_query(shard, conn, ids).await,
    };
    if let Err(e) = result {
        conn.send_now(shard, &e.payload(id));
    }
}

/// `{"type":"pong","reply_to":N,…}` echoing the ping's other fields (the
/// Node SDK matches on `reply_to`; some clients put a timestamp in the
/// ping). `type` and `reply_to` are written last, so they are the server's
/// even if `echo` held them (the parse leaves them out already).
pub fn pong_payload(id: Option<u64>, mut echo: Map<String, Value>) -> Vec<u8> {
    echo.remove("reply_to");
    echo.insert("type".into(), "pong".into());
    if let Some(id) = id {
        echo.insert("reply_to".into(), id.into());
    }
    serde_json::to_vec(&echo).expect("json")
}

async fn publish(
    shard: &Rc<Shard>,
    channel: Id,
    body: EventBody,
    persist: Persist,
    sender: Id,
    exclude: Option<super::ConnId>,
) -> Result<Option<crate::ts::Ts>, ClientError> {
    match shard
        .call_owner(channel, |reply| Msg::Publish {
            reply: Some(reply),
            channel,
            body,
            persist,
            sender: Some(sender),
            exclude,
        })
        .await
    {
        Ok(Ok(ts)) => Ok(ts),
        Ok(Err(r)) => Err(refusal_error(r)),
        Err(_) => Err(codes::ERR_BUSY),
    }
}

async fn typing(shard: &Rc<Shard>, conn: &Rc<Conn>, channel: Id) -> Result<(), ClientError> {
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
    channel: Id,
    text: String,
    thread_ts: Option<crate::ts::Ts>,
    client_msg_id: Option<String>,
    id: Option<u64>,
) -> Result<(), ClientError> {
    let msg = PostMessage {
        text: text.clone(),
        thread_ts,
        client_msg_id,
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

/// Replaces the watched set; the presence servers answer each newly
/// watched id with its current state, in order with later changes.
fn presence_sub(shard: &Rc<Shard>, conn: &Rc<Conn>, users: Vec<Id>) -> Result<(), ClientError> {
    let (added, gone) = super::this_shard().borrow_mut().set_watching(conn, users);
    for (home, users) in shard.group_by_owner_addr(gone) {
        shard.send_to(
            home,
            Msg::WatchPresence {
                users,
                watch: false,
                snapshot: Snapshot::Nobody,
            },
        );
    }
    for (home, users) in shard.group_by_owner_addr(added) {
        shard.send_to(
            home,
            Msg::WatchPresence {
                users,
                watch: true,
                snapshot: Snapshot::Conn(conn.id),
            },
        );
    }
    Ok(())
}

async fn presence_query(
    shard: &Rc<Shard>,
    conn: &Rc<Conn>,
    users: Vec<Id>,
) -> Result<(), ClientError> {
    for (home, users) in shard.group_by_owner_addr(users) {
        let states = match shard
            .call_at(home, |reply| Msg::QueryPresence { reply, users })
            .await
        {
            Ok(states) => states,
            Err(_) => return Err(codes::ERR_BUSY),
        };
        for (user, active) in states {
            let f = presence_frame(user, active, conn.batch_presence);
            super::enqueue(shard, &super::this_shard().borrow(), conn, f);
        }
        conn.flush();
    }
    Ok(())
}
