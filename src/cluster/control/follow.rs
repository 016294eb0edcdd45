//! Following the cluster's keys on every node: the published placement
//! (handed to the node when newer), the registry (`nodes/`) and drain
//! requests (`drain/`). One watch over the cluster prefix, started at the
//! revision of a full read, so no change falls between the two; if the
//! watch breaks (etcd restarted, history compacted), it reads again.

use std::collections::BTreeMap;
use std::sync::Arc;

use etcd_client::{EventType, GetOptions, KeyValue, WatchOptions};
use serde::Deserialize;

use super::{lock, ControlEvent, Ctx, Registered};
use crate::cluster::keys::Key;
use crate::cluster::published;
use crate::cluster::record::{NodeRecord, NodeState};
use crate::limits;

/// Runs for as long as the node lives.
pub async fn follow(ctx: &Ctx) {
    loop {
        if let Err(e) = follow_once(ctx).await {
            tracing::warn!(node = ctx.id, "following the cluster: {e}; reading again");
        }
        tokio::time::sleep(limits::CLUSTER_RETRY_INTERVAL).await;
    }
}

async fn follow_once(ctx: &Ctx) -> Result<(), String> {
    let mut etcd = ctx.etcd();
    let all = etcd
        .get(ctx.keys.all(), Some(GetOptions::new().with_prefix()))
        .await
        .map_err(|e| e.to_string())?;
    let revision = all.header().map_or(0, |h| h.revision());
    let mut nodes = BTreeMap::new();
    let mine = ctx.record.borrow().region.clone();
    let mut mine_drained = false;
    for kv in all.kvs() {
        match ctx.keys.parse(kv.key()) {
            Key::Node(id) => {
                if let Some(node) = registered(id, kv) {
                    nodes.insert(id, node);
                }
            }
            Key::Placement => placement(ctx, kv.value()).await,
            Key::Drain(region) => {
                mine_drained |= region == mine;
                drain(ctx, region, Some(kv.value())).await;
            }
            _ => {}
        }
    }
    // A drain of this node's region deleted while the watch was broken
    // ends here.
    if !mine_drained && ctx.record.borrow().state == NodeState::Draining {
        drain(ctx, mine, None).await;
    }
    ctx.shared.registry.replace(nodes);
    registry_changed(ctx);
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision + 1);
    let (_watcher, mut stream) = etcd
        .watch(ctx.keys.all(), Some(options))
        .await
        .map_err(|e| e.to_string())?;
    while let Some(answer) = stream.message().await.map_err(|e| e.to_string())? {
        if answer.canceled() {
            return Err(format!("watch cancelled: {}", answer.cancel_reason()));
        }
        for event in answer.events() {
            let Some(kv) = event.kv() else { continue };
            let put = event.event_type() == EventType::Put;
            match ctx.keys.parse(kv.key()) {
                Key::Node(id) if put => {
                    if let Some(node) = registered(id, kv) {
                        ctx.shared.registry.update(|m| {
                            m.insert(id, node);
                        });
                        registry_changed(ctx);
                    }
                }
                Key::Node(id) => {
                    ctx.shared.registry.update(|m| {
                        m.remove(&id);
                    });
                    registry_changed(ctx);
                    if id == ctx.id {
                        // Deleted under a live lease (by hand?): say it
                        // again. Under a lapsed one, the put fails and the
                        // session registers anew anyway.
                        ctx.record.send_modify(|_| {});
                    }
                }
                Key::Placement if put => placement(ctx, kv.value()).await,
                Key::Drain(region) => drain(ctx, region, put.then(|| kv.value())).await,
                _ => {}
            }
        }
    }
    Err("watch ended".into())
}

/// Tells the node the registry changed (its shards show and use the node
/// records: `/v1/ring`, where a drained region's clients go). Never waits:
/// with the queue full (a node not taking its events), the next event of
/// any kind carries the records along anyway.
fn registry_changed(ctx: &Ctx) {
    if ctx.shared.events.try_send(ControlEvent::Registry).is_err() {
        tracing::debug!(
            node = ctx.id,
            "registry change not queued: events queue full"
        );
    }
}

fn registered(id: u16, kv: &KeyValue) -> Option<Registered> {
    match NodeRecord::parse(kv.value()) {
        Ok(record) if record.id == id => Some(Registered {
            record,
            lease: kv.lease(),
        }),
        Ok(record) => {
            tracing::warn!(
                key = id,
                id = record.id,
                "node record under another id's key; ignored"
            );
            None
        }
        Err(e) => {
            tracing::warn!(node = id, "bad node record ignored: {e}");
            None
        }
    }
}

/// A published placement: handed to the node if newer than the last one.
async fn placement(ctx: &Ctx, value: &[u8]) {
    let placement = match published::from_json(value) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            tracing::error!("the published placement is refused: {e}");
            return;
        }
    };
    {
        let mut latest = lock(&ctx.shared.latest);
        if latest
            .as_ref()
            .is_some_and(|l| l.version() >= placement.version())
        {
            return;
        }
        *latest = Some(placement.clone());
    }
    tracing::info!(
        node = ctx.id,
        version = placement.version(),
        members = placement.ring().members().len(),
        "placement"
    );
    let holds = placement.assignment().any(|(_, a)| a.node == ctx.id);
    ctx.record.send_if_modified(|r| {
        // A spare that was given members is in use from now on.
        let becomes_active = holds && r.state == NodeState::Spare;
        if becomes_active {
            r.state = NodeState::Active;
        }
        becomes_active
    });
    let _ = ctx
        .shared
        .events
        .send_async(ControlEvent::Placement(placement))
        .await;
}

/// `drain/<region>`: `{"to":"<region>","rate":N}`, both optional.
#[derive(Deserialize, Default)]
struct DrainRequest {
    to: Option<String>,
    rate: Option<u32>,
}

/// A drain request put (`Some`) or withdrawn (`None`) for `region`.
async fn drain(ctx: &Ctx, region: String, value: Option<&[u8]>) {
    let mine = ctx.record.borrow().region == region;
    let Some(value) = value else {
        if mine {
            let holds = lock(&ctx.shared.latest)
                .as_ref()
                .is_some_and(|p| p.assignment().any(|(_, a)| a.node == ctx.id));
            let back = if holds {
                NodeState::Active
            } else {
                ctx.base_state
            };
            ctx.record.send_if_modified(|r| {
                let changed = r.state == NodeState::Draining;
                if changed {
                    r.state = back;
                }
                changed
            });
        }
        let _ = ctx
            .shared
            .events
            .send_async(ControlEvent::DrainEnded { region })
            .await;
        return;
    };
    let request: DrainRequest = match serde_json::from_slice(value) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(%region, "bad drain request ignored: {e}");
            return;
        }
    };
    if mine {
        ctx.record.send_if_modified(|r| {
            let changed = r.state != NodeState::Draining;
            r.state = NodeState::Draining;
            changed
        });
    }
    let event = ControlEvent::Drain {
        region,
        to: request.to,
        rate: request.rate,
    };
    let _ = ctx.shared.events.send_async(event).await;
}
