//! What the control thread tells the node, and what a shard does with it.

use std::rc::Rc;
use std::sync::Arc;

use crate::placement::Placement;
use crate::shard::Shard;

/// One thing the node must act on, from the control thread, in order.
#[derive(Debug, Clone)]
pub enum ControlEvent {
    /// A newer placement (versions only grow): every shard swaps to it.
    Placement(Arc<Placement>),
    /// The node's lease was lost: for as long as it was gone the node was
    /// not part of the cluster, and CHARM may have given its channels to
    /// another node. If it did, the store refuses this node's writes to
    /// them from the successor's claim on, and the next placement this node
    /// sees (a higher version than any such move) takes them away here.
    Fenced,
    /// The operator drains `region` (`drain/<region>`): its gateways send
    /// clients to `to`, at most `rate` per second.
    Drain {
        region: String,
        to: Option<String>,
        rate: Option<u32>,
    },
    /// `drain/<region>` was deleted: the region accepts clients again.
    DrainEnded { region: String },
    /// The registry (`nodes/`) changed: the forwarder hands every shard the
    /// node records anew (`Control::Nodes`); shards ignore the event itself.
    Registry,
}

/// What a shard does with an event: takes a new placement (and moves what
/// it moves, `cluster::apply_placement`); begins or ends a drain of this
/// node's region (`cluster::region`, `gateway::region_drain`); a lost
/// lease is logged, and nothing more, by design: the store is what fences
/// (a write under an epoch a successor claimed is refused, `member_epochs`),
/// so a node placed out cannot write whatever it believes, while a node
/// that merely lost sight of etcd — every node, when etcd is down — goes
/// on serving the placement it has instead of stopping the whole fleet.
pub fn apply_on_shard(shard: &Rc<Shard>, event: ControlEvent) {
    match event {
        ControlEvent::Placement(placement) => crate::cluster::apply_placement(shard, placement),
        ControlEvent::Fenced => {
            tracing::warn!(
                shard = shard.id,
                epoch = shard.epoch(),
                "fenced: the node's lease was lost"
            )
        }
        ControlEvent::Drain { region, to, rate } => {
            tracing::info!(shard = shard.id, %region, ?to, ?rate, "drain requested");
            if let Some(generation) = crate::cluster::region::begin_drain(region, to, rate) {
                crate::gateway::region_drain::start(shard, generation);
            }
        }
        ControlEvent::DrainEnded { region } => {
            if crate::cluster::region::end_drain(&region) {
                tracing::info!(shard = shard.id, %region, "drain ended: accepting again");
            }
        }
        ControlEvent::Registry => {}
    }
}
