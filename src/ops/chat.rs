//! Writing messages: post, edit, delete, react. Each goes to the channel's
//! owner, which authorizes, assigns the event's `ts`, commits to the store
//! and only then delivers (persist, then deliver) and answers.

use std::rc::Rc;

use serde_json::Value;

use super::auth::AuthUser;
use super::OpError;
use crate::ids::Id;
use crate::shard::Shard;
use crate::store::messages::MessageRow;
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

/// Posts a message as `user`; returns the stored message (with its `ts`).
/// Errors: channel_not_found, not_in_channel, thread_not_found.
pub async fn post_message(
    shard: &Rc<Shard>,
    user: &AuthUser,
    channel: Id,
    msg: PostMessage,
) -> Result<MessageRow, OpError> {
    let _ = (shard, user, channel, msg);
    unimplemented!("wired in the persistence change")
}

/// chat.update: replaces the text (and blocks) of `user`'s own message;
/// emits `message_changed`. Errors: channel_not_found, message_not_found,
/// cant_update_message (someone else's message).
pub async fn update_message(
    shard: &Rc<Shard>,
    user: &AuthUser,
    channel: Id,
    ts: Ts,
    text: String,
    blocks: Option<Value>,
) -> Result<MessageRow, OpError> {
    let _ = (shard, user, channel, ts, text, blocks);
    unimplemented!("wired in the persistence change")
}

/// chat.delete: deletes `user`'s own message; emits `message_deleted`.
/// Errors: channel_not_found, message_not_found, cant_delete_message.
pub async fn delete_message(
    shard: &Rc<Shard>,
    user: &AuthUser,
    channel: Id,
    ts: Ts,
) -> Result<(), OpError> {
    let _ = (shard, user, channel, ts);
    unimplemented!("wired in the persistence change")
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
    let _ = (shard, user, channel, ts, name, add);
    unimplemented!("wired in the persistence change")
}
