//! Regions and their drains (docs/CLUSTER.md "Regions and drains").
//!
//! Every node carries a region label (`--region`). An operator drains a
//! region R to a region T with the etcd key `drain/R` (or `POST
//! /v1/drain?region=R&to=T&rate=N` on any node's admin API, which writes
//! it): the nodes of R say `draining` in their records, and their gateways
//! send every client to an active node of T — new websockets at once,
//! existing ones at most `rate` per second for the whole region
//! (`gateway::region_drain`) — and `rtm.connect` on them answers with a
//! websocket URL on that node. Deleting the key ends the drain.
//!
//! This file holds what every shard knows for that: the cluster's node
//! records as the control thread last published them, this node's region,
//! and the drain in force; plus the pure rules (which node a user goes to,
//! how fast each shard may close, what a request must hold).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::record::{check_name, NodeRecord, NodeState};
use crate::ids::Id;
use crate::limits;
use crate::placement::NodeId;

crate::shard::local::shard_local!(RegionView);

/// The cluster's nodes by id, as registered: a read-only snapshot the
/// control thread's forwarder hands every shard when it changes.
pub type Nodes = Arc<BTreeMap<NodeId, NodeRecord>>;

/// A drain of this node's region, as requested.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drain {
    pub region: String,
    /// Where clients go; `None`: any active node of another region.
    pub to: Option<String>,
    /// Connections per second for the whole region.
    pub rate: u32,
}

/// What this shard knows of regions.
/// Owned by its shard; never crosses cores (`nodes` is a shared read-only
/// snapshot).
#[derive(Default)]
pub struct RegionView {
    /// This node's region; `None` outside a cluster with a control plane.
    pub region: Option<String>,
    pub nodes: Nodes,
    /// The drain of this node's region in force.
    pub drain: Option<Drain>,
    /// Counts drains begun and ended here, so that the pacer of a drain
    /// that ended or was replaced stops ([`RegionView::pacing`]).
    pub generation: u64,
}

impl RegionView {
    pub fn new(region: Option<String>) -> RegionView {
        RegionView {
            region,
            ..RegionView::default()
        }
    }

    /// The drain the pacer started for `generation`, while it is still in
    /// force.
    pub fn pacing(&self, generation: u64) -> Option<&Drain> {
        self.drain
            .as_ref()
            .filter(|_| self.generation == generation)
    }

    /// Registered nodes of `region` (at least 1: this node is one).
    pub fn nodes_in(&self, region: &str) -> usize {
        self.nodes
            .values()
            .filter(|r| r.region == region)
            .count()
            .max(1)
    }

    /// Where `user`'s clients go while this node's region drains: an active
    /// node of the target region. `None` when no drain is in force here, or
    /// when no such node is registered.
    pub fn redirect(&self, user: Id) -> Option<&NodeRecord> {
        let drain = self.drain.as_ref()?;
        target(&self.nodes, &drain.region, drain.to.as_deref(), user.raw())
    }
}

/// The node a client of `from` goes to: an active node of `to` (of any
/// region but `from` when `to` is `None`), picked by a hash of the user's
/// id over those nodes in id order, so that the goodbye and a later
/// `rtm.connect` send a user to the same node on every node of `from`, and
/// the users spread evenly.
pub fn target<'a>(
    nodes: &'a BTreeMap<NodeId, NodeRecord>,
    from: &str,
    to: Option<&str>,
    user: u64,
) -> Option<&'a NodeRecord> {
    let candidates: Vec<&NodeRecord> = nodes
        .values()
        .filter(|r| r.state == NodeState::Active && r.region != from)
        .filter(|r| to.is_none_or(|t| r.region == t))
        .collect();
    if candidates.is_empty() {
        return None;
    }
    let i = crate::ring::hash_key(user) % candidates.len() as u64;
    Some(candidates[i as usize])
}

/// Connections one shard may close per second for a drain of `rate` per
/// second over a region of `nodes` nodes of `shards` shards each: the
/// region's rate split evenly, so the region as a whole never exceeds it
/// (a shard with fewer clients than its share finishes early, and its
/// share is not handed on).
pub fn rate_per_shard(rate: u32, nodes: usize, shards: usize) -> f64 {
    f64::from(rate) / (nodes.max(1) * shards.max(1)) as f64
}

/// A drain request from the admin API, for the control thread to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrainCommand {
    /// Put `drain/<region>` = `{"to":…,"rate":…}`.
    Start {
        region: String,
        to: String,
        rate: u32,
    },
    /// Delete `drain/<region>`.
    Stop { region: String },
}

/// The control thread's answer: done, or why not (etcd's error).
pub type DrainReply = futures_channel::oneshot::Sender<Result<(), String>>;
/// Where the admin API sends drain requests (a clustered node with a
/// control plane only).
pub type DrainCommands = flume::Sender<(DrainCommand, DrainReply)>;

/// The value of `drain/<region>`.
pub fn drain_value(to: &str, rate: u32) -> String {
    serde_json::json!({ "to": to, "rate": rate }).to_string()
}

/// Checks a drain request's query parameters (`region`, `to`, `rate`)
/// and returns the command, or the documented error code: `invalid_region`,
/// `invalid_target` (missing, malformed, or the region itself),
/// `invalid_rate` (not a whole number in 1..=100000). `rate` defaults to
/// [`limits::DRAIN_RATE_PER_SEC_DEFAULT`].
pub fn check_start(
    region: Option<&str>,
    to: Option<&str>,
    rate: Option<&str>,
) -> Result<DrainCommand, &'static str> {
    let region = check_region(region)?;
    let to = to
        .filter(|t| check_name("target", t).is_ok() && *t != region)
        .ok_or("invalid_target")?;
    let rate = match rate {
        None => limits::DRAIN_RATE_PER_SEC_DEFAULT,
        Some(r) => r
            .parse::<u32>()
            .ok()
            .filter(|r| {
                (limits::DRAIN_RATE_PER_SEC_MIN..=limits::DRAIN_RATE_PER_SEC_MAX).contains(r)
            })
            .ok_or("invalid_rate")?,
    };
    Ok(DrainCommand::Start {
        region,
        to: to.to_string(),
        rate,
    })
}

/// A region name from a request, or `invalid_region`.
pub fn check_region(region: Option<&str>) -> Result<String, &'static str> {
    region
        .filter(|r| check_name("region", r).is_ok())
        .map(str::to_string)
        .ok_or("invalid_region")
}

// ---- on a shard ----

/// The control thread's forwarder published the cluster's nodes anew.
pub fn set_nodes(nodes: Nodes) {
    this_shard().borrow_mut().nodes = nodes;
}

/// `drain/<region>` was put: when it is this node's region, this shard's
/// gateway starts sending its clients away. Returns the new drain's
/// generation for the pacer, or `None` when the region is not ours.
pub fn begin_drain(region: String, to: Option<String>, rate: Option<u32>) -> Option<u64> {
    let mut view = this_shard().borrow_mut();
    if view.region.as_deref() != Some(region.as_str()) {
        return None;
    }
    let rate = rate.unwrap_or(limits::DRAIN_RATE_PER_SEC_DEFAULT).clamp(
        limits::DRAIN_RATE_PER_SEC_MIN,
        limits::DRAIN_RATE_PER_SEC_MAX,
    );
    // A target naming our own region would send clients in a circle.
    let to = to.filter(|t| *t != region);
    view.drain = Some(Drain { region, to, rate });
    view.generation += 1;
    Some(view.generation)
}

/// `drain/<region>` was deleted: when it is this node's region, its
/// gateways accept clients again. True when it was ours.
pub fn end_drain(region: &str) -> bool {
    let mut view = this_shard().borrow_mut();
    if view.region.as_deref() != Some(region) || view.drain.is_none() {
        return false;
    }
    view.drain = None;
    view.generation += 1;
    true
}

/// Whether this node's region is being drained.
pub fn draining() -> bool {
    this_shard().borrow().drain.is_some()
}

/// The websocket base URL (no trailing `/`) and region `user`'s clients go
/// to while this node's region drains.
pub fn redirect(user: Id) -> Option<(String, String)> {
    let view = this_shard().borrow();
    view.redirect(user).map(|r| {
        (
            r.gateway.trim_end_matches('/').to_string(),
            r.region.clone(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: NodeId, region: &str, state: NodeState) -> NodeRecord {
        NodeRecord {
            id,
            name: format!("n{id}"),
            link: None,
            gateway: format!("ws://127.0.0.1:{id}/"),
            api: String::new(),
            admin: String::new(),
            cores: 2,
            region: region.into(),
            state,
        }
    }

    fn cluster() -> BTreeMap<NodeId, NodeRecord> {
        [
            node(1, "east", NodeState::Draining),
            node(2, "east", NodeState::Draining),
            node(3, "west", NodeState::Active),
            node(4, "west", NodeState::Active),
            node(5, "west", NodeState::Spare),
            node(6, "north", NodeState::Active),
        ]
        .into_iter()
        .map(|r| (r.id, r))
        .collect()
    }

    #[test]
    fn targets_are_active_nodes_of_the_target_region_spread_by_user() {
        let nodes = cluster();
        let mut hit = std::collections::BTreeSet::new();
        for user in 0..200u64 {
            let t = target(&nodes, "east", Some("west"), user).unwrap();
            assert!(t.id == 3 || t.id == 4, "{t:?}");
            // The same user always goes to the same node.
            assert_eq!(target(&nodes, "east", Some("west"), user).unwrap().id, t.id);
            hit.insert(t.id);
        }
        assert_eq!(hit.len(), 2, "users spread over both west nodes");
        // No target region: any active node outside the drained one.
        for user in 0..50u64 {
            let t = target(&nodes, "east", None, user).unwrap();
            assert!([3, 4, 6].contains(&t.id), "{t:?}");
        }
        assert!(target(&nodes, "east", Some("south"), 1).is_none());
        assert!(target(&nodes, "east", Some("east"), 1).is_none());
    }

    #[test]
    fn the_region_rate_is_split_over_nodes_and_shards() {
        assert_eq!(rate_per_shard(20, 2, 2), 5.0);
        assert_eq!(rate_per_shard(1, 1, 1), 1.0);
        assert_eq!(rate_per_shard(10, 0, 0), 10.0);
    }

    #[test]
    fn requests_are_checked_with_documented_codes() {
        assert_eq!(
            check_start(Some("east"), Some("west"), Some("20")),
            Ok(DrainCommand::Start {
                region: "east".into(),
                to: "west".into(),
                rate: 20
            })
        );
        assert_eq!(
            check_start(Some("east"), Some("west"), None),
            Ok(DrainCommand::Start {
                region: "east".into(),
                to: "west".into(),
                rate: limits::DRAIN_RATE_PER_SEC_DEFAULT
            })
        );
        assert_eq!(check_start(None, Some("west"), None), Err("invalid_region"));
        assert_eq!(
            check_start(Some(""), Some("west"), None),
            Err("invalid_region")
        );
        assert_eq!(
            check_start(Some("a/b"), Some("west"), None),
            Err("invalid_region")
        );
        assert_eq!(check_start(Some("east"), None, None), Err("invalid_target"));
        assert_eq!(
            check_start(Some("east"), Some(""), None),
            Err("invalid_target")
        );
        assert_eq!(
            check_start(Some("east"), Some("east"), None),
            Err("invalid_target")
        );
        for bad in ["0", "100001", "-1", "1.5", "", "x"] {
            assert_eq!(
                check_start(Some("east"), Some("west"), Some(bad)),
                Err("invalid_rate"),
                "{bad}"
            );
        }
        assert!(check_start(Some("east"), Some("west"), Some("100000")).is_ok());
        assert!(check_start(Some("east"), Some("west"), Some("1")).is_ok());
    }

    #[test]
    fn the_key_value_is_what_the_control_thread_reads() {
        let v: serde_json::Value = serde_json::from_str(&drain_value("west", 20)).unwrap();
        assert_eq!(v, serde_json::json!({"to": "west", "rate": 20}));
    }
}
