//! chat.postMessage throughput with durable acknowledgement, and the post →
//! delivery latency at websocket subscribers.
//!
//! For each durability mode (`full`, the default, then `normal`) it starts
//! the release server (`--shards 2`, ephemeral ports, a temp data dir),
//! provisions over the admin API K channels, W subscriber users (subscriber
//! j is the one member of channel j mod K that has a websocket) and the
//! posting users, connects the W websockets (tickets from `POST
//! /v1/tickets`, the upgrade written by hand, `hello` checked), then runs C
//! poster threads, each on its own keep-alive HTTP/1.1 connection, each
//! posting to channel i mod K with `Authorization: Bearer <user token>`
//! and a Content-Length JSON body, one request at a time (closed loop):
//! a warm-up, then the measured window.
//!
//! A post's text is `pb <client> <seq> <send ns>`: the poster records when
//! it wrote the request, the subscriber thread (one thread, epoll over the
//! W sockets, reading the server's unmasked text frames) finds the text in
//! the message event and computes receive − send on the same monotonic
//! clock. Posts and deliveries count in the window when the post was *sent*
//! in it. After the posters stop, the bench waits for the deliveries still
//! in flight, then checks that every acknowledged post (warm-up included)
//! reached the subscriber(s) of its channel, once and in order per poster:
//! acknowledged means committed, and persist-then-deliver means delivered.
//!
//! POST_BENCH_VIA=rtm measures the RTM `message` (stored) path instead:
//! each poster holds a websocket (as the first of its users, a member of
//! its channel) and sends `{"id":N,"type":"message","channel":…,"text":…}`
//! frames, one at a time; acknowledged = the `{"ok":true,"reply_to":N}`
//! reply, which the server sends after the same commit as an HTTP post.
//! The poster's own socket also receives the message event (sender
//! included, PROTOCOL.md), so the server delivers one frame more per post
//! than over HTTP; the poster skips it. A websocket may send 200 messages/s
//! by default (`--client-msgs-per-sec`); the bench raises that to
//! RTM_MSGS_PER_SEC, so the limiter is not what this measures.
//!
//! POST_BENCH_RATE=R runs open loop at R posts/s in all: poster i sends
//! its k-th post at start + (k·C + i)/R, whatever happened to the previous
//! one, and a post's latencies count from that scheduled time (a poster
//! that falls behind its schedule charges the delay to the server, not to
//! nobody). Without it the posters run closed loop, as fast as answers come.
//!
//! The Web API rate-limits each token to 100 requests/s per shard (burst
//! 200; `src/api/ratelimit.rs`, not configurable), so a poster rotates
//! over POST_BENCH_TOKENS_PER_CLIENT users (all members of its channel):
//! the limiter is not what this measures. A 429 counts as an HTTP error and
//! the poster honours its Retry-After.
//!
//! Also printed: CPU time over the window per server thread (shards, store
//! writer, store readers) and per bench thread group, and the machine's busy
//! and steal time, to show where the 2 cores go.
//!
//! `cargo bench --bench post_throughput`; environment:
//! POST_BENCH_DURABILITY (`full`, `normal` or `both`, default both),
//! POST_BENCH_CLIENTS (64), POST_BENCH_CHANNELS (64),
//! POST_BENCH_SUBSCRIBERS (64), POST_BENCH_TOKENS_PER_CLIENT (16),
//! POST_BENCH_SECS (10), POST_BENCH_WARMUP_SECS (2), POST_BENCH_VIA
//! (`http` or `rtm`, default http), POST_BENCH_RATE (posts/s, open loop;
//! default closed loop), POST_BENCH_SERVER_BIN (another build of the
//! server to run, e.g. a copy of main's, to compare builds on the same
//! bench; default: this build's), POST_BENCH_STORE (a
//! postgres:// URL: the server's store is PostgreSQL, in a schema of its
//! own created for the run and dropped after it, e.g.
//! `tests/with_pg.sh sh -c 'POST_BENCH_STORE=$TRANSPONDER_TEST_PG cargo
//! bench --bench post_throughput'`; default: SQLite in a temp dir). The server's pid is
//! printed on stderr as soon as it is ready (for `perf record -p`). Prints
//! figures; fails when the server misbehaves (an acknowledged post missing,
//! duplicated or out of order at its subscriber, a subscriber closed, no
//! clean exit at SIGTERM).

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

#[path = "support/mod.rs"]
mod support;
use support::{
    die_with_parent, host_port, machine_ticks, print_stderr_tail, read_ready_line,
    remove_stale_dirs, wait_timeout,
};
use transponder::loadgen::procfs::{stat_ticks, ticks_per_sec};

const ADMIN_TOKEN: &str = "post-bench";
/// `--client-msgs-per-sec` (and burst) for POST_BENCH_VIA=rtm: far above
/// what one closed-loop poster reaches.
const RTM_MSGS_PER_SEC: &str = "1000000";
/// Admin HTTP connections used to provision in parallel (each write is a
/// commit; parallel requests share the group commit's flush).
const ADMIN_THREADS: usize = 8;
/// Pause between starting the poster threads and their first request, so
/// every one is connected and waiting when the clock starts.
const START_DELAY: Duration = Duration::from_millis(300);
/// A poster gives up on one answer after this long (counted as an error).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// After the posters stop: the longest wait for deliveries in flight while
/// none arrives …
const DRAIN_IDLE: Duration = Duration::from_secs(5);
/// … and in all.
const DRAIN_MAX: Duration = Duration::from_secs(30);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);
/// Marks a post's text: `pb <client> <seq> <send ns>`.
const MARK: &[u8] = b"pb ";

#[derive(Clone)]
struct Config {
    clients: usize,
    channels: usize,
    subscribers: usize,
    tokens_per_client: usize,
    warmup: Duration,
    measure: Duration,
    via: Via,
    /// Open loop at this many posts/s in all; None: closed loop.
    rate: Option<f64>,
}

/// How posters post.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Via {
    /// `POST /api/chat.postMessage` on a keep-alive HTTP/1.1 connection.
    Http,
    /// RTM `message` frames on the poster's websocket.
    Rtm,
}

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}")),
        Err(_) => default,
    }
}

fn main() {
    let cfg = Config {
        clients: env_usize("POST_BENCH_CLIENTS", 64),
        channels: env_usize("POST_BENCH_CHANNELS", 64),
        subscribers: env_usize("POST_BENCH_SUBSCRIBERS", 64),
        tokens_per_client: env_usize("POST_BENCH_TOKENS_PER_CLIENT", 16),
        warmup: Duration::from_secs(env_usize("POST_BENCH_WARMUP_SECS", 2) as u64),
        measure: Duration::from_secs(env_usize("POST_BENCH_SECS", 10) as u64),
        via: match std::env::var("POST_BENCH_VIA").as_deref() {
            Ok("http") | Err(_) => Via::Http,
            Ok("rtm") => Via::Rtm,
            Ok(other) => panic!("POST_BENCH_VIA must be http or rtm, not {other:?}"),
        },
        rate: std::env::var("POST_BENCH_RATE").ok().map(|v| {
            let r: f64 = v
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("POST_BENCH_RATE must be posts/s, not {v:?}"));
            assert!(r > 0.0, "POST_BENCH_RATE must be positive");
            r
        }),
    };
    assert!(cfg.clients > 0, "POST_BENCH_CLIENTS must be positive");
    assert!(cfg.channels > 0, "POST_BENCH_CHANNELS must be positive");
    assert!(
        cfg.tokens_per_client > 0,
        "POST_BENCH_TOKENS_PER_CLIENT must be positive"
    );
    assert!(!cfg.measure.is_zero(), "POST_BENCH_SECS must be positive");
    let modes: &[&str] = match std::env::var("POST_BENCH_DURABILITY").as_deref() {
        Ok("full") => &["full"],
        Ok("normal") => &["normal"],
        Ok("both") | Err(_) => &["full", "normal"],
        Ok(other) => panic!("POST_BENCH_DURABILITY must be full, normal or both, not {other:?}"),
    };
    remove_stale_dirs("post-bench-");
    for mode in modes {
        run(&cfg, mode);
    }
}

/// Nanoseconds on the monotonic clock since the bench started; every
/// thread of the bench reads the same clock.
fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

// ---------------------------------------------------------------- parent --

/// Kills the server when the bench ends, normally or not, and removes the
/// data dir.
struct Guard {
    dir: PathBuf,
    server: Option<Child>,
    /// With POST_BENCH_STORE: (server URL, schema made for this run).
    pg: Option<(String, String)>,
}

impl Guard {
    fn stderr_path(&self) -> PathBuf {
        self.dir.join("server.stderr")
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut s) = self.server.take() {
            if std::thread::panicking() {
                eprintln!("post_throughput: failed; killing the server");
                print_stderr_tail(&self.stderr_path(), 40);
            }
            let _ = s.kill();
            let _ = s.wait();
        }
        if let Some((url, schema)) = &self.pg {
            pg_batch(url, &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `sql` on the PostgreSQL server at `url`.
fn pg_batch(url: &str, sql: &str) {
    let mut c = postgres::Client::connect(url, postgres::NoTls)
        .unwrap_or_else(|e| panic!("POST_BENCH_STORE {url}: {e}"));
    c.batch_execute(sql)
        .unwrap_or_else(|e| panic!("POST_BENCH_STORE {url}: {sql}: {e}"));
}

/// Sets `flag` when dropped: stops the bench's threads on every way out of
/// the scope that runs them, a panic included.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// What one poster thread did.
#[derive(Default)]
struct PosterResult {
    /// Posts sent (the seqs 0..sent were used).
    sent: u32,
    /// Seqs answered `ok:true`, in order.
    acked: Vec<u32>,
    /// Acknowledged posts sent in the window.
    window_acks: u64,
    /// Send → `ok:true` of the posts sent in the window, in ns.
    latencies: Vec<u64>,
    /// Failed posts by kind: (sent in the window, all).
    errors: BTreeMap<String, (u64, u64)>,
}

/// What the subscriber thread saw.
struct SubResult {
    /// Per subscriber: every (client << 32 | seq) received.
    received: Vec<HashSet<u64>>,
    /// Receive − send of the first receipt of posts sent in the window, ns.
    latencies: Vec<u64>,
    duplicates: u64,
    out_of_order: u64,
    /// Frames without a post's text (other events).
    other_frames: u64,
    /// Subscribers closed, frames the server should not send, …
    failures: Vec<String>,
}

fn run(cfg: &Config, mode: &str) {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let dir = std::env::temp_dir().join(format!("post-bench-{}-{nanos:08x}", std::process::id()));
    std::fs::create_dir_all(dir.join("data")).expect("temp dir");
    let mut guard = Guard {
        dir,
        server: None,
        pg: None,
    };
    // PostgreSQL: a fresh schema for this run, named in the store URL.
    let store_url = std::env::var("POST_BENCH_STORE")
        .ok()
        .filter(|u| !u.is_empty())
        .map(|url| {
            let schema = format!("post_bench_{}_{nanos:08x}", std::process::id());
            pg_batch(&url, &format!("CREATE SCHEMA {schema}"));
            guard.pg = Some((url.clone(), schema.clone()));
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}options=-c%20search_path%3D{schema}")
        });

    // Server.
    let stderr = std::fs::File::create(guard.stderr_path()).expect("stderr file");
    let bin = std::env::var_os("POST_BENCH_SERVER_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_transponder").into());
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--shards", "2", "--durability", mode])
        .args(support::EPHEMERAL_PORTS)
        .args(["--admin-token", ADMIN_TOKEN])
        .arg("--data-dir")
        .arg(guard.dir.join("data"))
        .args(store_url.iter().flat_map(|u| ["--store", u.as_str()]))
        .args(match cfg.via {
            Via::Http => vec![],
            Via::Rtm => vec![
                "--client-msgs-per-sec",
                RTM_MSGS_PER_SEC,
                "--client-msgs-burst",
                RTM_MSGS_PER_SEC,
            ],
        })
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    die_with_parent(&mut cmd);
    let mut server = cmd.spawn().expect("start the server");
    let stdout = server.stdout.take().expect("server stdout");
    let pid = server.id();
    guard.server = Some(server);
    let ready = read_ready_line(stdout, Duration::from_secs(30));
    let ready: Value =
        serde_json::from_str(ready.strip_prefix("ready ").unwrap_or_else(|| {
            panic!("server's first stdout line is not `ready {{…}}`: {ready:?}")
        }))
        .expect("ready line JSON");
    let admin = host_port(ready["admin"].as_str().expect("admin url"), "http://");
    let api = host_port(ready["api"].as_str().expect("api url"), "http://");
    let token = ready["admin_token"]
        .as_str()
        .expect("admin token")
        .to_string();
    eprintln!("post_throughput: server pid {pid} (--durability {mode}), provisioning");

    // Channels, users, memberships.
    let t = Instant::now();
    let channel_ids: Vec<String> = parallel(
        &admin,
        &token,
        &(0..cfg.channels).collect::<Vec<_>>(),
        |http, i| {
            let v = http.ok(
                "POST",
                "/v1/channels",
                Some(&json!({ "name": format!("pb-c{i}") })),
            );
            v["channel"]["id"].as_str().expect("channel id").to_string()
        },
    );
    let npost = cfg.clients * cfg.tokens_per_client;
    // Users 0..npost post (client i has users i*T .. i*T+T), the rest subscribe.
    let names: Vec<String> = (0..npost)
        .map(|i| format!("pb-p{i}"))
        .chain((0..cfg.subscribers).map(|j| format!("pb-s{j}")))
        .collect();
    let users: Vec<(String, String)> = parallel(&admin, &token, &names, |http, name| {
        let v = http.ok("POST", "/v1/users", Some(&json!({ "name": name })));
        (
            v["user"]["id"].as_str().expect("user id").to_string(),
            v["token"].as_str().expect("user token").to_string(),
        )
    });
    let (posters, subs) = users.split_at(npost);
    let client_channel = |i: usize| i % cfg.channels;
    let sub_channel = |j: usize| j % cfg.channels;
    let memberships: Vec<(String, String)> = posters
        .iter()
        .enumerate()
        .map(|(u, (id, _))| {
            (
                channel_ids[client_channel(u / cfg.tokens_per_client)].clone(),
                id.clone(),
            )
        })
        .chain(
            subs.iter()
                .enumerate()
                .map(|(j, (id, _))| (channel_ids[sub_channel(j)].clone(), id.clone())),
        )
        .collect();
    parallel(&admin, &token, &memberships, |http, (c, u)| {
        http.ok(
            "POST",
            &format!("/v1/channels/{c}/members"),
            Some(&json!({ "user": u })),
        );
    });
    let provision_secs = t.elapsed().as_secs_f64();

    // Subscribers: tickets minted just before use (30 s lifetime).
    let t = Instant::now();
    let sub_ids: Vec<String> = subs.iter().map(|(id, _)| id.clone()).collect();
    let urls = parallel(&admin, &token, &sub_ids, |http, u| {
        let v = http.ok("POST", "/v1/tickets", Some(&json!({ "user": u })));
        v["url"].as_str().expect("ticket url").to_string()
    });
    let sockets: Vec<Sub> = urls
        .iter()
        .enumerate()
        .map(|(j, url)| {
            let (stream, buf) = ws_connect(url, j as u64)
                .unwrap_or_else(|e| panic!("subscriber {j}: websocket to {url}: {e}"));
            Sub {
                stream,
                buf,
                channel: sub_channel(j),
                open: true,
            }
        })
        .collect();
    // RTM posters: one websocket each, as the client's first user.
    let poster_ids: Vec<String> = match cfg.via {
        Via::Http => Vec::new(),
        Via::Rtm => (0..cfg.clients)
            .map(|i| posters[i * cfg.tokens_per_client].0.clone())
            .collect(),
    };
    let poster_urls = parallel(&admin, &token, &poster_ids, |http, u| {
        let v = http.ok("POST", "/v1/tickets", Some(&json!({ "user": u })));
        v["url"].as_str().expect("ticket url").to_string()
    });
    let mut poster_sockets: Vec<Option<(TcpStream, Vec<u8>)>> = poster_urls
        .iter()
        .enumerate()
        .map(|(i, url)| {
            let ws = ws_connect(url, (cfg.subscribers + i) as u64)
                .unwrap_or_else(|e| panic!("poster {i}: websocket to {url}: {e}"));
            Some(ws)
        })
        .collect();
    poster_sockets.resize_with(cfg.clients, || None);
    let connect_secs = t.elapsed().as_secs_f64();
    let stats_before = stats(&admin, &token);
    assert_eq!(
        stats_before.connections,
        (cfg.subscribers + poster_ids.len()) as u64,
        "/v1/stats connections after every subscriber's hello"
    );

    // The run.
    eprintln!(
        "post_throughput: {} posters, {} subscribers; {} s warm-up, {} s measured",
        cfg.clients,
        cfg.subscribers,
        cfg.warmup.as_secs(),
        cfg.measure.as_secs()
    );
    let stop = AtomicBool::new(false);
    let received_count = AtomicU64::new(0);
    let start_ns = now_ns() + START_DELAY.as_nanos() as u64;
    let warm_ns = start_ns + cfg.warmup.as_nanos() as u64;
    let end_ns = warm_ns + cfg.measure.as_nanos() as u64;
    let window = Window { warm_ns, end_ns };
    let host = api.to_string();
    let (results, sub_result, cpu, drain_secs) = std::thread::scope(|s| {
        let _stop_guard = StopOnDrop(&stop);
        let sub_thread = std::thread::Builder::new()
            .name("subscriber".into())
            .spawn_scoped(s, || {
                subscriber(sockets, cfg.clients, window, &stop, &received_count)
            })
            .expect("subscriber thread");
        let poster_threads: Vec<_> = poster_sockets
            .into_iter()
            .enumerate()
            .map(|(i, ws)| {
                let args = PosterArgs {
                    ws,
                    schedule: cfg.rate.map(|rate| Schedule {
                        interval_ns: cfg.clients as f64 * 1e9 / rate,
                        offset_ns: i as f64 * 1e9 / rate,
                    }),
                    client: i as u32,
                    api,
                    host: host.clone(),
                    channel: channel_ids[client_channel(i)].clone(),
                    tokens: posters[i * cfg.tokens_per_client..(i + 1) * cfg.tokens_per_client]
                        .iter()
                        .map(|(_, t)| t.clone())
                        .collect(),
                    start_ns,
                    window,
                };
                let stop = &stop;
                std::thread::Builder::new()
                    .name(format!("poster-{i}"))
                    .spawn_scoped(s, move || poster(args, stop))
                    .expect("poster thread")
            })
            .collect();
        sleep_until(warm_ns);
        let cpu0 = CpuSnapshot::take(pid);
        sleep_until(end_ns);
        let cpu1 = CpuSnapshot::take(pid);
        let results: Vec<PosterResult> = poster_threads
            .into_iter()
            .map(|h| h.join().expect("poster thread"))
            .collect();
        // Every acknowledged post must reach every subscriber of its channel.
        let expected: u64 = (0..cfg.subscribers)
            .map(|j| {
                results
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| client_channel(*i) == sub_channel(j))
                    .map(|(_, r)| r.acked.len() as u64)
                    .sum::<u64>()
            })
            .sum();
        let t = Instant::now();
        let mut last = (received_count.load(Ordering::Relaxed), Instant::now());
        loop {
            let got = received_count.load(Ordering::Relaxed);
            if got >= expected || t.elapsed() >= DRAIN_MAX {
                break;
            }
            if got != last.0 {
                last = (got, Instant::now());
            } else if last.1.elapsed() >= DRAIN_IDLE {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let drain_secs = t.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let sub_result = sub_thread.join().expect("subscriber thread");
        (results, sub_result, cpu1.minus(&cpu0), drain_secs)
    });
    let stats_after = stats(&admin, &token);

    // Matching: every acknowledged post at every subscriber of its channel.
    let mut missing = 0u64;
    let mut missing_examples = Vec::new();
    let mut matched_acked = 0u64;
    let mut matched_unacked = 0u64;
    let mut unknown = 0u64;
    for (j, got) in sub_result.received.iter().enumerate() {
        for (i, r) in results.iter().enumerate() {
            if client_channel(i) != sub_channel(j) {
                continue;
            }
            for &seq in &r.acked {
                if got.contains(&((i as u64) << 32 | seq as u64)) {
                    matched_acked += 1;
                } else {
                    missing += 1;
                    if missing_examples.len() < 5 {
                        missing_examples.push(format!("subscriber {j}: client {i} seq {seq}"));
                    }
                }
            }
        }
        for &key in got {
            let (i, seq) = ((key >> 32) as usize, key as u32);
            match results.get(i) {
                Some(r) if seq < r.sent => {
                    if r.acked.binary_search(&seq).is_err() {
                        matched_unacked += 1;
                    }
                }
                _ => unknown += 1,
            }
        }
    }

    // Tear down: subscribers are closed (the subscriber thread dropped
    // them); SIGTERM must make the server exit.
    let mut server = guard.server.take().expect("server");
    // SAFETY: plain kill(2) on the pid of a child we have not reaped.
    unsafe {
        libc::kill(server.id() as libc::pid_t, libc::SIGTERM);
    }
    let t = Instant::now();
    let exit = match wait_timeout(&mut server, SHUTDOWN_TIMEOUT) {
        Some(s) => s,
        None => {
            let _ = server.kill();
            let _ = server.wait();
            print_stderr_tail(&guard.stderr_path(), 40);
            panic!("server did not exit within {SHUTDOWN_TIMEOUT:?} of SIGTERM");
        }
    };
    let exit_secs = t.elapsed().as_secs_f64();

    // Report.
    let secs = cfg.measure.as_secs_f64();
    let window_acks: u64 = results.iter().map(|r| r.window_acks).sum();
    let total_acks: u64 = results.iter().map(|r| r.acked.len() as u64).sum();
    let total_sent: u64 = results.iter().map(|r| r.sent as u64).sum();
    let mut errors: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for r in &results {
        for (k, (w, a)) in &r.errors {
            let e = errors.entry(k.as_str()).or_default();
            e.0 += w;
            e.1 += a;
        }
    }
    let window_errors: u64 = errors.values().map(|e| e.0).sum();
    let total_errors: u64 = errors.values().map(|e| e.1).sum();
    let mut post_lat: Vec<u64> = results
        .iter()
        .flat_map(|r| r.latencies.iter().copied())
        .collect();
    post_lat.sort_unstable();
    let mut del_lat = sub_result.latencies.clone();
    del_lat.sort_unstable();
    let per_client: Vec<u64> = results.iter().map(|r| r.window_acks).collect();
    let (min_c, max_c) = (
        per_client.iter().min().copied().unwrap_or(0),
        per_client.iter().max().copied().unwrap_or(0),
    );

    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M:%S UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut out = String::new();
    let w = &mut out;
    let row = |w: &mut String, name: &str, value: String| {
        let _ = writeln!(w, "  {name:<46} {value}");
    };
    let what = match cfg.via {
        Via::Http => "chat.postMessage",
        Via::Rtm => "RTM message",
    };
    let _ = writeln!(
        w,
        "{what} throughput — transponder serve --shards 2 --durability {mode}"
    );
    let _ = writeln!(
        w,
        "  machine: nproc {nproc}, kernel {}, {date}",
        kernel.trim()
    );
    match &guard.pg {
        Some((url, schema)) => {
            let _ = writeln!(w, "  store: PostgreSQL {url}, schema {schema}");
        }
        None => {
            let _ = writeln!(
                w,
                "  store: {} on {}",
                guard.dir.join("data").display(),
                filesystem_of(&guard.dir)
            );
        }
    }
    let conn = match cfg.via {
        Via::Http => format!(
            "1 keep-alive HTTP/1.1 connection each, {} tokens each",
            cfg.tokens_per_client
        ),
        Via::Rtm => "1 websocket each, RTM message frames".to_string(),
    };
    let pace = match cfg.rate {
        Some(r) => format!("open loop at {r:.0} posts/s in all"),
        None => "closed loop".to_string(),
    };
    let _ = writeln!(
        w,
        "  clients: {} poster threads ({conn}, {pace}), {} channels, {} websocket \
         subscribers (1 epoll thread), all in the bench process on the same {nproc} cores",
        cfg.clients, cfg.channels, cfg.subscribers
    );
    let _ = writeln!(
        w,
        "  timing: {} s warm-up, {} s measured; provisioning {provision_secs:.1} s, \
         subscribers connected in {connect_secs:.2} s",
        cfg.warmup.as_secs(),
        cfg.measure.as_secs()
    );
    row(
        w,
        "acknowledged posts/s (ok:true, window)",
        format!("{:>10.0}", window_acks as f64 / secs),
    );
    row(
        w,
        "acknowledged posts (window / all)",
        format!("{window_acks:>10} / {total_acks} of {total_sent} sent"),
    );
    row(
        w,
        "posts/s per client (min / max)",
        format!("{:>10.0} / {:.0}", min_c as f64 / secs, max_c as f64 / secs),
    );
    row(
        w,
        "HTTP errors (window / all)",
        format!("{window_errors:>10} / {total_errors}"),
    );
    for (k, (wn, a)) in &errors {
        row(w, &format!("  {k}"), format!("{wn:>10} / {a}"));
    }
    row(
        w,
        "post latency p50 / p99 / p99.9 / max",
        percentiles(&post_lat),
    );
    row(
        w,
        "delivery latency p50 / p99 / p99.9 / max",
        percentiles(&del_lat),
    );
    row(
        w,
        "deliveries matched (window / all)",
        format!(
            "{:>10} / {matched_acked} acknowledged (+{matched_unacked} not acknowledged)",
            del_lat.len()
        ),
    );
    row(
        w,
        "acknowledged posts missing at subscriber",
        format!("{missing:>10}"),
    );
    row(
        w,
        "duplicates / out of order / unknown",
        format!(
            "{:>10} / {} / {unknown}",
            sub_result.duplicates, sub_result.out_of_order
        ),
    );
    row(
        w,
        "other frames at subscribers",
        format!("{:>10}", sub_result.other_frames),
    );
    row(
        w,
        "drain after the posters stopped",
        format!("{drain_secs:>10.2} s"),
    );
    row(
        w,
        "server /v1/stats deliveries / slow consumers",
        format!(
            "{:>10} / {}",
            stats_after.deliveries - stats_before.deliveries,
            stats_after.slow_consumers
        ),
    );
    let per_post = |pct: f64| pct / 100.0 * 1e6 / (window_acks as f64 / secs).max(1e-9);
    let _ = writeln!(
        w,
        "  CPU over the window: % of one core, µs per acknowledged post, context switches/s \
         (voluntary + involuntary)"
    );
    let cpu_row = |w: &mut String, name: &str, t: &ThreadUse| {
        row(
            w,
            &format!("  {name}"),
            format!(
                "{:>10.1} % {:>8.1} µs {:>9.0} cs/s",
                t.pct,
                per_post(t.pct),
                t.switches_per_sec
            ),
        );
    };
    for (name, t) in cpu
        .server
        .iter()
        .chain([("total".to_string(), cpu.server_total())].iter())
    {
        cpu_row(w, &format!("server {name}"), t);
    }
    for (name, t) in cpu
        .bench
        .iter()
        .chain([("total".to_string(), cpu.bench_total())].iter())
    {
        cpu_row(w, &format!("bench {name}"), t);
    }
    let [tasks, irq, steal, idle] = cpu.machine;
    let others = (tasks - cpu.server_total().pct - cpu.bench_total().pct).max(0.0);
    for (name, pct) in [
        ("other processes (machine user+sys - above)", others),
        ("machine irq + softirq", irq),
    ] {
        row(
            w,
            &format!("  {name}"),
            format!("{pct:>10.1} % {:>8.1} µs", per_post(pct)),
        );
    }
    row(
        w,
        "  machine steal / idle",
        format!("{steal:>10.1} % / {idle:.1} %"),
    );
    row(
        w,
        "SIGTERM -> server exit",
        format!("{exit_secs:>10.2} s ({exit})"),
    );
    print!("{out}");
    let _ = io::stdout().flush();
    // The server logs a few INFO lines at start and stop; anything louder
    // is shown.
    let loud = std::fs::read_to_string(guard.stderr_path())
        .map(|t| {
            t.lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .count()
        })
        .unwrap_or(0);
    if loud > 0 {
        print_stderr_tail(&guard.stderr_path(), 20);
    }
    println!();

    assert!(
        sub_result.failures.is_empty(),
        "subscriber failures: {:#?}",
        sub_result.failures
    );
    assert_eq!(
        missing, 0,
        "acknowledged posts missing at their subscriber, e.g. {missing_examples:?}"
    );
    assert_eq!(sub_result.duplicates, 0, "duplicate deliveries");
    assert_eq!(
        sub_result.out_of_order, 0,
        "deliveries out of order per poster"
    );
    assert_eq!(unknown, 0, "deliveries of posts never sent");
    assert!(total_acks > 0, "no post was acknowledged");
    assert!(exit.success(), "server exited with {exit} after SIGTERM");
}

/// `p50 / p99 / p99.9 / max` in ms of sorted ns samples.
fn percentiles(sorted: &[u64]) -> String {
    if sorted.is_empty() {
        return format!("{:>10}", "no samples");
    }
    let at = |q: f64| {
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1] as f64 / 1e6
    };
    format!(
        "{:>10.2} / {:.2} / {:.2} / {:.2} ms ({} samples)",
        at(0.50),
        at(0.99),
        at(0.999),
        *sorted.last().unwrap() as f64 / 1e6,
        sorted.len()
    )
}

fn sleep_until(ns: u64) {
    let now = now_ns();
    if ns > now {
        std::thread::sleep(Duration::from_nanos(ns - now));
    }
}

/// The filesystem type holding `path`, from /proc/mounts (longest mount
/// point that is a prefix).
fn filesystem_of(path: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && path.starts_with(f[1]))
                .then(|| (f[1].len(), format!("{} ({})", f[2], f[0])))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "?".to_string(), |(_, fs)| fs)
}

// ------------------------------------------------------------------- CPU --

/// CPU ticks and context switches per thread group of the server and of
/// this process, and the machine's /proc/stat counters, at one moment.
struct CpuSnapshot {
    at: Instant,
    server: BTreeMap<String, ThreadStat>,
    bench: BTreeMap<String, ThreadStat>,
    machine: [u64; 4],
}

/// One thread group's counters (summed over its threads).
#[derive(Clone, Copy, Default)]
struct ThreadStat {
    /// utime + stime, in clock ticks.
    ticks: u64,
    /// Voluntary + involuntary context switches.
    switches: u64,
}

/// One thread group over the window.
#[derive(Clone, Copy, Default)]
struct ThreadUse {
    /// % of one core.
    pct: f64,
    switches_per_sec: f64,
}

/// The difference of two snapshots.
struct CpuUsage {
    server: Vec<(String, ThreadUse)>,
    bench: Vec<(String, ThreadUse)>,
    /// [tasks, irq, steal, idle] over the window, % of one core.
    machine: [f64; 4],
}

impl CpuSnapshot {
    fn take(server_pid: u32) -> CpuSnapshot {
        CpuSnapshot {
            at: Instant::now(),
            server: thread_stats(&server_pid.to_string()),
            bench: thread_stats("self"),
            machine: machine_ticks(),
        }
    }

    fn minus(&self, earlier: &CpuSnapshot) -> CpuUsage {
        let hz = ticks_per_sec();
        let secs = (self.at - earlier.at).as_secs_f64().max(1e-3);
        let diff = |now: &BTreeMap<String, ThreadStat>, then: &BTreeMap<String, ThreadStat>| {
            now.iter()
                .map(|(k, v)| {
                    let t = then.get(k).copied().unwrap_or_default();
                    let use_ = ThreadUse {
                        pct: v.ticks.saturating_sub(t.ticks) as f64 / hz / secs * 100.0,
                        switches_per_sec: v.switches.saturating_sub(t.switches) as f64 / secs,
                    };
                    (k.clone(), use_)
                })
                .collect::<Vec<_>>()
        };
        let mut machine = [0.0; 4];
        for (m, (now, then)) in machine
            .iter_mut()
            .zip(self.machine.iter().zip(&earlier.machine))
        {
            *m = now.saturating_sub(*then) as f64 / hz / secs * 100.0;
        }
        CpuUsage {
            server: diff(&self.server, &earlier.server),
            bench: diff(&self.bench, &earlier.bench),
            machine,
        }
    }
}

impl CpuUsage {
    fn total(v: &[(String, ThreadUse)]) -> ThreadUse {
        v.iter().fold(ThreadUse::default(), |a, (_, t)| ThreadUse {
            pct: a.pct + t.pct,
            switches_per_sec: a.switches_per_sec + t.switches_per_sec,
        })
    }

    fn server_total(&self) -> ThreadUse {
        CpuUsage::total(&self.server)
    }

    fn bench_total(&self) -> ThreadUse {
        CpuUsage::total(&self.bench)
    }
}

/// Counters per thread group of /proc/<pid>/task: threads named `poster-N`
/// count as `poster-*`, `store-reader-N` as `store-reader-*`.
fn thread_stats(pid: &str) -> BTreeMap<String, ThreadStat> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let switches: u64 = status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        let group = match comm.rfind('-') {
            Some(i)
                if comm[i + 1..].chars().all(|c| c.is_ascii_digit())
                    && !comm.starts_with("shard-") =>
            {
                format!("{}-*", &comm[..i])
            }
            _ => comm.to_string(),
        };
        let e: &mut ThreadStat = out.entry(group).or_default();
        e.ticks += stat_ticks(&stat).unwrap_or(0);
        e.switches += switches;
    }
    out
}

// ---------------------------------------------------------------- poster --

#[derive(Clone, Copy)]
struct Window {
    warm_ns: u64,
    end_ns: u64,
}

impl Window {
    fn contains(&self, ns: u64) -> bool {
        ns >= self.warm_ns && ns < self.end_ns
    }
}

/// When an open-loop poster sends: post k at start + offset + k·interval.
#[derive(Clone, Copy)]
struct Schedule {
    interval_ns: f64,
    offset_ns: f64,
}

struct PosterArgs {
    /// Via::Rtm: the poster's websocket and the bytes read after its hello.
    ws: Option<(TcpStream, Vec<u8>)>,
    schedule: Option<Schedule>,
    client: u32,
    api: SocketAddrV4,
    host: String,
    channel: String,
    tokens: Vec<String>,
    start_ns: u64,
    window: Window,
}

/// One client: posts, one at a time on one keep-alive connection, from
/// `start_ns` until the window ends.
fn poster(a: PosterArgs, stop: &AtomicBool) -> PosterResult {
    if a.ws.is_some() {
        return rtm_poster(a, stop);
    }
    let mut r = PosterResult::default();
    let connect = || -> io::Result<TcpStream> {
        let s = TcpStream::connect(a.api)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(REQUEST_TIMEOUT))?;
        Ok(s)
    };
    // Connected before the clock starts; reconnects after an error.
    let mut conn = connect().ok();
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut req: Vec<u8> = Vec::with_capacity(1024);
    sleep_until(a.start_ns);
    let count = |r: &mut PosterResult, kind: String, sent: u64| {
        let e = r.errors.entry(kind).or_default();
        e.0 += u64::from(a.window.contains(sent));
        e.1 += 1;
    };
    loop {
        if now_ns() >= a.window.end_ns || stop.load(Ordering::Relaxed) {
            break;
        }
        let stream = match conn.as_mut() {
            Some(s) => s,
            None => match connect() {
                Ok(s) => conn.insert(s),
                Err(e) => {
                    count(&mut r, format!("connect: {}", e.kind()), now_ns());
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        let seq = r.sent;
        let Some(sent) = next_send(&a, seq) else {
            break;
        };
        r.sent += 1;
        let token = &a.tokens[seq as usize % a.tokens.len()];
        let body = format!(
            r#"{{"channel":"{}","text":"pb {} {seq} {sent}"}}"#,
            a.channel, a.client
        );
        req.clear();
        let _ = write!(
            req,
            "POST /api/chat.postMessage HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
            a.host,
            body.len()
        );
        let answer = stream
            .write_all(&req)
            .and_then(|()| read_response(stream, &mut buf));
        let done = now_ns();
        match answer {
            Ok(resp) => {
                if resp.close {
                    conn = None;
                }
                let body = &buf[resp.body.clone()];
                if resp.status == 200 && find(body, br#""ok":true"#).is_some() {
                    r.acked.push(seq);
                    if a.window.contains(sent) {
                        r.window_acks += 1;
                        r.latencies.push(done - sent);
                    }
                } else if resp.status == 200 {
                    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
                    count(&mut r, format!("ok:false {}", v["error"]), sent);
                } else {
                    count(&mut r, format!("HTTP {}", resp.status), sent);
                    if let Some(secs) = resp.retry_after {
                        std::thread::sleep(Duration::from_secs(secs.min(5)));
                    }
                }
                buf.drain(..resp.body.end);
            }
            Err(e) => {
                count(&mut r, format!("io: {}", e.kind()), sent);
                conn = None;
                buf.clear();
            }
        }
    }
    r
}

/// When post `seq` is sent: now (closed loop) or at its scheduled time,
/// after sleeping until then; None if that is past the window.
fn next_send(a: &PosterArgs, seq: u32) -> Option<u64> {
    let Some(s) = a.schedule else {
        return Some(now_ns());
    };
    let at = a.start_ns + (s.offset_ns + seq as f64 * s.interval_ns) as u64;
    if at >= a.window.end_ns {
        return None;
    }
    sleep_until(at);
    Some(at)
}

/// [`poster`] over RTM: `message` frames on the poster's websocket, each
/// acknowledged by its `reply_to` answer.
fn rtm_poster(mut a: PosterArgs, stop: &AtomicBool) -> PosterResult {
    let mut r = PosterResult::default();
    let (mut stream, mut buf) = a.ws.take().expect("a websocket");
    let mut frame: Vec<u8> = Vec::with_capacity(256);
    sleep_until(a.start_ns);
    let count = |r: &mut PosterResult, kind: String, sent: u64| {
        let e = r.errors.entry(kind).or_default();
        e.0 += u64::from(a.window.contains(sent));
        e.1 += 1;
    };
    while now_ns() < a.window.end_ns && !stop.load(Ordering::Relaxed) {
        let seq = r.sent;
        let Some(sent) = next_send(&a, seq) else {
            break;
        };
        r.sent += 1;
        let id = seq as u64 + 1;
        let payload = format!(
            r#"{{"id":{id},"type":"message","channel":"{}","text":"pb {} {seq} {sent}"}}"#,
            a.channel, a.client
        );
        masked_text_frame(&mut frame, payload.as_bytes());
        let answer = stream
            .write_all(&frame)
            .and_then(|()| read_reply(&mut stream, &mut buf, id));
        let done = now_ns();
        match answer {
            Ok(reply) if find(&reply, br#""ok":true"#).is_some() => {
                r.acked.push(seq);
                if a.window.contains(sent) {
                    r.window_acks += 1;
                    r.latencies.push(done - sent);
                }
            }
            Ok(reply) => {
                let v: Value = serde_json::from_slice(&reply).unwrap_or(Value::Null);
                count(&mut r, format!("ok:false {}", v["error"]), sent);
            }
            Err(e) => {
                // The socket is no longer usable: the rest of the run is lost.
                count(&mut r, format!("websocket: {e}"), sent);
                break;
            }
        }
    }
    r
}

/// `payload` as one client text frame (masked with a zero key, so the
/// payload goes as is).
fn masked_text_frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.clear();
    out.push(0x81);
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(payload);
}

/// Reads frames until the one answering `id` (`"reply_to":id`), skipping
/// events (the poster's own message among them) and answering pings.
fn read_reply(stream: &mut TcpStream, buf: &mut Vec<u8>, id: u64) -> io::Result<Vec<u8>> {
    let want = format!(r#""reply_to":{id}"#);
    let mut chunk = [0u8; 16384];
    loop {
        let mut used = 0;
        let mut found = None;
        while let Some(frame) = parse_frame(&buf[used..]) {
            let f = frame.map_err(io::Error::other)?;
            let payload = &buf[used + f.payload.start..used + f.payload.end];
            match f.opcode {
                0x1 => {
                    if let Some(at) = find(payload, want.as_bytes()) {
                        // Not a prefix of a longer id (reply_to 1 vs 12).
                        let next = payload.get(at + want.len()).copied();
                        if !next.is_some_and(|c| c.is_ascii_digit()) {
                            found = Some(payload.to_vec());
                        }
                    }
                }
                0x9 => {
                    let mut pong = vec![0x8a, 0x80 | payload.len() as u8, 0, 0, 0, 0];
                    pong.extend_from_slice(payload);
                    stream.write_all(&pong)?;
                }
                0x8 => return Err(io::Error::other("closed by the server")),
                _ => {}
            }
            used += f.len;
            if found.is_some() {
                break;
            }
        }
        buf.drain(..used);
        if let Some(reply) = found {
            return Ok(reply);
        }
        let k = stream.read(&mut chunk)?;
        if k == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the reply",
            ));
        }
        buf.extend_from_slice(&chunk[..k]);
    }
}

struct Response {
    status: u16,
    /// The body's range in the buffer.
    body: std::ops::Range<usize>,
    close: bool,
    retry_after: Option<u64>,
}

/// Reads one Content-Length response into `buf` (which starts empty: one
/// request at a time).
fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Response> {
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        let k = stream.read(&mut chunk)?;
        if k == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the response",
            ));
        }
        buf.extend_from_slice(&chunk[..k]);
    };
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| io::Error::other("response head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line in {head:?}")))?;
    let (mut length, mut close, mut retry_after) = (None, false, None);
    for l in lines {
        let Some((name, value)) = l.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        } else if name.eq_ignore_ascii_case("retry-after") {
            retry_after = value.parse().ok();
        }
    }
    let length =
        length.ok_or_else(|| io::Error::other(format!("no Content-Length in {head:?}")))?;
    while buf.len() < head_end + length {
        let k = stream.read(&mut chunk)?;
        if k == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed inside the body",
            ));
        }
        buf.extend_from_slice(&chunk[..k]);
    }
    Ok(Response {
        status,
        body: head_end..head_end + length,
        close,
        retry_after,
    })
}

// ------------------------------------------------------------ subscriber --

/// One subscriber's websocket, after its `hello`.
struct Sub {
    stream: TcpStream,
    /// Bytes read and not yet parsed.
    buf: Vec<u8>,
    channel: usize,
    open: bool,
}

/// Reads every subscriber's frames until `stop`: records each post's
/// receipt and its latency.
fn subscriber(
    mut subs: Vec<Sub>,
    clients: usize,
    window: Window,
    stop: &AtomicBool,
    received_count: &AtomicU64,
) -> SubResult {
    let mut res = SubResult {
        received: vec![HashSet::new(); subs.len()],
        latencies: Vec::new(),
        duplicates: 0,
        out_of_order: 0,
        other_frames: 0,
        failures: Vec::new(),
    };
    // Per subscriber and client, the last seq received (order check).
    let mut last: Vec<Vec<Option<u32>>> = vec![vec![None; clients]; subs.len()];
    // SAFETY: epoll_create1 returns a new descriptor or -1.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(ep >= 0, "epoll_create1: {}", io::Error::last_os_error());
    // SAFETY: ep is ours.
    let ep = unsafe { OwnedFd::from_raw_fd(ep) };
    for (j, s) in subs.iter().enumerate() {
        s.stream.set_nonblocking(true).expect("nonblocking");
        epoll_ctl(
            ep.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            s.stream.as_raw_fd(),
            libc::EPOLLIN as u32,
            j as u64,
        )
        .expect("epoll add");
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; subs.len().max(1)];
    let mut chunk = vec![0u8; 256 * 1024];
    // Bytes that came with the hello are parsed first.
    let mut ready: Vec<usize> = (0..subs.len()).collect();
    loop {
        for &j in &ready {
            let s = &mut subs[j];
            if !s.open {
                continue;
            }
            let mut eof = false;
            loop {
                match s.stream.read(&mut chunk) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(k) => s.buf.extend_from_slice(&chunk[..k]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        res.failures.push(format!("subscriber {j}: read: {e}"));
                        eof = true;
                        break;
                    }
                }
            }
            let now = now_ns();
            let mut used = 0;
            while let Some(frame) = parse_frame(&s.buf[used..]) {
                let frame = match frame {
                    Ok(f) => f,
                    Err(e) => {
                        res.failures.push(format!("subscriber {j}: {e}"));
                        eof = true;
                        break;
                    }
                };
                let payload = &s.buf[used + frame.payload.start..used + frame.payload.end];
                match frame.opcode {
                    0x1 => match parse_mark(payload) {
                        Some((client, seq, sent)) => {
                            let key = (client as u64) << 32 | seq as u64;
                            if !res.received[j].insert(key) {
                                res.duplicates += 1;
                            } else {
                                received_count.fetch_add(1, Ordering::Relaxed);
                                if window.contains(sent) {
                                    res.latencies.push(now.saturating_sub(sent));
                                }
                                if let Some(l) = last[j].get_mut(client as usize) {
                                    if l.is_some_and(|prev| prev > seq) {
                                        res.out_of_order += 1;
                                    }
                                    *l = Some(seq);
                                }
                            }
                        }
                        None => res.other_frames += 1,
                    },
                    0x9 => {
                        // Ping: a masked pong (zero mask) with the payload.
                        let mut pong = vec![0x8a, 0x80 | payload.len() as u8, 0, 0, 0, 0];
                        pong.extend_from_slice(payload);
                        let _ = s.stream.write_all(&pong);
                    }
                    0xa => {}
                    0x8 => {
                        let code = (payload.len() >= 2)
                            .then(|| u16::from_be_bytes([payload[0], payload[1]]));
                        res.failures.push(format!(
                            "subscriber {j} (channel {}): closed by the server, code {code:?} {:?}",
                            s.channel,
                            String::from_utf8_lossy(payload.get(2..).unwrap_or_default())
                        ));
                        eof = true;
                    }
                    op => {
                        res.failures
                            .push(format!("subscriber {j}: unexpected opcode {op:#x}"));
                    }
                }
                used += frame.len;
                if eof {
                    break;
                }
            }
            s.buf.drain(..used);
            if eof {
                if !stop.load(Ordering::Relaxed) {
                    res.failures
                        .push(format!("subscriber {j}: connection ended during the run"));
                }
                let _ = epoll_ctl(
                    ep.as_raw_fd(),
                    libc::EPOLL_CTL_DEL,
                    s.stream.as_raw_fd(),
                    0,
                    0,
                );
                s.open = false;
            }
        }
        ready.clear();
        if stop.load(Ordering::Relaxed) {
            break;
        }
        // SAFETY: events has room for events.len() entries.
        let k = unsafe {
            libc::epoll_wait(
                ep.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as libc::c_int,
                50,
            )
        };
        if k < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            panic!("epoll_wait: {e}");
        }
        ready.extend(events[..k as usize].iter().map(|e| e.u64 as usize));
    }
    res
}

struct Frame {
    opcode: u8,
    payload: std::ops::Range<usize>,
    /// Bytes of the whole frame.
    len: usize,
}

/// The first complete frame of `b`; None when more bytes are needed.
fn parse_frame(b: &[u8]) -> Option<Result<Frame, String>> {
    if b.len() < 2 {
        return None;
    }
    if b[1] & 0x80 != 0 {
        return Some(Err(format!("masked server frame {:02x?}", &b[..2])));
    }
    if b[0] & 0x80 == 0 || b[0] & 0x70 != 0 {
        return Some(Err(format!(
            "fragmented or RSV server frame {:02x?}",
            &b[..2]
        )));
    }
    let (len, off) = match b[1] & 0x7f {
        126 if b.len() < 4 => return None,
        126 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
        127 if b.len() < 10 => return None,
        127 => (
            u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
            10,
        ),
        l => (l as usize, 2),
    };
    if b.len() < off + len {
        return None;
    }
    Some(Ok(Frame {
        opcode: b[0] & 0x0f,
        payload: off..off + len,
        len: off + len,
    }))
}

/// `pb <client> <seq> <send ns>` inside a message event's text.
fn parse_mark(payload: &[u8]) -> Option<(u32, u32, u64)> {
    let at = find(payload, MARK)? + MARK.len();
    let mut nums = payload[at..]
        .split(|&c| c == b' ' || c == b'"')
        .take(3)
        .map(|n| std::str::from_utf8(n).ok()?.parse::<u64>().ok());
    let client = nums.next()??;
    let seq = nums.next()??;
    let sent = nums.next()??;
    Some((client as u32, seq as u32, sent))
}

fn epoll_ctl(ep: RawFd, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: ev lives across the call; ep and fd are open descriptors.
    if unsafe { libc::epoll_ctl(ep, op, fd, &mut ev) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Opens a websocket (blocking) and reads up to its `hello`; the socket and
/// the bytes that came after the hello.
fn ws_connect(url: &str, seed: u64) -> Result<(TcpStream, Vec<u8>), String> {
    let rest = url.strip_prefix("ws://").ok_or("not a ws:// url")?;
    let (hp, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let to: SocketAddrV4 = hp.parse().map_err(|_| format!("bad host:port {hp}"))?;
    let mut s = TcpStream::connect(to).map_err(|e| format!("connect: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&seed.to_le_bytes());
    nonce[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    let key = base64_16(nonce);
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {hp}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(request.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut head_end = None;
    loop {
        if head_end.is_none() {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..i]).into_owned();
                if !head.starts_with("HTTP/1.1 101") {
                    return Err(format!("no 101: {:?}", String::from_utf8_lossy(&buf)));
                }
                let accept_ok = head.lines().any(|l| {
                    l.split_once(':').is_some_and(|(n, v)| {
                        n.eq_ignore_ascii_case("sec-websocket-accept") && v.trim() == accept
                    })
                });
                if !accept_ok {
                    return Err(format!("wrong Sec-WebSocket-Accept: {head:?}"));
                }
                head_end = Some(i + 4);
            }
        }
        if let Some(h) = head_end {
            if let Some(frame) = parse_frame(&buf[h..]) {
                let f = frame?;
                let payload = &buf[h + f.payload.start..h + f.payload.end];
                let v: Value = serde_json::from_slice(payload).map_err(|_| {
                    format!(
                        "first frame not JSON: {:?}",
                        String::from_utf8_lossy(payload)
                    )
                })?;
                if f.opcode != 0x1 || v["type"] != "hello" {
                    return Err(format!("first frame is not hello: {v}"));
                }
                let rest = buf[h + f.len..].to_vec();
                return Ok((s, rest));
            }
        }
        let k = s.read(&mut chunk).map_err(|e| format!("recv: {e}"))?;
        if k == 0 {
            return Err(format!(
                "closed by the server: {:?}",
                String::from_utf8_lossy(&buf)
            ));
        }
        buf.extend_from_slice(&chunk[..k]);
    }
}

/// Base64 of 16 bytes (a Sec-WebSocket-Key).
fn base64_16(bytes: [u8; 16]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(24);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let v = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        let chars = chunk.len() + 1;
        for i in 0..4 {
            if i < chars {
                out.push(ALPHABET[(v >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ------------------------------------------------------------- admin API --

struct Stats {
    connections: u64,
    deliveries: u64,
    slow_consumers: u64,
}

fn stats(admin: &SocketAddrV4, token: &str) -> Stats {
    let (status, v) = Http::connect(admin, token)
        .request("GET", "/v1/stats", None)
        .unwrap_or_else(|e| panic!("GET /v1/stats: {e}"));
    if status != 200 || v["ok"] != json!(true) {
        panic!("GET /v1/stats answered {status}: {v}");
    }
    let shards = v["shards"].as_array().expect("stats shards");
    let sum = |k: &str| shards.iter().map(|s| s[k].as_u64().unwrap_or(0)).sum();
    Stats {
        connections: sum("connections"),
        deliveries: sum("deliveries"),
        slow_consumers: sum("slow_consumers"),
    }
}

/// Runs `f` over `items` on ADMIN_THREADS admin connections, keeping order
/// of results.
fn parallel<T: Sync, R: Send>(
    admin: &SocketAddrV4,
    token: &str,
    items: &[T],
    f: impl Fn(&mut Http, &T) -> R + Sync,
) -> Vec<R> {
    let chunk = items.len().div_ceil(ADMIN_THREADS).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                let f = &f;
                s.spawn(move || {
                    let mut http = Http::connect(admin, token);
                    part.iter().map(|x| f(&mut http, x)).collect::<Vec<R>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("admin thread"))
            .collect()
    })
}

/// A minimal HTTP/1.1 keep-alive client for the admin API (Content-Length
/// bodies only).
struct Http {
    addr: SocketAddrV4,
    token: String,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Http {
    fn connect(addr: &SocketAddrV4, token: &str) -> Http {
        Http {
            addr: *addr,
            token: token.to_string(),
            stream: None,
            buf: Vec::new(),
        }
    }

    /// Sends a request; panics unless the answer is 200 with `"ok":true`.
    fn ok(&mut self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (status, v) = self
            .request(method, path, body)
            .unwrap_or_else(|e| panic!("admin {method} {path}: {e}"));
        if status != 200 || v["ok"] != json!(true) {
            panic!("admin {method} {path} answered {status}: {v}");
        }
        v
    }

    fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> io::Result<(u16, Value)> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n",
            self.addr, self.token
        );
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        let _ = write!(req, "Content-Length: {}\r\n\r\n{body}", body.len());
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            self.stream = Some(s);
            self.buf.clear();
        }
        let stream = self.stream.as_mut().unwrap();
        stream.write_all(req.as_bytes())?;
        let resp = match read_response(stream, &mut self.buf) {
            Ok(r) => r,
            Err(e) => {
                self.stream = None;
                return Err(e);
            }
        };
        let v = serde_json::from_slice(&self.buf[resp.body.clone()]).map_err(|e| {
            io::Error::other(format!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.buf[resp.body.clone()])
            ))
        });
        self.buf.drain(..resp.body.end);
        if resp.close {
            self.stream = None;
        }
        Ok((resp.status, v?))
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
