//! Every constant and default limit of the server, in one place, with its
//! unit in its name. Configurable limits have their default here and their
//! flag in [`crate::config`].

use std::time::Duration;

/// Largest client websocket message (after reassembling fragments).
/// PROTOCOL.md: "Client frames are at most 16 KiB."
pub const CLIENT_MESSAGE_BYTES_MAX: usize = 16 * 1024;

/// Default bound on one connection's queued outbound bytes. A client that
/// falls this far behind is closed with `slow_consumer` (4000): it can
/// resume, and it never makes the server grow without bound.
pub const OUTBOUND_QUEUE_BYTES_MAX_DEFAULT: usize = 4 * 1024 * 1024;

/// Default number of recent persisted events a channel server keeps per
/// channel for resume. The ring is allocated on the channel's first event.
pub const HISTORY_EVENTS_PER_CHANNEL_DEFAULT: usize = 64;

/// Largest number of queued frames one `sendmsg` takes (IOV_MAX is 1024).
pub const WRITE_IOVECS_MAX: usize = 64;

/// A websocket ticket's lifetime. PROTOCOL.md: "single-use, ~30 s".
pub const TICKET_TTL_SECS: u64 = 30;

/// Time a websocket client has to finish its upgrade request.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest upgrade request we read before answering 400.
pub const HANDSHAKE_BYTES_MAX: usize = 8 * 1024;

/// Per-shard scratch buffer every socket read goes through: connections keep
/// only their partial-frame bytes, never a read buffer of their own.
pub const READ_SCRATCH_BYTES: usize = 64 * 1024;

/// Ids a client may name in one `presence_sub` / `presence_query`.
pub const PRESENCE_IDS_MAX: usize = 500;

/// Client messages per second a connection may send (token bucket rate) and
/// the burst it may save up. Past the burst, messages are refused with error
/// 9; a client that keeps flooding is closed with `rate_limited` (4002).
pub const CLIENT_MESSAGES_PER_SEC_DEFAULT: u32 = 200;
pub const CLIENT_MESSAGES_BURST_DEFAULT: u32 = 400;
/// Refused messages a connection may accumulate before it is closed.
pub const CLIENT_REFUSALS_MAX: u32 = 1000;

/// Capacity of each SPSC queue between two shards, in messages. Senders never
/// block on a full queue inside a handler: messages wait in the sending
/// shard's outbox, and the edges (sockets, HTTP) stop reading while an
/// outbox is over [`OUTBOX_MESSAGES_HIGH_WATER`].
pub const MESH_QUEUE_MESSAGES: usize = 4096;
/// Outbox length at which client readers on that shard pause.
pub const OUTBOX_MESSAGES_HIGH_WATER: usize = 16 * 1024;
/// Messages a shard's mesh receiver handles before it flushes connections
/// and yields, so one busy peer cannot starve sockets.
pub const MESH_BATCH_MESSAGES_MAX: usize = 256;

/// Default time a drain (SIGTERM, `POST /v1/drain`) may take before the
/// process exits anyway.
pub const DRAIN_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// How long `/healthz` waits for every shard to answer.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a request to another shard may take before the caller gives up.
pub const SHARD_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Resume lookback: events up to this much older than the client's `since`
/// are replayed too. Per channel, ts order is total; across channels owned
/// by different shards an older event can still be in flight when a newer
/// one is seen, so we replay a little before `since` (clients dedupe by
/// (channel, ts)) rather than lose it.
pub const RESUME_LOOKBACK_MICROS: u64 = 1_000_000;

/// Default spin before a shard parks (measured in benches/mesh.rs): a parked
/// executor woken from another core costs ~40-90 us in these VMs.
pub const SPIN_BEFORE_PARK_DEFAULT: Duration = Duration::from_micros(50);

/// glommio's registered I/O buffer area per shard; 64 KiB is its minimum and
/// we do no direct file I/O (ENGINEERING.md: memlock is 8 MiB here).
pub const IO_MEMORY_BYTES: usize = 64 * 1024;
/// io_uring submission queue depth per shard.
pub const RING_DEPTH: usize = 1024;

/// Most shards one node runs: a channel records the gateway shards that
/// watch it in a 64-bit set (`channel::state::GatewaySet`).
pub const SHARDS_MAX: usize = 64;

/// How long the main thread waits for the next shard to report ready (or
/// fail) before it gives up on the start. Counted from the last shard that
/// made progress, so a big warm-up on many shards is not cut short.
pub const SHARD_START_QUIET_TIMEOUT: Duration = Duration::from_secs(30);

/// While a shard connects its mesh queues it wakes itself this often:
/// glommio 0.9 does not wake an executor when a peer connects the other end
/// of a shared channel (src/node.rs `connect_mesh`).
pub const MESH_CONNECT_POLL: Duration = Duration::from_millis(10);

/// Descriptors a start needs, checked against `ulimit -n` before anything
/// starts (measured: 13 + 7 per shard once ready: three listeners, three
/// io_uring rings and an eventfd per shard; the store, stdio and the
/// signal pipe). Every connection needs one more on top.
pub const OPEN_FILES_AT_START_FIXED: u64 = 32;
pub const OPEN_FILES_AT_START_PER_SHARD: u64 = 8;

/// glommio refuses to build an executor below this locked-memory limit
/// (`ulimit -l`), even as root.
pub const MEMLOCK_BYTES_MIN: u64 = 512 * 1024;

/// Admin tokens shorter than this are accepted with a warning (the
/// generated ones have 32 hex characters).
pub const ADMIN_TOKEN_CHARS_ADVISED_MIN: usize = 16;
