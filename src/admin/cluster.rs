//! The cluster as the admin API shows and steers it: the nodes, regions,
//! drain and link health of `/v1/ring` and `/metrics` ([`ClusterView`]),
//! and region drains (`POST`/`DELETE /v1/drain?region=…`, [`drain`]).

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Response, StatusCode, Uri};
use serde::Serialize;
use serde_json::{json, Value};

use crate::cluster::record::NodeState;
use crate::cluster::region::{self, Drain, DrainCommand, Nodes};
use crate::gateway::codes;
use crate::http::json;
use crate::limits;
use crate::ops;
use crate::placement::NodeId;
use crate::shard::message::ShardStats;
use crate::shard::Shard;

type Resp = Response<Full<Bytes>>;

/// This node's links with one other node, over all its shards.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PeerLink {
    /// Some link between the two is connected: one of this node's to it,
    /// or one of its to this node (which has heard from it within the
    /// silence timeout, or it would have ended).
    pub up: bool,
    /// Shards of this node whose link to the peer is connected (links open
    /// on first use, so an idle pair of nodes may have none).
    pub out_up: u32,
    /// Links from the peer open on this node.
    pub in_open: u32,
    /// Milliseconds since this node last read anything from the peer
    /// (heartbeats every 100 ms on an idle link).
    pub last_heard_ms: Option<u64>,
    pub messages_sent: u64,
    pub bytes_sent: u64,
    pub messages_received: u64,
    pub bytes_received: u64,
    pub dropped_frames: u64,
}

/// Every shard's link figures summed per peer node.
pub fn peer_links(stats: &[ShardStats]) -> BTreeMap<NodeId, PeerLink> {
    let mut peers: BTreeMap<NodeId, PeerLink> = BTreeMap::new();
    for link in stats.iter().flat_map(|s| &s.links) {
        let p = peers.entry(link.node).or_default();
        p.out_up += u32::from(link.out_up);
        p.in_open += link.in_open;
        p.last_heard_ms = match (p.last_heard_ms, link.last_heard_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        p.messages_sent += link.messages_sent;
        p.bytes_sent += link.bytes_sent;
        p.messages_received += link.messages_received;
        p.bytes_received += link.bytes_received;
        p.dropped_frames += link.dropped_frames;
        p.up = p.out_up > 0 || p.in_open > 0;
    }
    peers
}

/// What this node knows of the cluster, gathered on one shard.
pub struct ClusterView {
    pub node: NodeId,
    pub version: u64,
    pub region: Option<String>,
    pub drain: Option<Drain>,
    pub nodes: Nodes,
    pub links: BTreeMap<NodeId, PeerLink>,
}

impl ClusterView {
    pub fn gather(shard: &Shard, stats: &[ShardStats]) -> ClusterView {
        let view = region::this_shard().borrow();
        ClusterView {
            node: shard.node_id,
            version: shard.epoch(),
            region: view.region.clone(),
            drain: view.drain.clone(),
            nodes: view.nodes.clone(),
            links: peer_links(stats),
        }
    }

    /// The other nodes: registered ones and any a link knows of.
    pub fn peers(&self) -> BTreeSet<NodeId> {
        self.nodes
            .keys()
            .chain(self.links.keys())
            .copied()
            .filter(|&id| id != self.node)
            .collect()
    }

    /// `/v1/ring`'s `nodes`: every registered node (and any other a link
    /// knows of), with this node's links to it.
    pub fn nodes_json(&self) -> Vec<Value> {
        let ids: BTreeSet<NodeId> = self.nodes.keys().copied().chain(self.peers()).collect();
        ids.into_iter()
            .map(|id| {
                let me = id == self.node;
                let link = match me {
                    true => Value::Null,
                    false => json!(self.links.get(&id).cloned().unwrap_or_default()),
                };
                match self.nodes.get(&id) {
                    Some(r) => json!({
                        "id": id, "name": r.name, "region": r.region, "state": r.state,
                        "gateway": r.gateway, "api": r.api, "admin": r.admin,
                        "cores": r.cores, "link_addr": r.link, "self": me, "link": link,
                    }),
                    None => json!({"id": id, "self": me, "link": link}),
                }
            })
            .collect()
    }

    /// Registered nodes by (region, state).
    pub fn nodes_by_region(&self) -> BTreeMap<(String, &'static str), u64> {
        let mut out = BTreeMap::new();
        for r in self.nodes.values() {
            *out.entry((r.region.clone(), r.state.as_str())).or_default() += 1;
        }
        out
    }
}

fn bad_request(code: &str) -> Resp {
    json::error(StatusCode::BAD_REQUEST, code)
}

/// `POST /v1/drain` (no `region`: this node, as always) and `POST
/// /v1/drain?region=R&to=T&rate=N` / `DELETE /v1/drain?region=R` (a
/// region: written to etcd by the control thread, acted on by every node
/// of R when its watch sees the key).
pub async fn drain(shard: &Rc<Shard>, method: &Method, uri: &Uri) -> Resp {
    let query = json::query_pairs(uri);
    let param = |k: &str| {
        query
            .iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.as_str())
    };
    let command = if *method == Method::POST {
        if param("region").is_none() {
            // A target or rate without a region is a region drain gone
            // wrong, never a drain of this node.
            if param("to").is_some() || param("rate").is_some() {
                return bad_request("invalid_region");
            }
            ops::drain(shard, codes::CLOSE_DRAIN);
            return json::ok_json(json!({}));
        }
        region::check_start(param("region"), param("to"), param("rate"))
    } else {
        region::check_region(param("region")).map(|region| DrainCommand::Stop { region })
    };
    let command = match command {
        Ok(c) => c,
        Err(code) => return bad_request(code),
    };
    let Some(drains) = shard.node.drains.clone() else {
        return bad_request("not_in_cluster");
    };
    if let DrainCommand::Start {
        region: from, to, ..
    } = &command
    {
        // Refused rather than written: a drain with nowhere to go would
        // only bounce the region's clients back to it.
        let view = region::this_shard().borrow();
        let any = view
            .nodes
            .values()
            .any(|r| r.region == *to && r.state == NodeState::Active && r.region != *from);
        if !any {
            return bad_request("unknown_target");
        }
    }
    let (reply, answer) = futures_channel::oneshot::channel();
    if drains.try_send((command.clone(), reply)).is_err() {
        return json::error(StatusCode::SERVICE_UNAVAILABLE, "etcd_unavailable");
    }
    let answer = glommio::timer::timeout(limits::CLUSTER_REQUEST_TIMEOUT * 2, async {
        Ok(answer.await)
    })
    .await;
    match answer {
        Ok(Ok(Ok(()))) => match command {
            DrainCommand::Start { region, to, rate } => {
                json::ok_json(json!({"drain": {"region": region, "to": to, "rate": rate}}))
            }
            DrainCommand::Stop { .. } => json::ok_json(json!({})),
        },
        _ => json::error(StatusCode::SERVICE_UNAVAILABLE, "etcd_unavailable"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::link::LinkStats;

    #[test]
    fn links_sum_per_peer_over_shards() {
        let shard = |links: Vec<LinkStats>| ShardStats {
            links,
            ..ShardStats::default()
        };
        let stats = vec![
            shard(vec![
                LinkStats {
                    node: 2,
                    out_up: true,
                    last_heard_ms: Some(80),
                    bytes_sent: 10,
                    ..LinkStats::default()
                },
                LinkStats {
                    node: 3,
                    ..LinkStats::default()
                },
            ]),
            shard(vec![LinkStats {
                node: 2,
                in_open: 1,
                last_heard_ms: Some(30),
                bytes_sent: 5,
                messages_received: 4,
                ..LinkStats::default()
            }]),
        ];
        let peers = peer_links(&stats);
        let two = &peers[&2];
        assert!(two.up);
        assert_eq!((two.out_up, two.in_open), (1, 1));
        assert_eq!(two.last_heard_ms, Some(30));
        assert_eq!((two.bytes_sent, two.messages_received), (15, 4));
        assert!(!peers[&3].up);
        assert_eq!(peers[&3].last_heard_ms, None);
    }
}
