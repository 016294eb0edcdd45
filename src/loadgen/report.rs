//! The result of a run: merged counters and latency histograms, what was
//! owed and what arrived, printed as a table for people or as one JSON
//! object (`--json`) for scripts such as benches/compare.rs.

use std::collections::BTreeMap;

use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::loadgen::plan::Counters;

/// Latency percentiles in microseconds.
#[derive(Debug, Default, Serialize, Clone)]
pub struct Latency {
    pub count: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        let us = |v: u64| v as f64 / 1000.0;
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            p50_us: us(h.value_at_quantile(0.50)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }
}

/// Server memory, read from /proc when `--server-pid` is given.
#[derive(Debug, Default, Serialize, Clone)]
pub struct ServerMemory {
    pub rss_before_bytes: u64,
    pub rss_connected_bytes: u64,
    /// (connected − before) / connections.
    pub per_connection_bytes: f64,
    pub rss_end_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub scenario: String,
    pub target: String,
    pub params: serde_json::Value,
    pub workers: usize,
    pub connections: u64,
    pub connected: u64,
    pub connect_failed: u64,
    pub dropped: u64,
    /// Handshakes (to `hello` / ready) per second while connecting.
    pub connects_per_s: f64,
    pub connect_seconds: f64,
    pub run_seconds: f64,
    pub published: u64,
    pub publish_refused: u64,
    pub publishes_per_s: f64,
    /// Deliveries owed: each published event times its channel's
    /// subscribers (typing: times the other members).
    pub expected: u64,
    pub delivered: u64,
    /// Deliveries that arrived while publishing, per second.
    pub deliveries_per_s: f64,
    /// Owed and never delivered.
    pub lost: u64,
    /// Sequence gaps seen (a later event arrived first).
    pub gaps: u64,
    pub reordered: u64,
    /// Churn: connections closed on purpose (then reopened).
    pub disconnects: u64,
    /// Users reported in presence_change events.
    pub presence_received: u64,
    pub latency: Latency,
    pub server_memory: Option<ServerMemory>,
    /// The load generator's workers' own CPU (user + system) from the
    /// connect command until every connection was ready, per connection
    /// made, in µs: on a machine the generator shares with the server,
    /// its cost per handshake bounds the rate as much as the server's.
    pub loadgen_cpu_us_per_connect: Option<f64>,
    /// `--server-pid`: the server's CPU over the same connect phase per
    /// connection made, in µs (10 ms clock ticks: read it over thousands
    /// of connections).
    pub server_cpu_us_per_connect: Option<f64>,
    /// `--server-pid`: the server's CPU seconds (user + system, all
    /// threads) over the measured window, the one `deliveries_per_s` is
    /// computed over (10 ms clock ticks).
    pub server_cpu_secs: Option<f64>,
    /// `server_cpu_secs` / `run_seconds`: 1.0 is one core busy.
    pub server_cpu_util: Option<f64>,
    /// Deliveries in the window per second of server CPU: what still
    /// compares servers when the load generator's core is the one that
    /// binds. None when the server used no measurable CPU.
    pub deliveries_per_server_cpu_sec: Option<f64>,
    pub errors: BTreeMap<String, u64>,
}

impl Summary {
    /// True when the run saw nothing wrong.
    pub fn clean(&self) -> bool {
        self.connect_failed == 0
            && self.dropped == 0
            && self.lost == 0
            && self.gaps == 0
            && self.reordered == 0
            && self.publish_refused == 0
    }

    pub fn print_table(&self) {
        let n = |v: u64| group(v as f64, 0);
        println!(
            "{} against {} ({} worker process{})",
            self.scenario,
            self.target,
            self.workers,
            if self.workers == 1 { "" } else { "es" }
        );
        println!("  {}", self.params);
        let mut rows: Vec<(&str, String)> = vec![
            (
                "connections",
                format!(
                    "{} of {} ready, {} failed, {} dropped later",
                    n(self.connected),
                    n(self.connections),
                    n(self.connect_failed),
                    n(self.dropped)
                ),
            ),
            (
                "connect rate",
                format!(
                    "{} handshakes+hello/s over {:.2} s",
                    group(self.connects_per_s, 0),
                    self.connect_seconds
                ),
            ),
        ];
        if let Some(load) = self.loadgen_cpu_us_per_connect {
            let server = self
                .server_cpu_us_per_connect
                .map_or(String::new(), |s| format!("server {s:.1} µs, "));
            rows.push((
                "connect CPU",
                format!("{server}load generator {load:.1} µs per connection"),
            ));
        }
        if self.run_seconds > 0.0 && self.expected > 0 {
            rows.push((
                "published",
                format!(
                    "{} ({}/s), {} refused",
                    n(self.published),
                    group(self.publishes_per_s, 0),
                    n(self.publish_refused)
                ),
            ));
            rows.push((
                "delivered",
                format!(
                    "{} of {} owed; {}/s while publishing ({:.1} s)",
                    n(self.delivered),
                    n(self.expected),
                    group(self.deliveries_per_s, 0),
                    self.run_seconds
                ),
            ));
            rows.push((
                "lost / gaps / reordered",
                format!(
                    "{} / {} / {}",
                    n(self.lost),
                    n(self.gaps),
                    n(self.reordered)
                ),
            ));
            let l = &self.latency;
            rows.push((
                "latency",
                format!(
                    "p50 {} · p99 {} · p99.9 {} · max {}  ({} samples)",
                    micros(l.p50_us),
                    micros(l.p99_us),
                    micros(l.p999_us),
                    micros(l.max_us),
                    n(l.count)
                ),
            ));
        }
        if let (Some(secs), Some(util)) = (self.server_cpu_secs, self.server_cpu_util) {
            let mut cpu = format!(
                "{secs:.2} s over {:.1} s ({:.0} % of a core)",
                self.run_seconds,
                util * 100.0
            );
            if let Some(per) = self
                .deliveries_per_server_cpu_sec
                .filter(|_| self.expected > 0)
            {
                cpu += &format!(": {} deliveries per CPU-second", group(per, 0));
            }
            rows.push(("server CPU", cpu));
        }
        if self.disconnects > 0 || self.presence_received > 0 {
            rows.push((
                "churn",
                format!(
                    "{} left and {} came back ({}/s); presence of {} users received",
                    n(self.disconnects),
                    n(self.connected.saturating_sub(self.connections)),
                    group(self.connects_per_s, 0),
                    n(self.presence_received)
                ),
            ));
        }
        if let Some(m) = &self.server_memory {
            rows.push((
                "server RSS",
                format!(
                    "{} MiB before, {} MiB connected, {} MiB at the end: {} B per connection",
                    group(m.rss_before_bytes as f64 / 1048576.0, 1),
                    group(m.rss_connected_bytes as f64 / 1048576.0, 1),
                    group(m.rss_end_bytes as f64 / 1048576.0, 1),
                    group(m.per_connection_bytes, 0)
                ),
            ));
        }
        let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in rows {
            println!("  {k:<w$}  {v}");
        }
        for (e, count) in &self.errors {
            println!("  error ×{count}: {e}");
        }
    }
}

/// Merges the workers' base64 V2 histograms.
pub fn merge_histograms(encoded: &[String]) -> Result<Histogram<u64>, String> {
    use base64::Engine;
    let mut all = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3).expect("bounds");
    for e in encoded {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(e)
            .map_err(|e| format!("histogram base64: {e}"))?;
        let h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut &bytes[..])
            .map_err(|e| format!("histogram: {e:?}"))?;
        all.add(h).map_err(|e| format!("histogram merge: {e:?}"))?;
    }
    Ok(all)
}

/// Sums the workers' counters; times take the earliest start and latest end.
pub fn sum(counters: &[Counters]) -> Counters {
    let mut t = Counters::default();
    for c in counters {
        t.connected += c.connected;
        t.connect_failed += c.connect_failed;
        t.dropped += c.dropped;
        t.published += c.published;
        t.publish_acked += c.publish_acked;
        t.publish_refused += c.publish_refused;
        t.delivered += c.delivered;
        t.gaps += c.gaps;
        t.reordered += c.reordered;
        t.typing_sent += c.typing_sent;
        t.typing_received += c.typing_received;
        t.disconnects += c.disconnects;
        t.presence_received += c.presence_received;
        t.connect_cpu_ns += c.connect_cpu_ns;
        if c.connect_started_ns != 0
            && (t.connect_started_ns == 0 || c.connect_started_ns < t.connect_started_ns)
        {
            t.connect_started_ns = c.connect_started_ns;
        }
        t.last_ready_ns = t.last_ready_ns.max(c.last_ready_ns);
    }
    t
}

/// 1234567.8 → "1,234,568" (with `decimals` after the point).
pub fn group(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i.to_string(), format!(".{f}")),
        None => (s, String::new()),
    };
    let (sign, digits) = int
        .strip_prefix('-')
        .map_or(("", int.as_str()), |d| ("-", d));
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    format!("{sign}{out}{frac}")
}

fn micros(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping() {
        assert_eq!(group(1234567.8, 0), "1,234,568");
        assert_eq!(group(999.0, 0), "999");
        assert_eq!(group(1000.25, 1), "1,000.2");
        assert_eq!(group(-12345.0, 0), "-12,345");
    }

    #[test]
    fn histograms_survive_the_trip_between_processes() {
        use base64::Engine;
        use hdrhistogram::serialization::{Serializer, V2Serializer};
        let mut parts = Vec::new();
        for base in [10_000u64, 1_000_000] {
            let mut h = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3).unwrap();
            for i in 0..100 {
                h.record(base + i).unwrap();
            }
            let mut b = Vec::new();
            V2Serializer::new().serialize(&h, &mut b).unwrap();
            parts.push(base64::engine::general_purpose::STANDARD.encode(b));
        }
        let h = merge_histograms(&parts).unwrap();
        assert_eq!(h.len(), 200);
        let l = Latency::of(&h);
        assert!(l.p50_us < 11.0 && l.max_us > 999.0, "{l:?}");
    }
}
