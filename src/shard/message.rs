//! Every message that crosses cores, in one enum.
//!
//! Shards share nothing mutable: a shard changes another shard's state only
//! by sending it one of these over the mesh (an SPSC queue per ordered pair
//! of shards, FIFO). Payloads are owned or immutable (`Bytes`), so nothing
//! here is touched by two threads at once.
//!
//! Requests that need an answer carry a [`ReqId`]; the answer comes back as
//! [`Msg::Reply`] to the shard that asked, which completes the waiting
//! future. Messages whose *order* matters relative to deliveries (subscribe
//! acknowledgements) are their own variants, handled in queue order.

use bytes::Bytes;

use crate::ids::Id;
use crate::ts::Ts;

/// Index of a shard on this node (0..shards).
pub type ShardId = u32;

/// Identifies a pending request on the shard that sent it.
pub type ReqId = u64;

/// A connection on its gateway shard: slot index and generation, so a stale
/// id never reaches a reused slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId {
    pub slot: u32,
    pub generation: u32,
}

/// A serialized JSON event object on its way to its channel server, which
/// adds `channel`, `ts` and `event_ts` as asked, then encodes it once.
#[derive(Debug)]
pub struct EventBody {
    /// A JSON object, `{` … `}`, without the fields the channel server adds.
    pub json: Vec<u8>,
    /// Add `"channel":"<id>"` (the event did not name one).
    pub add_channel: bool,
    /// Add `"ts"` (persisted events that did not carry one).
    pub add_ts: bool,
}

/// What the channel server stores before it delivers an event.
#[derive(Debug)]
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
}

impl Persist {
    pub fn is_stored(&self) -> bool {
        !matches!(self, Persist::No)
    }
}

#[derive(Debug)]
pub struct MessageFields {
    pub user: Id,
    pub text: String,
    pub blocks: Option<serde_json::Value>,
    pub thread_ts: Option<Ts>,
    pub subtype: Option<String>,
    pub client_msg_id: Option<String>,
}

#[derive(Debug)]
pub struct EditFields {
    pub ts: Ts,
    pub user: Id,
    pub text: String,
    pub blocks: Option<serde_json::Value>,
}

#[derive(Debug)]
pub struct ReactionFields {
    pub ts: Ts,
    pub user: Id,
    pub name: String,
    pub add: bool,
}

/// Why a channel server refused a publish or a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
        }
    }
}

/// A new user, created on its home shard.
#[derive(Debug)]
pub struct NewUser {
    pub id: Id,
    pub team: Id,
    pub name: String,
    pub is_bot: bool,
    pub token_hash: [u8; 32],
}

/// A new conversation, created on its owning shard.
#[derive(Debug)]
pub struct NewChannel {
    pub id: Id,
    pub private: bool,
}

/// One shard's counters, for `/v1/stats` and `/metrics`.
#[derive(Debug, Clone, Default, serde::Serialize)]
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
    pub mesh_sent: u64,
    pub mesh_received: u64,
    pub outbox_len: u64,
}

#[derive(Debug)]
pub enum Msg {
    // ----- gateway → user's home shard (directory + presence) -----
    /// A websocket presented a valid ticket: claim its nonce (single use),
    /// count the connection, answer [`Reply::Opened`].
    ConnOpen {
        req: ReqId,
        user: Id,
        nonce: u64,
        expires_unix_secs: u64,
    },
    /// A connection of `user` on the sending gateway closed.
    ConnClosed {
        user: Id,
    },

    // ----- gateway → channel server -----
    /// Subscribe `conns` of the sending gateway to `channels` (all owned by
    /// the receiver). With `since`, also replay recent events. Answered by
    /// [`Msg::SubscribeAck`] in queue order, so no delivery overtakes it.
    Subscribe {
        conns: Vec<ConnId>,
        channels: Vec<Id>,
        since: Option<Ts>,
        /// Who to tell once the gateway has applied the ack.
        notify: Option<(ShardId, ReqId)>,
    },
    /// The sending gateway has no more watchers of these channels.
    Unsubscribe {
        channels: Vec<Id>,
    },
    /// Publish an event to a channel owned by the receiver; answered with
    /// [`Reply::Published`].
    Publish {
        req: Option<ReqId>,
        channel: Id,
        body: EventBody,
        persist: Persist,
        /// Only members may publish when set (client messages).
        sender: Option<Id>,
        /// A connection (on the sending gateway) that must not get it.
        exclude: Option<ConnId>,
    },

    // ----- channel server → gateway -----
    /// One encoded websocket frame for every local watcher of `channel`.
    Deliver {
        channel: Id,
        frame: Bytes,
        exclude: Option<ConnId>,
    },
    SubscribeAck {
        conns: Vec<ConnId>,
        channels: Vec<Id>,
        /// Replayed frames, in ts order per channel.
        replay: Vec<Bytes>,
        /// Channels whose history no longer reaches back to `since`.
        resync: Vec<Id>,
        notify: Option<(ShardId, ReqId)>,
    },

    // ----- directory -----
    CreateUser {
        req: ReqId,
        user: NewUser,
    },
    CreateChannel {
        req: ReqId,
        channel: NewChannel,
    },
    /// Channel server: add or remove a member (answers `Reply::Done`).
    SetMember {
        req: ReqId,
        channel: Id,
        user: Id,
        member: bool,
    },
    /// User's home shard: the user joined or left `channel`; answers
    /// [`Reply::Gateways`] with the shards holding the user's connections.
    SetUserChannel {
        req: ReqId,
        user: Id,
        channel: Id,
        member: bool,
    },
    /// Gateway: subscribe (or unsubscribe) the local connections of `user`
    /// to `channel`, then answer `Reply::Done`.
    LiveMembership {
        req: ReqId,
        user: Id,
        channel: Id,
        member: bool,
    },
    /// Does this user exist? `Reply::UserInfo`.
    LookupUser {
        req: ReqId,
        user: Id,
    },
    /// Channel info: `Reply::ChannelInfo`.
    LookupChannel {
        req: ReqId,
        channel: Id,
    },
    /// User's home shard: check a token's secret; `Reply::UserInfo`
    /// (`None` when it does not match).
    Authenticate {
        req: ReqId,
        user: Id,
        secret_hash: [u8; 32],
    },
    /// Channel server: is `user` a member? `Reply::Member`.
    IsMember {
        req: ReqId,
        channel: Id,
        user: Id,
    },

    // ----- presence -----
    /// Sending gateway starts (true) or stops watching users' presence.
    /// With `snapshot_for`, the presence server answers with the current
    /// state as `PresenceChanged { only: Some(conn) }`, in queue order with
    /// later changes, so the connection never ends on a stale state.
    WatchPresence {
        users: Vec<Id>,
        watch: bool,
        snapshot_for: Option<ConnId>,
    },
    /// Presence server → gateway: these users are now active / away; for
    /// every local watcher, or only for connection `only`.
    PresenceChanged {
        users: Vec<Id>,
        active: bool,
        only: Option<ConnId>,
    },
    /// `Reply::Presence` for users homed on the receiver.
    QueryPresence {
        req: ReqId,
        users: Vec<Id>,
    },
    /// `Reply::PresenceDetail` for one user homed on the receiver.
    PresenceDetail {
        req: ReqId,
        user: Id,
    },
    /// Set (true) or clear manual away; `Reply::Done`.
    SetAway {
        req: ReqId,
        user: Id,
        away: bool,
    },

    // ----- control -----
    Reply {
        req: ReqId,
        reply: Reply,
    },
    Stats {
        req: ReqId,
    },
    Ping {
        req: ReqId,
    },
    /// Say goodbye to every connection and close it with `close_code`.
    Drain {
        close_code: u16,
    },
}

#[derive(Debug)]
pub enum Reply {
    Opened(Result<Opened, Refusal>),
    Published(Result<Option<Ts>, Refusal>),
    Done(Result<(), Refusal>),
    Gateways(Result<Vec<ShardId>, Refusal>),
    UserInfo(Option<UserInfo>),
    ChannelInfo(Option<ChannelInfo>),
    Presence(Vec<(Id, bool)>),
    /// (active, manual away, connections).
    PresenceDetail(bool, bool, u32),
    Member(Result<bool, Refusal>),
    Stats(Box<ShardStats>),
    Pong,
}

/// What a gateway needs to admit a connection.
#[derive(Debug)]
pub struct Opened {
    pub team: Id,
    pub is_bot: bool,
    pub channels: Vec<Id>,
}

#[derive(Debug, Clone)]
pub struct UserInfo {
    pub id: Id,
    pub team: Id,
    pub name: String,
    pub is_bot: bool,
}

#[derive(Debug, Clone)]
pub struct ChannelInfo {
    pub id: Id,
    pub private: bool,
    pub members: usize,
}
