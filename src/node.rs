//! A node: binds the listeners, starts one pinned executor per shard with
//! its end of the mesh, prints the ready line once every shard serves, and
//! drains on SIGTERM/SIGINT.
//!
//! A start that cannot succeed stops before the ready line, exits non-zero
//! and says why on stderr: [`preflight`] checks the process limits and the
//! memory the mesh needs, the data dir's lock keeps a second node off the
//! same store (`store::DataDirLock`), [`listeners`] keeps it off the same
//! ports, and [`lifecycle`] turns a shard that fails to start into that
//! shard's error at once.
//!
//! With `--etcd` (feature `cluster`), `cluster` joins the cluster before
//! the shards start (they need the node's id) and forwards the control
//! thread's events to every shard.

#[cfg(feature = "cluster")]
mod cluster;
pub mod dispatch;
mod lifecycle;
mod listeners;
mod preflight;

use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::net::TcpListener;
use glommio::LocalExecutorBuilder;
use signal_hook::iterator::Signals;

use crate::cluster::link::Peers;
use crate::config::Config;
use crate::gateway::codes;
use crate::ids::Id;
use crate::limits;
use crate::placement::{NodeId, Placement};
use crate::shard::mesh::{self, Mesh, MeshEnds};
use crate::shard::message::ShardId;
use crate::shard::{receive, NodeInfo, Shard};
use crate::store::{Backend, DataDirLock, Store, ThreadPlacement};
use crate::ticket::TicketKey;
use crate::{admin, api, gateway, http};

/// The team every user belongs to until the store brings real teams.
pub const DEFAULT_TEAM: &str = "T0000000001";

/// Messages from the main thread to a shard.
#[derive(Debug)]
enum Control {
    /// Drain with `going_away` and stop.
    Shutdown,
    /// From the cluster's control thread: a new placement, fencing, a drain.
    /// The other nodes' link addresses changed (a cluster only).
    #[cfg(feature = "cluster")]
    Peers(Arc<Peers>),
    /// The registered nodes' records changed (a cluster only).
    #[cfg(feature = "cluster")]
    Nodes(crate::cluster::region::Nodes),
    #[cfg(feature = "cluster")]
    Cluster(crate::cluster::control::ControlEvent),
}

/// The host to put in URLs: the bound address unless it is a wildcard.
fn url_host(addr: SocketAddr) -> String {
    match addr.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
        IpAddr::V4(ip) => ip.to_string(),
    }
}

/// How a node's links report the nodes they lose and regain.
type LinkReports = Arc<dyn Fn(NodeId, bool) + Send + Sync>;

struct ShardStart {
    id: ShardId,
    node: Arc<NodeInfo>,
    node_id: NodeId,
    placement: Arc<Placement>,
    /// Where the other nodes' links listen (a cluster only), and this
    /// shard's link listener.
    peers: Option<Arc<Peers>>,
    link_fd: Option<RawFd>,
    /// Where links report a node's link ending or starting (the control
    /// plane's failure detection; a fixed cluster only logs).
    link_reports: LinkReports,
    ends: MeshEnds,
    gateway_fd: RawFd,
    api_fd: RawFd,
    admin_fd: RawFd,
    warm: crate::warmup::Warm,
    control: flume::Receiver<Control>,
    report: lifecycle::Reporter,
}

/// Runs `transponder serve` until a signal drains it.
pub fn serve(config: Config) -> Result<(), String> {
    if !config.huge_pages {
        // SAFETY: a process-wide flag, set before any shard thread starts.
        if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0 {
            tracing::warn!("could not disable transparent huge pages");
        }
    }
    #[cfg(not(feature = "cluster"))]
    if config.cluster.is_some() {
        return Err("this transponder was built without cluster support: \
                    rebuild it with `cargo build --release --features cluster` \
                    (which needs protoc: apt-get install protobuf-compiler)"
            .into());
    }
    let shards = config.shards;
    preflight::check(shards)?;
    // Held until the process exits: the store is this node's alone.
    let _data_dir_lock = DataDirLock::acquire(&config.data_dir).map_err(|e| e.to_string())?;
    // Read before any thread pins itself: the process's CPUs, in order.
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    // Pinned shards take the first CPUs; the store's threads get the rest,
    // if any (src/store/threads.rs, tuning/README.md section 7).
    let store_threads = match config.pin {
        true => ThreadPlacement::spare(&cores, shards),
        false => ThreadPlacement::default(),
    };
    let store =
        Store::open_placed(&config.store, config.durability, &store_threads).map_err(|e| {
            match &config.store {
                Backend::Sqlite(dir) => format!("cannot open the store in {}: {e}", dir.display()),
                Backend::Postgres(_) => format!("cannot open the store {}: {e}", config.store),
            }
        })?;
    tracing::debug!(cpus = ?store_threads.cpus, "store threads placed (empty: not pinned)");
    let fixed = match &config.cluster_file {
        Some(path) => Some(crate::cluster::fixed::load(path, shards)?),
        None => None,
    };
    let clustered = fixed.is_some() || config.cluster.is_some();
    let bind = |role, port| listeners::bind(role, config.host, port, shards, config.listen_backlog);
    let gateway = bind(listeners::Role::Gateway, config.gateway_port)?;
    let api = bind(listeners::Role::Api, config.api_port)?;
    let admin = bind(listeners::Role::Admin, config.admin_port)?;
    let link = match clustered {
        true => Some(bind(listeners::Role::Link, config.link_port)?),
        false => None,
    };
    // Registered before the shards start, so that nothing can fail between
    // the ready line and serving.
    let mut signals = Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
        .map_err(|e| format!("cannot watch SIGTERM/SIGINT: {e}"))?;
    let admin_token = config.admin_token.clone().unwrap_or_else(|| {
        let bytes: [u8; 16] = rand::random();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    });
    let gateway_url = config
        .public_gateway_url
        .clone()
        .unwrap_or_else(|| format!("ws://{}:{}", url_host(gateway.addr), gateway.addr.port()));
    // Drain requests of the admin API go to the control thread (a node with
    // a control plane only).
    #[cfg(feature = "cluster")]
    let (drains_tx, drains_rx) = match config.cluster {
        Some(_) => {
            let (tx, rx) = flume::bounded(limits::CLUSTER_REQUESTS_QUEUE_MAX);
            (Some(tx), Some(rx))
        }
        None => (None, None),
    };
    #[cfg(not(feature = "cluster"))]
    let drains_tx = None;
    let node = Arc::new(NodeInfo {
        // A client may take a ticket from one node to another's gateway:
        // the nodes of a cluster share the key, derived from the admin
        // token they share.
        ticket_key: match clustered {
            true => TicketKey::derived_from(&admin_token),
            false => TicketKey::random(),
        },
        admin_token: admin_token.clone(),
        gateway_url: gateway_url.clone(),
        team: Id::parse(DEFAULT_TEAM).expect("valid team id"),
        team_name: "Transponder".to_string(),
        store,
        config: config.clone(),
        newest_epoch: std::sync::atomic::AtomicU64::new(0),
        drains: drains_tx,
    });
    #[cfg(feature = "cluster")]
    let control = match &config.cluster {
        Some(cluster) => Some(cluster::start(
            cluster,
            &config,
            &gateway_url,
            api.addr,
            admin.addr,
            link.as_ref().map(|l| l.addr),
            drains_rx.expect("made with the cluster config"),
        )?),
        None => None,
    };
    // Who this node is, what it starts owning, and where the other nodes'
    // links are: a fixed cluster's file, the control plane, or one node
    // (node 0, its shards the ring's members).
    let (node_id, placement, peers) = match fixed {
        Some(c) => (c.node, Arc::new(c.placement), Some(Arc::new(c.peers))),
        #[cfg(feature = "cluster")]
        None if control.is_some() => {
            let (id, placement) = cluster::first_placement(control.as_ref(), shards);
            let peers = control.as_ref().map(|c| cluster::peers(c, id));
            (id, placement, peers)
        }
        None => (0, Arc::new(Placement::single_node(0, shards as u32)), None),
    };
    if clustered {
        // Before any shard writes: the store's sessions carry the node's id,
        // so that a successor can fence them out (`Tx::label_session`).
        node.store
            .write_blocking(move |tx| tx.label_session(node_id))
            .map_err(|e| format!("cannot label the store's sessions: {e}"))?;
    }
    let link_reports: LinkReports = {
        #[cfg(feature = "cluster")]
        match &control {
            Some(control) => {
                let reporter = control.reporter();
                Arc::new(move |node, up| match up {
                    true => reporter.withdraw(node),
                    false => reporter.suspect(node),
                })
            }
            None => Arc::new(|node, up| tracing::info!(node, up, "link")),
        }
        #[cfg(not(feature = "cluster"))]
        Arc::new(|node, up| tracing::info!(node, up, "link"))
    };
    let warm = crate::warmup::load(&node.store, &placement, node_id, shards)
        .map_err(|e| format!("cannot read the store: {e}"))?;
    let mut warm = warm.into_iter();
    let (events_tx, events) = mpsc::channel();
    let mut controls = Vec::with_capacity(shards);
    let mut handles = Vec::with_capacity(shards);
    tracing::debug!(
        shards,
        mesh_mib = preflight::mesh_bytes(shards) >> 20,
        "building the mesh"
    );
    for (i, ends) in mesh::build(shards).into_iter().enumerate() {
        let (control_tx, control_rx) = flume::bounded(4);
        controls.push(control_tx);
        let start = ShardStart {
            id: i as ShardId,
            node: node.clone(),
            node_id,
            placement: placement.clone(),
            peers: peers.clone(),
            link_fd: link.as_ref().map(|l| l.fds[i]),
            link_reports: link_reports.clone(),
            ends,
            gateway_fd: gateway.fds[i],
            api_fd: api.fds[i],
            admin_fd: admin.fds[i],
            warm: warm.next().expect("one share per shard"),
            control: control_rx,
            report: lifecycle::Reporter::new(i as ShardId, events_tx.clone()),
        };
        let core = if config.pin && !cores.is_empty() {
            Some(cores[i % cores.len()])
        } else {
            None
        };
        // Pinned through glommio's own placement: glommio spins before
        // parking only on executors placed on a fixed CPU (benches/mesh.rs).
        let cpu = match core {
            Some(core) => glommio::Placement::Fixed(core.id),
            None => glommio::Placement::Unbound,
        };
        let handle = LocalExecutorBuilder::new(cpu)
            .name(&format!("shard-{i}"))
            .io_memory(limits::IO_MEMORY_BYTES)
            .ring_depth(limits::RING_DEPTH)
            .spin_before_park(config.spin_before_park)
            .spawn(move || shard_main(start))
            .map_err(|e| format!("cannot start shard {i}: {e}"))?;
        handles.push(handle);
    }
    drop(events_tx);
    #[cfg(feature = "cluster")]
    if let Some(control) = &control {
        cluster::forward_events(control, controls.clone(), node.clone())?;
    }
    // On an error here the process exits, and with it the shards still
    // waiting in the mesh for the one that failed.
    lifecycle::wait_ready(&events, handles)?;
    println!(
        "{}",
        ready_line(
            &gateway_url,
            api.addr,
            admin.addr,
            &admin_token,
            link.as_ref().map(|l| (node_id, l.addr)),
        )
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tracing::info!(shards, gateway_addr = %gateway.addr, api_addr = %api.addr, admin_addr = %admin.addr, "transponder serving");

    signals.forever().next();
    tracing::info!("signal received: draining");
    for c in &controls {
        let _ = c.send(Control::Shutdown);
    }
    let deadline = Instant::now() + config.drain_timeout + Duration::from_secs(2);
    if !lifecycle::wait_ended(&events, shards, deadline) {
        tracing::warn!("drain timed out; exiting anyway");
    }
    #[cfg(feature = "cluster")]
    if let Some(control) = control {
        control.leave(limits::CLUSTER_LEAVE_TIMEOUT);
    }
    Ok(())
}

/// `ready {"gateway":…,"api":…,"admin":…,"admin_token":…}`, fields in that
/// order, strings JSON-escaped (the token and the public URL come from the
/// operator).
/// A clustered node adds `"node":N,"link":"host:port"` (in that order).
fn ready_line(
    gateway_url: &str,
    api: SocketAddr,
    admin: SocketAddr,
    admin_token: &str,
    cluster: Option<(NodeId, SocketAddr)>,
) -> String {
    let json = |s: &str| serde_json::to_string(s).expect("a string serializes");
    let cluster = cluster.map_or(String::new(), |(node, link)| {
        format!(r#","node":{node},"link":{}"#, json(&link.to_string()))
    });
    format!(
        r#"ready {{"gateway":{},"api":{},"admin":{},"admin_token":{}{cluster}}}"#,
        json(&format!("{gateway_url}/")),
        json(&format!("http://{}:{}/api/", url_host(api), api.port())),
        json(&format!("http://{}:{}/", url_host(admin), admin.port())),
        json(admin_token),
    )
}

/// Installs the state of every role on this shard, empty.
fn install_roles(config: &Config) {
    crate::channel::install(crate::channel::ChannelServer::new(
        config.history_per_channel,
    ));
    crate::gateway::install(crate::gateway::Gateway::new(config.max_queue_bytes));
    crate::presence::install(crate::presence::PresenceServer::default());
    crate::directory::install(crate::directory::Directory::default());
    crate::cluster::relay::install(crate::cluster::relay::Relays::default());
    crate::channel::ownership::install(crate::channel::ownership::Ownership::default());
    crate::schedule::install(crate::schedule::Scheduler::default());
    // Regions are known with a control plane only (a fixed cluster has none).
    let region = config.cluster.as_ref().map(|c| c.region.clone());
    crate::cluster::region::install(crate::cluster::region::RegionView::new(region));
}

/// Puts this shard's share of the stored state into its caches.
fn apply_warm(warm: crate::warmup::Warm) {
    let mut dir = crate::directory::this_shard().borrow_mut();
    for (id, user) in warm.users {
        dir.load_user(id, user);
    }
    drop(dir);
    let mut cs = crate::channel::this_shard().borrow_mut();
    cs.load(warm.channels);
    for (id, ts) in warm.last_ts {
        cs.set_last_ts(id, ts);
    }
    drop(cs);
    // Empty in a cluster: there each claim loads its member's (`warmup`).
    *crate::schedule::this_shard().borrow_mut() = crate::schedule::Scheduler::new(warm.scheduled);
}

async fn shard_main(start: ShardStart) {
    let ShardStart {
        id,
        node,
        node_id,
        placement,
        peers,
        link_fd,
        link_reports,
        ends,
        gateway_fd,
        api_fd,
        admin_fd,
        warm,
        control,
        report,
    } = start;
    let (mesh, receivers) = connect_mesh(id, ends).await;
    let mesh = Rc::new(mesh);
    let handlers = match peers {
        Some(_) => dispatch::CLUSTER_HANDLERS,
        None => dispatch::HANDLERS,
    };
    let shard = Rc::new(Shard::new(
        id,
        node_id,
        node.clone(),
        placement,
        mesh.clone(),
        handlers,
    ));
    install_roles(&node.config);
    // A clustered shard claims what it owns before serving it.
    crate::channel::ownership::on_placement(&shard, &shard.placement());
    if let Some(peers) = peers {
        crate::cluster::link::install(crate::cluster::link::Links::new(
            shard.clone(),
            peers,
            Box::new(move |node, up| link_reports(node, up)),
        ));
        crate::cluster::link::watch_every_peer();
    }
    apply_warm(warm);
    // The warm-up's buffers are freed by now, but stay resident until the
    // allocator is asked to purge them (src/heap.rs).
    crate::heap::release_now();
    glommio::spawn_local(crate::heap::release_forever()).detach();
    for (from, rx) in receivers {
        glommio::spawn_local(receive::receive_from(shard.clone(), from, rx)).detach();
        let mesh = mesh.clone();
        glommio::spawn_local(async move { mesh.pump(from).await }).detach();
    }
    glommio::spawn_local(receive::receive_local(shard.clone())).detach();
    glommio::spawn_local(gateway::flusher()).detach();
    glommio::spawn_local(crate::presence::prune_tickets_forever()).detach();
    glommio::spawn_local(crate::schedule::fire_forever(shard.clone())).detach();

    // SAFETY: each fd is a listening socket made for this shard alone.
    let (api_listener, admin_listener) = unsafe {
        use std::os::fd::FromRawFd;
        (
            TcpListener::from_raw_fd(api_fd),
            TcpListener::from_raw_fd(admin_fd),
        )
    };
    // Before any listener: every one of them charges this shard's budget.
    http::budget::set_capacity(node.config.max_unauthenticated_bytes);
    let http_stop = http::StopSignal::new();
    let limits = http::HttpLimits::default();
    // SAFETY: as above; the gateway takes it over.
    let gateway_listener =
        unsafe { <gateway::acceptor::Listener as std::os::fd::FromRawFd>::from_raw_fd(gateway_fd) };
    glommio::spawn_local(gateway::serve(shard.clone(), gateway_listener)).detach();
    if let Some(fd) = link_fd {
        // SAFETY: a listening socket made for this shard alone.
        let listener = unsafe { <TcpListener as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        glommio::spawn_local(crate::cluster::link::serve(shard.clone(), listener)).detach();
    }
    glommio::spawn_local(http::server::serve(
        admin_listener,
        limits,
        admin::handler(shard.clone()),
        http_stop.clone(),
    ))
    .detach();
    glommio::spawn_local(http::server::serve(
        api_listener,
        limits,
        api::handler(shard.clone()),
        http_stop.clone(),
    ))
    .detach();
    report.ready();

    while let Ok(message) = control.recv_async().await {
        if on_control(&shard, message).is_break() {
            break;
        }
    }
    gateway::on_drain(&shard, codes::CLOSE_GOING_AWAY);
    gateway::flush_dirty();
    let deadline = Instant::now() + node.config.drain_timeout;
    while crate::gateway::this_shard().borrow().connections() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    http_stop.trigger();
    glommio::timer::sleep(Duration::from_millis(50)).await;
    tracing::debug!(shard = id, "shard stopped");
    // `report` drops here: the main thread learns this shard has ended.
}

/// One message from the main thread; `Break` once the shard must stop.
fn on_control(_shard: &Rc<Shard>, message: Control) -> std::ops::ControlFlow<()> {
    match message {
        Control::Shutdown => std::ops::ControlFlow::Break(()),
        #[cfg(feature = "cluster")]
        Control::Peers(peers) => {
            crate::cluster::link::set_peers(peers);
            std::ops::ControlFlow::Continue(())
        }
        #[cfg(feature = "cluster")]
        Control::Nodes(nodes) => {
            crate::cluster::region::set_nodes(nodes);
            std::ops::ControlFlow::Continue(())
        }
        #[cfg(feature = "cluster")]
        Control::Cluster(event) => {
            crate::cluster::control::apply_on_shard(_shard, event);
            std::ops::ControlFlow::Continue(())
        }
    }
}

/// [`Mesh::connect`], with the executor kept awake until it is done.
///
/// glommio 0.9's shared-channel `connect` waits for the peer executor to
/// connect the other end, but the peer does not wake it when it does: the
/// waiting side only notices when its own reactor runs again. With many
/// shards on few cores, executors were seen asleep in `io_uring_enter` with
/// connects pending whose peers had long connected: the start hung for good
/// (32 shards on this 2-core VM: 1 start in 2; 64: 3 in 4), and attaching a
/// debugger, which interrupts the syscall, let it finish. A timer that
/// fires every [`limits::MESH_CONNECT_POLL`] until the mesh is connected
/// bounds each sleep; it is cancelled right after.
async fn connect_mesh(
    id: ShardId,
    ends: MeshEnds,
) -> (
    Mesh,
    Vec<(
        ShardId,
        glommio::channels::shared_channel::ConnectedReceiver<crate::shard::message::Msg>,
    )>,
) {
    let poll = glommio::spawn_local(async {
        loop {
            glommio::timer::sleep(limits::MESH_CONNECT_POLL).await;
        }
    });
    let connected = Mesh::connect(id, ends).await;
    // Dropping a glommio task that is not detached cancels it.
    drop(poll);
    connected
}
