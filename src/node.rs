//! A node: binds the listeners, starts one pinned executor per shard with
//! its end of the mesh, prints the ready line once every shard serves, and
//! drains on SIGTERM/SIGINT.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{IntoRawFd, RawFd};
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
use socket2::{Domain, Protocol, Socket, Type};

use crate::config::Config;
use crate::gateway::codes;
use crate::ids::Id;
use crate::limits;
use crate::ring::Ring;
use crate::shard::mesh::{self, Mesh, MeshEnds};
use crate::shard::message::ShardId;
use crate::shard::{dispatch, NodeInfo, Shard};
use crate::store::{Backend, Store};
use crate::ticket::TicketKey;
use crate::{admin, api, gateway, http};

/// The team every user belongs to until the store brings real teams.
pub const DEFAULT_TEAM: &str = "T0000000001";

/// Messages from the main thread to a shard.
#[derive(Debug)]
enum Control {
    /// Drain with `going_away` and stop.
    Shutdown,
}

/// Binds `shards` listening sockets on one address with SO_REUSEPORT; the
/// kernel spreads connections across them. Port 0 picks one port for all.
fn bind_all(
    host: IpAddr,
    port: u16,
    shards: usize,
    backlog: u32,
) -> Result<(Vec<RawFd>, SocketAddr), String> {
    let mut addr = SocketAddr::new(host, port);
    let mut fds = Vec::with_capacity(shards);
    for _ in 0..shards {
        let domain = if host.is_ipv6() {
            Domain::IPV6
        } else {
            Domain::IPV4
        };
        let s =
            Socket::new(domain, Type::STREAM, Some(Protocol::TCP)).map_err(|e| e.to_string())?;
        s.set_reuse_port(true).map_err(|e| e.to_string())?;
        s.set_reuse_address(true).map_err(|e| e.to_string())?;
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        s.bind(&addr.into())
            .map_err(|e| format!("cannot bind {addr}: {e}"))?;
        s.listen(backlog as i32).map_err(|e| e.to_string())?;
        if addr.port() == 0 {
            addr = s
                .local_addr()
                .map_err(|e| e.to_string())?
                .as_socket()
                .expect("inet socket");
        }
        fds.push(s.into_raw_fd());
    }
    Ok((fds, addr))
}

/// The host to put in URLs: the bound address unless it is a wildcard.
fn url_host(addr: SocketAddr) -> String {
    match addr.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
        IpAddr::V4(ip) => ip.to_string(),
    }
}

struct ShardStart {
    id: ShardId,
    node: Arc<NodeInfo>,
    ring: Ring,
    ends: MeshEnds,
    gateway_fd: RawFd,
    api_fd: RawFd,
    admin_fd: RawFd,
    warm: crate::warmup::Warm,
    control: flume::Receiver<Control>,
    ready: mpsc::Sender<ShardId>,
}

/// Runs `transponder serve` until a signal drains it.
pub fn serve(config: Config) -> Result<(), String> {
    if !config.huge_pages {
        // SAFETY: a process-wide flag, set before any shard thread starts.
        if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0 {
            tracing::warn!("could not disable transparent huge pages");
        }
    }
    let shards = config.shards;
    let store =
        Store::open_backend(&config.store, config.durability).map_err(|e| match &config.store {
            Backend::Sqlite(dir) => format!("cannot open the store in {}: {e}", dir.display()),
            Backend::Postgres(_) => format!("cannot open the store {}: {e}", config.store),
        })?;
    let (gateway_fds, gateway_addr) = bind_all(
        config.host,
        config.gateway_port,
        shards,
        config.listen_backlog,
    )?;
    let (api_fds, api_addr) =
        bind_all(config.host, config.api_port, shards, config.listen_backlog)?;
    let (admin_fds, admin_addr) = bind_all(
        config.host,
        config.admin_port,
        shards,
        config.listen_backlog,
    )?;
    let admin_token = config.admin_token.clone().unwrap_or_else(|| {
        let bytes: [u8; 16] = rand::random();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    });
    let gateway_url = config
        .public_gateway_url
        .clone()
        .unwrap_or_else(|| format!("ws://{}:{}", url_host(gateway_addr), gateway_addr.port()));
    let node = Arc::new(NodeInfo {
        ticket_key: TicketKey::random(),
        admin_token: admin_token.clone(),
        gateway_url: gateway_url.clone(),
        team: Id::parse(DEFAULT_TEAM).expect("valid team id"),
        team_name: "Transponder".to_string(),
        store,
        config: config.clone(),
    });
    let ring = Ring::single_node(shards as u32);
    let warm = crate::warmup::load(&node.store, &ring, shards)
        .map_err(|e| format!("cannot read the store: {e}"))?;
    let mut warm = warm.into_iter();
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut controls = Vec::with_capacity(shards);
    let mut handles = Vec::with_capacity(shards);
    for (i, ends) in mesh::build(shards).into_iter().enumerate() {
        let (control_tx, control_rx) = flume::bounded(4);
        controls.push(control_tx);
        let start = ShardStart {
            id: i as ShardId,
            node: node.clone(),
            ring: ring.clone(),
            ends,
            gateway_fd: gateway_fds[i],
            api_fd: api_fds[i],
            admin_fd: admin_fds[i],
            warm: warm.next().expect("one share per shard"),
            control: control_rx,
            ready: ready_tx.clone(),
        };
        let core = if config.pin && !cores.is_empty() {
            Some(cores[i % cores.len()])
        } else {
            None
        };
        // Pinned through glommio's own placement: glommio spins before
        // parking only on executors placed on a fixed CPU (benches/mesh.rs).
        let placement = match core {
            Some(core) => Placement::Fixed(core.id),
            None => Placement::Unbound,
        };
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("shard-{i}"))
            .io_memory(limits::IO_MEMORY_BYTES)
            .ring_depth(limits::RING_DEPTH)
            .spin_before_park(config.spin_before_park)
            .spawn(move || shard_main(start))
            .map_err(|e| format!("cannot start shard {i}: {e}"))?;
        handles.push(handle);
    }
    drop(ready_tx);
    for _ in 0..shards {
        if ready_rx.recv_timeout(Duration::from_secs(30)).is_err() {
            // A shard that failed to start (io_uring refused, memlock too
            // low) has ended its thread: report its own error.
            let (err_tx, err_rx) = mpsc::channel();
            for (i, h) in handles.into_iter().enumerate() {
                let err_tx = err_tx.clone();
                std::thread::spawn(move || {
                    if let Err(e) = h.join() {
                        let _ = err_tx.send(format!("shard {i} failed to start: {e}"));
                    }
                });
            }
            return Err(err_rx
                .recv_timeout(Duration::from_secs(1))
                .unwrap_or_else(|_| "a shard did not start within 30 s".to_string()));
        }
    }
    let ready = format!(
        r#"ready {{"gateway":"{gateway_url}/","api":"http://{}:{}/api/","admin":"http://{}:{}/","admin_token":"{admin_token}"}}"#,
        url_host(api_addr),
        api_addr.port(),
        url_host(admin_addr),
        admin_addr.port(),
    );
    println!("{ready}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tracing::info!(shards, %gateway_addr, %api_addr, %admin_addr, "transponder serving");

    wait_for_signal()?;
    tracing::info!("signal received: draining");
    for c in &controls {
        let _ = c.send(Control::Shutdown);
    }
    let deadline = Instant::now() + config.drain_timeout + Duration::from_secs(2);
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for h in handles {
            let _ = h.join();
        }
        let _ = done_tx.send(());
    });
    if done_rx
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .is_err()
    {
        tracing::warn!("drain timed out; exiting anyway");
    }
    Ok(())
}

fn wait_for_signal() -> Result<(), String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGTERM, SIGINT]).map_err(|e| e.to_string())?;
    signals.forever().next();
    Ok(())
}

/// Puts this shard's share of the stored state into its caches.
fn apply_warm(shard: &Shard, warm: crate::warmup::Warm) {
    let mut dir = shard.directory.borrow_mut();
    for (id, user) in warm.users {
        dir.load_user(id, user);
    }
    drop(dir);
    let mut cs = shard.channels.borrow_mut();
    cs.load(warm.channels);
    for (id, ts) in warm.last_ts {
        cs.set_last_ts(id, ts);
    }
}

async fn shard_main(start: ShardStart) {
    let ShardStart {
        id,
        node,
        ring,
        ends,
        gateway_fd,
        api_fd,
        admin_fd,
        warm,
        control,
        ready,
    } = start;
    let (mesh, receivers) = Mesh::connect(id, ends).await;
    let mesh = Rc::new(mesh);
    let shard = Rc::new(Shard::new(id, node.clone(), ring, mesh.clone()));
    apply_warm(&shard, warm);
    // The warm-up's buffers are freed by now, but stay resident until the
    // allocator is asked to purge them (src/heap.rs).
    crate::heap::release_now();
    glommio::spawn_local(crate::heap::release_forever()).detach();
    for (from, rx) in receivers {
        glommio::spawn_local(dispatch::receive_from(shard.clone(), from, rx)).detach();
        let mesh = mesh.clone();
        glommio::spawn_local(async move { mesh.pump(from).await }).detach();
    }
    glommio::spawn_local(dispatch::receive_local(shard.clone())).detach();
    glommio::spawn_local(gateway::flusher(shard.clone())).detach();
    glommio::spawn_local(crate::presence::prune_tickets_forever(shard.clone())).detach();

    // SAFETY: each fd is a listening socket made for this shard alone.
    let (gateway_listener, api_listener, admin_listener) = unsafe {
        use std::os::fd::FromRawFd;
        (
            TcpListener::from_raw_fd(gateway_fd),
            TcpListener::from_raw_fd(api_fd),
            TcpListener::from_raw_fd(admin_fd),
        )
    };
    // Before any listener: every one of them charges this shard's budget.
    http::budget::set_capacity(node.config.max_unauthenticated_bytes);
    let http_stop = http::StopSignal::new();
    let limits = http::HttpLimits::default();
    glommio::spawn_local(gateway::serve(shard.clone(), gateway_listener)).detach();
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
    let _ = ready.send(id);

    let _ = control.recv_async().await;
    gateway::on_drain(&shard, codes::CLOSE_GOING_AWAY);
    gateway::flush_dirty(&shard);
    let deadline = Instant::now() + node.config.drain_timeout;
    while shard.gateway.borrow().connections() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    http_stop.trigger();
    glommio::timer::sleep(Duration::from_millis(50)).await;
    tracing::debug!(shard = id, "shard stopped");
}
