//! `transponder loadgen`: a websocket load generator for Transponder, and —
//! speaking the same scenarios over NATS-over-websocket and Redis RESP — for
//! the servers we compare ourselves with.
//!
//! The parent provisions (admin API), splits the connections over worker
//! processes (`transponder loadgen-worker`, at most 15,000 sockets each: the
//! open-file limit is per process) and drives them through phases: connect,
//! run, stop, report. Every event carries a mark (publisher, channel,
//! sequence, send time; see [`mark`]), so each worker measures end-to-end
//! latency into an HdrHistogram and checks per-channel order; the parent
//! merges the histograms and counts what was lost.
//!
//! Module map: [`scenario`] (what to open and publish) → [`plan`] (the
//! parent↔worker messages) → [`worker`] (the event loop) → [`conn`] (one
//! socket) → [`wire`] (the protocols) ; [`driver`] runs the phases and
//! [`report`] prints the result; [`procfs`] reads the server's memory and
//! CPU time.

pub mod admin;
pub mod conn;
pub mod driver;
pub mod mark;
pub mod plan;
pub mod procfs;
pub mod report;
pub mod scenario;
pub mod wire;
pub mod worker;

use std::net::SocketAddrV4;

use clap::{Args, Subcommand, ValueEnum};

use crate::loadgen::plan::Via;

/// `transponder loadgen …`
#[derive(Args, Debug)]
pub struct LoadgenArgs {
    /// The server under load.
    #[arg(long, value_enum, default_value = "transponder")]
    pub target: TargetKind,
    /// Transponder's admin API (provisioning, tickets, HTTP publishing).
    #[arg(long, default_value = "http://127.0.0.1:7772")]
    pub admin: String,
    /// Transponder's Slack Web API (`--via web` posts, churn's
    /// `rtm.connect`).
    #[arg(long, default_value = "http://127.0.0.1:7771")]
    pub api: String,
    /// Transponder's admin token.
    #[arg(long, env = "TRANSPONDER_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// nats-server's websocket listener.
    #[arg(long, default_value = "ws://127.0.0.1:8443/")]
    pub nats: String,
    /// redis-server.
    #[arg(long, default_value = "127.0.0.1:6379")]
    pub redis: SocketAddrV4,
    /// Worker processes (default: one per 15,000 connections).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Source addresses 127.0.0.2, 127.0.0.3, … that connections bind to.
    #[arg(long, default_value_t = 8)]
    pub sources: usize,
    /// Handshakes in flight per worker.
    #[arg(long, default_value_t = 256)]
    pub in_flight: usize,
    /// Seconds of publishing (fanout, typing-storm) or churning (churn).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// The server's pid, to report its memory per connection and its CPU
    /// time (user + system, all threads) over the measured window: the
    /// deliveries per second of server CPU. A pid that is not a readable
    /// process is refused (exit 2).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Print the result as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    Transponder,
    Nats,
    Redis,
}

#[derive(Subcommand, Debug)]
pub enum Scenario {
    /// P publishers, C channels, S subscribers per channel.
    Fanout(FanoutArgs),
    /// Handshakes (+ hello) per second.
    ConnectStorm {
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
    },
    /// N connections held open for a while.
    IdleHold {
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Seconds to hold.
        #[arg(long, default_value_t = 30.0)]
        hold: f64,
    },
    /// Everyone in C channels of M members types every I ms.
    TypingStorm {
        #[arg(long, default_value_t = 100)]
        channels: usize,
        #[arg(long, default_value_t = 10)]
        members: usize,
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
    },
    /// Connections that come and go: each watches some users' presence,
    /// stays a while, leaves (every other time with a close frame, else by
    /// dropping the socket) and comes back through `rtm.connect`.
    Churn(ChurnArgs),
}

impl Scenario {
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Fanout(_) => "fanout",
            Scenario::ConnectStorm { .. } => "connect-storm",
            Scenario::IdleHold { .. } => "idle-hold",
            Scenario::TypingStorm { .. } => "typing-storm",
            Scenario::Churn(_) => "churn",
        }
    }
}

#[derive(Args, Debug, Clone, serde::Serialize)]
pub struct FanoutArgs {
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    /// Subscribers per channel.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Payload bytes per event (the mark, padded).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Events per second per publisher; 0 = as fast as the window allows.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Events a publisher may have unseen by its witness subscriber
    /// (default: 1,000 / subscribers, at least 1: about a thousand
    /// deliveries in flight per publisher).
    #[arg(long)]
    pub window: Option<u64>,
    /// How publishers publish: on their own connection (NATS PUB, Redis
    /// PUBLISH, Transponder admin `POST /v1/publish`) or, Transponder only,
    /// over the gateway's publish stream (`stream`: a websocket of events,
    /// no reply each), as RTM `message`s on a websocket (`rtm`: stored
    /// like any Slack message) or as Web API `chat.postMessage`s (`web`:
    /// stored, answered once stored).
    #[arg(long, value_enum, default_value = "connection")]
    pub via: Via,
    /// Transponder admin publishing: store the events (default: transient,
    /// like NATS and Redis pub/sub).
    #[arg(long)]
    pub persist: bool,
    /// `--via web`: posting users per publisher, whose tokens it takes in
    /// turn (the Web API allows each token 100 requests/s per shard). Default:
    /// enough for 50/s each at `--rate`, 16 when unpaced.
    #[arg(long)]
    pub tokens: Option<usize>,
}

impl FanoutArgs {
    pub fn window(&self, subscribers: usize) -> u64 {
        self.window
            .unwrap_or((1_000 / subscribers.max(1)) as u64)
            .max(1)
    }

    /// `--via web`: tokens per publisher.
    pub fn tokens(&self) -> usize {
        self.tokens
            .unwrap_or(if self.rate > 0.0 {
                (self.rate / 50.0).ceil() as usize
            } else {
                16
            })
            .max(1)
    }
}

#[derive(Args, Debug, Clone, serde::Serialize)]
pub struct ChurnArgs {
    /// Connections, one user each.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Channels the users are members of (dealt round-robin), so every
    /// connect subscribes and every disconnect unsubscribes.
    #[arg(long, default_value_t = 10)]
    pub channels: usize,
    /// Users each connection watches with presence_sub (the next ones in
    /// the ring of churning users).
    #[arg(long, default_value_t = 20)]
    pub watch: usize,
    /// Mean milliseconds a connection stays (uniform, ±50%); 0 = leave at
    /// once after `hello` and presence_sub.
    #[arg(long, default_value_t = 2000)]
    pub hold_ms: u64,
    /// Milliseconds away before asking for a new URL.
    #[arg(long, default_value_t = 500)]
    pub pause_ms: u64,
}

/// The resolved target.
pub struct Target {
    pub kind: TargetKind,
    pub admin: Option<admin::Admin>,
    /// The Slack Web API.
    pub api: SocketAddrV4,
    pub nats: (SocketAddrV4, String),
    pub redis: SocketAddrV4,
}

/// Entry point of `transponder loadgen`.
pub fn run(args: LoadgenArgs) -> std::process::ExitCode {
    match driver::run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
