//! Transponder: a real-time messaging server in the shape of Slack's
//! real-time tier, as one binary. Clients hold one websocket each; every
//! event is addressed to a channel; channels live on channel servers placed
//! by consistent hashing; gateways hold sockets and subscriptions; presence
//! servers know who is online. It is an io_uring thread-per-core server: each
//! core runs one pinned glommio executor that owns a complete, share-nothing
//! slice of all of this (a *shard*), and shards talk only by passing
//! messages over lock-free queues.
//!
//! # Layout
//!
//! Read top-down, the modules are the architecture of docs/DESIGN.md:
//!
//! - [`node`] — one process: listeners (SO_REUSEPORT, one per shard; the
//!   first bound exclusively, so a second node cannot join), the executors,
//!   the ready line, drain on SIGTERM, and [`node::dispatch`] (which role
//!   handles which message).
//! - [`shard`] — the shard runtime, below every role and importing none:
//!   [`shard::Shard`] (one core's identity, ring, mesh, typed requests),
//!   [`shard::message`] (every cross-core message, one enum),
//!   [`shard::mesh`] (N×N SPSC queues), [`shard::local`] (the per-shard
//!   state each role keeps in its own module).
//! - [`ring`] — consistent hashing of channel ids onto (logical) members;
//!   [`placement`] — the ring plus where each member runs, versioned (the
//!   epoch), swapped whole when the cluster changes (docs/CLUSTER.md).
//! - [`cluster`] — many nodes: the node record, CHARM's placement and
//!   failure rules (pure), and behind the `cluster` feature the control
//!   thread that talks to etcd (docs/CLUSTER.md).
//! - [`channel`] — the channel server role: subscribers, `ts`, history,
//!   encode-once fan-out.
//! - [`gateway`] — the gateway role: websocket handshake and codec,
//!   connections, the local subscription index, bounded outbound queues.
//! - [`presence`] — the presence role: who is online, who watches whom.
//! - [`directory`] — users on their home shard.
//! - [`schedule`] — scheduled messages: one timer heap per shard for the
//!   channels it owns, firing each pending message once, as a normal
//!   persisted publish.
//! - [`cluster`] — node links and relays: how the shards of one node reach
//!   another node's (docs/CLUSTER.md).
//! - [`ops`] — operations spanning shards (join, leave, publish, …), used by
//!   [`admin`] and [`api`].
//! - [`admin`] — the admin API and `/metrics`; [`api`] — the Slack Web API.
//! - [`http`] — hyper on glommio.
//! - [`heap`] — freed memory back to the OS after the warm-up and on idle
//!   shards.
//! - [`store`] — durable state behind one interface ([`store::Tx`]),
//!   in SQLite (one node) or PostgreSQL (shared by a cluster): a writer
//!   thread with group commit, reader threads; never called on a shard's
//!   reactor thread.
//! - [`ids`], [`ts`], [`ticket`], [`config`], [`limits`] — the vocabulary;
//!   [`idtable`] and [`sortedset`], the compact containers of per-channel
//!   state.
//! - [`loadgen`] — not the server: `transponder loadgen`, the load
//!   generator the benchmarks and the profiling script drive it with.
//!
//! # Following an event
//!
//! A client's `{"type":"message"}` frame is read by
//! [`gateway::connection`], handled in [`gateway::client_msg`], sent as
//! [`shard::message::Msg::Publish`] to the channel's owner, which assigns the
//! `ts` and encodes the frame once in [`channel::fanout`], then sends one
//! [`shard::message::Msg::Deliver`] per subscribed gateway shard;
//! [`gateway::on_deliver`] places it in the channel's run
//! ([`gateway::event_runs`]) and queues it on every local watcher, and
//! [`gateway::request_flush`] has the shard's flusher write each
//! connection's queue, once the tasks ready now have run, with one
//! `sendmsg`.

pub mod admin;
pub mod api;
pub mod ascii;
pub mod channel;
pub mod cluster;
pub mod config;
pub mod directory;
pub mod events;
pub mod gateway;
pub mod heap;
pub mod http;
pub mod ids;
pub mod idtable;
pub mod limits;
pub mod loadgen;
pub mod node;
pub mod ops;
pub mod placement;
pub mod presence;
pub mod provision;
pub mod ring;
pub mod schedule;
pub mod shard;
pub mod sortedset;
pub mod store;
pub mod ticket;
pub mod ts;
pub mod warmup;
