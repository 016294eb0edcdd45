//! The node's side of the cluster (feature `cluster`): starts the control
//! thread before the shards (they need the node's id), starts them on the
//! newest placement known, and forwards every control event to every shard.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::{url_host, Control};
use crate::cluster::control::{self, ControlConfig, ControlEvent, ControlHandle};
use crate::cluster::link::Peers;
use crate::cluster::record::{NodeRecord, NodeState};
use crate::cluster::region::{DrainCommand, DrainReply};
use crate::config::{ClusterConfig, Config};
use crate::placement::{Addr, NodeId, Placement};
use crate::ring::Ring;

/// Joins the cluster: the node's id claimed and its record registered.
pub fn start(
    cluster: &ClusterConfig,
    config: &Config,
    gateway_url: &str,
    api: SocketAddr,
    admin: SocketAddr,
    link: Option<SocketAddr>,
    drains: flume::Receiver<(DrainCommand, DrainReply)>,
) -> Result<ControlHandle, String> {
    let name = cluster
        .node_name
        .clone()
        .unwrap_or_else(|| control::default_node_name(&config.data_dir));
    let record = NodeRecord {
        id: 0,
        name,
        link: link.map(|l| l.to_string()),
        gateway: format!("{gateway_url}/"),
        api: format!("http://{}:{}/api/", url_host(api), api.port()),
        admin: format!("http://{}:{}/", url_host(admin), admin.port()),
        cores: config.shards as u32,
        region: cluster.region.clone(),
        state: if cluster.spare {
            NodeState::Spare
        } else {
            NodeState::Active
        },
    };
    control::start(ControlConfig {
        endpoints: cluster.etcd.clone(),
        prefix: cluster.prefix.clone(),
        lease_ttl: cluster.lease_ttl,
        node_id_file: Some(config.data_dir.join(control::NODE_ID_FILE)),
        record,
        drains: Some(drains),
    })
    .map_err(|e| format!("cannot join the cluster: {e}"))
}

/// The node's id and the placement its shards start with: the newest
/// published one, or until CHARM publishes one, this node's shards alone
/// at version 0, which any published placement (version 1 and up) replaces.
pub fn first_placement(control: Option<&ControlHandle>, shards: usize) -> (NodeId, Arc<Placement>) {
    let Some(control) = control else {
        return (0, Arc::new(Placement::single_node(0, shards as u32)));
    };
    let id = control.node_id();
    if let Some(published) = control.placement() {
        return (id, published);
    }
    let members: Vec<u32> = (0..shards as u32).collect();
    let assignment: Vec<(u32, Addr)> = members
        .iter()
        .map(|&m| (m, Addr { node: id, core: m }))
        .collect();
    let local = Placement::new(
        Ring::new(&members, crate::ring::DEFAULT_VNODES),
        &assignment,
        0,
    )
    .expect("every member assigned once");
    (id, Arc::new(local))
}

/// Where the other registered nodes' links listen, as the registry says now.
pub fn peers(control: &ControlHandle, me: NodeId) -> Arc<Peers> {
    Arc::new(links_of(&control.registry(), me))
}

fn links_of(registry: &crate::cluster::control::Registry, me: NodeId) -> Peers {
    let addrs = registry
        .snapshot()
        .iter()
        .filter(|(&id, _)| id != me)
        .filter_map(|(&id, r)| Some((id, r.record.link.as_deref()?.parse().ok()?)))
        .collect();
    Peers { addrs }
}

/// Every registered node's record, by id (this node's too).
fn records_of(registry: &crate::cluster::control::Registry) -> BTreeMap<NodeId, NodeRecord> {
    registry
        .snapshot()
        .iter()
        .map(|(&id, r)| (id, r.record.clone()))
        .collect()
}

/// Forwards each control event to every shard, in order, on a thread of its
/// own (a shard slow to take one delays the next event, never a shard nor
/// the control thread's keep-alives). Before each, the link addresses of
/// the registered nodes, when they changed (a new placement names nodes
/// that registered since), and their records, when they changed (the
/// registry's own event, [`ControlEvent::Registry`], goes no further).
pub fn forward_events(
    control: &ControlHandle,
    shards: Vec<flume::Sender<Control>>,
    node: Arc<crate::shard::NodeInfo>,
) -> Result<(), String> {
    let events = control.events();
    let registry = control.registry();
    let me = control.node_id();
    let mut known = Peers::default();
    let mut known_records = BTreeMap::new();
    std::thread::Builder::new()
        .name("control-events".into())
        .spawn(move || {
            for event in events.iter() {
                let now = links_of(&registry, me);
                if now != known {
                    known = now.clone();
                    let now = Arc::new(now);
                    for shard in &shards {
                        let _ = shard.send(Control::Peers(now.clone()));
                    }
                }
                let records = records_of(&registry);
                if records != known_records {
                    known_records = records.clone();
                    let records = Arc::new(records);
                    for shard in &shards {
                        let _ = shard.send(Control::Nodes(records.clone()));
                    }
                }
                if matches!(event, ControlEvent::Registry) {
                    continue;
                }
                // Every shard holds placement-bound work from now until
                // its own copy of the placement arrives.
                if let ControlEvent::Placement(p) = &event {
                    node.newest_epoch
                        .fetch_max(p.version(), std::sync::atomic::Ordering::Relaxed);
                }
                for shard in &shards {
                    let _ = shard.send(Control::Cluster(event.clone()));
                }
            }
        })
        .map(drop)
        .map_err(|e| format!("cannot start the control event thread: {e}"))
}
