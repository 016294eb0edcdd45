//! Every constant and default limit of the server, in one place, with its
//! unit in its name. Configurable limits have their default here and their
//! flag in [`crate::config`].

use std::time::Duration;

/// Largest client websocket message (after reassembling fragments).
/// docs/PROTOCOL.md: "Client frames are at most 16 KiB."
pub const CLIENT_MESSAGE_BYTES_MAX: usize = 16 * 1024;

/// Default bound on one connection's queued outbound bytes. A client that
/// falls this far behind is closed with `slow_consumer` (4000): it can
/// resume, and it never makes the server grow without bound.
pub const OUTBOUND_QUEUE_BYTES_MAX_DEFAULT: usize = 4 * 1024 * 1024;

/// Default number of recent persisted events a channel server keeps per
/// channel for resume. The ring is allocated on the channel's first event.
pub const HISTORY_EVENTS_PER_CHANNEL_DEFAULT: usize = 64;

/// Largest number of queued frames one `sendmsg` takes: IOV_MAX, so a deep
/// queue leaves in one call. Under deep publish pipelines a flush finds
/// hundreds of ~200 B frames per connection; at 64 a flush took ~4 calls,
/// each paying the TCP send path (and, on loopback, the receive path) again.
/// Measured (1 shard, 100 × 10, 10 publishers × 2,000 in flight, 100 B):
/// frames per `sendmsg` 52 -> 217, deliveries per server-CPU-second
/// 3.6-3.9 M -> 4.8-5.2 M.
pub const WRITE_IOVECS_MAX: usize = 1024;
/// Queued frames up to this size are copied, right before a `sendmsg`,
/// into the shard's gather buffer, so a run of them is one iovec: the
/// kernel's copy pays a setup per iovec that cost more than the bytes on
/// 100-byte events (tuning/PROFILING.md). A 100-byte event's frame is
/// ~150 B, a posted message's ~270 B; larger frames go by reference.
pub const WRITE_GATHER_FRAME_BYTES_MAX: usize = 512;
/// The gather buffer, one per shard: what one `sendmsg` copies at most
/// (a loopback segment is 64 KiB), small enough to stay in L2.
pub const WRITE_GATHER_BYTES: usize = 64 * 1024;
/// Frames up to this size that a channel sends more than once between two
/// flushes are copied into the channel's run (`gateway::event_runs`), so a
/// watcher's queue holds them as one entry and one iovec; larger frames
/// are queued by reference, one entry each.
pub const RUN_FRAME_BYTES_MAX: usize = 2 * 1024;
/// The largest chunk a run grows into (chunks double from twice the
/// channel's first frame). What a slow watcher's queued run can keep
/// alive beyond its own bytes is at most one chunk's unused tail per run.
pub const RUN_CHUNK_BYTES_MAX: usize = 16 * 1024;

/// A websocket ticket's lifetime. docs/PROTOCOL.md: "single use, 30 s".
pub const TICKET_TTL_SECS: u64 = 30;

/// Connections a gateway shard takes from its listener's backlog before
/// it lets the handshakes it spawned (and its other tasks) run.
pub const ACCEPT_BATCH_MAX: usize = 64;
/// Pause after a failed accept (EMFILE and friends) before the next try.
pub const ACCEPT_BACK_OFF: Duration = Duration::from_millis(10);

/// Time a websocket client has to finish its upgrade request.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest upgrade request we read before answering 400.
pub const HANDSHAKE_BYTES_MAX: usize = 8 * 1024;
/// Bytes one socket read of an upgrade request takes (a buffer on the
/// handshake's task, charged to the unauthenticated budget with the request).
pub const HANDSHAKE_READ_BYTES: usize = 1024;
/// What a websocket connection costs before its upgrade request is read,
/// beyond its buffers: its task, socket and timer. Measured: 1,000
/// connections that sent nothing held ~5.8 KiB each, buffers (2 KiB)
/// included.
pub const HANDSHAKE_TASK_BYTES: usize = 4 * 1024;

/// Default per-shard budget of bytes that work nobody has authenticated yet
/// may hold: HTTP connections that have not made an authenticated request
/// ([`HTTP_UNAUTHENTICATED_CONNECTION_BYTES`] each), Web API bodies read to
/// find their token, websocket upgrade requests being read. Past it, new
/// such work is refused at once with 503 and `Retry-After` (websockets
/// included), which costs established clients nothing. 32 MiB is
/// 1,024 unauthenticated HTTP connections or ~5,400 websocket handshakes in
/// flight on one shard: a connect storm's handshakes last milliseconds and
/// take ~6 KiB each. Configurable (`--max-unauthenticated-bytes`).
pub const UNAUTHENTICATED_BYTES_MAX_DEFAULT: usize = 32 * 1024 * 1024;
/// Smallest budget `--max-unauthenticated-bytes` accepts: a couple of
/// connections' worth.
pub const UNAUTHENTICATED_BYTES_MIN: usize = 64 * 1024;
/// `Retry-After` of the refusal when the budget is spent. It frees as
/// connections authenticate (milliseconds) or time out (5 s for a head).
pub const UNAUTHENTICATED_RETRY_AFTER_SECS: u64 = 1;
/// One source address may hold at most this fraction (1/n) of its shard's
/// unauthenticated budget: a single abusive client spends its own share,
/// not everyone's. Load generators spread over many 127.0.0.x sources.
pub const UNAUTHENTICATED_SOURCE_SHARE_DIVISOR: usize = 8;

/// Most bytes hyper buffers for one HTTP request head (its `max_buf_size`,
/// which also caps each body read; hyper's minimum is 8 KiB). 16 KiB is
/// Node.js's default header limit; the SDKs send heads under 1 KiB.
pub const HTTP_HEAD_BYTES_MAX: usize = 16 * 1024;
/// What one HTTP connection is charged to the unauthenticated budget from
/// its accept until it makes an authenticated request: what it costs with
/// its head buffer full. Measured (resident memory over 3,000
/// connections): ~16 KiB idle (hyper's 8 KiB read and 8 KiB response-head
/// buffers), ~31 KiB with a full [`HTTP_HEAD_BYTES_MAX`] head (the read
/// buffer grows to the limit; the allocator keeps the 8 KiB it outgrew).
pub const HTTP_UNAUTHENTICATED_CONNECTION_BYTES: usize = 32 * 1024;
/// Largest request body read after authentication (admin API, and Web API
/// requests with an `Authorization: Bearer` header).
pub const HTTP_BODY_BYTES_MAX: usize = 1024 * 1024;
/// Largest Web API body read *before* authentication, i.e. without an
/// `Authorization: Bearer` header, when only the body can name the token.
/// The official SDKs always send the header when they have a token
/// (slack_sdk 3.x moves a `token` argument into it; @slack/web-api 7/8 sets
/// it from the client's and from a per-call token), so tokenless-header
/// requests are api.test (no token at all) and hand-written clients
/// (`curl -d token=…`). 16 KiB holds a token, a channel and a ~15,000
/// character message; longer requests must use the header.
pub const API_TOKENLESS_BODY_BYTES_MAX: usize = 16 * 1024;
/// After refusing a connection, how long and how much of its request we
/// read and discard before closing, so that the client reads the 503
/// rather than a reset (closing with unread input sends RST).
pub const HTTP_REFUSAL_LINGER: Duration = Duration::from_secs(1);
pub const HTTP_REFUSAL_LINGER_BYTES_MAX: usize = 16 * 1024;
/// Refused connections one HTTP listener lets linger at once (each holds
/// ~2.6 KiB: a task, its socket, a timer); past it, a refused connection
/// is closed right after its 503, so a flood of refusals costs at most
/// ~2.6 MiB per listener.
pub const HTTP_REFUSALS_LINGERING_MAX: usize = 1024;

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
/// we do no direct file I/O (it is locked memory: the development VMs allow
/// 8 MiB of it, `ulimit -l`; tuning/README.md §6).
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

// ---- The cluster's control plane (src/cluster/control) ----

/// Default time to live of a node's etcd lease: a node that stops
/// answering etcd is out of the cluster this long after (its keep-alives go
/// every third of it). `--etcd-lease-ttl-secs`.
pub const CLUSTER_LEASE_TTL_SECS_DEFAULT: u64 = 2;
/// Bounds of `--etcd-lease-ttl-secs` (etcd itself raises a TTL below its
/// minimum, 1.5 s with its default heartbeat, to that minimum).
pub const CLUSTER_LEASE_TTL_SECS_MIN: u64 = 1;
pub const CLUSTER_LEASE_TTL_SECS_MAX: u64 = 300;
/// How long a start may wait for etcd: connect, claim the node id, register.
pub const CLUSTER_START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long leaving (revoking the lease) may take at shutdown.
pub const CLUSTER_LEAVE_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause before the control thread retries after an etcd error.
pub const CLUSTER_RETRY_INTERVAL: Duration = Duration::from_millis(200);
/// Attempts at the node-id transaction before a start gives up (each fails
/// only when another node claimed an id at the same moment).
pub const CLUSTER_ID_CLAIM_ATTEMPTS_MAX: usize = 32;
/// Events from the control thread not yet taken by the node; placements
/// are rare, so a full queue means the node is stuck, and the control
/// thread's follower waits (its keep-alives do not).
pub const CLUSTER_EVENTS_QUEUE_MAX: usize = 64;
/// Failure reports from the links not yet written to etcd; past it, a
/// report is dropped with a warning (the links report again).
pub const CLUSTER_REPORTS_QUEUE_MAX: usize = 1024;
/// Longest node name or region: they are parts of etcd keys and labels.
pub const CLUSTER_NAME_CHARS_MAX: usize = 64;
/// How long an admin request that writes etcd (`POST`/`DELETE
/// /v1/drain?region=`) waits for the control thread's answer.
pub const CLUSTER_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Admin requests to the control thread not yet taken; past it, a request
/// is answered `etcd_unavailable` at once.
pub const CLUSTER_REQUESTS_QUEUE_MAX: usize = 64;

// ---- Region drains (src/cluster/region.rs, src/gateway/region_drain.rs) ----

/// Connections a drained region closes per second when its request names
/// no rate: the whole region's, split over its nodes and their shards.
pub const DRAIN_RATE_PER_SEC_DEFAULT: u32 = 1_000;
/// Bounds of a drain's `rate` (connections per second for the region).
pub const DRAIN_RATE_PER_SEC_MIN: u32 = 1;
pub const DRAIN_RATE_PER_SEC_MAX: u32 = 100_000;
/// Shortest pause of a shard's drain pacer between two batches of
/// goodbyes: at high rates, a batch per tick rather than a timer per
/// connection.
pub const DRAIN_TICK: Duration = Duration::from_millis(10);
/// How often a shard's drain pacer looks again when it has no connection
/// left to close (connections still being admitted may register).
pub const DRAIN_IDLE_POLL: Duration = Duration::from_millis(100);
/// Most virtual nodes per member a published placement may ask for (the
/// ring's table is members × vnodes points): 16× the default.
pub const PLACEMENT_VNODES_MAX: u32 = 32 * 1024;
/// Most logical members a published placement may have: 1,024 nodes of 64
/// cores.
pub const PLACEMENT_MEMBERS_MAX: usize = 64 * 1024;

/// Most events a new owner replays from the store to one resubscription (a
/// relay after a failover): a channel that got more than this while its
/// relay was cut off gets `resync_required` instead (its clients refetch
/// with `conversations.history`).
pub const REPLAY_FROM_STORE_EVENTS_MAX: usize = 10_000;

/// How long a claim of a member waits on a transaction before it ends the
/// sessions of deposed owners (`Tx::claim_member`): a live owner's group
/// commit holds the member for milliseconds, a paused one for as long as it
/// is paused.
pub const CLAIM_WAIT_FOR_DEPOSED_MS: u64 = 250;

// ---- scheduled messages ------------------------------------------------------

/// Furthest ahead a message may be scheduled (Slack: 120 days; further is
/// `time_too_far`).
pub const SCHEDULE_AHEAD_SECS_MAX: i64 = 120 * 24 * 3600;
/// Slack's per-channel limit: at most this many Web API messages pending
/// for one channel within [`SCHEDULE_WINDOW_SECS`] of each other (one more
/// is `restricted_too_many`). Backends (admin API) are not limited.
pub const SCHEDULED_PER_CHANNEL_WINDOW_MAX: i64 = 30;
/// The window of [`SCHEDULED_PER_CHANNEL_WINDOW_MAX`] (Slack: 5 minutes).
pub const SCHEDULE_WINDOW_SECS: i64 = 5 * 60;
/// Bytes of one pending message's timer entry on its owning shard
/// (`(post_at, channel, id)`, three 64-bit integers); asserted at compile
/// time.
pub const SCHEDULE_TIMER_ENTRY_BYTES: usize = 24;
/// Most due messages one firing round reads and publishes together, as ONE
/// store job (`channel::fire`); a shard has at most
/// [`SCHEDULE_ROUNDS_IN_FLIGHT_MAX`] rounds at the store writer. Bounds the
/// memory of a round, the size of its store read, and the firing work a
/// live post can find queued ahead of it in the store. Measured with one job per message
/// (benches/scheduled_spike, 200k due at once, 2 shards): 1024 → live
/// publish p99 165–177 ms during the spike; 256 → 74 ms, for the same
/// total time. With one job per round, channel-grouped (1M due over 10k
/// channels): 256 → all delivered in 28.6 / 35.1 s, live p99 57 / 73 ms
/// (two runs, the 2-core VM loaded by other builds). With checkpoints off
/// the commit path and the JSON work on the shard, quiet machine: 256 →
/// 17.6 / 19.1 s, live p99 24.8 / 25.4 ms; 512 → 12.6 / 12.1 s, 29.4 /
/// 30.0 ms; 1024 → 12.0 s, 51.6 ms. Each commit's flush is shared by more
/// messages; past 512 a live post waits behind too much. With the rows
/// clustered by firing order, two rounds per shard in flight and a
/// backend's message stored once: 512 → 4.2 / 4.5 s, live p99 13 / 14 ms.
pub const SCHEDULE_FIRE_BATCH_MAX: usize = 512;
/// Firing rounds of one shard between admission and their answers, all
/// sent to the store writer: while one commits, the next is already
/// queued, so the writer never waits for a shard. A live post queued behind
/// the spike waits for this many rounds per shard.
pub const SCHEDULE_ROUNDS_IN_FLIGHT_MAX: usize = 2;

/// Ids of fired scheduled messages whose lookup entries (SQLite's
/// `scheduled_ids`) one idle-writer transaction sweeps: about 1-2 ms of
/// the writer, so a live post that arrives meanwhile waits that long.
pub const SCHEDULED_ID_SWEEP_BATCH_MAX: usize = 1024;
/// Fired ids kept for the sweep (8 bytes each, 8 MiB): a whole top-of-the-
/// hour spike is swept after it, not during it. Past this, the writer
/// sweeps a batch after every commit even while jobs wait.
pub const SCHEDULED_UNSWEPT_IDS_MAX: usize = 1 << 20;
/// How long the store writer must have had nothing to do before it starts
/// deferred work (the sweep above): a spike's rounds come closer together.
pub const STORE_IDLE_BEFORE_DEFERRED_WORK: Duration = Duration::from_millis(50);
/// How long a message whose firing failed for a passing reason (the store,
/// a timeout, a moved owner) waits before it is tried again.
pub const SCHEDULE_RETRY: Duration = Duration::from_secs(1);
/// The Web API's page size of chat.scheduledMessages.list when `limit` is
/// absent or 0 (Slack's default is 100).
pub const SCHEDULED_LIST_LIMIT_DEFAULT: usize = 100;

/// WAL pages (4 KiB each) after which the store's checkpointer copies the
/// WAL into the database file (`src/store/sqlite/checkpoint.rs`). Measured
/// on the project's VMs with 64 writers on 64 channels when the checkpoint
/// still ran on the writer: 4000 (16 MiB of WAL) gave 30–40% more
/// acknowledged inserts per second than SQLite's default 1000 — a
/// checkpoint then copies each hot page once for more commits — while 16000
/// gained nothing more.
pub const WAL_CHECKPOINT_PAGES: u32 = 4000;

/// WAL pages written after a checkpoint before the next one, once past
/// [`WAL_CHECKPOINT_PAGES`]: small enough that the RESTART at the cap finds
/// little left to copy, large enough that the database file's flush at the
/// end of each checkpoint stays rare.
pub const WAL_CHECKPOINT_STEP_PAGES: u32 = 1000;

/// WAL pages past which the writer itself runs a RESTART checkpoint right
/// after its commit (the batch's callers wait for it), and the next
/// transaction starts the WAL over. Bounds the WAL (64 MiB) when writes
/// never pause long enough for the WAL to restart by itself.
pub const WAL_CAP_PAGES: u32 = 4 * WAL_CHECKPOINT_PAGES;
