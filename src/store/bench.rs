//! Micro-benchmark of group commit (not a test; ignored by default):
//! acknowledged message inserts per second with many writers in flight.
//!
//! ```text
//! tests/with_pg.sh cargo test --release --lib store::bench -- --ignored --nocapture
//! BENCH_SECS=10 BENCH_WRITERS=64,256 BENCH_BACKENDS=sqlite cargo test --release --lib store::bench -- --ignored --nocapture
//! ```
//!
//! `BENCH_BACKENDS` (default `sqlite,postgres`) chooses the backends; the
//! PostgreSQL one is the server `TRANSPONDER_TEST_PG` names (see
//! `testutil.rs`), which `tests/with_pg.sh` starts on this machine.
//!
//! Writers are async tasks spread over two driver threads, the way two
//! shards' API handlers would await `Store::write`. Each writer inserts into
//! its own channel, one message at a time, waiting for each acknowledgement.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::testutil::{join_all, PgSchema, TempDir, TempStore};
use super::{Durability, NewMessage};

const DRIVERS: usize = 2;

fn run(backend: &str, durability: Durability, writers: usize, secs: u64) {
    let temp = match backend {
        "sqlite" => TempStore::Dir(TempDir::new("bench")),
        "postgres" => TempStore::Schema(PgSchema::new("bench")),
        other => panic!("BENCH_BACKENDS: unknown backend {other:?}"),
    };
    let store = temp.open(durability);
    let acked = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let (b0, j0) = store.stats();
    let drivers: Vec<_> = (0..DRIVERS)
        .map(|d| {
            let store = store.clone();
            let acked = acked.clone();
            thread::spawn(move || {
                let tasks = (d..writers).step_by(DRIVERS).map(|w| {
                    let store = store.clone();
                    let acked = acked.clone();
                    async move {
                        let channel = format!("C{w:08}");
                        let mut ts = 1_700_000_000_000_000i64;
                        while Instant::now() < deadline {
                            ts += 1;
                            let m = NewMessage {
                                channel: channel.clone(),
                                ts,
                                user: "U0G9QF9C6".into(),
                                text: "The quick brown fox jumps over the lazy dog; a typical short chat line.".into(),
                                blocks: None,
                                thread_ts: None,
                                subtype: None,
                                client_msg_id: None,
                            };
                            store.write(move |tx| tx.insert_message(&m)).await.unwrap();
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
                join_all(tasks.collect());
            })
        })
        .collect();
    for d in drivers {
        d.join().unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (b1, j1) = store.stats();
    let n = acked.load(Ordering::Relaxed);
    eprintln!(
        "{backend}\t{durability:?}\twriters {writers:>4}\t{:>8.0} acked inserts/s\t{:>7} commits\tmean batch {:>6.1}\tmean latency {:>6.2} ms",
        n as f64 / elapsed,
        b1 - b0,
        (j1 - j0) as f64 / (b1 - b0).max(1) as f64,
        elapsed * 1000.0 * writers as f64 / n.max(1) as f64,
    );
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn group_commit_throughput() {
    let secs = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let writers: Vec<usize> = std::env::var("BENCH_WRITERS")
        .ok()
        .map(|s| s.split(',').map(|w| w.trim().parse().unwrap()).collect())
        .unwrap_or_else(|| vec![1, 64, 256]);
    let backends = std::env::var("BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    for backend in backends.split(',').map(str::trim) {
        for durability in [Durability::Full, Durability::Normal] {
            for &w in &writers {
                run(backend, durability, w, secs);
            }
        }
    }
}
