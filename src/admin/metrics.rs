//! `/metrics`: every shard's counters in the Prometheus text format, then
//! the cluster as this node sees it (placement version, nodes by region
//! and state, link health per peer).

use std::fmt::Write;

use super::cluster::{ClusterView, PeerLink};
use crate::shard::message::ShardStats;

/// A metric: name, Prometheus type, help text, and how to read it.
type Metric = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ShardStats) -> u64,
);

pub fn render(stats: &[ShardStats], cluster: &ClusterView) -> String {
    let mut out = String::new();
    let metrics: [Metric; 15] = [
        (
            "transponder_connections",
            "gauge",
            "Open websocket connections.",
            |s| s.connections,
        ),
        (
            "transponder_channels",
            "gauge",
            "Channels owned by the shard's channel server.",
            |s| s.channels,
        ),
        (
            "transponder_presence_users",
            "gauge",
            "Users with presence state on the shard (connected, away or watched).",
            |s| s.presence_users,
        ),
        (
            "transponder_subscriptions",
            "gauge",
            "(channel, gateway shard) subscriptions.",
            |s| s.subscriptions,
        ),
        (
            "transponder_queue_bytes",
            "gauge",
            "Bytes queued for connections.",
            |s| s.queue_bytes,
        ),
        (
            "transponder_events_in_total",
            "counter",
            "Events published to the shard's channels.",
            |s| s.events_in,
        ),
        (
            "transponder_events_out_total",
            "counter",
            "Event copies sent to gateway shards.",
            |s| s.events_out,
        ),
        (
            "transponder_deliveries_total",
            "counter",
            "Frames queued on connections.",
            |s| s.deliveries,
        ),
        (
            "transponder_slow_consumers_total",
            "counter",
            "Connections closed as slow consumers.",
            |s| s.slow_consumers,
        ),
        (
            "transponder_users",
            "gauge",
            "Users homed on the shard.",
            |s| s.users,
        ),
        (
            "transponder_online_users",
            "gauge",
            "Users homed on the shard that are active.",
            |s| s.online_users,
        ),
        (
            "transponder_mesh_sent_total",
            "counter",
            "Messages sent to shards.",
            |s| s.mesh_sent,
        ),
        (
            "transponder_mesh_received_total",
            "counter",
            "Messages received from shards.",
            |s| s.mesh_received,
        ),
        (
            "transponder_outbox_messages",
            "gauge",
            "Messages waiting for room in a mesh queue.",
            |s| s.outbox_len,
        ),
        (
            "transponder_scheduled_pending",
            "gauge",
            "Scheduled messages waiting on the shard (cancelled ones until their time).",
            |s| s.scheduled_pending,
        ),
    ];
    for (name, kind, help, get) in metrics {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for s in stats {
            let _ = writeln!(out, "{name}{{shard=\"{}\"}} {}", s.shard, get(s));
        }
    }
    render_cluster(&mut out, cluster);
    out
}

/// A per-peer link metric: name, type, help, and how to read it.
type LinkMetric = (
    &'static str,
    &'static str,
    &'static str,
    fn(&PeerLink) -> Option<u64>,
);

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The cluster's gauges. Region and state labels are safe as they are:
/// record names hold only `[A-Za-z0-9._-]` (`cluster::record::check_name`).
fn render_cluster(out: &mut String, c: &ClusterView) {
    header(
        out,
        "transponder_placement_version",
        "gauge",
        "Version (epoch) of the placement this node serves.",
    );
    let _ = writeln!(out, "transponder_placement_version {}", c.version);
    header(
        out,
        "transponder_region_draining",
        "gauge",
        "1 while this node's region is drained.",
    );
    let _ = writeln!(
        out,
        "transponder_region_draining {}",
        u8::from(c.drain.is_some())
    );
    header(
        out,
        "transponder_cluster_nodes",
        "gauge",
        "Registered nodes by region and state.",
    );
    for ((region, state), n) in c.nodes_by_region() {
        let _ = writeln!(
            out,
            "transponder_cluster_nodes{{region=\"{region}\",state=\"{state}\"}} {n}"
        );
    }
    let links: [LinkMetric; 7] = [
        (
            "transponder_link_up",
            "gauge",
            "1 when a link between this node and the peer is connected.",
            |l| Some(u64::from(l.up)),
        ),
        (
            "transponder_link_last_heard_ms",
            "gauge",
            "Milliseconds since this node last read from the peer.",
            |l| l.last_heard_ms,
        ),
        (
            "transponder_link_messages_sent_total",
            "counter",
            "Messages sent to the peer.",
            |l| Some(l.messages_sent),
        ),
        (
            "transponder_link_bytes_sent_total",
            "counter",
            "Bytes written to the peer's links.",
            |l| Some(l.bytes_sent),
        ),
        (
            "transponder_link_messages_received_total",
            "counter",
            "Messages received from the peer.",
            |l| Some(l.messages_received),
        ),
        (
            "transponder_link_bytes_received_total",
            "counter",
            "Bytes read from the peer's links.",
            |l| Some(l.bytes_received),
        ),
        (
            "transponder_link_dropped_frames_total",
            "counter",
            "Times frames to the peer were dropped (buffer full, write failed).",
            |l| Some(l.dropped_frames),
        ),
    ];
    let peers = c.peers();
    for (name, kind, help, get) in links {
        header(out, name, kind, help);
        for &peer in &peers {
            let link = c.links.get(&peer).cloned().unwrap_or_default();
            if let Some(v) = get(&link) {
                let _ = writeln!(out, "{name}{{peer=\"{peer}\"}} {v}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::record::{NodeRecord, NodeState};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn single_node() -> ClusterView {
        ClusterView {
            node: 0,
            version: 0,
            region: None,
            drain: None,
            nodes: Arc::default(),
            links: BTreeMap::new(),
        }
    }

    #[test]
    fn renders_the_cluster() {
        let record = |id, region: &str, state| NodeRecord {
            id,
            name: format!("n{id}"),
            link: None,
            gateway: String::new(),
            api: String::new(),
            admin: String::new(),
            cores: 2,
            region: region.into(),
            state,
        };
        let nodes = [
            record(1, "east", NodeState::Draining),
            record(2, "east", NodeState::Draining),
            record(3, "west", NodeState::Active),
        ];
        let view = ClusterView {
            node: 1,
            version: 7,
            region: Some("east".into()),
            drain: None,
            nodes: Arc::new(nodes.into_iter().map(|r| (r.id, r)).collect()),
            links: [(
                2,
                PeerLink {
                    up: true,
                    bytes_sent: 99,
                    ..PeerLink::default()
                },
            )]
            .into(),
        };
        let text = render(&[], &view);
        assert!(text.contains("transponder_placement_version 7\n"), "{text}");
        assert!(text.contains("transponder_cluster_nodes{region=\"east\",state=\"draining\"} 2\n"));
        assert!(text.contains("transponder_cluster_nodes{region=\"west\",state=\"active\"} 1\n"));
        assert!(text.contains("transponder_link_up{peer=\"2\"} 1\n"));
        // A registered peer with no link yet is down, and this node is no peer.
        assert!(text.contains("transponder_link_up{peer=\"3\"} 0\n"));
        assert!(!text.contains("peer=\"1\""));
        assert!(text.contains("transponder_link_bytes_sent_total{peer=\"2\"} 99\n"));
        assert!(text.contains("transponder_region_draining 0\n"));
    }

    #[test]
    fn renders_each_shard() {
        let stats = vec![
            ShardStats {
                shard: 0,
                connections: 3,
                ..Default::default()
            },
            ShardStats {
                shard: 1,
                connections: 4,
                ..Default::default()
            },
        ];
        let text = render(&stats, &single_node());
        assert!(text.contains("transponder_connections{shard=\"0\"} 3\n"));
        assert!(text.contains("transponder_connections{shard=\"1\"} 4\n"));
        assert!(text.contains("# TYPE transponder_deliveries_total counter\n"));
    }
}
