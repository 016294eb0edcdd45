//! The node's registration: `nodes/<id>` under a lease, kept alive every
//! third of its TTL. Everything the node writes lives under that lease (its
//! record, its failure reports, its CHARM candidacy), so when the node dies
//! or is cut off from etcd for the TTL, all of it goes at once.
//!
//! A lease is lost when etcd says it expired or when no keep-alive was
//! answered for a whole TTL (the node cannot tell then whether etcd still
//! holds it, and must assume not). Then the node may have been replaced:
//! it is told ([`ControlEvent::Fenced`]) and registers again under a new
//! lease.

use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};

use super::{leader, ControlEvent, Ctx, Report};
use crate::cluster::keys::Keys;
use crate::cluster::record::NodeRecord;
use crate::limits;

/// Grants a lease and creates `nodes/<id>` under it. If the key is held (a
/// previous run of this node, killed less than a TTL ago, or another live
/// process with the same id), waits for it to lapse, up to three TTLs.
pub async fn register(
    client: &mut Client,
    keys: &Keys,
    record: &NodeRecord,
    ttl: Duration,
) -> Result<i64, String> {
    let etcd = |e: etcd_client::Error| format!("etcd: {e}");
    let key = keys.node(record.id);
    let deadline = Instant::now() + 3 * ttl;
    loop {
        // A lease per attempt: one granted before a wait would lapse
        // during it.
        let lease = client
            .lease_grant(ttl_secs(ttl), None)
            .await
            .map_err(etcd)?
            .id();
        let txn = Txn::new()
            .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                record.to_json(),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key.clone(), None)]);
        let answer = client.txn(txn).await.map_err(etcd)?;
        if answer.succeeded() {
            return Ok(lease);
        }
        let _ = client.lease_revoke(lease).await;
        if Instant::now() >= deadline {
            let holder = holder_name(&answer.op_responses());
            return Err(format!(
                "node id {} is registered by another live process ({holder}); \
                 is this data dir or --node-name used twice?",
                record.id
            ));
        }
        tokio::time::sleep(ttl / 4).await;
    }
}

fn holder_name(answers: &[TxnOpResponse]) -> String {
    answers
        .iter()
        .find_map(|a| match a {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| {
                NodeRecord::parse(kv.value())
                    .map_or_else(|e| e, |r| format!("node name {:?}", r.name))
            }),
            _ => None,
        })
        .unwrap_or_else(|| "unknown".into())
}

/// etcd counts TTLs in whole seconds.
fn ttl_secs(ttl: Duration) -> i64 {
    ttl.as_secs().max(1) as i64
}

/// Runs the node's sessions, one per lease, for as long as the node lives.
pub async fn sessions(ctx: &Ctx, first: i64) {
    let mut lease = first;
    loop {
        ctx.lease.set(lease);
        let why = tokio::select! {
            why = keep_alive(ctx, lease) => why,
            () = leader::serve(ctx, lease) => "the CHARM task ended".to_string(),
            () = write_reports(ctx, lease) => "the report task ended".to_string(),
            () = write_record(ctx, lease) => "the record task ended".to_string(),
            () = super::succession::watch(ctx) => "the succession task ended".to_string(),
        };
        tracing::warn!(
            node = ctx.id,
            lease = format_args!("{lease:x}"),
            "lease lost ({why}): fenced, registering again"
        );
        let _ = ctx.shared.events.send_async(ControlEvent::Fenced).await;
        // If etcd still holds the old lease, free the id at once.
        let mut etcd = ctx.etcd();
        let _ = tokio::time::timeout(ctx.lease_ttl, etcd.lease_revoke(lease)).await;
        // etcd may be down for a while: back off, up to a TTL between tries.
        let mut pause = limits::CLUSTER_RETRY_INTERVAL;
        lease = loop {
            let record = ctx.record.borrow().clone();
            match register(&mut etcd, &ctx.keys, &record, ctx.lease_ttl).await {
                Ok(lease) => break lease,
                Err(e) => {
                    tracing::warn!(node = ctx.id, "cannot register again: {e}");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(ctx.lease_ttl);
                }
            }
        };
        tracing::info!(
            node = ctx.id,
            lease = format_args!("{lease:x}"),
            "registered again"
        );
    }
}

/// Keeps `lease` alive; returns why once it is lost.
async fn keep_alive(ctx: &Ctx, lease: i64) -> String {
    let mut etcd = ctx.etcd();
    let (mut keeper, mut answers) = match etcd.lease_keep_alive(lease).await {
        Ok(pair) => pair,
        Err(e) => return format!("keep-alive stream: {e}"),
    };
    let mut answered = Instant::now();
    loop {
        let sent = Instant::now();
        if let Err(e) = keeper.keep_alive().await {
            return format!("keep-alive: {e}");
        }
        match tokio::time::timeout(ctx.keepalive_interval(), answers.message()).await {
            Ok(Ok(Some(answer))) if answer.ttl() > 0 => answered = Instant::now(),
            Ok(Ok(Some(_))) => return "etcd says it expired".into(),
            Ok(Ok(None)) => return "keep-alive stream ended".into(),
            Ok(Err(e)) => return format!("keep-alive stream: {e}"),
            Err(_) => {}
        }
        if answered.elapsed() >= ctx.lease_ttl {
            return "no keep-alive answered for a whole TTL".into();
        }
        tokio::time::sleep_until((sent + ctx.keepalive_interval()).into()).await;
    }
}

/// Puts the node's record whenever it changes (a spare given members says
/// `active`; a drained region says `draining`), and once at the start of
/// each session.
async fn write_record(ctx: &Ctx, lease: i64) {
    let mut changes = ctx.record.subscribe();
    changes.mark_changed();
    let mut etcd = ctx.etcd();
    while changes.changed().await.is_ok() {
        let json = changes.borrow_and_update().to_json();
        let put = etcd.put(
            ctx.keys.node(ctx.id),
            json,
            Some(PutOptions::new().with_lease(lease)),
        );
        if let Err(e) = put.await {
            tracing::warn!(node = ctx.id, "cannot update the node's record: {e}");
        }
    }
    // The sender lives in `ctx`: never reached while the node runs.
    std::future::pending::<()>().await
}

/// Writes the links' failure reports under the lease: first every report
/// still standing (a new lease drops the old one's keys), then each new one.
async fn write_reports(ctx: &Ctx, lease: i64) {
    let mut etcd = ctx.etcd();
    let standing: Vec<(u16, i64)> = ctx
        .suspicions
        .borrow()
        .iter()
        .map(|(&n, &l)| (n, l))
        .collect();
    for (suspect, seen) in standing {
        put_report(ctx, &mut etcd, lease, suspect, seen).await;
    }
    while let Ok(report) = ctx.shared.reports.recv_async().await {
        match report {
            Report::Suspect(suspect) => {
                // The report names the registration it is about: a node that
                // restarts is not held to its old run's reports.
                let Some(seen) = ctx.shared.registry.lease_of(suspect) else {
                    tracing::debug!(suspect, "report about an unregistered node ignored");
                    continue;
                };
                ctx.suspicions.borrow_mut().insert(suspect, seen);
                put_report(ctx, &mut etcd, lease, suspect, seen).await;
            }
            Report::Withdraw(suspect) => {
                if ctx.suspicions.borrow_mut().remove(&suspect).is_some() {
                    let key = ctx.keys.suspect(suspect, ctx.id);
                    if let Err(e) = etcd.delete(key, None).await {
                        tracing::warn!(suspect, "cannot withdraw a failure report: {e}");
                    }
                }
            }
        }
    }
    // Every sender is gone (the node is leaving): nothing more to write.
    std::future::pending::<()>().await
}

async fn put_report(ctx: &Ctx, etcd: &mut Client, lease: i64, suspect: u16, seen: i64) {
    tracing::info!(node = ctx.id, suspect, "reporting a peer whose link died");
    let key = ctx.keys.suspect(suspect, ctx.id);
    let put = etcd.put(
        key,
        seen.to_string(),
        Some(PutOptions::new().with_lease(lease)),
    );
    if let Err(e) = put.await {
        tracing::warn!(suspect, "cannot write a failure report: {e}");
    }
}
