//! Server memory per idle websocket connection, and the connect rate on the
//! way there.
//!
//! Starts the release server (`--shards 2`, ephemeral ports, a temp data
//! dir), provisions users (10 connections each, every user a member of 2
//! channels) over the admin API, warms up with 200 connections that are then
//! closed, reads the server's RSS, then opens the connections from child
//! processes of at most 5,000 sockets each (the machine's open-file limit is
//! 20,000 per process), each child from its own source address 127.0.0.x.
//! When every connection has its `hello`, it waits 2 s, reads the RSS again,
//! checks `/v1/stats`, and prints bytes per connection (and, as a check that
//! the figure has settled, one more reading at 10 s). Then the children
//! exit and the server gets SIGTERM and must exit.
//!
//! `cargo bench --bench idle_connections` (IDLE_BENCH_CONNECTIONS=n to choose
//! the count, default 15,000).
//!
//! The server runs with transparent huge pages disabled (PR_SET_THP_DISABLE,
//! inherited across exec): mimalloc madvises its arena MADV_HUGEPAGE, so with
//! THP the RSS moves in 2 MiB steps that include untouched memory, and
//! khugepaged collapses more of it at random moments of the idle hold.
//! IDLE_BENCH_THP=1 keeps the system's THP setting; the table shows
//! AnonHugePages either way. Prints figures; fails when the server
//! misbehaves (lost connections, refused handshakes, no clean exit).
//!
//! The bench re-executes itself with IDLE_BENCH_CHILD=1 for the children; a
//! child reads its ticket URLs on stdin, one per line, then `go`, connects,
//! prints `done <ok> <failed> <micros>` and holds its sockets until its stdin
//! closes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

#[path = "support/mod.rs"]
mod support;
use support::{host_port, print_stderr_tail, read_ready_line, wait_timeout};

/// Connections measured unless IDLE_BENCH_CONNECTIONS says otherwise.
const DEFAULT_CONNECTIONS: usize = 15_000;
/// Sockets one child process holds (open-file limit 20,000 per process).
const PER_CHILD: usize = 5_000;
const CONNECTIONS_PER_USER: usize = 10;
/// Every user is a member of this many channels …
const CHANNELS_PER_USER: usize = 2;
/// … and every channel has this many members.
const MEMBERS_PER_CHANNEL: usize = 10;
/// Connections opened and closed before the first RSS reading.
const WARMUP: usize = 200;
/// Handshakes one process keeps in flight.
const IN_FLIGHT: usize = 128;
/// Time all connections have to reach `hello`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(120);
/// Pause between the last `hello` and the RSS reading.
const SETTLE: Duration = Duration::from_secs(2);
/// A second reading after the last `hello`, to show whether RSS settled.
const LATER: Duration = Duration::from_secs(10);
/// Admin HTTP connections used to mint tickets and add members in parallel.
const ADMIN_THREADS: usize = 4;
/// A child exits by itself after this long, whatever happens to the parent.
const CHILD_LIFETIME: Duration = Duration::from_secs(900);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);

fn main() {
    if std::env::var_os("IDLE_BENCH_CHILD").is_some() {
        child_main();
        return;
    }
    let n: usize = match std::env::var("IDLE_BENCH_CONNECTIONS") {
        Ok(v) => v
            .trim()
            .parse()
            .expect("IDLE_BENCH_CONNECTIONS must be a number"),
        Err(_) => DEFAULT_CONNECTIONS,
    };
    assert!(n > 0, "IDLE_BENCH_CONNECTIONS must be positive");
    // Transparent huge pages: off for the server unless IDLE_BENCH_THP=1.
    let thp = std::env::var("IDLE_BENCH_THP").is_ok_and(|v| v == "1");
    run(n, thp);
}

// ---------------------------------------------------------------- parent --

/// Kills whatever is still running when the bench ends, normally or not.
struct Guard {
    dir: PathBuf,
    server: Option<Child>,
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
}

impl Guard {
    fn server_pid(&self) -> u32 {
        self.server.as_ref().expect("server running").id()
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir.join("server.stderr")
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stdins.clear();
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(mut s) = self.server.take() {
            if std::thread::panicking() {
                eprintln!("idle_connections: failed; killing the server");
                print_stderr_tail(&self.dir.join("server.stderr"), 40);
            }
            let _ = s.kill();
            let _ = s.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Makes the spawned process die with the bench (SIGKILL when the thread
/// that spawned it, the main thread, ends), and with `no_thp`, run without
/// transparent huge pages.
fn die_with_parent(cmd: &mut Command, no_thp: bool) {
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // Inherited across execve: no THP faults, no khugepaged collapse.
            if no_thp && libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[derive(Clone, Copy, Default)]
struct Mem {
    rss: u64,
    anon: u64,
    file: u64,
    /// VmHWM: the peak RSS so far.
    peak: u64,
    /// AnonHugePages (smaps_rollup): RSS held in transparent huge pages.
    huge: u64,
}

/// VmRSS, RssAnon, RssFile, VmHWM and AnonHugePages of `pid`, in bytes.
fn mem_of(pid: u32) -> Mem {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("procfs");
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |text: &str, name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    let status_field = |name: &str| {
        field(&status, name).unwrap_or_else(|| panic!("{name} missing from /proc/{pid}/status"))
    };
    Mem {
        rss: status_field("VmRSS:"),
        anon: status_field("RssAnon:"),
        file: status_field("RssFile:"),
        peak: status_field("VmHWM:"),
        huge: field(&rollup, "AnonHugePages:").unwrap_or(0),
    }
}

fn run(n: usize, thp: bool) {
    let users = n.div_ceil(CONNECTIONS_PER_USER);
    let channels = (users * CHANNELS_PER_USER)
        .div_ceil(MEMBERS_PER_CHANNEL)
        .max(2);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let dir = std::env::temp_dir().join(format!("idle-bench-{}-{nanos:08x}", std::process::id()));
    std::fs::create_dir_all(dir.join("data")).expect("temp dir");
    let mut guard = Guard {
        dir,
        server: None,
        children: Vec::new(),
        stdins: Vec::new(),
    };

    // Server.
    let stderr = std::fs::File::create(guard.stderr_path()).expect("stderr file");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_transponder"));
    cmd.args(["serve", "--shards", "2"])
        .args(support::EPHEMERAL_PORTS)
        .args(["--admin-token", "idle-bench"])
        .arg("--data-dir")
        .arg(guard.dir.join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    if thp {
        cmd.arg("--huge-pages"); // the server disables them by default
    }
    die_with_parent(&mut cmd, !thp);
    let started = Instant::now();
    let mut server = cmd.spawn().expect("start the server");
    let stdout = server.stdout.take().expect("server stdout");
    guard.server = Some(server);
    let ready = read_ready_line(stdout, Duration::from_secs(30));
    let ready: Value =
        serde_json::from_str(ready.strip_prefix("ready ").unwrap_or_else(|| {
            panic!("server's first stdout line is not `ready {{…}}`: {ready:?}")
        }))
        .expect("ready line JSON");
    let ready_ms = started.elapsed().as_millis();
    let admin = host_port(ready["admin"].as_str().expect("admin url"), "http://");
    let token = ready["admin_token"]
        .as_str()
        .expect("admin token")
        .to_string();
    let pid = guard.server_pid();
    let mem_start = mem_of(pid);

    // Users, channels, memberships.
    let t = Instant::now();
    let mut http = Http::connect(&admin, &token);
    let user_ids: Vec<String> = (0..users)
        .map(|i| {
            let v = http.ok(
                "POST",
                "/v1/users",
                Some(&json!({ "name": format!("idle-u{i}") })),
            );
            v["user"]["id"].as_str().expect("user id").to_string()
        })
        .collect();
    let channel_ids: Vec<String> = (0..channels)
        .map(|i| {
            let v = http.ok(
                "POST",
                "/v1/channels",
                Some(&json!({ "name": format!("idle-c{i}") })),
            );
            v["channel"]["id"].as_str().expect("channel id").to_string()
        })
        .collect();
    // User i is in channels 2i mod c and 2i+1 mod c: 10 members a channel.
    let memberships: Vec<(String, String)> = user_ids
        .iter()
        .enumerate()
        .flat_map(|(i, u)| {
            let channel_ids = &channel_ids;
            (0..CHANNELS_PER_USER).map(move |k| {
                let c = &channel_ids[(i * CHANNELS_PER_USER + k) % channel_ids.len()];
                (c.clone(), u.clone())
            })
        })
        .collect();
    parallel(&admin, &token, &memberships, |http, (c, u)| {
        http.ok(
            "POST",
            &format!("/v1/channels/{c}/members"),
            Some(&json!({ "user": u })),
        );
    });
    let provision_secs = t.elapsed().as_secs_f64();

    // Warm-up: open and close WARMUP connections so allocator pools exist.
    let warm_users: Vec<String> = (0..WARMUP).map(|i| user_ids[i % users].clone()).collect();
    let urls = mint_tickets(&admin, &token, &warm_users).0;
    let source = Ipv4Addr::new(127, 0, 0, 250);
    let warm = connect_all(&urls, source, Instant::now() + CONNECT_TIMEOUT);
    if warm.fds.len() != WARMUP {
        panic!(
            "warm-up: {} of {WARMUP} connections reached hello; failures: {:?}",
            warm.fds.len(),
            warm.failures
        );
    }
    drop(warm);
    wait_for_connections(&admin, &token, 0, Duration::from_secs(20))
        .unwrap_or_else(|c| panic!("warm-up: server still counts {c} connections after close"));
    std::thread::sleep(Duration::from_secs(1));
    let before = mem_of(pid);
    let stats_before = stats(&admin, &token);

    // Children, idle until their tickets arrive.
    let nchildren = n.div_ceil(PER_CHILD);
    let (tx, rx) = mpsc::channel::<(usize, Option<String>)>();
    for i in 0..nchildren {
        let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
        cmd.env("IDLE_BENCH_CHILD", "1")
            .env("IDLE_BENCH_SOURCE", format!("127.0.0.{}", 2 + i))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        die_with_parent(&mut cmd, false);
        let mut child = cmd.spawn().expect("start a child");
        let out = child.stdout.take().expect("child stdout");
        guard.stdins.push(child.stdin.take().expect("child stdin"));
        guard.children.push(child);
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send((i, Some(line))).is_err() {
                    return;
                }
            }
            let _ = tx.send((i, None));
        });
    }
    drop(tx);

    // Tickets (30 s lifetime), minted just before they are used.
    let conn_users: Vec<String> = (0..n).map(|i| user_ids[i % users].clone()).collect();
    let (urls, mint_secs) = mint_tickets(&admin, &token, &conn_users);
    for (i, stdin) in guard.stdins.iter_mut().enumerate() {
        let mut text = String::new();
        for u in urls.iter().skip(i * PER_CHILD).take(PER_CHILD) {
            text.push_str(u);
            text.push('\n');
        }
        stdin
            .write_all(text.as_bytes())
            .expect("tickets to a child");
        stdin.flush().expect("tickets to a child");
    }
    let go = Instant::now();
    for stdin in &mut guard.stdins {
        stdin.write_all(b"go\n").expect("go to a child");
        stdin.flush().expect("go to a child");
    }

    // Wait for every child's report.
    let mut done = vec![None::<(usize, usize, u64)>; nchildren];
    let mut errors: Vec<String> = Vec::new();
    let wait_until = go + CONNECT_TIMEOUT + Duration::from_secs(30);
    while done.iter().any(Option::is_none) {
        let left = wait_until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((i, Some(line))) => {
                if let Some(rest) = line.strip_prefix("done ") {
                    let f: Vec<u64> = rest
                        .split_whitespace()
                        .map(|x| x.parse().expect("done line"))
                        .collect();
                    done[i] = Some((f[0] as usize, f[1] as usize, f[2]));
                } else {
                    errors.push(format!("child {i}: {line}"));
                }
            }
            Ok((i, None)) => panic!("child {i} exited before reporting; errors: {errors:#?}"),
            Err(_) => panic!(
                "children did not report within {} s of go; errors: {errors:#?}",
                (wait_until - go).as_secs()
            ),
        }
    }
    let connect_wall = go.elapsed();
    let ok: usize = done.iter().flatten().map(|d| d.0).sum();
    let failed: usize = done.iter().flatten().map(|d| d.1).sum();
    let slowest_child_us = done.iter().flatten().map(|d| d.2).max().unwrap_or(0);
    if ok != n {
        let live = match try_stats(&admin, &token) {
            Ok(s) => format!("{} {:?}", s.connections, s.per_shard),
            Err(e) => format!("? (GET /v1/stats: {e})"),
        };
        panic!(
            "{ok} of {n} connections reached hello ({failed} failed); \
             server's connection count: {live}; child reports:\n{}",
            errors.join("\n")
        );
    }

    std::thread::sleep(SETTLE);
    let after = mem_of(pid);
    let stats_after = stats(&admin, &token);
    if stats_after.connections != n as u64 {
        panic!(
            "every child has all its connections, but /v1/stats counts {} (per shard {:?})",
            stats_after.connections, stats_after.per_shard
        );
    }

    // A later reading, to see whether the figure has settled.
    std::thread::sleep(LATER - SETTLE);
    let later = mem_of(pid);
    let stats_later = stats(&admin, &token);
    if stats_later.connections != n as u64 {
        panic!(
            "connections lost while idle: /v1/stats counts {} (per shard {:?}) {} s after the last hello",
            stats_later.connections,
            stats_later.per_shard,
            LATER.as_secs()
        );
    }

    // Tear down: children first, then SIGTERM.
    let t = Instant::now();
    guard.stdins.clear();
    for (i, c) in guard.children.iter_mut().enumerate() {
        let status = wait_timeout(c, Duration::from_secs(10));
        match status {
            Some(s) if s.success() => {}
            Some(s) => panic!("child {i} exited with {s}"),
            None => panic!("child {i} did not exit within 10 s of its stdin closing"),
        }
    }
    guard.children.clear();
    let drained = wait_for_connections(&admin, &token, 0, Duration::from_secs(30));
    let close_secs = t.elapsed().as_secs_f64();
    if let Err(c) = drained {
        panic!("the server still counts {c} connections 30 s after every client closed");
    }
    let mut server = guard.server.take().expect("server");
    // SAFETY: plain kill(2) on the pid of a child we have not reaped.
    unsafe {
        libc::kill(server.id() as libc::pid_t, libc::SIGTERM);
    }
    let t = Instant::now();
    let exit = wait_timeout(&mut server, SHUTDOWN_TIMEOUT);
    let exit_secs = t.elapsed().as_secs_f64();
    let exit = match exit {
        Some(s) => s,
        None => {
            let _ = server.kill();
            let _ = server.wait();
            print_stderr_tail(&guard.stderr_path(), 40);
            panic!("server did not exit within {SHUTDOWN_TIMEOUT:?} of SIGTERM");
        }
    };

    // Report.
    let per = |a: u64, b: u64| (a as f64 - b as f64) / n as f64;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M:%S UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "idle websocket connections — transponder serve --shards 2"
    );
    let _ = writeln!(
        w,
        "  machine: nproc {nproc}, kernel {}, {date}",
        kernel.trim()
    );
    let _ = writeln!(
        w,
        "  setup: {users} users x {CONNECTIONS_PER_USER} connections, {channels} channels, \
         {CHANNELS_PER_USER} channels per user; {nchildren} client process(es), \
         {IN_FLIGHT} handshakes in flight each"
    );
    let _ = writeln!(
        w,
        "  server transparent huge pages: {}",
        if thp {
            "as the system has them (IDLE_BENCH_THP=1)"
        } else {
            "disabled (PR_SET_THP_DISABLE; IDLE_BENCH_THP=1 to keep them)"
        }
    );
    let _ = writeln!(w, "  {:<44} {:>14}", "connections (hello received)", n);
    let _ = writeln!(
        w,
        "  {:<44} {:>14}",
        "server /v1/stats connections (per shard)",
        format!("{} {:?}", stats_after.connections, stats_after.per_shard)
    );
    let _ = writeln!(
        w,
        "  {:<44} {:>14}",
        "server /v1/stats subscriptions",
        format!(
            "{} -> {}",
            stats_before.subscriptions, stats_after.subscriptions
        )
    );
    let _ = writeln!(
        w,
        "  {:<44} {:>10.1} MiB",
        "VmRSS at ready",
        mib(mem_start.rss)
    );
    let _ = writeln!(
        w,
        "  {:<44} {:>10.1} MiB",
        "VmRSS before (provisioned, warmed up)",
        mib(before.rss)
    );
    let _ = writeln!(
        w,
        "  {:<44} {:>10.1} MiB",
        "VmRSS after (all connected, +2 s)",
        mib(after.rss)
    );
    let _ = writeln!(
        w,
        "  {:<44} {:>10.1} MiB ({:.0} B/conn)",
        format!("VmRSS later (all connected, +{} s)", LATER.as_secs()),
        mib(later.rss),
        per(later.rss, before.rss)
    );
    let _ = writeln!(
        w,
        "  {:<44} {:>10.1} MiB",
        "VmHWM (peak RSS) after",
        mib(after.peak)
    );
    let _ = writeln!(
        w,
        "  {:<44} {:>10.1} MiB -> {:.1} MiB",
        "RssAnon before -> after",
        mib(before.anon),
        mib(after.anon)
    );
    let _ = writeln!(
        w,
        "  {:<44} {:>10.1} MiB -> {:.1} MiB",
        "AnonHugePages before -> after",
        mib(before.huge),
        mib(after.huge)
    );
    let _ = writeln!(
        w,
        "  {:<44} {:>10.1} MiB -> {:.1} MiB",
        "RssFile before -> after",
        mib(before.file),
        mib(after.file)
    );
    let _ = writeln!(
        w,
        "  {:<44} {:>10.0} B/conn",
        "VmRSS per connection",
        per(after.rss, before.rss)
    );
    let _ = writeln!(
        w,
        "  {:<44} {:>10.0} B/conn",
        "RssAnon per connection",
        per(after.anon, before.anon)
    );
    let _ = writeln!(
        w,
        "  {:<44} {:>10.0} hello/s",
        "connect rate (go -> last child done)",
        n as f64 / connect_wall.as_secs_f64()
    );
    let _ = writeln!(
        w,
        "  {:<44} {:>10.0} hello/s",
        "connect rate (slowest child's own clock)",
        n as f64 / (slowest_child_us as f64 / 1e6)
    );
    let _ = writeln!(
        w,
        "  {:<44} {:>10.0} tickets/s",
        "ticket minting (admin API)",
        n as f64 / mint_secs
    );
    let _ = writeln!(
        w,
        "  {:<44} {:>10.1} s",
        "provisioning (users, channels, members)", provision_secs
    );
    let _ = writeln!(
        w,
        "  {:<44} {:>10.1} s",
        "server start to ready",
        ready_ms as f64 / 1000.0
    );
    let _ = writeln!(
        w,
        "  {:<44} {:>10.1} s",
        "clients closed -> stats show 0", close_secs
    );
    let _ = writeln!(
        w,
        "  {:<44} {:>10.1} s ({exit})",
        "SIGTERM -> server exit", exit_secs
    );
    print!("{out}");
    let stderr_lines = std::fs::read_to_string(guard.stderr_path())
        .map(|t| t.lines().count())
        .unwrap_or(0);
    if stderr_lines > 0 {
        print_stderr_tail(&guard.stderr_path(), 20);
    }
    assert!(exit.success(), "server exited with {exit} after SIGTERM");
}

struct Stats {
    connections: u64,
    subscriptions: u64,
    per_shard: Vec<u64>,
}

fn stats(admin: &SocketAddrV4, token: &str) -> Stats {
    try_stats(admin, token).unwrap_or_else(|e| panic!("GET /v1/stats: {e}"))
}

fn try_stats(admin: &SocketAddrV4, token: &str) -> Result<Stats, String> {
    let (status, v) = Http::connect(admin, token)
        .request("GET", "/v1/stats", None)
        .map_err(|e| e.to_string())?;
    if status != 200 || v["ok"] != json!(true) {
        return Err(format!("answered {status}: {v}"));
    }
    let shards = v["shards"].as_array().expect("stats shards");
    let field = |s: &Value, k: &str| s[k].as_u64().unwrap_or(0);
    Ok(Stats {
        connections: shards.iter().map(|s| field(s, "connections")).sum(),
        subscriptions: shards.iter().map(|s| field(s, "subscriptions")).sum(),
        per_shard: shards.iter().map(|s| field(s, "connections")).collect(),
    })
}

/// Polls /v1/stats until it counts `want` connections; Err(last count).
fn wait_for_connections(
    admin: &SocketAddrV4,
    token: &str,
    want: u64,
    limit: Duration,
) -> Result<(), u64> {
    let until = Instant::now() + limit;
    loop {
        let c = stats(admin, token).connections;
        if c == want {
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(c);
        }
        std::thread::sleep(Duration::from_millis(100));
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

/// One ticket URL per entry of `users`, and the seconds it took.
fn mint_tickets(admin: &SocketAddrV4, token: &str, users: &[String]) -> (Vec<String>, f64) {
    let t = Instant::now();
    let urls = parallel(admin, token, users, |http, u| {
        let v = http.ok("POST", "/v1/tickets", Some(&json!({ "user": u })));
        v["url"].as_str().expect("ticket url").to_string()
    });
    (urls, t.elapsed().as_secs_f64())
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
        // Headers.
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 8192];
            let k = stream.read(&mut chunk)?;
            if k == 0 {
                self.stream = None;
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before the response",
                ));
            }
            self.buf.extend_from_slice(&chunk[..k]);
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("bad status line in {head:?}")))?;
        let mut length = None;
        let mut close = false;
        for l in lines {
            let Some((name, value)) = l.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(io::Error::other(format!(
                    "transfer-encoding {value} not supported: {head:?}"
                )));
            }
        }
        let length =
            length.ok_or_else(|| io::Error::other(format!("no Content-Length in {head:?}")))?;
        while self.buf.len() < head_end + length {
            let mut chunk = [0u8; 8192];
            let k = stream.read(&mut chunk)?;
            if k == 0 {
                self.stream = None;
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside the body",
                ));
            }
            self.buf.extend_from_slice(&chunk[..k]);
        }
        let body: Vec<u8> = self.buf.drain(..head_end + length).skip(head_end).collect();
        if close {
            self.stream = None;
        }
        let v = serde_json::from_slice(&body).map_err(|e| {
            io::Error::other(format!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            ))
        })?;
        Ok((status, v))
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ----------------------------------------------------------------- child --

fn child_main() {
    std::thread::spawn(|| {
        std::thread::sleep(CHILD_LIFETIME);
        eprintln!("idle_connections child: lifetime over, exiting");
        std::process::exit(3);
    });
    let source: Ipv4Addr = std::env::var("IDLE_BENCH_SOURCE")
        .expect("IDLE_BENCH_SOURCE")
        .parse()
        .expect("IDLE_BENCH_SOURCE is an IPv4 address");
    let stdin = io::stdin();
    let mut lines = stdin.lock().lines();
    let mut urls = Vec::new();
    loop {
        match lines.next() {
            Some(Ok(l)) if l == "go" => break,
            Some(Ok(l)) => urls.push(l),
            _ => return, // the parent went away
        }
    }
    let start = Instant::now();
    let out = connect_all(&urls, source, start + CONNECT_TIMEOUT);
    let took = out.last_hello.map_or(start.elapsed(), |t| t - start);
    let mut stdout = io::stdout().lock();
    let mut reasons: BTreeMap<&str, (usize, &str)> = BTreeMap::new();
    for (reason, detail) in &out.failures {
        let e = reasons
            .entry(reason.as_str())
            .or_insert((0, detail.as_str()));
        e.0 += 1;
    }
    for (reason, (count, example)) in &reasons {
        let _ = writeln!(stdout, "failed {count} x {reason} (e.g. {example:?})");
    }
    let _ = writeln!(
        stdout,
        "done {} {} {}",
        out.fds.len(),
        out.failures.len(),
        took.as_micros()
    );
    let _ = stdout.flush();
    drop(stdout);
    // Hold the sockets until the parent closes our stdin.
    for l in lines {
        match l {
            Ok(l) if l == "exit" => break,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    drop(out);
}

// ------------------------------------------------------ websocket client --

struct Connected {
    fds: Vec<OwnedFd>,
    /// (reason, detail) per failed connection.
    failures: Vec<(String, String)>,
    last_hello: Option<Instant>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stage {
    Connecting,
    Writing,
    Reading,
}

struct Pending {
    fd: OwnedFd,
    stage: Stage,
    request: Vec<u8>,
    written: usize,
    accept: String,
    buf: Vec<u8>,
    /// End of the 101 response's headers once seen.
    head_end: Option<usize>,
}

fn errno() -> io::Error {
    io::Error::last_os_error()
}

/// Opens one nonblocking socket bound to `source` and starts connecting.
fn start_connect(source: Ipv4Addr, to: SocketAddrV4) -> io::Result<OwnedFd> {
    // SAFETY: plain socket syscalls on a descriptor we own.
    unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return Err(errno());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        // IP_BIND_ADDRESS_NO_PORT: the port is chosen at connect time, per
        // 4-tuple, so one source address is not limited to 28k ports.
        if libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_IP,
            24,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) != 0
        {
            return Err(errno());
        }
        let bind = sockaddr(SocketAddrV4::new(source, 0));
        if libc::bind(
            fd.as_raw_fd(),
            &bind as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ) != 0
        {
            return Err(errno());
        }
        let dest = sockaddr(to);
        if libc::connect(
            fd.as_raw_fd(),
            &dest as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ) != 0
        {
            let e = errno();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(e);
            }
        }
        Ok(fd)
    }
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn epoll_ctl(ep: RawFd, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: ev lives across the call; ep and fd are open descriptors.
    if unsafe { libc::epoll_ctl(ep, op, fd, &mut ev) } != 0 {
        return Err(errno());
    }
    Ok(())
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

/// What became of one handshake after new bytes arrived.
enum Progress {
    More,
    Hello,
    Failed(String, String),
}

/// Checks the 101 and the first frame, which must be `{"type":"hello"}`.
fn check_response(p: &mut Pending) -> Progress {
    let head_end = match p.head_end {
        Some(h) => h,
        None => {
            let Some(i) = find(&p.buf, b"\r\n\r\n") else {
                if p.buf.len() > 16 * 1024 {
                    return Progress::Failed("oversize response".into(), String::new());
                }
                return Progress::More;
            };
            let head = String::from_utf8_lossy(&p.buf[..i]).into_owned();
            let status = head.lines().next().unwrap_or("").to_string();
            if !status.starts_with("HTTP/1.1 101") {
                let body = String::from_utf8_lossy(&p.buf[i + 4..]).into_owned();
                return Progress::Failed(format!("status {status}"), body);
            }
            let accept_ok = head.lines().any(|l| {
                l.split_once(':').is_some_and(|(n, v)| {
                    n.eq_ignore_ascii_case("sec-websocket-accept") && v.trim() == p.accept
                })
            });
            if !accept_ok {
                return Progress::Failed("wrong Sec-WebSocket-Accept".into(), head);
            }
            p.head_end = Some(i + 4);
            i + 4
        }
    };
    let f = &p.buf[head_end..];
    if f.len() < 2 {
        return Progress::More;
    }
    if f[1] & 0x80 != 0 {
        return Progress::Failed("masked server frame".into(), format!("{:02x?}", &f[..2]));
    }
    let (len, off) = match f[1] & 0x7f {
        126 if f.len() < 4 => return Progress::More,
        126 => (u16::from_be_bytes([f[2], f[3]]) as usize, 4),
        127 if f.len() < 10 => return Progress::More,
        127 => (
            u64::from_be_bytes(f[2..10].try_into().unwrap()) as usize,
            10,
        ),
        l => (l as usize, 2),
    };
    if f.len() < off + len {
        return Progress::More;
    }
    let payload = &f[off..off + len];
    let text = String::from_utf8_lossy(payload).into_owned();
    if f[0] != 0x81 {
        return Progress::Failed(format!("first frame opcode byte {:#04x}", f[0]), text);
    }
    let v: Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(_) => return Progress::Failed("first frame not JSON".into(), text),
    };
    if v["type"] == "hello" {
        Progress::Hello
    } else {
        Progress::Failed(format!("first frame type {}", v["type"]), text)
    }
}

/// Opens a websocket for every ticket URL from `source`, at most IN_FLIGHT
/// handshakes at a time, until each has its `hello` or `deadline` passes.
fn connect_all(urls: &[String], source: Ipv4Addr, deadline: Instant) -> Connected {
    // SAFETY: epoll_create1 returns a new descriptor or -1.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(ep >= 0, "epoll_create1: {}", errno());
    // SAFETY: ep is ours.
    let ep = unsafe { OwnedFd::from_raw_fd(ep) };
    let mut slots: Vec<Option<Pending>> = (0..IN_FLIGHT).map(|_| None).collect();
    let mut free: Vec<usize> = (0..IN_FLIGHT).rev().collect();
    let mut out = Connected {
        fds: Vec::with_capacity(urls.len()),
        failures: Vec::new(),
        last_hello: None,
    };
    let mut next = 0;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; IN_FLIGHT];
    let pid = std::process::id();
    loop {
        // Start handshakes while there is room.
        while next < urls.len() {
            let Some(slot) = free.pop() else { break };
            let url = &urls[next];
            next += 1;
            let rest = url.strip_prefix("ws://").unwrap_or(url);
            let (hp, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let to: SocketAddrV4 = match hp.parse() {
                Ok(a) => a,
                Err(_) => {
                    out.failures.push(("bad ticket url".into(), url.clone()));
                    free.push(slot);
                    continue;
                }
            };
            let fd = match start_connect(source, to) {
                Ok(fd) => fd,
                Err(e) => {
                    out.failures.push(("connect".into(), e.to_string()));
                    free.push(slot);
                    continue;
                }
            };
            let mut nonce = [0u8; 16];
            nonce[..8].copy_from_slice(&(next as u64).to_le_bytes());
            nonce[8..12].copy_from_slice(&pid.to_le_bytes());
            nonce[12..].copy_from_slice(&u32::from(source).to_le_bytes());
            let key = base64_16(nonce);
            let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: {hp}\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n\
                 Sec-WebSocket-Version: 13\r\n\r\n"
            )
            .into_bytes();
            epoll_ctl(
                ep.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd.as_raw_fd(),
                (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLET) as u32,
                slot as u64,
            )
            .expect("epoll add");
            slots[slot] = Some(Pending {
                fd,
                stage: Stage::Connecting,
                request,
                written: 0,
                accept,
                buf: Vec::new(),
                head_end: None,
            });
        }
        if free.len() == IN_FLIGHT && next >= urls.len() {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            for p in slots.iter_mut().filter_map(Option::take) {
                let seen = String::from_utf8_lossy(&p.buf).into_owned();
                out.failures
                    .push((format!("timeout while {:?}", p.stage), seen));
            }
            for u in &urls[next..] {
                out.failures
                    .push(("timeout before start".into(), u.clone()));
            }
            break;
        }
        let wait_ms = (deadline - now).as_millis().min(100) as libc::c_int;
        // SAFETY: events has room for IN_FLIGHT entries.
        let k = unsafe {
            libc::epoll_wait(
                ep.as_raw_fd(),
                events.as_mut_ptr(),
                IN_FLIGHT as libc::c_int,
                wait_ms,
            )
        };
        if k < 0 {
            let e = errno();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            panic!("epoll_wait: {e}");
        }
        for ev in &events[..k as usize] {
            let slot = ev.u64 as usize;
            let flags = ev.events;
            let Some(p) = slots[slot].as_mut() else {
                continue;
            };
            let result = advance(p, flags);
            match result {
                Progress::More => {}
                Progress::Hello => {
                    let p = slots[slot].take().unwrap();
                    epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_DEL, p.fd.as_raw_fd(), 0, 0)
                        .expect("epoll del");
                    out.fds.push(p.fd);
                    out.last_hello = Some(Instant::now());
                    free.push(slot);
                }
                Progress::Failed(reason, detail) => {
                    let p = slots[slot].take().unwrap();
                    out.failures
                        .push((format!("{reason} (while {:?})", p.stage), detail));
                    drop(p);
                    free.push(slot);
                }
            }
        }
    }
    out
}

/// Moves one handshake on after epoll reported `flags` for it.
fn advance(p: &mut Pending, flags: u32) -> Progress {
    let fd = p.fd.as_raw_fd();
    if p.stage == Stage::Connecting {
        let mut err: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: err and len are valid for the call.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                &mut err as *mut libc::c_int as *mut libc::c_void,
                &mut len,
            )
        };
        if rc != 0 {
            return Progress::Failed("getsockopt".into(), errno().to_string());
        }
        if err != 0 {
            return Progress::Failed(
                "connect".into(),
                io::Error::from_raw_os_error(err).to_string(),
            );
        }
        if flags & libc::EPOLLOUT as u32 == 0 {
            return Progress::More;
        }
        p.stage = Stage::Writing;
    }
    if p.stage == Stage::Writing {
        while p.written < p.request.len() {
            let rest = &p.request[p.written..];
            // SAFETY: rest is a live slice.
            let k = unsafe {
                libc::send(
                    fd,
                    rest.as_ptr() as *const libc::c_void,
                    rest.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if k < 0 {
                let e = errno();
                if e.kind() == io::ErrorKind::WouldBlock {
                    return Progress::More;
                }
                return Progress::Failed("send".into(), e.to_string());
            }
            p.written += k as usize;
        }
        // Edge-triggered: the answer may already be here, read on.
        p.stage = Stage::Reading;
    }
    let mut saw_eof = false;
    loop {
        let mut chunk = [0u8; 4096];
        // SAFETY: chunk is a live buffer.
        let k = unsafe { libc::recv(fd, chunk.as_mut_ptr() as *mut libc::c_void, chunk.len(), 0) };
        if k < 0 {
            let e = errno();
            if e.kind() == io::ErrorKind::WouldBlock {
                break;
            }
            return Progress::Failed(
                format!("recv {e}"),
                String::from_utf8_lossy(&p.buf).into_owned(),
            );
        }
        if k == 0 {
            saw_eof = true;
            break;
        }
        p.buf.extend_from_slice(&chunk[..k as usize]);
    }
    match check_response(p) {
        Progress::More if saw_eof || flags & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0 => {
            Progress::Failed(
                "closed by server".into(),
                String::from_utf8_lossy(&p.buf).into_owned(),
            )
        }
        other => other,
    }
}
