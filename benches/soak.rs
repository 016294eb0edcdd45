//! The soak: a mixed load at about half of this machine's capacity for
//! SOAK_MINUTES (default 30), with the server's memory every minute. It
//! passes when no delivery was lost or reordered, nothing was refused or
//! dropped, and the server's RSS stayed within ±5 % after the warm-up.
//!
//! `cargo bench --bench soak` starts the release server (`serve --shards 2`,
//! ephemeral ports, its own temp data dir, `--durability full`, an admin
//! token) and four `transponder loadgen` runs against it at once, each
//! running its load for the whole soak (`--duration`):
//!
//! | load | loadgen scenario | default rate |
//! |---|---|---|
//! | fan-out | `fanout --channels 100 --subscribers 20 --publishers 10 --via stream --size 200` | 10 × 275 = 2,750 events/s, 55,000 deliveries/s |
//! | Web API posts | `fanout --channels 40 --subscribers 10 --publishers 40 --via web --size 200` | 40 × 7.5 = 300 posts/s (stored), 3,000 deliveries/s |
//! | typing | `typing-storm --channels 100 --members 10` | every 600 ms: 1,667 typing/s, 15,000 deliveries/s |
//! | presence churn, connects, disconnects | `churn --connections 1000 --channels 10 --watch 20` | stays 1,300 ms ± 50 %, away 500 ms: ~550 connects/s |
//!
//! That is ~4,300 websockets and ~50 Web API connections at any time. Each
//! load checks what it owes: every fan-out event and every acknowledged post
//! at every subscriber of its channel, in order (sequence numbers per
//! publisher and channel); every typing event at the channel's other
//! members; every churn reconnect through `rtm.connect` to its `hello`,
//! every close frame answered.
//!
//! **Rates.** Each load's capacity was measured alone against the same
//! server on this machine (2 cores shared by the server, the load
//! generators and other engineers' builds, load average 5–13; 2026-11-24;
//! 10 s runs of the scenario above with publishers unpaced, the typing
//! interval shortened, or churn with no stay and no pause, until the load
//! generator could not get more through): fan-out 22k events/s (440k
//! deliveries/s); Web API posts 2.2k–4.3k posts/s (a connection's posts are
//! answered one at a time, each after its group commit, so this grows with
//! publishers); typing 13k–15k typing/s; churn 4.1k–4.9k
//! `rtm.connect`-`hello`-`presence_sub`-leave cycles/s. The soak runs each
//! at about 1/8 of it (posts at 1/8 of the low end), so the four together
//! ask for about half of the machine. Checked mixed, at SOAK_SCALE=2 (all
//! of it): fan-out and typing kept up (145k deliveries/s), Web API posts
//! got ~550 of 600 posts/s through and churn ~330–430 of ~1,100
//! cycles/s — the store-bound parts give out first when the machine is
//! shared, so at 1× they run at about half of what the mix can carry.
//!
//! **Every minute** it prints: the minute, the server's RSS (VmRSS from
//! /proc/PID/status) and its anonymous part (RssAnon: heap and stacks, not
//! the binary's pages), the RSS's change from the reference, websocket
//! connections and deliveries so far (GET /v1/stats), deliveries per second
//! over the minute, and the CPU over the minute of the server, of the load
//! generators and of the whole machine, each as % of all cores (the rest is
//! other work on the machine).
//!
//! **Warm-up and the memory check.** The first 20 % of the soak (rounded up
//! to whole minutes, at least 1; SOAK_WARMUP_MINUTES) is warm-up: users,
//! channels and connections are created, per-channel history rings fill,
//! the allocator's and SQLite's caches reach their working size. The sample
//! that ends the warm-up is the reference; every later sample must be within
//! ±5 % of it. The reference is that one sample, not the mean of the later
//! ones: a leak grows steadily, and measured from the start of the steady
//! state a 5 % band bounds the soak's whole growth to 5 %, where around the
//! mean of a ramp it would let ~10 % through. One sample is steady enough:
//! each shard gives freed memory back every 5 s (`src/heap.rs`).
//!
//! At the end: one row per load, then duration, events, deliveries, lost,
//! reordered, RSS min / max / drift, and PASS or FAIL. It exits 1 on any
//! loss, reorder, refusal, failed or dropped connection, RSS beyond ±5 %,
//! a load that ended early or gave no summary, or a server that does not
//! exit cleanly on SIGTERM.
//!
//! Environment: SOAK_MINUTES (30, at least 2), SOAK_WARMUP_MINUTES,
//! SOAK_SHARDS (2), SOAK_SCALE (1: multiplies every rate),
//! SOAK_FANOUT_RATE (275 events/s per publisher), SOAK_WEB_RATE (7.5 posts/s
//! per publisher), SOAK_TYPING_INTERVAL_MS (600), SOAK_CHURN_HOLD_MS
//! (1300), SOAK_CHURN_PAUSE_MS (500).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use transponder::loadgen::admin::Admin;
use transponder::loadgen::procfs::{rss_of, status_bytes, ticks_per_sec};
use transponder::loadgen::report::group;

#[path = "support/mod.rs"]
mod support;
use support::{
    die_with_parent, machine_ticks, print_stderr_tail, process_ticks, process_tree_ticks,
    read_ready_line, remove_stale_dirs, wait_timeout,
};

const BIN: &str = env!("CARGO_BIN_EXE_transponder");
const ADMIN_TOKEN: &str = "soak";
const DIR_PREFIX: &str = "soak-";
/// After the warm-up every sample must be within this of the reference.
const RSS_BAND_PCT: f64 = 5.0;
const MINUTE: Duration = Duration::from_secs(60);
/// A load ends its run with the soak's last minute; it then waits for
/// deliveries in flight (at most 20 s) and reports. Past this it has hung.
const LOAD_END_MAX: Duration = Duration::from_secs(120);
const SHUTDOWN_MAX: Duration = Duration::from_secs(30);

fn env_f64(name: &str, default: f64) -> f64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .ok()
            .filter(|x: &f64| x.is_finite() && *x > 0.0)
            .unwrap_or_else(|| panic!("{name} must be a positive number, not {v:?}")),
        Err(_) => default,
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a whole number, not {v:?}")),
        Err(_) => default,
    }
}

/// One of the concurrent loads: a loadgen scenario and its arguments.
struct Load {
    name: &'static str,
    args: Vec<String>,
    /// What it asks for, in words.
    rate: String,
}

struct Config {
    minutes: u64,
    warmup_minutes: u64,
    shards: u64,
    loads: Vec<Load>,
}

impl Config {
    fn from_env() -> Config {
        let minutes = env_u64("SOAK_MINUTES", 30);
        assert!(
            minutes >= 2,
            "SOAK_MINUTES must be at least 2 (a warm-up and a sample after it)"
        );
        let warmup_minutes = env_u64("SOAK_WARMUP_MINUTES", minutes.div_ceil(5).max(1));
        assert!(
            warmup_minutes >= 1 && warmup_minutes < minutes,
            "SOAK_WARMUP_MINUTES must be at least 1 and below SOAK_MINUTES"
        );
        let scale = env_f64("SOAK_SCALE", 1.0);
        let fanout_rate = env_f64("SOAK_FANOUT_RATE", 275.0) * scale;
        let web_rate = env_f64("SOAK_WEB_RATE", 7.5) * scale;
        let typing_ms = (env_f64("SOAK_TYPING_INTERVAL_MS", 600.0) / scale).round() as u64;
        let hold_ms = (env_f64("SOAK_CHURN_HOLD_MS", 1300.0) / scale).round() as u64;
        let pause_ms = (env_f64("SOAK_CHURN_PAUSE_MS", 500.0) / scale).round() as u64;
        let args = |s: &str| -> Vec<String> { s.split_whitespace().map(String::from).collect() };
        let loads = vec![
            Load {
                name: "fan-out",
                args: args(&format!(
                    "fanout --channels 100 --subscribers 20 --publishers 10 --via stream \
                     --size 200 --rate {fanout_rate}"
                )),
                rate: format!(
                    "{} events/s to 100 channels × 20 subscribers",
                    group(10.0 * fanout_rate, 0)
                ),
            },
            Load {
                name: "Web API posts",
                args: args(&format!(
                    "fanout --channels 40 --subscribers 10 --publishers 40 --via web \
                     --size 200 --rate {web_rate}"
                )),
                rate: format!(
                    "{} chat.postMessage/s to 40 channels × 10 subscribers",
                    group(40.0 * web_rate, 0)
                ),
            },
            Load {
                name: "typing",
                args: args(&format!(
                    "typing-storm --channels 100 --members 10 --interval-ms {}",
                    typing_ms.max(1)
                )),
                rate: format!("1,000 members of 100 channels typing every {typing_ms} ms"),
            },
            Load {
                name: "churn",
                args: args(&format!(
                    "churn --connections 1000 --channels 10 --watch 20 --hold-ms {hold_ms} \
                     --pause-ms {pause_ms}"
                )),
                rate: format!(
                    "1,000 connections watching 20 users each, staying {hold_ms} ms ± 50 %, \
                     away {pause_ms} ms"
                ),
            },
        ];
        Config {
            minutes,
            warmup_minutes,
            shards: env_u64("SOAK_SHARDS", 2),
            loads,
        }
    }
}

/// Kills the server and the loads when the soak ends, however it ends, and
/// removes the temp dir.
struct Guard {
    dir: PathBuf,
    server: Option<Child>,
    loads: Vec<Child>,
}

impl Guard {
    fn server_stderr(&self) -> PathBuf {
        self.dir.join("server.stderr")
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for c in self.loads.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(mut s) = self.server.take() {
            if std::thread::panicking() {
                print_stderr_tail(&self.server_stderr(), 40);
            }
            let _ = s.kill();
            let _ = s.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One reading of the server.
#[derive(Clone)]
struct Sample {
    minute: u64,
    at: Instant,
    rss_bytes: u64,
    /// The anonymous part of the RSS (heap, stacks; not the binary's pages).
    anon_bytes: u64,
    connections: u64,
    deliveries: u64,
    server_ticks: u64,
    /// The load generators' CPU (their workers included).
    loadgen_ticks: u64,
    machine: [u64; 4],
}

fn main() {
    let cfg = Config::from_env();
    remove_stale_dirs(DIR_PREFIX);
    let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{}-run", std::process::id()));
    std::fs::create_dir_all(dir.join("data")).expect("temp dir");
    let mut guard = Guard {
        dir,
        server: None,
        loads: Vec::new(),
    };

    let (pid, admin_url, api_url) = start_server(&mut guard, cfg.shards);
    let admin = Admin::new(&admin_url, ADMIN_TOKEN);
    println!(
        "soak: {} min (warm-up {} min), transponder serve --shards {} (pid {pid}), \
         RSS band ±{RSS_BAND_PCT} % after the warm-up",
        cfg.minutes, cfg.warmup_minutes, cfg.shards
    );
    for l in &cfg.loads {
        println!("  {:<14} {}", l.name, l.rate);
    }

    let start = Instant::now();
    let first = sample(0, pid, &[], &admin).expect("the server answers /v1/stats");
    for l in &cfg.loads {
        guard
            .loads
            .push(start_load(&guard.dir, l, &admin_url, &api_url, cfg.minutes));
    }
    let load_pids: Vec<u32> = guard.loads.iter().map(Child::id).collect();
    println!();
    println!(
        "{:>6} {:>8} {:>8} {:>8} {:>10} {:>12} {:>12} {:>7} {:>7} {:>7}",
        "minute",
        "RSS MiB",
        "anon MiB",
        "vs ref",
        "websockets",
        "deliveries",
        "delivered/s",
        "server",
        "loadgen",
        "machine"
    );
    print_row(&first, None, None);

    // One sample a minute while the loads run.
    let mut samples = vec![first];
    let mut failures: Vec<String> = Vec::new();
    for minute in 1..=cfg.minutes {
        let due = start + MINUTE * minute as u32;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let s = match sample(minute, pid, &load_pids, &admin) {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!("minute {minute}: the server: {e}"));
                break;
            }
        };
        let reference =
            (minute > cfg.warmup_minutes).then(|| samples[cfg.warmup_minutes as usize].rss_bytes);
        print_row(&s, samples.last(), reference);
        samples.push(s);
        let ended: Vec<String> = guard
            .loads
            .iter_mut()
            .zip(&cfg.loads)
            .filter_map(|(c, l)| {
                let status = c.try_wait().expect("wait")?;
                Some(format!("{} ended after {minute} min ({status})", l.name))
            })
            .collect();
        if !ended.is_empty() {
            failures.extend(ended);
            break;
        }
    }
    let soak_secs = start.elapsed().as_secs_f64();

    // The loads stop, drain and report.
    let mut summaries = Vec::new();
    for (c, l) in guard.loads.iter_mut().zip(&cfg.loads) {
        if wait_timeout(c, LOAD_END_MAX).is_none() {
            let _ = c.kill();
            let _ = c.wait();
            failures.push(format!("{} did not end within {LOAD_END_MAX:?}", l.name));
        }
        match read_summary(&guard.dir, l) {
            Ok(v) => summaries.push((l.name, v)),
            Err(e) => {
                print_stderr_tail(&guard.dir.join(format!("{}.stderr", file_name(l))), 20);
                failures.push(e);
            }
        }
    }
    let after = sample(cfg.minutes + 1, pid, &[], &admin).ok();

    // SIGTERM: the server drains and exits.
    let mut server = guard.server.take().expect("server");
    // SAFETY: plain kill(2) on the pid of a child we have not reaped.
    unsafe {
        libc::kill(server.id() as libc::pid_t, libc::SIGTERM);
    }
    match wait_timeout(&mut server, SHUTDOWN_MAX) {
        Some(status) if status.success() => {}
        Some(status) => failures.push(format!("server exited with {status} after SIGTERM")),
        None => {
            let _ = server.kill();
            let _ = server.wait();
            failures.push(format!(
                "server did not exit within {SHUTDOWN_MAX:?} of SIGTERM"
            ));
        }
    }
    let loud = std::fs::read_to_string(guard.server_stderr())
        .map(|t| {
            t.lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .count()
        })
        .unwrap_or(0);
    if loud > 0 {
        print_stderr_tail(&guard.server_stderr(), 20);
    }

    let report = Report {
        cfg: &cfg,
        soak_secs,
        samples: &samples,
        after: after.as_ref(),
        summaries: &summaries,
    };
    failures.extend(report.failures());
    print!("{}", report.render(&failures));
    // exit() runs no destructors: remove the temp dir first.
    drop(guard);
    std::process::exit(i32::from(!failures.is_empty()));
}

/// Starts the server; its pid, admin URL and Web API URL.
fn start_server(guard: &mut Guard, shards: u64) -> (u32, String, String) {
    let stderr = std::fs::File::create(guard.server_stderr()).expect("stderr file");
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--shards", &shards.to_string()])
        .args(support::EPHEMERAL_PORTS)
        .args(["--admin-token", ADMIN_TOKEN])
        .arg("--data-dir")
        .arg(guard.dir.join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    die_with_parent(&mut cmd);
    let mut server = cmd.spawn().expect("start the server");
    let stdout = server.stdout.take().expect("server stdout");
    let pid = server.id();
    guard.server = Some(server);
    let line = read_ready_line(stdout, Duration::from_secs(30));
    let ready: Value = serde_json::from_str(
        line.strip_prefix("ready ")
            .unwrap_or_else(|| panic!("the server's first line is not `ready {{…}}`: {line:?}")),
    )
    .expect("ready line JSON");
    let url = |k: &str| ready[k].as_str().expect("ready line URL").to_string();
    (pid, url("admin"), url("api"))
}

fn file_name(l: &Load) -> String {
    l.name.replace(' ', "-").to_lowercase()
}

/// Starts one load for the whole soak: its summary goes to `<name>.json`,
/// its progress lines to `<name>.stderr`.
fn start_load(dir: &Path, l: &Load, admin: &str, api: &str, minutes: u64) -> Child {
    let f = file_name(l);
    let out = std::fs::File::create(dir.join(format!("{f}.json"))).expect("summary file");
    let err = std::fs::File::create(dir.join(format!("{f}.stderr"))).expect("stderr file");
    let mut cmd = Command::new(BIN);
    cmd.args(["loadgen", "--json", "--admin", admin.trim_end_matches('/')])
        .args(["--admin-token", ADMIN_TOKEN, "--api", api])
        .args(["--duration", &(minutes * 60).to_string()])
        .args(&l.args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    die_with_parent(&mut cmd);
    cmd.spawn()
        .unwrap_or_else(|e| panic!("start loadgen {}: {e}", l.name))
}

fn read_summary(dir: &Path, l: &Load) -> Result<Value, String> {
    let text = std::fs::read_to_string(dir.join(format!("{}.json", file_name(l))))
        .map_err(|e| format!("{}: no summary: {e}", l.name))?;
    serde_json::from_str(text.trim())
        .map_err(|e| format!("{}: no summary ({e}): {:?}", l.name, text.trim()))
}

fn sample(minute: u64, pid: u32, load_pids: &[u32], admin: &Admin) -> Result<Sample, String> {
    let stats = admin.stats()?;
    let shards = stats["shards"].as_array().ok_or("no shards in /v1/stats")?;
    let sum = |k: &str| shards.iter().map(|s| s[k].as_u64().unwrap_or(0)).sum();
    Ok(Sample {
        minute,
        at: Instant::now(),
        rss_bytes: rss_of(pid)?,
        anon_bytes: status_bytes(pid, "RssAnon")?,
        connections: sum("connections"),
        deliveries: sum("deliveries"),
        server_ticks: process_ticks(pid),
        loadgen_ticks: load_pids.iter().map(|&p| process_tree_ticks(p)).sum(),
        machine: machine_ticks(),
    })
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// `(s − reference) / reference` in %.
fn pct(s: u64, reference: u64) -> f64 {
    (s as f64 - reference as f64) / reference.max(1) as f64 * 100.0
}

fn print_row(s: &Sample, before: Option<&Sample>, reference: Option<u64>) {
    let vs = reference.map_or("—".to_string(), |r| {
        let p = pct(s.rss_bytes, r);
        let flag = if p.abs() > RSS_BAND_PCT { "!" } else { "" };
        format!("{p:+.1}%{flag}")
    });
    // CPU as % of the whole machine (every core), so the three add up:
    // what the server and the load generators leave is other work.
    let (rate, server, loadgen, machine) = match before {
        Some(b) => {
            let secs = s.at.duration_since(b.at).as_secs_f64().max(1e-3);
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            let share = |ticks: u64| ticks as f64 / ticks_per_sec() / secs / cores * 100.0;
            let d = |i: usize| s.machine[i].saturating_sub(b.machine[i]) as f64;
            let all = d(0) + d(1) + d(2) + d(3);
            (
                group(s.deliveries.saturating_sub(b.deliveries) as f64 / secs, 0),
                format!(
                    "{:.0}%",
                    share(s.server_ticks.saturating_sub(b.server_ticks))
                ),
                format!(
                    "{:.0}%",
                    share(s.loadgen_ticks.saturating_sub(b.loadgen_ticks))
                ),
                format!("{:.0}%", (d(0) + d(1)) / all.max(1.0) * 100.0),
            )
        }
        None => ("—".into(), "—".into(), "—".into(), "—".into()),
    };
    println!(
        "{:>6} {:>8.1} {:>8.1} {:>8} {:>10} {:>12} {:>12} {:>7} {:>7} {:>7}",
        s.minute,
        mib(s.rss_bytes),
        mib(s.anon_bytes),
        vs,
        group(s.connections as f64, 0),
        group(s.deliveries as f64, 0),
        rate,
        server,
        loadgen,
        machine
    );
}

/// What the soak measured, judged and printed.
struct Report<'a> {
    cfg: &'a Config,
    soak_secs: f64,
    /// Minute 0 (before the loads) to the last minute reached.
    samples: &'a [Sample],
    /// After the loads ended.
    after: Option<&'a Sample>,
    summaries: &'a [(&'static str, Value)],
}

impl Report<'_> {
    /// The samples after the warm-up, the reference first.
    fn steady(&self) -> &[Sample] {
        self.samples
            .get(self.cfg.warmup_minutes as usize..)
            .unwrap_or(&[])
    }

    fn total(&self, key: &str) -> u64 {
        self.summaries
            .iter()
            .map(|(_, v)| v[key].as_u64().unwrap_or(0))
            .sum()
    }

    fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, v) in self.summaries {
            for key in [
                "lost",
                "gaps",
                "reordered",
                "publish_refused",
                "connect_failed",
                "dropped",
            ] {
                let n = v[key].as_u64().unwrap_or(0);
                if n > 0 {
                    out.push(format!("{name}: {key} {n}"));
                }
            }
            if let Some(errors) = v["errors"].as_object().filter(|e| !e.is_empty()) {
                out.push(format!("{name}: errors {}", Value::Object(errors.clone())));
            }
        }
        let steady = self.steady();
        match steady.split_first() {
            Some((reference, later)) if !later.is_empty() => {
                for s in later {
                    let p = pct(s.rss_bytes, reference.rss_bytes);
                    if p.abs() > RSS_BAND_PCT {
                        out.push(format!(
                            "RSS at minute {} is {p:+.1} % of the reference (minute {})",
                            s.minute, reference.minute
                        ));
                    }
                }
            }
            _ => out.push("no RSS sample after the warm-up".into()),
        }
        out
    }

    fn render(&self, failures: &[String]) -> String {
        let mut w = String::new();
        let _ = writeln!(w);
        let _ = writeln!(
            w,
            "| load | published | delivered of owed | lost / gaps / reordered | latency p50 / p99 / max | connections |"
        );
        let _ = writeln!(w, "|---|---|---|---|---|---|");
        for (name, v) in self.summaries {
            let n = |k: &str| group(v[k].as_f64().unwrap_or(0.0), 0);
            let ms = |k: &str| v["latency"][k].as_f64().unwrap_or(0.0) / 1000.0;
            let conns = if v["disconnects"].as_u64().unwrap_or(0) > 0 {
                format!(
                    "{} left, {} came back, presence of {} users; {} failed, {} dropped",
                    n("disconnects"),
                    group(
                        v["connected"]
                            .as_u64()
                            .unwrap_or(0)
                            .saturating_sub(v["connections"].as_u64().unwrap_or(0))
                            as f64,
                        0
                    ),
                    n("presence_received"),
                    n("connect_failed"),
                    n("dropped")
                )
            } else {
                format!(
                    "{} held; {} failed, {} dropped",
                    n("connected"),
                    n("connect_failed"),
                    n("dropped")
                )
            };
            let _ = writeln!(
                w,
                "| {name} | {} ({} refused) | {} of {} | {} / {} / {} | {:.1} / {:.1} / {:.1} ms | {conns} |",
                n("published"),
                n("publish_refused"),
                n("delivered"),
                n("expected"),
                n("lost"),
                n("gaps"),
                n("reordered"),
                ms("p50_us"),
                ms("p99_us"),
                ms("max_us"),
            );
        }
        let _ = writeln!(w);
        let row = |w: &mut String, k: &str, v: String| {
            let _ = writeln!(w, "  {k:<12} {v}");
        };
        let _ = writeln!(w, "soak summary");
        row(
            &mut w,
            "duration",
            format!(
                "{:.1} min under load ({} sampled), warm-up {} min",
                self.soak_secs / 60.0,
                self.samples.len().saturating_sub(1),
                self.cfg.warmup_minutes
            ),
        );
        row(
            &mut w,
            "events",
            format!(
                "{} published (fan-out events, Web API posts, typing)",
                group(self.total("published") as f64, 0)
            ),
        );
        let server_deliveries = self
            .after
            .or(self.samples.last())
            .map_or(0, |s| s.deliveries);
        row(
            &mut w,
            "deliveries",
            format!(
                "{} of {} owed arrived (load generators); {} by the server (/v1/stats)",
                group(self.total("delivered") as f64, 0),
                group(self.total("expected") as f64, 0),
                group(server_deliveries as f64, 0)
            ),
        );
        row(
            &mut w,
            "lost",
            format!(
                "{} (gaps {})",
                group(self.total("lost") as f64, 0),
                group(self.total("gaps") as f64, 0)
            ),
        );
        row(
            &mut w,
            "reordered",
            group(self.total("reordered") as f64, 0),
        );
        let steady = self.steady();
        if let Some(reference) = steady.first() {
            let min = steady.iter().map(|s| s.rss_bytes).min().unwrap_or(0);
            let max = steady.iter().map(|s| s.rss_bytes).max().unwrap_or(0);
            let last = steady.last().map_or(0, |s| s.rss_bytes);
            row(
                &mut w,
                "RSS",
                format!(
                    "reference {:.1} MiB (minute {}); after the warm-up min {:.1} MiB ({:+.1} %), \
                     max {:.1} MiB ({:+.1} %); drift {:+.1} % (last sample vs reference); \
                     {:.1} MiB before the loads, {} after them",
                    mib(reference.rss_bytes),
                    reference.minute,
                    mib(min),
                    pct(min, reference.rss_bytes),
                    mib(max),
                    pct(max, reference.rss_bytes),
                    pct(last, reference.rss_bytes),
                    mib(self.samples[0].rss_bytes),
                    self.after
                        .map_or("?".into(), |s| format!("{:.1} MiB", mib(s.rss_bytes)))
                ),
            );
        }
        if failures.is_empty() {
            row(&mut w, "result", "PASS".into());
        } else {
            row(
                &mut w,
                "result",
                format!("FAIL ({} problems)", failures.len()),
            );
            for f in failures {
                let _ = writeln!(w, "    - {f}");
            }
        }
        w
    }
}
