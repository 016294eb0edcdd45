//! `/metrics`: every shard's counters in the Prometheus text format.

use std::fmt::Write;

use crate::shard::message::ShardStats;

/// A metric: name, Prometheus type, help text, and how to read it.
type Metric = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ShardStats) -> u64,
);

pub fn render(stats: &[ShardStats]) -> String {
    let mut out = String::new();
    let metrics: [Metric; 14] = [
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
    ];
    for (name, kind, help, get) in metrics {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for s in stats {
            let _ = writeln!(out, "{name}{{shard=\"{}\"}} {}", s.shard, get(s));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let text = render(&stats);
        assert!(text.contains("transponder_connections{shard=\"0\"} 3\n"));
        assert!(text.contains("transponder_connections{shard=\"1\"} 4\n"));
        assert!(text.contains("# TYPE transponder_deliveries_total counter\n"));
    }
}
