//! The control thread: a node's line to etcd (docs/CLUSTER.md).
//!
//! One std thread per node runs a current-thread tokio runtime with
//! `etcd-client`, so no etcd call ever runs on a shard. It
//!
//! 1. claims the node's id (`ids.rs`): `<data-dir>/node-id` if present, else
//!    `ids/<name>` in etcd, created once from the `next-id` counter;
//! 2. registers `nodes/<id>` under a lease and keeps the lease alive
//!    (`session.rs`); if the lease is lost, the node may have been replaced:
//!    it hears [`ControlEvent::Fenced`], and the thread registers again
//!    under a new lease;
//! 3. campaigns for CHARM leadership on every node; the leader recomputes
//!    the placement whenever the cluster's keys change and publishes it,
//!    fenced by its leadership key ([`leader`]);
//! 4. follows `placement`, `nodes/` and `drain/` (`follow.rs`): each newer
//!    placement is sent to the node ([`ControlEvent::Placement`]), the
//!    registry snapshot ([`Registry`]) is kept current for the links and
//!    the admin API;
//! 5. writes the node's failure reports ([`Reporter::suspect`]) under its
//!    lease, so the leader can act on a dead peer before its lease lapses;
//! 6. ends a dead leader's leadership on its peers' reports, before its
//!    lease lapses (`succession.rs`);
//! 7. writes and deletes `drain/<region>` for the admin API (`drains.rs`).

mod drains;
mod events;
mod follow;
mod ids;
pub mod leader;
mod registry;
mod session;
mod succession;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

use super::keys::Keys;
use super::record::NodeRecord;
use crate::cluster::region::{DrainCommand, DrainReply};
use crate::limits;
use crate::placement::{NodeId, Placement};

pub use events::{apply_on_shard, ControlEvent};
pub use ids::{default_node_name, NODE_ID_FILE};
pub use registry::{Registered, Registry};

/// What the control thread needs to know.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// etcd endpoints (`http://host:port` or `host:port`).
    pub endpoints: Vec<String>,
    /// The cluster's key prefix.
    pub prefix: String,
    /// The lease's time to live: how long a silent node stays registered.
    pub lease_ttl: Duration,
    /// Where the node keeps its id across restarts (`<data-dir>/node-id`);
    /// `None`: the id comes from etcd alone (`ids/<name>`).
    pub node_id_file: Option<PathBuf>,
    /// The record to register; its `id` is filled in once claimed.
    pub record: NodeRecord,
    /// Drain requests from the admin API, to write to etcd.
    pub drains: Option<flume::Receiver<(DrainCommand, DrainReply)>>,
}

/// A failure report from the node's links.
#[derive(Debug, Clone, Copy)]
enum Report {
    /// The link to this node died.
    Suspect(NodeId),
    /// The link to this node is back: withdraw the report.
    Withdraw(NodeId),
}

/// What the node holds of its control thread.
pub struct ControlHandle {
    node_id: NodeId,
    events: flume::Receiver<ControlEvent>,
    registry: Registry,
    latest: Arc<Mutex<Option<Arc<Placement>>>>,
    reports: flume::Sender<Report>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Reports failures to the control thread; cheap to clone, never blocks.
#[derive(Clone)]
pub struct Reporter(flume::Sender<Report>);

impl Reporter {
    /// The link to `node` died: the leader may treat it as failed before
    /// its lease lapses (the rule: [`crate::cluster::health`]).
    pub fn suspect(&self, node: NodeId) {
        self.send(Report::Suspect(node));
    }

    /// The link to `node` is back.
    pub fn withdraw(&self, node: NodeId) {
        self.send(Report::Withdraw(node));
    }

    fn send(&self, report: Report) {
        if let Err(e) = self.0.try_send(report) {
            tracing::warn!(?report, "failure report dropped: {e}");
        }
    }
}

impl ControlHandle {
    /// This node's id in the cluster.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// What the node must act on, in order.
    pub fn events(&self) -> flume::Receiver<ControlEvent> {
        self.events.clone()
    }

    /// The newest placement seen, if any.
    pub fn placement(&self) -> Option<Arc<Placement>> {
        lock(&self.latest).clone()
    }

    /// The registered nodes, as last seen.
    pub fn registry(&self) -> Registry {
        self.registry.clone()
    }

    pub fn reporter(&self) -> Reporter {
        Reporter(self.reports.clone())
    }

    /// Leaves the cluster: revokes the lease (the node's registration, its
    /// reports and its candidacy go at once, so CHARM need not wait out
    /// the TTL) and stops the thread, waiting at most `timeout`.
    pub fn leave(mut self, timeout: Duration) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(thread.join());
            });
            if rx.recv_timeout(timeout).is_err() {
                tracing::warn!("the control thread did not stop in time");
            }
        }
    }
}

impl Drop for ControlHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts the control thread. Returns once the node has its id and is
/// registered, or with why not (etcd unreachable, the id held by another
/// live process, …) within [`limits::CLUSTER_START_TIMEOUT`].
pub fn start(config: ControlConfig) -> Result<ControlHandle, String> {
    let (events_tx, events) = flume::bounded(limits::CLUSTER_EVENTS_QUEUE_MAX);
    let (reports_tx, reports) = flume::bounded(limits::CLUSTER_REPORTS_QUEUE_MAX);
    let (stop_tx, stop) = tokio::sync::oneshot::channel();
    let (started_tx, started) = std::sync::mpsc::channel();
    let registry = Registry::default();
    let latest = Arc::new(Mutex::new(None));
    let shared = Shared {
        registry: registry.clone(),
        latest: latest.clone(),
        events: events_tx,
        reports,
        drains: config.drains.clone(),
    };
    let thread = std::thread::Builder::new()
        .name("control".into())
        .spawn(move || thread_main(config, shared, started_tx, stop))
        .map_err(|e| format!("cannot start the control thread: {e}"))?;
    let node_id = match started.recv_timeout(limits::CLUSTER_START_TIMEOUT + Duration::from_secs(1))
    {
        Ok(Ok(id)) => id,
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err("the control thread neither started nor failed".into()),
    };
    Ok(ControlHandle {
        node_id,
        events,
        registry,
        latest,
        reports: reports_tx,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

/// What the control thread shares with the node.
struct Shared {
    registry: Registry,
    latest: Arc<Mutex<Option<Arc<Placement>>>>,
    events: flume::Sender<ControlEvent>,
    reports: flume::Receiver<Report>,
    drains: Option<flume::Receiver<(DrainCommand, DrainReply)>>,
}

/// The control thread's state, shared by its tasks (one thread: plain
/// cells, no borrow held across an `.await`).
/// Owned by the control thread; never crosses threads (what the node reads
/// is in [`Shared`], behind `Arc`s and channels).
struct Ctx {
    client: Client,
    keys: Keys,
    id: NodeId,
    lease_ttl: Duration,
    /// The lease in force now.
    lease: Cell<i64>,
    /// What this node says of itself; re-registered whenever it changes.
    record: tokio::sync::watch::Sender<NodeRecord>,
    /// The state to go back to when a drain ends (active, or spare).
    base_state: super::record::NodeState,
    /// This node's reports: suspect → the lease it saw the suspect under.
    suspicions: RefCell<BTreeMap<NodeId, i64>>,
    shared: Shared,
}

impl Ctx {
    /// A client to call etcd with (clones share one connection).
    fn etcd(&self) -> Client {
        self.client.clone()
    }

    fn keepalive_interval(&self) -> Duration {
        self.lease_ttl / 3
    }
}

fn thread_main(
    config: ControlConfig,
    shared: Shared,
    started: std::sync::mpsc::Sender<Result<NodeId, String>>,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = started.send(Err(format!("cannot build the control runtime: {e}")));
            return;
        }
    };
    runtime.block_on(async move {
        let booted = tokio::time::timeout(limits::CLUSTER_START_TIMEOUT, boot(&config)).await;
        let (client, record, lease) = match booted {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                let _ = started.send(Err(e));
                return;
            }
            Err(_) => {
                let _ = started.send(Err(format!(
                    "no answer from etcd at {} within {} s",
                    config.endpoints.join(","),
                    limits::CLUSTER_START_TIMEOUT.as_secs()
                )));
                return;
            }
        };
        let id = record.id;
        tracing::info!(node = id, name = %record.name, lease = format_args!("{lease:x}"), "registered in the cluster");
        let _ = started.send(Ok(id));
        let ctx = Ctx {
            client,
            keys: Keys::new(&config.prefix),
            id,
            lease_ttl: config.lease_ttl,
            lease: Cell::new(lease),
            base_state: record.state,
            record: tokio::sync::watch::Sender::new(record),
            suspicions: RefCell::new(BTreeMap::new()),
            shared,
        };
        tokio::select! {
            () = follow::follow(&ctx) => {}
            () = session::sessions(&ctx, lease) => {}
            () = drains::serve(&ctx) => {}
            _ = stop => {}
        }
        let lease = ctx.lease.get();
        let mut etcd = ctx.etcd();
        match tokio::time::timeout(limits::CLUSTER_LEAVE_TIMEOUT, etcd.lease_revoke(lease)).await {
            Ok(Ok(_)) => tracing::info!(node = id, "left the cluster"),
            _ => tracing::warn!(node = id, "could not revoke the lease; it lapses by itself"),
        }
    });
}

/// Connects, claims the node id, registers: everything the node waits for
/// before its shards start.
async fn boot(config: &ControlConfig) -> Result<(Client, NodeRecord, i64), String> {
    let options = ConnectOptions::new()
        .with_connect_timeout(limits::CLUSTER_START_TIMEOUT)
        .with_keep_alive(config.lease_ttl / 2, config.lease_ttl);
    let mut client = Client::connect(&config.endpoints, Some(options))
        .await
        .map_err(|e| format!("cannot reach etcd at {}: {e}", config.endpoints.join(",")))?;
    let keys = Keys::new(&config.prefix);
    let from_file = match &config.node_id_file {
        Some(path) => ids::read_file(path)?,
        None => None,
    };
    let id = ids::claim(&mut client, &keys, &config.record.name, from_file).await?;
    if let (Some(path), None) = (&config.node_id_file, from_file) {
        ids::write_file(path, id)?;
    }
    let record = NodeRecord {
        id,
        ..config.record.clone()
    };
    let lease = session::register(&mut client, &keys, &record, config.lease_ttl).await?;
    Ok((client, record, lease))
}
