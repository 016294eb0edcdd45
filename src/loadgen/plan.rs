//! What the parent hands each worker process (one JSON line on its stdin),
//! and what workers report back (JSON lines on their stdout). Workers are
//! the same binary (`transponder loadgen-worker`), so both sides share
//! these types.

use std::net::{Ipv4Addr, SocketAddrV4};

use serde::{Deserialize, Serialize};

/// How a connection talks.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Proto {
    /// A Transponder websocket; the path carries the ticket.
    Slack { path: String },
    /// nats-server's websocket listener; subscribes to these channels.
    Nats { path: String },
    /// A Redis connection; subscribes to these channels.
    Redis,
    /// HTTP/1.1 keep-alive to Transponder's admin API, for publishing.
    AdminHttp { token: String, transient: bool },
    /// Transponder's publish stream (`GET /publish` on the gateway port with
    /// the admin token): one text frame per event, no reply.
    PublishStream { token: String, transient: bool },
    /// HTTP/1.1 keep-alive to Transponder's Slack Web API (`/api/…`), with
    /// user tokens per request: `chat.postMessage` for `--via web`
    /// publishers, `rtm.connect` for churning connections.
    WebApi,
}

/// One connection a worker opens.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConnPlan {
    pub addr: SocketAddrV4,
    pub proto: Proto,
    /// Load-generator channels this connection receives (sorted), for the
    /// sequence check. For NATS and Redis it also subscribes to them.
    pub channels: Vec<u32>,
    /// Typing storm: the channel id this connection types into.
    pub types_into: Option<String>,
    /// Typing storm: this connection's user (packed id).
    pub user: u64,
    /// Churn: how this connection comes back after it leaves.
    #[serde(default)]
    pub churn: Option<ChurnConn>,
}

/// A churning connection's user, for its reconnects and presence_sub.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChurnConn {
    /// The user's token, for `rtm.connect`.
    pub token: String,
    /// Users whose presence it watches after each `hello`.
    pub watch: Vec<String>,
    /// Asks for the batch form of presence_change (`batch_presence_aware`).
    pub batch: bool,
}

/// A worker's churn timing.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChurnPlan {
    /// Indices of the Web API connections that fetch `rtm.connect` URLs,
    /// taken in turn: HTTP/1.1 answers one request at a time per
    /// connection, so several keep one slow answer from holding up the rest.
    pub api_conns: Vec<usize>,
    /// A connection stays up between `hold_ms`/2 and 3·`hold_ms`/2 …
    pub hold_ms: u64,
    /// … then stays away `pause_ms` before it asks for a new URL.
    pub pause_ms: u64,
}

/// How a publisher publishes.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// Protocol-native on its own connection (NATS PUB, Redis PUBLISH,
    /// Transponder admin HTTP).
    Connection,
    /// Transponder only: RTM `message` on the witness's websocket (stored,
    /// like any Slack message).
    Rtm,
    /// Transponder only: the gateway's publish stream, one frame per event
    /// and no reply (the backend's fast path).
    Stream,
    /// Transponder only: `chat.postMessage` on the Slack Web API with user
    /// tokens, answered once stored (like a Slack client or bot).
    Web,
}

/// One publisher.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PubPlan {
    /// Global publisher number (carried in the mark).
    pub id: u32,
    /// Index of the connection it publishes on.
    pub conn: usize,
    /// Index of the connection that witnesses its events.
    pub witness: usize,
    pub via: Via,
    /// (load-generator channel, the target's name for it), published
    /// round-robin.
    pub channels: Vec<(u32, String)>,
    /// `--via web`: the posting users' tokens, used in turn (the Web API
    /// limits each token's request rate).
    #[serde(default)]
    pub tokens: Vec<String>,
}

/// A worker's whole assignment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerPlan {
    pub worker: usize,
    pub sources: Vec<Ipv4Addr>,
    /// Handshakes in flight at once.
    pub in_flight: usize,
    pub conns: Vec<ConnPlan>,
    pub publishers: Vec<PubPlan>,
    /// Bytes of payload per event (mark plus padding).
    pub size: usize,
    /// Events per second per publisher; 0 = as fast as the window allows.
    pub rate: f64,
    /// Events a publisher may have in flight (sent, not yet seen by its
    /// witness) when `rate` is 0.
    pub window: u64,
    /// Typing storm: milliseconds between one connection's typing events.
    pub typing_interval_ms: u64,
    /// Churn: connections leave and come back.
    #[serde(default)]
    pub churn: Option<ChurnPlan>,
}

/// Commands on a worker's stdin after the plan, one per line.
pub mod command {
    /// Open every connection.
    pub const CONNECT: &str = "connect";
    /// Start publishing / typing.
    pub const RUN: &str = "run";
    /// Stop publishing; keep receiving. The worker answers with its
    /// counters at that moment ([`super::Report::Stopped`]).
    pub const STOP: &str = "stop";
    /// Send the final report and exit.
    pub const REPORT: &str = "report";
}

/// Counters a worker reports (cumulative).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Counters {
    pub connected: u64,
    pub connect_failed: u64,
    /// Connections lost after they were ready.
    pub dropped: u64,
    pub published: u64,
    pub publish_acked: u64,
    pub publish_refused: u64,
    pub delivered: u64,
    /// Events skipped over: a later sequence number arrived first.
    pub gaps: u64,
    /// Events that arrived after a later one (or twice).
    pub reordered: u64,
    pub typing_sent: u64,
    pub typing_received: u64,
    /// Churn: connections the load generator closed on purpose.
    #[serde(default)]
    pub disconnects: u64,
    /// Users reported in presence_change events (one per user of a batch).
    #[serde(default)]
    pub presence_received: u64,
    /// The worker's own CPU time (user + system) from the connect command
    /// until every connection was ready or failed, in ns.
    #[serde(default)]
    pub connect_cpu_ns: u64,
    /// Monotonic ns of the first connect attempt and the last `ready`.
    pub connect_started_ns: u64,
    pub last_ready_ns: u64,
}

/// One line a worker prints.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Report {
    Progress {
        counters: Counters,
    },
    /// Every connection is ready or failed.
    Connected {
        counters: Counters,
    },
    /// Publishing stopped: the counters at that moment, which end the
    /// measured window (a progress report may be up to half a second old).
    Stopped {
        counters: Counters,
    },
    Final {
        counters: Counters,
        /// Published events per load-generator channel.
        published: Vec<(u32, u64)>,
        /// Connection errors by kind, with an example.
        errors: Vec<(String, u64)>,
        /// End-to-end latency, HdrHistogram V2, base64.
        latency: String,
    },
}
