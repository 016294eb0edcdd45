//! Criterion micro-benchmark of the store side of firing scheduled
//! messages (issue 11, the top-of-the-hour spike): one round of
//! [`limits::SCHEDULE_FIRE_BATCH_MAX`] due messages, each checked,
//! deleted from `scheduled` and written by `channel::persist::job` in the
//! writer's transaction, either
//!
//! - `one_job_per_message`: as a lone publish writes it, one store job per
//!   message, all submitted before any answer is awaited (so group commit
//!   takes them in one transaction, each in its own savepoint), or
//! - `one_job_per_round`: as `channel::fire` writes it, one store job for
//!   the round, or
//! - `one_job_per_round_by_channel`: the same, for a round as the timer
//!   heap hands it out now, `(post_at, channel, id)`: at the top of the
//!   hour that is one channel's messages together (about 100 each in the
//!   spike), so they land in the same few pages.
//!
//! The first two take a round as the spike's ids come (scheduled
//! round-robin over the channels): every message of a different channel.
//!
//! The rows are written before each measured round (not timed), on a
//! SQLite store with `Durability::Normal`, so the figure is the writer's
//! work, not the disk's flush.
//!
//! `cargo bench --bench scheduled_firing`; like hot_paths, it only exists to
//! show regressions and the gain of the batch: compare runs back to back.

use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures_lite::future::{block_on, poll_once};
use serde_json::json;

use transponder::channel::persist::{self, Outcome};
use transponder::ids::Id;
use transponder::limits;
use transponder::shard::message::Persist;
use transponder::store::scheduled::NewScheduled;
use transponder::store::{Durability, Store, StoreError};
use transponder::ts::Ts;

const CHANNELS: usize = 2000;
/// Channels of a round taken by channel: 256 due messages, ~100 per channel.
const CHANNELS_PER_GROUPED_ROUND: usize = 3;
const USER: &str = "U0G9QF9C6";
const TEAM: &str = "T024BE7LD";

/// A store with `CHANNELS` channels' worth of ids and a ts clock.
struct Rig {
    dir: PathBuf,
    store: Store,
    channels: Vec<Id>,
    team: Id,
    next_ts: u64,
}

impl Rig {
    fn new() -> Rig {
        let dir = std::env::temp_dir().join(format!(
            "transponder-scheduled-firing-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let store = Store::open(&dir, Durability::Normal).expect("open the store");
        let channels = (0..CHANNELS)
            .map(|i| Id::parse(&format!("C{:08}", i + 1)).expect("channel id"))
            .collect();
        Rig {
            dir,
            store,
            channels,
            team: Id::parse(TEAM).expect("team id"),
            next_ts: 1_700_000_000_000_000,
        }
    }

    /// Writes one round of due rows (as `POST /v1/schedule` does) over
    /// `spread` channels from a random one, and answers each one's store
    /// job, in firing order: by channel if `by_channel`.
    fn due_round(
        &mut self,
        spread: usize,
        by_channel: bool,
    ) -> Vec<
        impl FnOnce(&mut dyn transponder::store::Tx) -> Result<Outcome, StoreError> + Send + 'static,
    > {
        let n = limits::SCHEDULE_FIRE_BATCH_MAX;
        let first = rand::random_range(0..CHANNELS);
        let mut rows: Vec<(Id, NewScheduled)> = (0..n)
            .map(|k| {
                let channel = self.channels[(first + k % spread) % CHANNELS];
                let text = format!("due {k}");
                let event = json!({"type": "message", "user": USER, "text": text});
                let row = NewScheduled {
                    channel: channel.to_string(),
                    post_at: 1,
                    created: 0,
                    user: None,
                    text,
                    blocks: None,
                    thread_ts: None,
                    event: Some(event.to_string()),
                };
                (channel, row)
            })
            .collect();
        let inserted = rows.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>();
        let ids = self
            .store
            .write_blocking(move |tx| {
                inserted
                    .iter()
                    .map(|r| tx.insert_scheduled(r))
                    .collect::<Result<Vec<i64>, _>>()
            })
            .expect("insert the due rows");
        let mut rows: Vec<_> = rows.drain(..).zip(ids).collect();
        if by_channel {
            rows.sort_by_key(|((channel, _), id)| (channel.raw(), *id));
        }
        rows.into_iter()
            .map(|((channel, row), id)| {
                self.next_ts += 1;
                let event = serde_json::from_str(row.event.as_deref().expect("event"))
                    .expect("json object");
                let (body, inner) =
                    transponder::ops::backend_event(event, false).expect("a backend event");
                let persist = Persist::Scheduled {
                    id,
                    post_at: row.post_at,
                    inner: Box::new(inner),
                };
                persist::job(persist, channel, Ts(self.next_ts), body, self.team, None)
            })
            .collect()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.store.clone().close();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn scheduled_firing(c: &mut Criterion) {
    let mut rig = Rig::new();
    let mut group = c.benchmark_group("scheduled_firing");
    group.throughput(Throughput::Elements(limits::SCHEDULE_FIRE_BATCH_MAX as u64));
    group.bench_function("one_job_per_message", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let jobs = rig.due_round(limits::SCHEDULE_FIRE_BATCH_MAX, false);
                let store = rig.store.clone();
                let start = Instant::now();
                block_on(async move {
                    let writes: Vec<Pin<Box<_>>> =
                        jobs.into_iter().map(|j| Box::pin(store.write(j))).collect();
                    // Every job is queued before any answer is awaited; a
                    // write answered already is not polled again.
                    let mut waiting = Vec::with_capacity(writes.len());
                    for mut w in writes {
                        match poll_once(&mut w).await {
                            Some(answer) => assert!(answer.expect("written").is_ok(), "fired"),
                            None => waiting.push(w),
                        }
                    }
                    for w in waiting {
                        assert!(w.await.expect("written").is_ok(), "fired");
                    }
                });
                spent += start.elapsed();
            }
            spent
        })
    });
    for (name, spread, by_channel) in [
        ("one_job_per_round", limits::SCHEDULE_FIRE_BATCH_MAX, false),
        (
            "one_job_per_round_by_channel",
            CHANNELS_PER_GROUPED_ROUND,
            true,
        ),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let jobs = rig.due_round(spread, by_channel);
                    let start = Instant::now();
                    let outcomes = rig
                        .store
                        .write_blocking(move |tx| {
                            jobs.into_iter()
                                .map(|job| job(tx))
                                .collect::<Result<Vec<_>, _>>()
                        })
                        .expect("written");
                    assert!(outcomes.iter().all(Result::is_ok), "fired");
                    spent += start.elapsed();
                }
                spent
            })
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5))
        .sample_size(20)
        .noise_threshold(0.05)
        .without_plots()
}

criterion_group! {
    name = benches;
    config = config();
    targets = scheduled_firing
}
criterion_main!(benches);
