//! Writing messages: post, edit, delete, react. Each goes to the channel's
//! owner, which authorizes, assigns the event's `ts`, commits to the store
//! and only then delivers (persist, then deliver) and answers.

use std::rc::Rc;

use serde_json::{json, Value};

use super::auth::AuthUser;
use super::OpError;
use crate::ids::Id;
use crate::shard::message::{
    EditFields, EventBody, MessageFields, Msg, Persist, ReactionFields, Refusal,
};
use crate::shard::Shard;
use crate::store::messages::{MessageRow, THREAD_BROADCAST};
use crate::ts::Ts;

/// What chat.postMessage (or an RTM `message`) asks to post.
#[derive(Debug, Clone, Default)]
pub struct PostMessage {
    pub text: String,
    pub blocks: Option<Value>,
    pub thread_ts: Option<Ts>,
    pub reply_broadcast: bool,
    pub client_msg_id: Option<String>,
}

/// The `subtype` a post gets: `thread_broadcast` for a reply also sent to
/// the channel.
fn subtype_of(msg: &PostMessage) -> Option<String> {
    (msg.thread_ts.is_some() && msg.reply_broadcast).then(|| THREAD_BROADCAST.to_string())
}

/// The `message` event a post by `user` becomes (without `ts`, which the
/// channel server adds): the same for a post now and a scheduled one.
pub fn message_event(user: &AuthUser, channel: Id, msg: &PostMessage) -> Value {
    let mut v = json!({"type": "message", "channel": channel, "user": user.id, "text": msg.text, "team": user.team});
    if let Some(s) = subtype_of(msg) {
        v["subtype"] = s.into();
    }
    if user.is_bot {
        v["bot_id"] = super::auth::bot_id(&user.id.to_string()).into();
    }
    if let Some(b) = &msg.blocks {
        v["blocks"] = b.clone();
    }
    if let Some(t) = msg.thread_ts {
        v["thread_ts"] = t.to_string().into();
    }
    if let Some(c) = &msg.client_msg_id {
        v["client_msg_id"] = c.clone().into();
    }
    v
}

/// Sends a persisted publish from `user` to the channel's owner; the ts of
/// the committed event.
async fn publish(
    shard: &Rc<Shard>,
    user: Id,
    channel: Id,
    body: EventBody,
    persist: Persist,
) -> Result<Ts, OpError> {
    let answer = shard
        .call_owner(channel, |reply| Msg::Publish {
            reply: Some(reply),
            channel,
            body,
            persist,
            sender: Some(user),
            exclude: None,
        })
        .await?;
    match answer {
        Ok(Some(ts)) => Ok(ts),
        // A stored event always has one; never trust it blindly, though.
        Ok(None) => Err(OpError::Refused(Refusal::StoreFailed)),
        Err(r) => Err(OpError::Refused(r)),
    }
}

/// An empty body for events the store job builds itself.
fn built_by_store() -> EventBody {
    EventBody {
        json: b"{}".to_vec(),
        add_channel: false,
        add_ts: false,
    }
}

/// Posts a message as `user`; returns the stored message (with its `ts`).
/// Errors: channel_not_found, not_in_channel.
pub async fn post_message(
    shard: &Rc<Shard>,
    user: &AuthUser,
    channel: Id,
    msg: PostMessage,
) -> Result<MessageRow, OpError> {
    let subtype = subtype_of(&msg);
    let v = message_event(user, channel, &msg);
    let body = EventBody {
        json: serde_json::to_vec(&v).expect("json"),
        add_channel: false,
        add_ts: true,
    };
    let fields = MessageFields {
        user: user.id,
        text: msg.text.clone(),
        blocks: msg.blocks.clone(),
        thread_ts: msg.thread_ts,
        subtype: subtype.clone(),
        client_msg_id: msg.client_msg_id.clone(),
    };
    let ts = publish(
        shard,
        user.id,
        channel,
        body,
        Persist::Message(Box::new(fields)),
    )
    .await?;
    Ok(MessageRow {
        channel: channel.to_string(),
        ts: ts.0 as i64,
        user: user.id.to_string(),
        text: msg.text,
        blocks: msg.blocks,
        thread_ts: msg.thread_ts.map(|t| t.0 as i64),
        subtype,
        client_msg_id: msg.client_msg_id,
        edited: None,
        reply_count: 0,
        reply_users: Vec::new(),
        latest_reply: None,
        reactions: Vec::new(),
    })
}

/// chat.update: replaces the text (and blocks) of `user`'s own message;
/// emits `message_changed`. Errors: channel_not_found, not_in_channel,
/// message_not_found, cant_update_message (someone else's message).
pub async fn update_message(
    shard: &Rc<Shard>,
    user: &AuthUser,
    channel: Id,
    ts: Ts,
    text: String,
    blocks: Option<Value>,
) -> Result<MessageRow, OpError> {
    let edit = EditFields {
        ts,
        user: user.id,
        text,
        blocks,
    };
    publish(
        shard,
        user.id,
        channel,
        built_by_store(),
        Persist::Edit(Box::new(edit)),
    )
    .await?;
    let c = channel.to_string();
    let row = shard
        .node
        .store
        .read(move |tx| tx.message(&c, ts.0 as i64))
        .await
        .map_err(|_| OpError::Busy)?;
    row.ok_or(OpError::Refused(
        crate::shard::message::Refusal::MessageNotFound,
    ))
}

/// chat.delete: deletes `user`'s own message; emits `message_deleted`.
/// Errors: channel_not_found, not_in_channel, message_not_found,
/// cant_delete_message.
pub async fn delete_message(
    shard: &Rc<Shard>,
    user: &AuthUser,
    channel: Id,
    ts: Ts,
) -> Result<(), OpError> {
    publish(
        shard,
        user.id,
        channel,
        built_by_store(),
        Persist::Delete { ts, user: user.id },
    )
    .await?;
    Ok(())
}

/// reactions.add / reactions.remove (`name` without colons); emits
/// `reaction_added` / `reaction_removed`. Errors: channel_not_found,
/// not_in_channel, message_not_found, already_reacted, no_reaction.
pub async fn react(
    shard: &Rc<Shard>,
    user: &AuthUser,
    channel: Id,
    ts: Ts,
    name: &str,
    add: bool,
) -> Result<(), OpError> {
    let r = ReactionFields {
        ts,
        user: user.id,
        name: name.to_string(),
        add,
    };
    publish(
        shard,
        user.id,
        channel,
        built_by_store(),
        Persist::Reaction(Box::new(r)),
    )
    .await?;
    Ok(())
}
