//! A fixed cluster: the nodes, their link addresses and the placement
//! written in a file (`--cluster-file`), for deployments that do not need
//! the control plane's failure handling, and for tests of node links.
//! Nothing changes while the nodes run.
//!
//! ```json
//! {
//!   "node": 1,
//!   "nodes": {"1": "127.0.0.1:7773", "2": "127.0.0.1:7783"},
//!   "placement": {"version": 1, "vnodes": 2048,
//!                 "assignment": [[0, 1, 0], [1, 1, 1], [2, 2, 0], [3, 2, 1]]}
//! }
//! ```
//!
//! `assignment` lists `[logical member, node, core]`; the ring's members are
//! the logical members listed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

use super::link::Peers;
use crate::placement::{Addr, NodeId, Placement};
use crate::ring::Ring;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    node: NodeId,
    nodes: HashMap<NodeId, SocketAddr>,
    placement: PlacementFile,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlacementFile {
    version: u64,
    vnodes: u32,
    assignment: Vec<(u32, NodeId, u32)>,
}

/// What a node needs to join a fixed cluster.
pub struct Fixed {
    pub node: NodeId,
    pub peers: Peers,
    pub placement: Placement,
}

/// Reads and checks `path`: this node must be listed, every assigned node
/// must have an address, and every core assigned to this node must exist.
pub fn load(path: &Path, shards: usize) -> Result<Fixed, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let file: File = serde_json::from_str(&text)
        .map_err(|e| format!("bad cluster file {}: {e}", path.display()))?;
    let p = file.placement;
    if p.vnodes == 0 || p.assignment.is_empty() {
        return Err("the cluster file's placement needs vnodes and an assignment".into());
    }
    let members: Vec<u32> = p.assignment.iter().map(|&(m, _, _)| m).collect();
    let mut assignment = Vec::with_capacity(p.assignment.len());
    for &(member, node, core) in &p.assignment {
        if !file.nodes.contains_key(&node) {
            return Err(format!(
                "member {member} is assigned to node {node}, which has no address"
            ));
        }
        if node == file.node && core as usize >= shards {
            return Err(format!(
                "member {member} is assigned to core {core} of this node, which runs {shards} shards"
            ));
        }
        assignment.push((member, Addr { node, core }));
    }
    if file.node == 0 || file.nodes.contains_key(&0) {
        return Err("node ids start at 1 (0 is a node outside any cluster)".into());
    }
    if !file.nodes.contains_key(&file.node) {
        return Err(format!(
            "this node ({}) is not among the cluster's nodes",
            file.node
        ));
    }
    let mut sorted = members.clone();
    sorted.sort_unstable();
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        return Err("a logical member is assigned twice".into());
    }
    let ring = Ring::new(&members, p.vnodes);
    let placement = Placement::new(ring, &assignment, p.version).map_err(|e| e.to_string())?;
    let mut addrs = file.nodes;
    addrs.remove(&file.node);
    Ok(Fixed {
        node: file.node,
        peers: Peers { addrs },
        placement,
    })
}
