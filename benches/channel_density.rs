//! Memory per channel through the real server, at the scale of one host:
//! N conversations (default 16,000,000), each with one member, and every one
//! of them subscribed by exactly one gateway shard.
//!
//! 1. Starts the release server (`--shards 2`, ephemeral ports, a temp data
//!    dir) and creates U users over the admin API (default 2,000); stops it.
//! 2. Starts it again on that store, users but no channels: **RSS empty**.
//! 3. Stops it and runs `transponder channel import` on the store: N
//!    conversations, user `i mod U` the one member of conversation `i`.
//! 4. Starts it again (the import is loaded at start): **RSS loaded**, no
//!    connections; `/v1/stats` must count the N conversations.
//! 5. Opens one websocket per user: each `hello` comes once the connection
//!    is subscribed to all its user's N/U conversations, so every
//!    conversation has exactly one subscribed gateway shard; `/v1/stats`
//!    must count N + U + (gateway shards with a connection) subscriptions
//!    (each connection also subscribes its user's own channel, and each
//!    gateway shard the team channel). **RSS loaded+subscribed**.
//! 6. Closes the websockets, SIGTERMs the server, which must exit cleanly.
//!
//! Prints RSS at each step and bytes per channel (loaded − empty,
//! subscribed − loaded, subscribed − empty, all over N), plus how long the
//! import, the start and the subscriptions took. Asserts nothing about
//! speed or size; fails only when the server misbehaves (no ready line,
//! wrong counts, refused connections, no clean exit).
//!
//! `cargo bench --bench channel_density`; `CHANNELS=n` (default
//! 16,000,000), `DENSITY_USERS=u` (default 2,000), `DENSITY_DIR=path` (where
//! the temporary data dir goes; default the system temp dir — 16M channels
//! take ~3 GB of disk there). The server runs with transparent huge pages
//! off (its default), so RSS counts touched 4 KiB pages.

use std::fmt::Write as _;
use std::io::{BufWriter, Read, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use transponder::loadgen::admin::{par_map, Admin};

#[path = "support/mod.rs"]
mod support;
use support::{die_with_parent, host_port, read_ready_line, wait_timeout};

const DEFAULT_CHANNELS: usize = 16_000_000;
const DEFAULT_USERS: usize = 2_000;
/// Threads opening websockets (each handshake waits for its `hello`).
const CONNECT_THREADS: usize = 16;
/// How long the server may take to print its ready line (it loads the
/// whole store first).
const READY_TIMEOUT: Duration = Duration::from_secs(1800);
/// How long one connection may wait for its `hello` (subscribing thousands
/// of conversations, behind every other connection doing the same).
const HELLO_TIMEOUT: Duration = Duration::from_secs(900);
/// Pause before each RSS reading.
const SETTLE: Duration = Duration::from_secs(3);
/// A second reading with everything subscribed, to show RSS settled.
const LATER: Duration = Duration::from_secs(10);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);
const BUDGET_BYTES_PER_CHANNEL: f64 = 200.0;

fn main() {
    let env_usize = |name: &str, default: usize| match std::env::var(name) {
        Ok(v) => v
            .trim()
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}")),
        Err(_) => default,
    };
    let n = env_usize("CHANNELS", DEFAULT_CHANNELS);
    let users = env_usize("DENSITY_USERS", DEFAULT_USERS).min(n);
    assert!(
        n > 0 && users > 0,
        "CHANNELS and DENSITY_USERS must be positive"
    );
    let parent = std::env::var_os("DENSITY_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    run(n, users, &parent);
}

// ---------------------------------------------------------------- server --

/// The server process and the temp dir; kills and removes both when the
/// bench ends, normally or not.
struct Guard {
    dir: PathBuf,
    server: Option<Child>,
}

impl Guard {
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir.join("server.stderr")
    }

    fn pid(&self) -> u32 {
        self.server.as_ref().expect("server running").id()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut s) = self.server.take() {
            if std::thread::panicking() {
                eprintln!("channel_density: failed; killing the server");
                print_tail(&self.stderr_path(), 40);
            }
            let _ = s.kill();
            let _ = s.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running server's addresses.
struct Running {
    admin: SocketAddrV4,
    token: String,
    /// Spawn to ready line.
    ready_secs: f64,
}

const ADMIN_TOKEN: &str = "density-bench";

/// Starts `transponder serve --shards 2` on the guard's data dir.
fn start(guard: &mut Guard) -> Running {
    assert!(guard.server.is_none(), "one server at a time");
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(guard.stderr_path())
        .expect("stderr file");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_transponder"));
    cmd.args(["serve", "--shards", "2"])
        .args(support::EPHEMERAL_PORTS)
        .args(["--admin-token", ADMIN_TOKEN])
        .arg("--data-dir")
        .arg(guard.data())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    die_with_parent(&mut cmd);
    let started = Instant::now();
    let mut server = cmd.spawn().expect("start the server");
    let stdout = server.stdout.take().expect("server stdout");
    guard.server = Some(server);
    let line = read_ready_line(stdout, READY_TIMEOUT);
    let ready_secs = started.elapsed().as_secs_f64();
    let ready: Value =
        serde_json::from_str(line.strip_prefix("ready ").unwrap_or_else(|| {
            panic!("server's first stdout line is not `ready {{…}}`: {line:?}")
        }))
        .expect("ready line JSON");
    Running {
        admin: host_port(ready["admin"].as_str().expect("admin url"), "http://"),
        token: ready["admin_token"]
            .as_str()
            .expect("admin token")
            .to_string(),
        ready_secs,
    }
}

/// SIGTERM; the server must exit with success.
fn stop(guard: &mut Guard) {
    let mut server = guard.server.take().expect("server running");
    // SAFETY: plain kill(2) on the pid of a child we have not reaped.
    unsafe {
        libc::kill(server.id() as libc::pid_t, libc::SIGTERM);
    }
    match wait_timeout(&mut server, SHUTDOWN_TIMEOUT) {
        Some(s) if s.success() => {}
        Some(s) => {
            print_tail(&guard.stderr_path(), 40);
            panic!("server exited with {s} after SIGTERM");
        }
        None => {
            let _ = server.kill();
            let _ = server.wait();
            print_tail(&guard.stderr_path(), 40);
            panic!("server did not exit within {SHUTDOWN_TIMEOUT:?} of SIGTERM");
        }
    }
}

fn print_tail(path: &Path, lines: usize) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(lines);
    eprintln!("--- server stderr, last {} lines ---", all.len() - from);
    for l in &all[from..] {
        eprintln!("{l}");
    }
    eprintln!("--- end of server stderr ---");
}

// ---------------------------------------------------------------- memory --

#[derive(Clone, Copy, Default)]
struct Mem {
    rss: u64,
    anon: u64,
    file: u64,
    /// VmHWM: the peak RSS so far.
    peak: u64,
}

fn mem_of(pid: u32) -> Mem {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("procfs");
    let field = |name: &str| -> u64 {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing from /proc/{pid}/status"));
        let kb: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|k| k.parse().ok())
            .expect("a number of kB");
        kb * 1024
    };
    Mem {
        rss: field("VmRSS:"),
        anon: field("RssAnon:"),
        file: field("RssFile:"),
        peak: field("VmHWM:"),
    }
}

// ----------------------------------------------------------------- stats --

/// Sums over the shards of `/v1/stats`.
#[derive(Debug, Default, Clone)]
struct Stats {
    connections: u64,
    channels: u64,
    subscriptions: u64,
    users: u64,
    channels_per_shard: Vec<u64>,
    connections_per_shard: Vec<u64>,
}

fn stats(run: &Running) -> Stats {
    let v = admin(run).stats().unwrap_or_else(|e| panic!("{e}"));
    if v["ok"] != json!(true) {
        panic!("GET /v1/stats answered {v}");
    }
    let shards = v["shards"].as_array().expect("stats shards");
    let field = |s: &Value, k: &str| s[k].as_u64().unwrap_or(0);
    let sum = |k: &str| shards.iter().map(|s| field(s, k)).sum();
    Stats {
        connections: sum("connections"),
        channels: sum("channels"),
        subscriptions: sum("subscriptions"),
        users: sum("users"),
        channels_per_shard: shards.iter().map(|s| field(s, "channels")).collect(),
        connections_per_shard: shards.iter().map(|s| field(s, "connections")).collect(),
    }
}

/// Polls `/v1/stats` until `done` holds; Err(last stats) after `limit`.
fn wait_stats(
    run: &Running,
    limit: Duration,
    done: impl Fn(&Stats) -> bool,
) -> Result<Stats, Stats> {
    let until = Instant::now() + limit;
    loop {
        let s = stats(run);
        if done(&s) {
            return Ok(s);
        }
        if Instant::now() >= until {
            return Err(s);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ------------------------------------------------------------------ main --

fn run(n: usize, users: usize, parent: &Path) {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let dir = parent.join(format!(
        "channel-density-{}-{nanos:08x}",
        std::process::id()
    ));
    std::fs::create_dir_all(dir.join("data")).expect("temp dir");
    let mut guard = Guard { dir, server: None };

    // 1. Users, over the admin API.
    let t = Instant::now();
    let first = start(&mut guard);
    let names: Vec<String> = (0..users).map(|i| format!("density-u{i}")).collect();
    let a = admin(&first);
    let user_ids = par_map(&names, |name| a.create_user(name).map(|u| u.id))
        .unwrap_or_else(|e| panic!("creating users: {e}"));
    stop(&mut guard);
    let users_secs = t.elapsed().as_secs_f64();

    // 2. Empty: the users, no channels.
    let empty_run = start(&mut guard);
    std::thread::sleep(SETTLE);
    let empty = mem_of(guard.pid());
    let empty_stats = stats(&empty_run);
    if empty_stats.users != users as u64 || empty_stats.channels != 0 {
        panic!("the restarted server counts {empty_stats:?}, not {users} users and no channels");
    }
    stop(&mut guard);

    // 3. Import.
    let (import_secs, import_line) = import(&guard, n, &user_ids);
    let db_bytes = std::fs::metadata(guard.data().join("transponder.db"))
        .map(|m| m.len())
        .unwrap_or(0);

    // 4. Loaded.
    let loaded_run = start(&mut guard);
    std::thread::sleep(SETTLE);
    let loaded = mem_of(guard.pid());
    let loaded_stats = stats(&loaded_run);
    if loaded_stats.channels != n as u64 || loaded_stats.subscriptions != 0 {
        panic!("after the import the server counts {loaded_stats:?}, not {n} channels");
    }

    // 5. One websocket per user: every conversation subscribed once.
    let t = Instant::now();
    let sockets = connect_all(&loaded_run, &user_ids);
    let connect_secs = t.elapsed().as_secs_f64();
    let subscribed_stats = wait_stats(&loaded_run, Duration::from_secs(120), |s| {
        let gateways = s.connections_per_shard.iter().filter(|&&c| c > 0).count() as u64;
        s.connections == users as u64 && s.subscriptions == (n + users) as u64 + gateways
    })
    .unwrap_or_else(|s| {
        panic!(
            "every websocket has its hello, but /v1/stats counts {s:?}: expected {users} \
             connections and {n} + {users} + (gateway shards) subscriptions"
        )
    });
    std::thread::sleep(SETTLE);
    let subscribed = mem_of(guard.pid());
    std::thread::sleep(LATER - SETTLE);
    let later = mem_of(guard.pid());
    let later_stats = stats(&loaded_run);
    if later_stats.subscriptions != subscribed_stats.subscriptions
        || later_stats.connections != users as u64
    {
        panic!("subscriptions or connections lost while idle: {later_stats:?}");
    }

    // 6. Close and stop.
    drop(sockets);
    if let Err(s) = wait_stats(&loaded_run, Duration::from_secs(60), |s| s.connections == 0) {
        panic!(
            "the server still counts {} connections 60 s after every client closed",
            s.connections
        );
    }
    stop(&mut guard);

    // Report.
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let per = |a: u64, b: u64| (a as f64 - b as f64) / n as f64;
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M:%S UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "channel density — transponder serve --shards 2, {n} conversations x 1 member, \
         {users} users x 1 websocket"
    );
    let _ = writeln!(
        w,
        "  machine: nproc {nproc}, kernel {}, {date}",
        kernel.trim()
    );
    let _ = writeln!(
        w,
        "  {:<50} {:>12}",
        "/v1/stats channels per shard (loaded)",
        format!("{:?}", loaded_stats.channels_per_shard)
    );
    let _ = writeln!(
        w,
        "  {:<50} {:>12}",
        "/v1/stats subscriptions (N + users + gateways)", subscribed_stats.subscriptions
    );
    let _ = writeln!(
        w,
        "  {:<50} {:>12}",
        "/v1/stats connections per shard",
        format!("{:?}", subscribed_stats.connections_per_shard)
    );
    let row = |w: &mut String, what: &str, m: Mem| {
        let _ = writeln!(
            w,
            "  {:<50} {:>9.1} MiB   (anon {:.1}, file {:.1}, peak {:.1})",
            what,
            mib(m.rss),
            mib(m.anon),
            mib(m.file),
            mib(m.peak)
        );
    };
    row(w, "VmRSS empty (users, no channels)", empty);
    row(w, "VmRSS loaded (no connections)", loaded);
    row(w, "VmRSS loaded+subscribed (+3 s)", subscribed);
    row(w, "VmRSS loaded+subscribed (+10 s)", later);
    let _ = writeln!(
        w,
        "  {:<50} {:>9.1} B/channel",
        "loaded (loaded - empty) / N",
        per(loaded.rss, empty.rss)
    );
    let _ = writeln!(
        w,
        "  {:<50} {:>9.1} B/channel",
        "subscribing (subscribed - loaded) / N",
        per(later.rss, loaded.rss)
    );
    let total = per(later.rss, empty.rss);
    let _ = writeln!(
        w,
        "  {:<50} {:>9.1} B/channel  (budget {BUDGET_BYTES_PER_CHANNEL:.0}: {})",
        "loaded+subscribed (subscribed - empty) / N",
        total,
        if total <= BUDGET_BYTES_PER_CHANNEL {
            "within"
        } else {
            "OVER"
        }
    );
    let _ = writeln!(
        w,
        "  {:<50} {:>9.2} GiB",
        "projected for 16M channels",
        total * 16e6 / (1u64 << 30) as f64
    );
    let _ = writeln!(
        w,
        "  {:<50} {:>9.1} s",
        format!("creating {users} users (admin API, 2 starts)"),
        users_secs
    );
    let _ = writeln!(
        w,
        "  {:<50} {:>9.1} s  ({:.0} channels/s; {import_line})",
        "channel import (offline, one transaction)",
        import_secs,
        n as f64 / import_secs
    );
    let _ = writeln!(
        w,
        "  {:<50} {:>9.2} GiB",
        "store file after the import",
        db_bytes as f64 / (1u64 << 30) as f64
    );
    let _ = writeln!(
        w,
        "  {:<50} {:>9.1} s",
        "server start to ready, empty", empty_run.ready_secs
    );
    let _ = writeln!(
        w,
        "  {:<50} {:>9.1} s",
        "server start to ready, N channels", loaded_run.ready_secs
    );
    let _ = writeln!(
        w,
        "  {:<50} {:>9.1} s",
        "tickets + websockets until every hello", connect_secs
    );
    print!("{out}");
}

/// Runs `transponder channel import` with N CSV lines on its stdin:
/// conversation `i` is `density-c{i}`, public, its member user `i mod U`.
/// (seconds, the import's own summary line).
fn import(guard: &Guard, n: usize, user_ids: &[String]) -> (f64, String) {
    let log = std::fs::File::create(guard.dir.join("import.stderr")).expect("import log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_transponder"));
    cmd.args(["channel", "import", "--data-dir"])
        .arg(guard.data())
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log);
    die_with_parent(&mut cmd);
    let t = Instant::now();
    let mut child = cmd.spawn().expect("run the import");
    let stdin = child.stdin.take().expect("import stdin");
    let ids = user_ids.to_vec();
    let writer = std::thread::spawn(move || {
        let mut w = BufWriter::with_capacity(1 << 20, stdin);
        for i in 0..n {
            writeln!(w, "density-c{i:09},false,{}", ids[i % ids.len()])?;
        }
        w.flush()
    });
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .expect("import stdout")
        .read_to_string(&mut stdout)
        .expect("import stdout");
    let status = child.wait().expect("import");
    let secs = t.elapsed().as_secs_f64();
    let wrote = writer.join().expect("input writer");
    if !status.success() || wrote.is_err() {
        print_tail(&guard.dir.join("import.stderr"), 20);
        panic!("the import failed ({status}; writing its input: {wrote:?})");
    }
    (secs, stdout.trim().to_string())
}

// ------------------------------------------------------------- websockets --

/// Opens a websocket for every user, each read until its `hello`, from
/// CONNECT_THREADS threads; returns them open. Each ticket is minted just
/// before its connection (tickets live 30 s; the hellos of thousands of
/// connections subscribing thousands of conversations each take longer).
fn connect_all(run: &Running, users: &[String]) -> Vec<tungstenite::WebSocket<TcpStream>> {
    let chunk = users.len().div_ceil(CONNECT_THREADS).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = users
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let a = admin(run);
                    part.iter()
                        .map(|u| {
                            let (addr, path) =
                                a.ticket(u).unwrap_or_else(|e| panic!("ticket: {e}"));
                            connect(&format!("ws://{addr}{path}"))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("connect thread"))
            .collect()
    })
}

fn connect(url: &str) -> tungstenite::WebSocket<TcpStream> {
    let addr = host_port(url, "ws://");
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(HELLO_TIMEOUT))
        .expect("read timeout");
    let (mut ws, resp) = tungstenite::client::client(url, stream)
        .unwrap_or_else(|e| panic!("websocket handshake with {url}: {e}"));
    assert_eq!(resp.status().as_u16(), 101, "handshake status");
    match ws.read() {
        Ok(tungstenite::Message::Text(t)) => {
            let v: Value = serde_json::from_str(&t).expect("hello is JSON");
            assert_eq!(v["type"], json!("hello"), "first frame: {t}");
        }
        other => panic!("expected hello, got {other:?}"),
    }
    ws
}

// ------------------------------------------------------------- admin API --

/// The admin API client of `transponder loadgen`.
fn admin(run: &Running) -> Admin {
    Admin::new(&format!("http://{}", run.admin), &run.token)
}
