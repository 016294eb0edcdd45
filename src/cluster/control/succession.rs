//! Succession: a CHARM leader that died is replaced before its lease lapses.
//!
//! Candidates wait in etcd's election until the leader's key goes, which
//! for a killed leader is when its lease lapses (the TTL, 2 s): until then
//! nobody publishes, so the dead leader's own channels, and any other
//! failure meanwhile, wait that long. Its peers know sooner: their links
//! to it ended, and they reported it. Every node that is not the leader
//! judges the leader by the failure rule ([`health::leader_failed`]: a
//! majority of the other in-use nodes report it, and it has not reported
//! the judge), and when it fails, deletes the leader's election key — that
//! exact key, compared by its create revision, so a newer leader is never
//! touched. That ends the leadership as a lapsed lease would: the deposed
//! leader's publishes are fenced by that key ([`super::leader::publish`]),
//! and the next candidate leads and publishes a placement without it.
//!
//! A deposed leader that is in fact alive (cut off from its peers, not from
//! etcd) sees its key gone, stops leading and campaigns again; it is a node
//! failed on reports like any other, back when its links are.

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp, WatchOptions};

use super::leader::{next_change, read_state};
use super::Ctx;
use crate::cluster::health;
use crate::limits;

/// Judges the leader whenever a key of the cluster changes (and every
/// TTL), for as long as the node lives.
pub(super) async fn watch(ctx: &Ctx) {
    let mut etcd = ctx.etcd();
    loop {
        if let Err(e) = judge_on_changes(ctx, &mut etcd).await {
            tracing::warn!(node = ctx.id, "succession: {e}");
        }
        tokio::time::sleep(limits::CLUSTER_RETRY_INTERVAL).await;
    }
}

async fn judge_on_changes(ctx: &Ctx, etcd: &mut Client) -> Result<(), String> {
    // Watch first, read second: a change between the two is not missed.
    let (_watcher, mut changes) = etcd
        .watch(ctx.keys.all(), Some(WatchOptions::new().with_prefix()))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        judge(ctx, etcd).await?;
        next_change(&mut changes, ctx.lease_ttl).await?;
    }
}

/// Ends the leader's leadership if the failure rule fails it.
async fn judge(ctx: &Ctx, etcd: &mut Client) -> Result<(), String> {
    let state = read_state(etcd, &ctx.keys).await?;
    let Some(leader) = state.leader() else {
        return Ok(());
    };
    let Some(leader_id) = leader.node else {
        return Ok(());
    };
    if leader_id == ctx.id {
        return Ok(());
    }
    let members = state.members(state.placement());
    if !health::leader_failed(&members, state.reports(), leader_id, ctx.id) {
        return Ok(());
    }
    let txn = Txn::new()
        .when([Compare::create_revision(
            leader.key.clone(),
            CompareOp::Equal,
            leader.create_revision,
        )])
        .and_then([TxnOp::delete(leader.key.clone(), None)]);
    let answer = etcd.txn(txn).await.map_err(|e| e.to_string())?;
    if answer.succeeded() {
        tracing::warn!(
            node = ctx.id,
            leader = leader_id,
            "the CHARM leader is failed by its peers' reports: its leadership ended"
        );
    }
    Ok(())
}
