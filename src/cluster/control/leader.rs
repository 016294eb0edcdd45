//! CHARM's leader: elected through etcd's election API, one at a time.
//!
//! Every node campaigns under its lease. The winner reads the cluster's
//! keys (all at one revision), applies the failure rule
//! ([`crate::cluster::health`]) and the placement rule
//! ([`crate::cluster::charm`]) and publishes the result, then does it again
//! whenever a key of the cluster changes (and every TTL, as a backstop).
//! A new leader starts from the published placement, so versions never go
//! back.
//!
//! **Fencing.** [`publish`] writes `placement` in a transaction that
//! compares the leader's election key (it must still exist with the
//! revision it was created at) and the placement's revision (it must be
//! the one the leader computed from). A leader whose lease lapsed (paused,
//! cut off) has lost its election key with it, so its late publish fails
//! instead of overwriting its successor's placement.

use std::collections::BTreeSet;

use etcd_client::{
    Client, Compare, CompareOp, GetOptions, LeaderKey, Txn, TxnOp, TxnOpResponse, WatchOptions,
    WatchStream,
};

use super::Ctx;
use crate::cluster::health::{self, Member, Suspicion};
use crate::cluster::keys::{Key, Keys};
use crate::cluster::record::{NodeRecord, NodeState};
use crate::cluster::{charm, published};
use crate::limits;
use crate::placement::{NodeId, Placement};

/// What became of a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    /// Written.
    Published,
    /// Refused: the leadership key is gone. This leader is deposed.
    Fenced,
    /// Refused: the placement changed since it was read. Read again.
    Stale,
}

/// Campaigns for CHARM leadership with `lease` until elected; the election
/// key that proves it.
pub async fn campaign(
    client: &mut Client,
    keys: &Keys,
    id: NodeId,
    lease: i64,
) -> Result<LeaderKey, etcd_client::Error> {
    let mut answer = client
        .campaign(keys.election(), id.to_string(), lease)
        .await?;
    answer.take_leader().ok_or_else(|| {
        etcd_client::Error::InvalidArgs("a campaign answer without a leader key".into())
    })
}

/// Writes `placement` as the leader `leader`, if it still is, and if the
/// published placement is still at `expected` (its mod revision; 0 when
/// none is published).
pub async fn publish(
    client: &mut Client,
    keys: &Keys,
    leader: &LeaderKey,
    expected: i64,
    placement: &Placement,
) -> Result<Publish, etcd_client::Error> {
    let txn = Txn::new()
        .when([
            Compare::create_revision(leader.key(), CompareOp::Equal, leader.rev()),
            Compare::mod_revision(keys.placement(), CompareOp::Equal, expected),
        ])
        .and_then([TxnOp::put(
            keys.placement(),
            published::to_json(placement),
            None,
        )])
        .or_else([TxnOp::get(leader.key(), None)]);
    let answer = client.txn(txn).await?;
    if answer.succeeded() {
        return Ok(Publish::Published);
    }
    let still_leader = answer.op_responses().iter().any(|a| match a {
        TxnOpResponse::Get(get) => get
            .kvs()
            .first()
            .is_some_and(|kv| kv.create_revision() == leader.rev()),
        _ => false,
    });
    Ok(if still_leader {
        Publish::Stale
    } else {
        Publish::Fenced
    })
}

/// Campaigns and leads, again and again, for the life of `lease`.
pub(super) async fn serve(ctx: &Ctx, lease: i64) {
    let mut etcd = ctx.etcd();
    loop {
        let leader = match campaign(&mut etcd, &ctx.keys, ctx.id, lease).await {
            Ok(leader) => leader,
            Err(e) => {
                tracing::warn!(node = ctx.id, "campaign: {e}");
                tokio::time::sleep(limits::CLUSTER_RETRY_INTERVAL).await;
                continue;
            }
        };
        tracing::info!(node = ctx.id, "CHARM leader");
        match lead(ctx, &mut etcd, &leader).await {
            Ok(()) => tracing::warn!(node = ctx.id, "no longer the CHARM leader"),
            Err(e) => tracing::warn!(node = ctx.id, "CHARM: {e}; campaigning again"),
        }
        tokio::time::sleep(limits::CLUSTER_RETRY_INTERVAL).await;
    }
}

/// Leads until deposed (`Ok`) or etcd fails (`Err`).
async fn lead(ctx: &Ctx, etcd: &mut Client, leader: &LeaderKey) -> Result<(), String> {
    // Watch first, read second: a change between the two is not missed.
    let (_watcher, mut changes) = etcd
        .watch(ctx.keys.all(), Some(WatchOptions::new().with_prefix()))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let state = read_state(etcd, &ctx.keys).await?;
        if !state.leads(leader) {
            return Ok(());
        }
        // The key deleted under the cluster: start from the placement this
        // node follows, so that versions still only grow.
        let followed = super::lock(&ctx.shared.latest).clone();
        if let Some(next) = state.next(ctx.id, followed.as_deref()) {
            let version = next.version();
            match publish(etcd, &ctx.keys, leader, state.placement_revision, &next).await {
                Ok(Publish::Published) => {
                    tracing::info!(
                        node = ctx.id,
                        version,
                        members = next.ring().members().len(),
                        "CHARM published a placement"
                    )
                }
                Ok(Publish::Fenced) => return Ok(()),
                Ok(Publish::Stale) => continue,
                Err(e) => return Err(e.to_string()),
            }
        }
        next_change(&mut changes, ctx.lease_ttl).await?;
    }
}

/// Waits for the next change under the watched prefix, or `backstop`
/// (a change missed would otherwise wait for the next one); `Err` when the
/// watch ends or fails (the caller watches again).
pub(super) async fn next_change(
    changes: &mut WatchStream,
    backstop: std::time::Duration,
) -> Result<(), String> {
    tokio::select! {
        change = changes.message() => match change {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err("watch ended".into()),
            Err(e) => Err(e.to_string()),
        },
        () = tokio::time::sleep(backstop) => Ok(()),
    }
}

/// A CHARM candidate: its election key (the one created first leads).
pub(super) struct Candidate {
    pub key: Vec<u8>,
    pub create_revision: i64,
    pub node: Option<NodeId>,
}

/// The cluster as the leader (or a candidate) reads it, at one revision.
pub(super) struct State {
    pub candidates: Vec<Candidate>,
    nodes: Vec<(NodeRecord, i64)>,
    reports: Vec<Suspicion>,
    placement: Option<Placement>,
    /// The mod revision of `placement` (0: none), for the fenced publish.
    pub placement_revision: i64,
    /// `placement` holds something that is not a placement.
    placement_bad: bool,
}

pub(super) async fn read_state(etcd: &mut Client, keys: &Keys) -> Result<State, String> {
    let all = etcd
        .get(keys.all(), Some(GetOptions::new().with_prefix()))
        .await
        .map_err(|e| e.to_string())?;
    let election = keys.election();
    let mut state = State {
        candidates: Vec::new(),
        nodes: Vec::new(),
        reports: Vec::new(),
        placement: None,
        placement_revision: 0,
        placement_bad: false,
    };
    for kv in all.kvs() {
        if kv.key().starts_with(election.as_bytes()) {
            state.candidates.push(Candidate {
                key: kv.key().to_vec(),
                create_revision: kv.create_revision(),
                node: kv.value_str().ok().and_then(|v| v.parse().ok()),
            });
            continue;
        }
        match keys.parse(kv.key()) {
            Key::Node(id) => match NodeRecord::parse(kv.value()) {
                Ok(record) if record.id == id => state.nodes.push((record, kv.lease())),
                _ => tracing::warn!(node = id, "bad node record left out of the placement"),
            },
            Key::Suspect { suspect, reporter } => {
                if let Some(lease) = std::str::from_utf8(kv.value())
                    .ok()
                    .and_then(|v| v.parse().ok())
                {
                    state.reports.push(Suspicion {
                        suspect,
                        reporter,
                        lease,
                    });
                }
            }
            Key::Placement => {
                state.placement_revision = kv.mod_revision();
                match published::from_json(kv.value()) {
                    Ok(p) => state.placement = Some(p),
                    Err(e) => {
                        tracing::error!("the published placement is refused: {e}");
                        state.placement_bad = true;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(state)
}

impl State {
    /// Whether `leader`'s election key still exists as it was created.
    fn leads(&self, leader: &LeaderKey) -> bool {
        self.candidates
            .iter()
            .any(|c| c.key == leader.key() && c.create_revision == leader.rev())
    }

    /// The candidate that leads: the one whose key was created first.
    pub(super) fn leader(&self) -> Option<&Candidate> {
        self.candidates.iter().min_by_key(|c| c.create_revision)
    }

    /// The failure reports.
    pub(super) fn reports(&self) -> &[Suspicion] {
        &self.reports
    }

    /// The registered nodes as the failure rule sees them, given the
    /// placement in force (`prev`): a spare holding members is in use.
    pub(super) fn members(&self, prev: Option<&Placement>) -> Vec<Member> {
        let holders: BTreeSet<NodeId> = prev
            .iter()
            .flat_map(|p| p.assignment().map(|(_, a)| a.node))
            .collect();
        self.nodes
            .iter()
            .map(|(r, lease)| Member {
                id: r.id,
                lease: *lease,
                in_use: r.state != NodeState::Spare || holders.contains(&r.id),
            })
            .collect()
    }

    /// The published placement, if it parses.
    pub(super) fn placement(&self) -> Option<&Placement> {
        self.placement.as_ref()
    }

    /// What CHARM publishes next, if anything; `followed` stands in for a
    /// published placement that is missing.
    fn next(&self, leader: NodeId, followed: Option<&Placement>) -> Option<Placement> {
        if self.placement_bad {
            // Starting over would take versions back: an operator must
            // remove or fix the key.
            return None;
        }
        let prev = self.placement.as_ref().or(followed);
        let members = self.members(prev);
        let failed = health::failed(&members, &self.reports, leader);
        if !failed.is_empty() {
            tracing::info!(?failed, "nodes reported failed by their peers");
        }
        let healthy: Vec<NodeRecord> = self
            .nodes
            .iter()
            .filter(|(r, _)| !failed.contains(&r.id))
            .map(|(r, _)| r.clone())
            .collect();
        charm::next(prev, &healthy)
    }
}
