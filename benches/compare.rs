//! Transponder side by side with nats-server (websocket listener) and
//! redis-server (pub/sub), on this machine, with the same core budget and the
//! same load generator (`transponder loadgen`, which speaks NATS over
//! websocket and Redis RESP for this).
//!
//! `cargo bench --bench compare` installs the Debian packages `nats-server`
//! and `redis-server` if they are missing (apt-get; root), then for each
//! server in turn: starts it pinned to CPU 0 (Transponder `--shards 1`,
//! nats-server with GOMAXPROCS=1, Redis is single-threaded anyway) with the
//! load generator pinned to CPU 1, runs the fan-out scenarios (1 channel ×
//! 10,000 subscribers with 8 events in flight; 1,000 channels × 10
//! subscribers with 10 publishers of 100, then of 2,000, in flight each;
//! publishers send as fast as their window allows, each server's own way:
//! NATS PUB, Redis PUBLISH, Transponder's publish stream) and an idle hold
//! (5,000 connections; server RSS per connection), stops the server, and
//! prints one table with the date and the machine.
//!
//! Beside deliveries/s it prints each server's deliveries per second of its
//! own CPU (user + system over the measured window, from /proc through
//! `loadgen --server-pid`) and its CPU utilisation: when the load
//! generator's core is the one that binds, deliveries/s stop telling the
//! servers apart and efficiency still does. A second table gives
//! Transponder / nats-server for both.
//!
//! Issue 10 item 3, latency at a fixed offered load: one publisher at 1,000
//! events/s to one channel of 1,000 subscribers (1 M deliveries/s offered),
//! in the default run and the matrix; the ratio table's last column is
//! nats-server's p99 over ours (2× or more is the target).
//!
//! COMPARE_DURATION=secs (default 10) sets each run's length;
//! COMPARE_ONLY=transponder,nats,redis picks servers; COMPARE_SCENARIO=text
//! keeps the fan-outs whose label contains it; COMPARE_MATRIX=1 runs,
//! instead of the three fan-outs above, the matrix of issue 10: 1 × 1,000
//! and 1 × 10,000 with 8 and 100 events in flight; 100 × 10 and 1,000 × 10
//! with 4 and 10 publishers of 100 and 2,000 in flight each; every one with
//! 100-byte and 1 KiB payloads (24 runs per server). Each run is bounded in
//! time (its length plus [`RUN_OVERHEAD`]); one that fails or overruns is
//! shown as failed and the others go on. It prints figures and fails only
//! when a server misbehaves (won't start, refuses connections, overruns);
//! it asserts nothing about speed.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use transponder::loadgen::report::group;

const LOADGEN: &str = env!("CARGO_BIN_EXE_transponder");
/// The servers get CPU 0, the load generator CPU 1.
const SERVER_CPU: usize = 0;
const LOADGEN_CPU: usize = 1;
const IDLE_CONNECTIONS: usize = 5_000;
/// What a load-generator run may take beyond its publishing: provisioning,
/// connecting, the memory reading's settle, draining (at most 20 s), the
/// report. A run past its length plus this is killed and shown as failed.
const RUN_OVERHEAD: Duration = Duration::from_secs(150);

/// One fan-out run: the same arguments for every server.
struct Scenario {
    label: String,
    args: Vec<String>,
}

impl Scenario {
    /// `--window` is each publisher's events in flight (sent, not yet seen
    /// by its witness subscriber); `size` the payload bytes (None: the
    /// load generator's default, 64).
    fn fanout(
        channels: usize,
        subscribers: usize,
        publishers: usize,
        window: usize,
        size: Option<usize>,
    ) -> Scenario {
        let mut label = format!(
            "fan-out {} × {}, {}{} in flight",
            group(channels as f64, 0),
            group(subscribers as f64, 0),
            if publishers == 1 {
                String::new()
            } else {
                format!("{publishers} × ")
            },
            group(window as f64, 0)
        );
        let mut args: Vec<String> = [
            "fanout",
            "--channels",
            &channels.to_string(),
            "--subscribers",
            &subscribers.to_string(),
            "--publishers",
            &publishers.to_string(),
            "--window",
            &window.to_string(),
        ]
        .map(String::from)
        .to_vec();
        if let Some(size) = size {
            label += &format!(", {}", bytes(size));
            args.extend(["--size".into(), size.to_string()]);
        }
        Scenario { label, args }
    }

    /// One publisher at a fixed `rate` of events per second to one channel
    /// of `subscribers`: latency at an offered load every server carries
    /// (its window is wide enough never to pace it).
    fn at_rate(subscribers: usize, rate: usize) -> Scenario {
        let label = format!(
            "1 × {} at {} events/s ({} deliveries/s offered)",
            group(subscribers as f64, 0),
            group(rate as f64, 0),
            group((subscribers * rate) as f64, 0)
        );
        let args = [
            "fanout",
            "--channels",
            "1",
            "--subscribers",
            &subscribers.to_string(),
            "--rate",
            &rate.to_string(),
            "--window",
            &(rate * 10).to_string(),
        ]
        .map(String::from)
        .to_vec();
        Scenario { label, args }
    }
}

/// Issue 10, item 3: latency at 1 M deliveries/s offered.
fn at_rate_runs() -> Vec<Scenario> {
    vec![Scenario::at_rate(1_000, 1_000)]
}

/// The default fan-outs (as before the matrix existed), and the fixed-rate
/// run.
fn default_fanouts() -> Vec<Scenario> {
    let mut all = vec![
        Scenario::fanout(1, 10_000, 1, 8, None),
        Scenario::fanout(1_000, 10, 10, 100, None),
        Scenario::fanout(1_000, 10, 10, 2_000, None),
    ];
    all.extend(at_rate_runs());
    all
}

/// Issue 10's matrix (COMPARE_MATRIX=1).
fn matrix_fanouts() -> Vec<Scenario> {
    let mut all = Vec::new();
    for size in [100, 1024] {
        for subscribers in [1_000, 10_000] {
            for window in [8, 100] {
                all.push(Scenario::fanout(1, subscribers, 1, window, Some(size)));
            }
        }
        for channels in [100, 1_000] {
            for publishers in [4, 10] {
                for window in [100, 2_000] {
                    all.push(Scenario::fanout(
                        channels,
                        10,
                        publishers,
                        window,
                        Some(size),
                    ));
                }
            }
        }
    }
    all.extend(at_rate_runs());
    all
}

fn bytes(n: usize) -> String {
    if n.is_multiple_of(1024) {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} B")
    }
}

/// One line of the table: a server, a scenario, and the load generator's
/// JSON summary (or why there is none).
struct Row {
    server: String,
    label: String,
    summary: Result<Value, String>,
}

/// A server under test; killed when dropped.
struct Server {
    child: Child,
    /// Arguments that point the load generator at it.
    target: Vec<String>,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn main() {
    let duration: f64 = std::env::var("COMPARE_DURATION")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10.0);
    let only = std::env::var("COMPARE_ONLY").unwrap_or_else(|_| "transponder,nats,redis".into());
    let mut fanouts = if std::env::var("COMPARE_MATRIX").is_ok_and(|v| v == "1") {
        matrix_fanouts()
    } else {
        default_fanouts()
    };
    if let Ok(pick) = std::env::var("COMPARE_SCENARIO") {
        fanouts.retain(|s| s.label.contains(&pick));
    }
    ensure_packages();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        cpus >= 2,
        "compare needs 2 CPUs (one for servers, one for the load generator)"
    );

    let limit = Duration::from_secs_f64(duration.max(0.0)) + RUN_OVERHEAD;
    let mut rows: Vec<Row> = Vec::new();
    for name in only.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        for s in &fanouts {
            let server = start(name);
            eprintln!("compare: {name}: {}", s.label);
            let mut args: Vec<String> = server.target.clone();
            args.extend(["--duration".into(), duration.to_string()]);
            // The server's CPU over the run: deliveries per CPU-second.
            args.extend(["--server-pid".into(), server.child.id().to_string()]);
            args.extend(s.args.iter().cloned());
            if name == "transponder" {
                // Each server's own streaming publish: NATS PUB, Redis
                // PUBLISH, Transponder's publish stream.
                args.extend(["--via".into(), "stream".into()]);
            }
            let row = Row {
                server: name.into(),
                label: s.label.clone(),
                summary: loadgen(&args, limit),
            };
            // A long matrix keeps what it measured if it is cut short.
            eprintln!("compare: {}", table_line(&row));
            rows.push(row);
        }
        let server = start(name);
        eprintln!("compare: {name}: idle hold");
        let mut args: Vec<String> = server.target.clone();
        args.extend([
            "--server-pid".into(),
            server.child.id().to_string(),
            "idle-hold".into(),
            "--connections".into(),
            IDLE_CONNECTIONS.to_string(),
            "--hold".into(),
            "2".into(),
        ]);
        rows.push(Row {
            server: name.into(),
            label: "idle".into(),
            summary: loadgen(&args, limit),
        });
    }
    print_table(&rows, duration);
    let failed: Vec<String> = rows
        .iter()
        .filter_map(|r| {
            let e = r.summary.as_ref().err()?;
            Some(format!("{} {}: {e}", r.server, r.label))
        })
        .collect();
    assert!(failed.is_empty(), "runs failed:\n{}", failed.join("\n"));
}

/// Installs nats-server and redis-server from Debian if missing.
fn ensure_packages() {
    let missing: Vec<&str> = [
        ("nats-server", "nats-server"),
        ("redis-server", "redis-server"),
    ]
    .into_iter()
    .filter(|(bin, _)| !which(bin))
    .map(|(_, pkg)| pkg)
    .collect();
    if missing.is_empty() {
        return;
    }
    eprintln!("compare: installing {}", missing.join(" "));
    let ok = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|s| s.success())
        || (Command::new("apt-get")
            .arg("update")
            .status()
            .is_ok_and(|s| s.success())
            && Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|s| s.success()));
    assert!(ok, "apt-get install {} failed", missing.join(" "));
}

fn which(bin: &str) -> bool {
    ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/sbin", "/bin"]
        .iter()
        .any(|d| std::path::Path::new(d).join(bin).exists())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("compare-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Pins the child to one CPU and kills it with the bench.
fn pin_and_tie(cmd: &mut Command, cpu: usize) {
    // SAFETY: sched_setaffinity and prctl between fork and exec; both are
    // async-signal-safe and touch only the set on this stack.
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

fn start(name: &str) -> Server {
    let dir = temp_dir(name);
    match name {
        "transponder" => {
            let mut cmd = Command::new(LOADGEN);
            cmd.args([
                "serve",
                "--shards",
                "1",
                "--gateway-port",
                "0",
                "--api-port",
                "0",
            ])
            .args(["--admin-port", "0", "--admin-token", "compare"])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("stderr")).expect("stderr file"),
            ));
            pin_and_tie(&mut cmd, SERVER_CPU);
            let mut child = cmd.spawn().expect("start transponder");
            let mut line = String::new();
            BufReader::new(child.stdout.take().expect("stdout"))
                .read_line(&mut line)
                .expect("ready line");
            let ready: Value = serde_json::from_str(
                line.strip_prefix("ready ")
                    .unwrap_or_else(|| panic!("not a ready line: {line:?}")),
            )
            .expect("ready JSON");
            let admin = ready["admin"].as_str().expect("admin url").to_string();
            Server {
                child,
                target: vec![
                    "--target".into(),
                    "transponder".into(),
                    "--admin".into(),
                    admin,
                    "--admin-token".into(),
                    "compare".into(),
                ],
                dir,
            }
        }
        "nats" => {
            let (port, ws) = (free_port(), free_port());
            let conf = dir.join("nats.conf");
            std::fs::write(
                &conf,
                format!(
                    "listen: 127.0.0.1:{port}\nmax_connections: 100000\n\
                     websocket {{ listen: \"127.0.0.1:{ws}\", no_tls: true, compression: false }}\n"
                ),
            )
            .expect("nats.conf");
            let mut cmd = Command::new("nats-server");
            cmd.arg("-c")
                .arg(&conf)
                .env("GOMAXPROCS", "1")
                .stdout(Stdio::null())
                .stderr(Stdio::from(
                    std::fs::File::create(dir.join("stderr")).expect("stderr file"),
                ));
            pin_and_tie(&mut cmd, SERVER_CPU);
            let child = cmd.spawn().expect("start nats-server");
            wait_listening(ws, name);
            Server {
                child,
                target: vec![
                    "--target".into(),
                    "nats".into(),
                    "--nats".into(),
                    format!("ws://127.0.0.1:{ws}/"),
                ],
                dir,
            }
        }
        "redis" => {
            let port = free_port();
            let mut cmd = Command::new("redis-server");
            cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                // Our clients bind 127.0.0.2…; protected mode admits only
                // 127.0.0.1. It still listens on loopback alone.
                .args(["--protected-mode", "no", "--save", "", "--appendonly", "no"])
                .args(["--maxclients", "19000", "--dir"])
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            pin_and_tie(&mut cmd, SERVER_CPU);
            let child = cmd.spawn().expect("start redis-server");
            wait_listening(port, name);
            Server {
                child,
                target: vec![
                    "--target".into(),
                    "redis".into(),
                    "--redis".into(),
                    format!("127.0.0.1:{port}"),
                ],
                dir,
            }
        }
        other => panic!("unknown server {other:?} (transponder, nats, redis)"),
    }
}

fn wait_listening(port: u16, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{name} did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the load generator (pinned to its CPU) and returns its JSON
/// summary; kills it if it runs past `limit`.
fn loadgen(args: &[String], limit: Duration) -> Result<Value, String> {
    let mut cmd = Command::new(LOADGEN);
    cmd.arg("loadgen")
        .arg("--json")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    pin_and_tie(&mut cmd, LOADGEN_CPU);
    let mut child = cmd.spawn().map_err(|e| format!("run loadgen: {e}"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        text
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| format!("wait loadgen: {e}"))? {
            break status;
        }
        if Instant::now() >= deadline {
            // Its workers die with it (PR_SET_PDEATHSIG).
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("loadgen ran past {limit:?}; killed"));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = reader.join().unwrap_or_default();
    let v: Value = serde_json::from_str(text.trim())
        .map_err(|e| format!("loadgen ({status}) printed no summary ({e}): {text}"))?;
    if v["connect_failed"] != 0 {
        return Err(format!("connections failed: {}", v["errors"]));
    }
    Ok(v)
}

fn print_table(rows: &[Row], duration: f64) {
    let machine = machine();
    println!();
    println!("## Side by side — {} — {machine}", date());
    println!();
    println!(
        "Each server pinned to 1 CPU (Transponder --shards 1, nats-server GOMAXPROCS=1, \
         redis-server), the load generator pinned to the other; {duration} s per fan-out run; \
         publishers as fast as their window allows; server CPU is user + system over the \
         measured window. `cargo bench --bench compare`."
    );
    println!();
    println!(
        "| server | scenario | deliveries/s | per server-CPU-s | server CPU | p50 | p99 | lost \
         | memory per idle connection |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        println!("{}", table_line(row));
    }
    print_ratios(rows);
    for row in rows {
        match &row.summary {
            Ok(v) if v["errors"].as_object().is_some_and(|e| !e.is_empty()) => {
                println!("\n{} {}: errors {}", row.server, row.label, v["errors"]);
            }
            Ok(_) => {}
            Err(e) => println!("\n{} {}: failed: {e}", row.server, row.label),
        }
    }
}

/// One row of the markdown table.
fn table_line(row: &Row) -> String {
    let (server, label) = (&row.server, &row.label);
    let v = match &row.summary {
        Ok(v) => v,
        Err(_) => return format!("| {server} | {label} | failed | | | | | | |"),
    };
    if label == "idle" {
        let per = v["server_memory"]["per_connection_bytes"]
            .as_f64()
            .unwrap_or(0.0);
        return format!(
            "| {server} | idle hold, {} connections | | | | | | | {} B |",
            v["connected"],
            group(per, 0)
        );
    }
    let num = |k: &str| v[k].as_f64();
    format!(
        "| {server} | {label} | {} | {} | {} | {} | {} | {} | |",
        group(num("deliveries_per_s").unwrap_or(0.0), 0),
        num("deliveries_per_server_cpu_sec").map_or("–".into(), |d| group(d, 0)),
        num("server_cpu_util").map_or("–".into(), |u| format!("{:.0} %", u * 100.0)),
        ms(v["latency"]["p50_us"].as_f64().unwrap_or(0.0)),
        ms(v["latency"]["p99_us"].as_f64().unwrap_or(0.0)),
        v["lost"]
    )
}

/// Transponder / nats-server per scenario, for deliveries/s and for
/// deliveries per server-CPU-second.
fn print_ratios(rows: &[Row]) {
    let figure = |server: &str, label: &str, key: &str| {
        rows.iter()
            .find(|r| r.server == server && r.label == label)
            .and_then(|r| r.summary.as_ref().ok())
            .and_then(|v| v[key].as_f64())
            .filter(|&x| x > 0.0)
    };
    let ratio = |label: &str, key: &str| match (
        figure("transponder", label, key),
        figure("nats", label, key),
    ) {
        (Some(t), Some(n)) => format!("{:.2}×", t / n),
        _ => "–".into(),
    };
    let mut labels: Vec<&str> = Vec::new();
    for r in rows.iter().filter(|r| r.label != "idle") {
        if !labels.contains(&r.label.as_str()) {
            labels.push(&r.label);
        }
    }
    if labels.is_empty() {
        return;
    }
    println!();
    // p99 the other way round: how many times nats-server's p99 is ours.
    let p99 = |server: &str, label: &str| {
        rows.iter()
            .find(|r| r.server == server && r.label == label)
            .and_then(|r| r.summary.as_ref().ok())
            .and_then(|v| v["latency"]["p99_us"].as_f64())
            .filter(|&x| x > 0.0)
    };
    println!(
        "| scenario | Transponder / nats deliveries/s | Transponder / nats per server-CPU-s \
         | nats p99 / Transponder p99 |"
    );
    println!("|---|---|---|---|");
    for label in labels {
        let p99_ratio = match (p99("transponder", label), p99("nats", label)) {
            (Some(t), Some(n)) => format!("{:.2}×", n / t),
            _ => "–".into(),
        };
        println!(
            "| {label} | {} | {} | {p99_ratio} |",
            ratio(label, "deliveries_per_s"),
            ratio(label, "deliveries_per_server_cpu_sec")
        );
    }
}

fn ms(us: f64) -> String {
    format!("{:.2} ms", us / 1000.0)
}

fn date() -> String {
    Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpus} × {cpu}, Linux {kernel}")
}
