//! Operations that span shards, callable from any shard: what the admin API
//! (and the Web API) do. Each is a short sequence of requests to the owning
//! shards; the owners hold the state.

pub mod auth;
pub mod chat;
pub mod schedule;

use std::rc::Rc;

use crate::ids::Id;
use crate::shard::message::{
    Done, EventBody, Msg, NewChannel, NewUser, Persist, Pong, Refusal, ShardId, ShardStats,
};
use crate::shard::{CallError, Shard};
use crate::ts::Ts;

/// Why an operation failed, as a Slack-style error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpError {
    Refused(Refusal),
    InvalidName,
    InvalidEvent,
    /// No token given.
    NotAuthed,
    /// A token that is malformed, unknown or wrong.
    InvalidAuth,
    /// A shard did not answer in time.
    Busy,
    /// Too many messages scheduled for one channel close together
    /// (`limits::SCHEDULED_PER_CHANNEL_WINDOW_MAX`).
    RestrictedTooMany,
}

impl OpError {
    pub fn code(self) -> &'static str {
        match self {
            OpError::Refused(r) => r.code(),
            OpError::InvalidName => "invalid_name",
            OpError::InvalidEvent => "invalid_event",
            OpError::NotAuthed => "not_authed",
            OpError::InvalidAuth => "invalid_auth",
            OpError::Busy => "busy",
            OpError::RestrictedTooMany => "restricted_too_many",
        }
    }
}

impl From<CallError> for OpError {
    fn from(_: CallError) -> OpError {
        OpError::Busy
    }
}

/// Runs a store write; a conflict becomes `conflict`.
async fn stored(
    shard: &Rc<Shard>,
    conflict: Refusal,
    f: impl FnOnce(&mut dyn crate::store::Tx) -> Result<(), crate::store::StoreError> + Send + 'static,
) -> Result<(), OpError> {
    match shard.node.store.write(f).await {
        Ok(()) => Ok(()),
        Err(crate::store::StoreError::Conflict) => Err(OpError::Refused(conflict)),
        Err(e) => {
            tracing::error!("store write failed: {e}");
            Err(OpError::Refused(Refusal::StoreFailed))
        }
    }
}

fn done(answer: Result<Done, CallError>) -> Result<(), OpError> {
    match answer? {
        Ok(()) => Ok(()),
        Err(Refusal::Busy) => Err(OpError::Busy),
        Err(r) => Err(OpError::Refused(r)),
    }
}

/// Slack's rule for conversation names: lowercase letters, digits, `-`, `_`,
/// at most 80 characters.
pub fn valid_channel_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 80
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// User names: 1 to 80 printable characters without whitespace.
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= 80
        && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

pub struct CreatedUser {
    pub id: Id,
    pub token: String,
}

/// Creates a user on its home shard; returns its id and token. Tokens are
/// `xoxp-<user>-<secret>` (`xoxb-` for bots): the user id names the home
/// shard, the secret is stored only as its SHA-256.
pub async fn create_user(
    shard: &Rc<Shard>,
    name: &str,
    is_bot: bool,
) -> Result<CreatedUser, OpError> {
    if !valid_user_name(name) {
        return Err(OpError::InvalidName);
    }
    let id = Id::generate('U', &mut rand::rng());
    let (token, token_hash) = auth::new_token(id, is_bot);
    let row = auth::user_row(id, shard.node.team, name, is_bot);
    stored(shard, Refusal::NameTaken, move |tx| {
        tx.insert_user(&row, Some(&token_hash))
    })
    .await?;
    let user = NewUser {
        id,
        team: shard.node.team,
        name: name.to_string(),
        is_bot,
        token_hash,
    };
    done(
        shard
            .call_owner(id, |reply| Msg::CreateUser { reply, user })
            .await,
    )?;
    Ok(CreatedUser { id, token })
}

/// Creates a conversation: stores it (the store refuses a taken name),
/// then creates it on its owner.
pub async fn create_channel(
    shard: &Rc<Shard>,
    name: &str,
    private: bool,
    creator: Option<Id>,
) -> Result<Id, OpError> {
    if !valid_channel_name(name) {
        return Err(OpError::InvalidName);
    }
    let id = Id::generate('C', &mut rand::rng());
    let row = crate::store::channels::ChannelRow {
        id: id.to_string(),
        team_id: shard.node.team.to_string(),
        name: name.to_string(),
        is_private: private,
        is_archived: false,
        is_general: false,
        created: crate::store::now_micros(),
        creator: creator.map(|c| c.to_string()).unwrap_or_default(),
        topic: String::new(),
        purpose: String::new(),
    };
    // The store's UNIQUE (team_id, name) makes names unique: a taken name
    // is refused here, before any cache hears of the conversation.
    stored(shard, Refusal::NameTaken, move |tx| tx.insert_channel(&row)).await?;
    let channel = NewChannel { id, private };
    done(
        shard
            .call_owner(id, |reply| Msg::CreateChannel { reply, channel })
            .await,
    )?;
    Ok(id)
}

pub async fn lookup_user(
    shard: &Rc<Shard>,
    user: Id,
) -> Result<crate::shard::message::UserInfo, OpError> {
    if !user.is_user() {
        return Err(OpError::Refused(Refusal::UserNotFound));
    }
    shard
        .call_owner(user, |reply| Msg::LookupUser { reply, user })
        .await?
        .ok_or(OpError::Refused(Refusal::UserNotFound))
}

/// What a backend publish (admin `POST /v1/publish`, the gateway's publish
/// stream) sends to the channel's owner: the event without the fields the
/// channel server splices in, and whether it is stored.
pub fn backend_event(
    mut event: serde_json::Map<String, serde_json::Value>,
    transient: bool,
) -> Result<(EventBody, Persist), OpError> {
    if !event.get("type").is_some_and(|t| t.is_string()) {
        return Err(OpError::InvalidEvent);
    }
    // The channel server owns these: it splices them into the encoded event.
    event.remove("event_ts");
    Ok(backend_body(
        serde_json::to_vec(&event).expect("json"),
        event.contains_key("ts"),
        event.contains_key("channel"),
        transient,
    ))
}

/// An encoded backend event (no `event_ts`) and whether it is stored: the
/// channel server splices in the `ts` (a stored event's) and the `channel`
/// it does not have.
fn backend_body(
    json: Vec<u8>,
    has_ts: bool,
    has_channel: bool,
    transient: bool,
) -> (EventBody, Persist) {
    let body = EventBody {
        add_ts: !transient && !has_ts,
        add_channel: !has_channel,
        json,
    };
    let persist = if transient {
        Persist::No
    } else {
        Persist::Event
    };
    (body, persist)
}

/// [`backend_event`] of a stored event object's text (a scheduled backend
/// event firing). An object we encoded ourselves (one key each, no
/// `event_ts`) is used as it is, read without building a tree: at the top
/// of the hour this runs for every message. Anything else goes the long
/// way.
pub fn backend_event_text(text: &str, transient: bool) -> Result<(EventBody, Persist), OpError> {
    use serde::Deserialize;
    /// Which of the keys the channel server owns an event has (`null` or
    /// not), and its type.
    #[derive(Deserialize)]
    struct Spliced<'a> {
        #[serde(rename = "type", borrow)]
        kind: Option<&'a serde_json::value::RawValue>,
        #[serde(default, deserialize_with = "present")]
        ts: bool,
        #[serde(default, deserialize_with = "present")]
        channel: bool,
        #[serde(default, deserialize_with = "present")]
        event_ts: bool,
    }
    fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| true)
    }
    match serde_json::from_str::<Spliced>(text) {
        Ok(e)
            if !e.event_ts
                && e.kind.is_some_and(|k| k.get().starts_with('"'))
                && text.starts_with('{')
                && text.ends_with('}') =>
        {
            Ok(backend_body(
                text.as_bytes().to_vec(),
                e.ts,
                e.channel,
                transient,
            ))
        }
        _ => {
            let map = serde_json::from_str(text).map_err(|_| OpError::InvalidEvent)?;
            backend_event(map, transient)
        }
    }
}

/// Publishes a JSON event object to a channel. Persisted events get a `ts`.
pub async fn publish(
    shard: &Rc<Shard>,
    channel: Id,
    event: serde_json::Map<String, serde_json::Value>,
    transient: bool,
) -> Result<Option<Ts>, OpError> {
    let (body, persist) = backend_event(event, transient)?;
    shard
        .call_owner(channel, |reply| Msg::Publish {
            reply: Some(reply),
            channel,
            body,
            persist,
            sender: None,
            exclude: None,
        })
        .await?
        .map_err(OpError::Refused)
}

/// Adds `user` to `channel` (the store, the member list, the user's channel
/// list and live connections, then `member_joined_channel`, which the
/// joiner's connections receive too). Once this returns, every live
/// connection of the user gets every later event of the channel.
pub async fn join(shard: &Rc<Shard>, channel: Id, user: Id) -> Result<(), OpError> {
    change_member(shard, channel, user, true).await
}

/// Removes `user` from `channel` (`member_left_channel` first, which the
/// leaver sees, then the store, the member list and the user's list). Once
/// this returns, no connection of the user gets another event of the
/// channel.
pub async fn leave(shard: &Rc<Shard>, channel: Id, user: Id) -> Result<(), OpError> {
    change_member(shard, channel, user, false).await
}

/// One request to the channel's server, which runs the changes of each
/// channel one at a time (`channel::membership`).
async fn change_member(
    shard: &Rc<Shard>,
    channel: Id,
    user: Id,
    join: bool,
) -> Result<(), OpError> {
    lookup_user(shard, user).await?;
    if !channel.is_conversation() {
        return Err(OpError::Refused(Refusal::ChannelNotFound));
    }
    done(
        shard
            .call_owner(channel, |reply| Msg::ChangeMember {
                reply,
                channel,
                user,
                join,
            })
            .await,
    )
}

/// A websocket URL for `user`, like rtm.connect's: on this node's gateway,
/// or while this node's region drains, on the gateway of the node of the
/// target region that the user goes to (`cluster::region`), so that
/// clients which call rtm.connect again land there.
pub async fn ticket_url(shard: &Rc<Shard>, user: Id) -> Result<String, OpError> {
    let info = lookup_user(shard, user).await?;
    let base = crate::cluster::region::redirect(user)
        .map_or_else(|| shard.node.gateway_url.clone(), |(gateway, _)| gateway);
    Ok(shard.node.ticket_key.websocket_url(&base, user, info.team))
}

/// Presence of each user: true for active.
pub async fn presence(shard: &Rc<Shard>, users: Vec<Id>) -> Result<Vec<(Id, bool)>, OpError> {
    let mut out = Vec::with_capacity(users.len());
    for (home, users) in shard.group_by_owner_addr(users) {
        out.extend(
            shard
                .call_at(home, |reply| Msg::QueryPresence { reply, users })
                .await?,
        );
    }
    Ok(out)
}

/// Every shard's counters, in shard order.
pub async fn stats(shard: &Rc<Shard>) -> Result<Vec<ShardStats>, OpError> {
    let mut out = Vec::with_capacity(shard.shards());
    for s in 0..shard.shards() as ShardId {
        out.push(*shard.call(s, |reply| Msg::Stats { reply }).await?);
    }
    Ok(out)
}

/// True when every shard answers within the health timeout.
pub async fn healthy(shard: &Rc<Shard>) -> bool {
    for s in 0..shard.shards() as ShardId {
        let pong = glommio::timer::timeout(crate::limits::HEALTH_TIMEOUT, async {
            Ok(shard.call(s, |reply| Msg::Ping { reply }).await)
        })
        .await;
        if !matches!(pong, Ok(Ok(Pong))) {
            return false;
        }
    }
    true
}

/// A user's presence as users.getPresence shows it to the user itself.
pub use crate::shard::message::PresenceDetail;

pub async fn presence_detail(shard: &Rc<Shard>, user: Id) -> Result<PresenceDetail, OpError> {
    Ok(shard
        .call_owner(user, |reply| Msg::PresenceDetail { reply, user })
        .await?)
}

/// users.setPresence: `away` true sets manual away, false (`auto`) clears it.
pub async fn set_manual_away(shard: &Rc<Shard>, user: Id, away: bool) -> Result<(), OpError> {
    done(
        shard
            .call_owner(user, |reply| Msg::SetAway { reply, user, away })
            .await,
    )
}

/// Drains every shard's gateway with `close_code`.
pub fn drain(shard: &Rc<Shard>, close_code: u16) {
    for s in 0..shard.shards() as ShardId {
        shard.send(s, Msg::Drain { close_code });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stored text's short way and the tree's long way agree.
    #[test]
    fn a_stored_event_text_reads_as_its_object_does() {
        for text in [
            r#"{"type":"message","user":"U1","text":"hi"}"#,
            r#"{"type":"reminder","ts":"1.000002","channel":"C9"}"#,
            r#"{"type":"x","ts":null}"#,
            r#"{"type":"x","event_ts":"1.0","n":[1,{"ts":2}]}"#,
            r#" {"type":"x"}"#,
        ] {
            for transient in [false, true] {
                let (short, p1) = backend_event_text(text, transient).unwrap();
                let map = serde_json::from_str(text).unwrap();
                let (long, p2) = backend_event(map, transient).unwrap();
                assert_eq!(
                    (short.add_ts, short.add_channel, matches!(p1, Persist::No)),
                    (long.add_ts, long.add_channel, matches!(p2, Persist::No)),
                    "{text}"
                );
                let tree =
                    |b: &EventBody| serde_json::from_slice::<serde_json::Value>(&b.json).unwrap();
                assert_eq!(tree(&short), tree(&long), "{text}");
            }
        }
    }

    #[test]
    fn a_stored_text_that_is_no_event_is_refused() {
        for text in [r#"{"type":7}"#, r#"{"text":"no type"}"#, "[1]", "{", ""] {
            assert!(
                matches!(backend_event_text(text, false), Err(OpError::InvalidEvent)),
                "{text}"
            );
        }
    }
}
