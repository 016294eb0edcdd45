//! Every message that crosses cores, in one enum.
//!
//! Shards share nothing mutable: a shard changes another shard's state only
//! by sending it one of these over the mesh (an SPSC queue per ordered pair
//! of shards, FIFO). Payloads are owned or immutable (`Bytes`), so nothing
//! here is touched by two threads at once.
//!
//! Requests that need an answer carry a [`ReplyTo<T>`]: the asking shard, a
//! request id, and — in the type — what the answer is. The handler can only
//! answer with a `T` ([`crate::shard::Shard::reply`]), and the caller gets a
//! `T` back ([`crate::shard::Shard::call`]), so a wrong-kind answer does not
//! compile. On the wire an answer is one [`Reply`] variant per answer type,
//! generated from one list (`answers!`), so wrapping and unwrapping cannot
//! disagree either. Messages whose *order* matters relative to deliveries
//! (subscribe acknowledgements, unwatch) are their own variants, handled in
//! queue order.

use std::marker::PhantomData;

use bytes::Bytes;

use crate::ids::Id;
use crate::placement::{Addr, NodeId};
use crate::ts::Ts;

/// Index of a shard on this node (0..shards).
pub type ShardId = u32;

/// Identifies a pending request on the shard that sent it.
pub type ReqId = u64;

/// Where the answer to a request goes — a shard of a node — typed by the
/// answer `T`. Not `Clone`: a request is answered at most once, by whoever
/// holds this.
///
/// Answering with another kind does not compile:
///
/// ```compile_fail
/// use transponder::shard::message::{Done, Opened, Refusal, ReplyTo};
/// use transponder::shard::Shard;
/// fn answer(shard: &Shard, to: ReplyTo<Result<Opened, Refusal>>) {
///     let done: Done = Ok(());
///     shard.reply(to, done); // the asker waits for `Opened`
/// }
/// ```
///
/// while the right kind does:
///
/// ```
/// use transponder::shard::message::{Done, ReplyTo};
/// use transponder::shard::Shard;
/// fn answer(shard: &Shard, to: ReplyTo<Done>) {
///     let done: Done = Ok(());
///     shard.reply(to, done);
/// }
/// ```
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(bound = "")]
pub struct ReplyTo<T> {
    /// The shard waiting for the answer, and its node.
    pub node: NodeId,
    pub shard: ShardId,
    pub req: ReqId,
    answer: PhantomData<fn() -> T>,
}

impl<T: Answer> ReplyTo<T> {
    /// Only [`crate::shard::Shard::call`] makes these (and tests).
    pub(crate) fn new(node: NodeId, shard: ShardId, req: ReqId) -> ReplyTo<T> {
        ReplyTo {
            node,
            shard,
            req,
            answer: PhantomData,
        }
    }
}

/// An answer type: it travels as exactly one [`Reply`] variant.
pub trait Answer: Sized {
    fn into_reply(self) -> Reply;
    /// The answer back out of its variant; `Err` gives back a reply of
    /// another kind, which `answers!` makes impossible for a `ReplyTo<Self>`.
    fn from_reply(reply: Reply) -> Result<Self, Reply>;
}

/// Declares [`Reply`] with one variant per answer type and the [`Answer`]
/// impl of each, from one list: a type named twice does not compile.
macro_rules! answers {
    ($($(#[$doc:meta])* $variant:ident($ty:ty)),* $(,)?) => {
        /// An answer on the wire (see [`Answer`]).
        #[derive(Debug, serde::Serialize, serde::Deserialize)]
        pub enum Reply {
            $($(#[$doc])* $variant($ty)),*
        }
        $(impl Answer for $ty {
            fn into_reply(self) -> Reply {
                Reply::$variant(self)
            }
            fn from_reply(reply: Reply) -> Result<Self, Reply> {
                match reply {
                    Reply::$variant(v) => Ok(v),
                    other => Err(other),
                }
            }
        })*
    };
}

/// A request that changes state and answers only whether it did.
pub type Done = Result<(), Refusal>;
/// The answer to a publish: the event's `ts` when it was stored.
pub type Published = Result<Option<Ts>, Refusal>;

answers! {
    /// `ConnOpen`: what the gateway needs to admit the connection.
    Opened(Result<Opened, Refusal>),
    Published(Published),
    Done(Done),
    UserInfo(Option<UserInfo>),
    Presence(Vec<(Id, bool)>),
    PresenceDetail(PresenceDetail),
    Stats(Box<ShardStats>),
    Pong(Pong),
}

/// A shard's answer to `Ping`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pong;

/// A user's presence as its home shard sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PresenceDetail {
    pub active: bool,
    pub manual_away: bool,
    pub connections: u32,
}

/// A connection on its gateway shard: slot index and generation, so a stale
/// id never reaches a reused slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ConnId {
    pub slot: u32,
    pub generation: u32,
}

/// Who hears the current state of the users a gateway starts watching
/// (`Msg::WatchPresence`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Snapshot {
    /// Nobody (an unwatch).
    Nobody,
    /// The one connection that just asked (`presence_sub`): the others
    /// heard every change already.
    Conn(ConnId),
    /// Every watcher of these users on the sending gateway shard: it
    /// watches them again at their new home after a placement change, and
    /// the new home cannot know what they last heard (the old home may have
    /// died together with the users' only connections).
    Watchers,
}

/// The one connection a delivery skips (the sender of a `typing`): which
/// gateway shard of the receiving node holds it, and which it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Exclude {
    pub shard: ShardId,
    pub conn: ConnId,
}

/// A serialized JSON event object on its way to its channel server, which
/// adds `channel`, `ts` and `event_ts` as asked, then encodes it once.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct EventBody {
    /// A JSON object, `{` … `}`, without the fields the channel server adds.
    pub json: Vec<u8>,
    /// Add `"channel":"<id>"` (the event did not name one).
    pub add_channel: bool,
    /// Add `"ts"` (persisted events that did not carry one).
    pub add_ts: bool,
}

/// What the channel server stores before it delivers an event.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum Persist {
    /// Never stored: typing, presence, admin publishes with `transient`.
    No,
    /// The event as published (admin publishes, membership events); a plain
    /// `message` with `user` and `text` also becomes a message row.
    Event,
    /// A new message (chat.postMessage, an RTM `message`).
    Message(Box<MessageFields>),
    /// chat.update of the message at `ts`; the event is `message_changed`.
    Edit(Box<EditFields>),
    /// chat.delete of the message at `ts`; the event is `message_deleted`.
    Delete { ts: Ts, user: Id },
    /// reactions.add / reactions.remove on the message at `ts`.
    Reaction(Box<ReactionFields>),
    /// A scheduled message firing (`crate::schedule`): `inner` is written
    /// only if the pending row `id` (due at `post_at`, of the event's
    /// channel: its key, `store::scheduled::ScheduledKey`) is still there,
    /// and that row is deleted in the same transaction, so it fires once
    /// (`ScheduledGone` if not).
    Scheduled {
        id: i64,
        post_at: i64,
        inner: Box<Persist>,
    },
}

impl Persist {
    pub fn is_stored(&self) -> bool {
        !matches!(self, Persist::No)
    }
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct MessageFields {
    pub user: Id,
    pub text: String,
    #[serde(with = "json_text")]
    pub blocks: Option<serde_json::Value>,
    pub thread_ts: Option<Ts>,
    pub subtype: Option<String>,
    pub client_msg_id: Option<String>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct EditFields {
    pub ts: Ts,
    pub user: Id,
    pub text: String,
    #[serde(with = "json_text")]
    pub blocks: Option<serde_json::Value>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ReactionFields {
    pub ts: Ts,
    pub user: Id,
    pub name: String,
    pub add: bool,
}

/// Why a channel server refused a publish or a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Refusal {
    ChannelNotFound,
    NotInChannel,
    AlreadyInChannel,
    NameTaken,
    UserNotFound,
    TicketReused,
    ShuttingDown,
    MessageNotFound,
    CantUpdateMessage,
    CantDeleteMessage,
    AlreadyReacted,
    NoReaction,
    ThreadNotFound,
    InvalidAuth,
    /// The store failed; the event was neither stored nor delivered.
    StoreFailed,
    /// A shard did not answer in time; the change may be half applied
    /// (retrying is safe: every membership step is idempotent).
    Busy,
    /// The channel's owner changed while the request was on its way (a
    /// cluster's failover): nothing was written; retry.
    Moved,
    /// A scheduled message that is no longer pending (cancelled, or fired
    /// already): nothing was written.
    ScheduledGone,
}

impl Refusal {
    /// The Slack-style error code.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::ChannelNotFound => "channel_not_found",
            Refusal::NotInChannel => "not_in_channel",
            Refusal::AlreadyInChannel => "already_in_channel",
            Refusal::NameTaken => "name_taken",
            Refusal::UserNotFound => "user_not_found",
            Refusal::TicketReused => "invalid_auth",
            Refusal::ShuttingDown => "shutting_down",
            Refusal::MessageNotFound => "message_not_found",
            Refusal::CantUpdateMessage => "cant_update_message",
            Refusal::CantDeleteMessage => "cant_delete_message",
            Refusal::AlreadyReacted => "already_reacted",
            Refusal::NoReaction => "no_reaction",
            Refusal::ThreadNotFound => "thread_not_found",
            Refusal::InvalidAuth => "invalid_auth",
            Refusal::StoreFailed => "internal_error",
            Refusal::Busy | Refusal::Moved => "busy",
            Refusal::ScheduledGone => "invalid_scheduled_message_id",
        }
    }
}

/// A new user, created on its home shard.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct NewUser {
    pub id: Id,
    pub team: Id,
    pub name: String,
    pub is_bot: bool,
    pub token_hash: [u8; 32],
}

/// A new conversation, created on its owning shard.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct NewChannel {
    pub id: Id,
    pub private: bool,
}

/// One shard's counters, for `/v1/stats` and `/metrics`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ShardStats {
    pub shard: ShardId,
    pub connections: u64,
    pub channels: u64,
    pub subscriptions: u64,
    pub queue_bytes: u64,
    pub events_in: u64,
    pub events_out: u64,
    pub deliveries: u64,
    pub slow_consumers: u64,
    pub users: u64,
    pub online_users: u64,
    /// Users with presence state here (connected, away or watched): every
    /// entry names a user that exists.
    pub presence_users: u64,
    pub mesh_sent: u64,
    pub mesh_received: u64,
    pub outbox_len: u64,
    /// Timer entries of scheduled messages this shard owns and has not
    /// fired yet (a cancelled message's entry stays until its time).
    #[serde(default)]
    pub scheduled_pending: u64,
    /// This shard's node links, by node (a clustered node only).
    #[serde(default)]
    pub links: Vec<crate::cluster::link::LinkStats>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum Msg {
    // ----- gateway → user's home shard (directory + presence) -----
    /// A websocket presented a valid ticket: claim its nonce (single use),
    /// count the connection, answer with the user's channels.
    ConnOpen {
        reply: ReplyTo<Result<Opened, Refusal>>,
        user: Id,
        nonce: u64,
        expires_unix_secs: u64,
    },
    /// A connection of `user` on the sending gateway closed.
    ConnClosed {
        user: Id,
    },

    // ----- gateway → channel server -----
    /// Subscribe `conns` (all of `user`, on the sending gateway) to
    /// `channels` (all owned by the receiver). The channel server grants
    /// only what `user` may watch *now*: a conversation it is a member of,
    /// its own user channel, its team's. With `since`, also replay recent
    /// events. Answered by [`Msg::SubscribeAck`] in queue order, so no
    /// delivery overtakes it.
    Subscribe {
        user: Id,
        conns: Vec<ConnId>,
        channels: Vec<Id>,
        since: Option<Ts>,
        /// Who to tell once the gateway has applied the ack.
        notify: Option<ReplyTo<Done>>,
        /// A relay's own number for a subscription it forwards to another
        /// node's channel server, echoed in the acknowledgement.
        relay_tag: Option<u64>,
        /// A relay resubscribing for every local watcher (after a broken
        /// link or a new placement): `since` is exact (no lookback), and no
        /// one user's membership is checked (each watcher's was, when it
        /// subscribed; removals reach it as `Unwatch`).
        resync: bool,
    },
    /// The sending gateway has no more watchers of these channels.
    Unsubscribe {
        channels: Vec<Id>,
    },
    /// Publish an event to a channel owned by the receiver.
    Publish {
        reply: Option<ReplyTo<Published>>,
        channel: Id,
        body: EventBody,
        persist: Persist,
        /// Only members may publish when set (client messages).
        sender: Option<Id>,
        /// A connection (on the sending gateway) that must not get it.
        exclude: Option<ConnId>,
    },

    /// A message was scheduled for `channel` (its row `id` is committed):
    /// the owner keeps a timer entry for it (`crate::schedule`). No answer:
    /// a lost one is found again at the next start.
    Schedule {
        channel: Id,
        post_at_secs: i64,
        id: i64,
    },

    // ----- channel server → gateway -----
    /// One encoded websocket frame for every local watcher of `channel`.
    Deliver {
        channel: Id,
        frame: Bytes,
        exclude: Option<Exclude>,
        /// A persisted event's ts (relays track the last one they passed
        /// on, to resubscribe from it).
        ts: Option<Ts>,
    },
    SubscribeAck {
        conns: Vec<ConnId>,
        /// The channels granted, which the connections now watch.
        channels: Vec<Id>,
        /// The channel server's last persisted ts of each granted channel
        /// (where a relay's resubscription would start).
        heads: Vec<Ts>,
        /// The channels asked for and refused (no longer a member, no such
        /// channel): the gateway settles its count of requests in flight.
        refused: Vec<Id>,
        /// Replayed frames and their ts, in ts order per channel.
        replay: Vec<(Ts, Bytes)>,
        /// Channels whose history no longer reaches back to `since`.
        resync: Vec<Id>,
        notify: Option<ReplyTo<Done>>,
        /// The `relay_tag` of the subscription this answers.
        relay_tag: Option<u64>,
    },
    /// The shard that serves `channel` on this node changed (a new
    /// placement): serve these local gateway shards from now on, starting
    /// with every persisted event after `since` (the last one they got).
    Adopt {
        channel: Id,
        gateways: crate::shard::set::GatewaySet,
        since: Ts,
    },
    /// Gateway → a user's new home (a new placement): the sending gateway
    /// holds `conns` live connections of `user`.
    ReportConns {
        user: Id,
        conns: u32,
    },
    /// `user` left `channel`: its connections on the receiving gateway stop
    /// watching it. Sent by the channel server to every subscribed gateway
    /// when it applies the removal, so it is in queue order with every
    /// delivery and subscribe acknowledgement: nothing the channel sends
    /// after the removal reaches the user.
    Unwatch {
        channel: Id,
        user: Id,
    },

    // ----- directory -----
    CreateUser {
        reply: ReplyTo<Done>,
        user: NewUser,
    },
    CreateChannel {
        reply: ReplyTo<Done>,
        channel: NewChannel,
    },
    /// Channel server: add (`join`) or remove a member. Changes of one
    /// conversation run one at a time, in order (`channel::membership`);
    /// answered once the store, the member list, the user's home and the
    /// live connections all agree.
    ChangeMember {
        reply: ReplyTo<Done>,
        channel: Id,
        user: Id,
        join: bool,
    },
    /// Channel server → user's home shard: the user joined or left
    /// `channel` (one change of a channel at a time). After a join the home
    /// subscribes the user's live connections itself ([`Msg::LiveJoin`] to
    /// each gateway shard that holds one), so the order of admissions and
    /// joins is the home's order; then it answers.
    SetUserChannel {
        reply: ReplyTo<Done>,
        user: Id,
        channel: Id,
        member: bool,
    },
    /// Home → gateway: subscribe the local connections of `user` to
    /// `channel`, including those still being admitted, then answer.
    LiveJoin {
        reply: ReplyTo<Done>,
        user: Id,
        channel: Id,
    },
    /// Does this user exist?
    LookupUser {
        reply: ReplyTo<Option<UserInfo>>,
        user: Id,
    },
    /// User's home shard: check a token's secret (`None` when it does not
    /// match).
    Authenticate {
        reply: ReplyTo<Option<UserInfo>>,
        user: Id,
        secret_hash: [u8; 32],
    },
    // ----- presence -----
    /// Sending gateway starts (true) or stops watching users' presence.
    /// The presence server answers with the current state as
    /// `PresenceChanged` to whom `snapshot` names, in queue order with later
    /// changes, so no watcher ends on a stale state.
    WatchPresence {
        users: Vec<Id>,
        watch: bool,
        snapshot: Snapshot,
    },
    /// Presence server → gateway: these users are now active / away; for
    /// every local watcher, or only for connection `only`.
    PresenceChanged {
        users: Vec<Id>,
        active: bool,
        only: Option<ConnId>,
    },
    /// Presence of users homed on the receiver.
    QueryPresence {
        reply: ReplyTo<Vec<(Id, bool)>>,
        users: Vec<Id>,
    },
    /// One user homed on the receiver, as users.getPresence shows it.
    PresenceDetail {
        reply: ReplyTo<PresenceDetail>,
        user: Id,
    },
    /// Set (true) or clear manual away.
    SetAway {
        reply: ReplyTo<Done>,
        user: Id,
        away: bool,
    },

    // ----- passed on -----
    /// A message handed to its destination by a shard that is not its
    /// sender: the shard whose node link received it from another node, or
    /// a shard routing a gateway's request to whoever serves it now. `from`
    /// is who sent it, and who any answer goes to.
    PassedOn {
        from: Addr,
        msg: Box<Msg>,
    },

    // ----- control -----
    /// A link from `node` ended or began on the sending shard (the one
    /// that accepted it): what `node` sent before may be lost, so the
    /// receiver's relays fetch again what they relay from it.
    LinkChanged {
        node: crate::placement::NodeId,
    },
    /// An answer to the receiver's request `req` (see [`ReplyTo`]).
    Reply {
        req: ReqId,
        reply: Reply,
    },
    Stats {
        reply: ReplyTo<Box<ShardStats>>,
    },
    Ping {
        reply: ReplyTo<Pong>,
    },
    /// Say goodbye to every connection and close it with `close_code`.
    Drain {
        close_code: u16,
    },
}

/// What a gateway needs to admit a connection.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Opened {
    pub team: Id,
    pub is_bot: bool,
    pub channels: Vec<Id>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct UserInfo {
    pub id: Id,
    pub team: Id,
    pub name: String,
    pub is_bot: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_travel_in_their_own_variant() {
        let done: Done = Err(Refusal::NotInChannel);
        let reply = done.into_reply();
        assert!(matches!(reply, Reply::Done(Err(Refusal::NotInChannel))));
        assert_eq!(Done::from_reply(reply).unwrap(), Err(Refusal::NotInChannel));
        // Another kind is given back, never taken for this one.
        let pong = Pong.into_reply();
        let back = Done::from_reply(pong).expect_err("a Pong is no Done");
        assert!(matches!(back, Reply::Pong(Pong)));
        let ts: Published = Ok(Some(Ts(7)));
        assert_eq!(
            Published::from_reply(ts.into_reply()).unwrap(),
            Ok(Some(Ts(7)))
        );
    }
}

/// JSON values inside messages travel between nodes as their JSON text: the
/// link's binary encoding describes its own types, and a JSON value's type
/// is only known once it is parsed.
mod json_text {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(
        v: &Option<serde_json::Value>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        v.as_ref().map(|v| v.to_string()).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<serde_json::Value>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}
