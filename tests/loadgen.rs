//! `transponder loadgen` against the real server, and against real
//! nats-server and redis-server (tests/run.sh installs them): small
//! scenarios whose every event must arrive, in order, with the counts adding
//! up. Speed is not asserted; what the summary says is.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Server;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_transponder");

/// Runs `transponder loadgen --json <args>` and returns its summary and
/// exit status.
fn loadgen(args: &[&str]) -> (Value, bool) {
    let out = Command::new(BIN)
        .arg("loadgen")
        .arg("--json")
        .args(args)
        .stderr(Stdio::piped())
        .output()
        .expect("run loadgen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "loadgen {args:?}: no JSON summary ({e}); stdout {stdout}; stderr {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (v, out.status.success())
}

fn admin_args(s: &Server) -> Vec<String> {
    vec![
        "--admin".into(),
        s.admin_url.trim_end_matches('/').to_string(),
        "--admin-token".into(),
        s.admin.token.clone().expect("admin token"),
        "--api".into(),
        s.api_url.clone(),
    ]
}

fn run(base: &[String], rest: &[&str]) -> (Value, bool) {
    let mut args: Vec<&str> = base.iter().map(String::as_str).collect();
    args.extend_from_slice(rest);
    loadgen(&args)
}

/// Every owed delivery arrived, in order, with latencies recorded.
fn assert_complete(v: &Value, ok: bool) {
    assert!(ok, "loadgen reported a problem: {v}");
    assert_eq!(v["connect_failed"], 0, "{v}");
    assert_eq!(v["dropped"], 0, "{v}");
    assert_eq!(v["lost"], 0, "{v}");
    assert_eq!(v["gaps"], 0, "{v}");
    assert_eq!(v["reordered"], 0, "{v}");
    let expected = v["expected"].as_u64().unwrap();
    assert!(expected > 0, "nothing was published: {v}");
    assert_eq!(v["delivered"].as_u64().unwrap(), expected, "{v}");
    assert_eq!(v["latency"]["count"].as_u64().unwrap(), expected, "{v}");
    assert!(v["latency"]["p50_us"].as_f64().unwrap() > 0.0, "{v}");
}

#[test]
fn fanout_through_admin_publish_delivers_everything_in_order() {
    let s = Server::start();
    let base = admin_args(&s);
    let (v, ok) = run(
        &base,
        &[
            "--duration",
            "2",
            "fanout",
            "--channels",
            "6",
            "--subscribers",
            "4",
            "--publishers",
            "3",
            "--size",
            "200",
        ],
    );
    assert_complete(&v, ok);
    // 3 witnesses + 6 × 3 plain subscribers + 3 HTTP publishers.
    assert_eq!(v["connections"], 24, "{v}");
    assert_eq!(
        v["expected"].as_u64().unwrap(),
        v["published"].as_u64().unwrap() * 4
    );
}

#[test]
fn fanout_over_rtm_messages_is_stored_and_delivered() {
    let s = Server::start();
    let base = admin_args(&s);
    let (v, ok) = run(
        &base,
        &[
            "--duration",
            "1",
            "fanout",
            "--channels",
            "2",
            "--subscribers",
            "3",
            "--publishers",
            "2",
            "--via",
            "rtm",
            "--rate",
            "50",
        ],
    );
    assert_complete(&v, ok);
    assert_eq!(v["params"]["via"], "rtm", "{v}");
}

/// `--server-pid` accounted the server's CPU over the measured window: the
/// three figures are there, positive, and agree with each other and with
/// deliveries/s (no speed is asserted).
fn assert_server_cpu(v: &Value) {
    let field = |k: &str| {
        v[k].as_f64()
            .unwrap_or_else(|| panic!("{k} missing or not a number: {v}"))
    };
    let cpu = field("server_cpu_secs");
    let util = field("server_cpu_util");
    let per_cpu = field("deliveries_per_server_cpu_sec");
    let run = field("run_seconds");
    let delivered_in_run = field("deliveries_per_s") * run;
    assert!(cpu > 0.0 && run > 0.0 && delivered_in_run > 0.0, "{v}");
    assert!(per_cpu.is_finite() && per_cpu > 0.0, "{v}");
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs());
    assert!(close(util, cpu / run), "utilisation is not cpu / run: {v}");
    assert!(
        close(per_cpu, delivered_in_run / cpu),
        "per-CPU figure is not deliveries / cpu seconds: {v}"
    );
}

#[test]
fn fanout_over_the_publish_stream_delivers_everything_in_order() {
    let s = Server::start();
    let mut base = admin_args(&s);
    base.extend(["--server-pid".into(), s.pid().to_string()]);
    let (v, ok) = run(
        &base,
        &[
            "--duration",
            "1",
            "fanout",
            "--channels",
            "8",
            "--subscribers",
            "3",
            "--publishers",
            "2",
            "--via",
            "stream",
        ],
    );
    assert_complete(&v, ok);
    assert_eq!(v["params"]["via"], "stream", "{v}");
    assert_server_cpu(&v);
}

#[test]
fn fanout_through_chat_post_message_delivers_everything_in_order() {
    let s = Server::start();
    let base = admin_args(&s);
    let (v, ok) = run(
        &base,
        &[
            "--duration",
            "1",
            "fanout",
            "--channels",
            "4",
            "--subscribers",
            "3",
            "--publishers",
            "2",
            "--via",
            "web",
            "--rate",
            "40",
        ],
    );
    assert_complete(&v, ok);
    assert_eq!(v["params"]["via"], "web", "{v}");
    // 2 witnesses + 4 × 2 plain subscribers + 2 Web API connections.
    assert_eq!(v["connections"], 12, "{v}");
}

#[test]
fn churn_comes_back_through_rtm_connect_and_leaves_nothing_behind() {
    let s = Server::start();
    let base = admin_args(&s);
    let (v, ok) = run(
        &base,
        &[
            "--duration",
            "2",
            "churn",
            "--connections",
            "30",
            "--channels",
            "3",
            "--watch",
            "5",
            "--hold-ms",
            "200",
            "--pause-ms",
            "50",
        ],
    );
    assert!(ok, "loadgen reported a problem: {v}");
    assert_eq!(v["connect_failed"], 0, "{v}");
    assert_eq!(v["dropped"], 0, "{v}");
    let left = v["disconnects"].as_u64().unwrap();
    // Every connection (30 churners, their Web API connections) connected
    // first; the rest came back.
    let came_back = v["connected"].as_u64().unwrap() - v["connections"].as_u64().unwrap();
    assert!(left >= 30 && came_back >= 30, "{v}");
    assert!(v["presence_received"].as_u64().unwrap() >= 30 * 5, "{v}");
    // Every connection the churn opened is gone from the server.
    assert_eq!(
        s.admin
            .wait_total_connections(0, std::time::Duration::from_secs(10)),
        0
    );
}

#[test]
fn connect_storm_and_idle_hold_open_every_connection() {
    let s = Server::start();
    let base = admin_args(&s);
    let pid = s.pid().to_string();
    let mut args = base.clone();
    args.extend(["--server-pid".into(), pid]);
    let (v, ok) = run(
        &args,
        &["--workers", "2", "connect-storm", "--connections", "300"],
    );
    assert!(ok, "{v}");
    assert_eq!(v["connected"], 300, "{v}");
    assert_eq!(v["workers"], 2, "{v}");
    assert!(v["connects_per_s"].as_f64().unwrap() > 0.0, "{v}");
    // What a handshake costs each side, in CPU per connection: the load
    // generator's own (ns clock: never 0) and the server's (10 ms ticks:
    // 0 is possible over 300 connections).
    let per_connect = |k: &str| {
        v[k].as_f64()
            .unwrap_or_else(|| panic!("{k} missing or not a number: {v}"))
    };
    assert!(per_connect("loadgen_cpu_us_per_connect") > 0.0, "{v}");
    assert!(per_connect("server_cpu_us_per_connect") >= 0.0, "{v}");

    let (v, ok) = run(&args, &["idle-hold", "--connections", "200", "--hold", "1"]);
    assert!(ok, "{v}");
    assert_eq!(v["connected"], 200, "{v}");
    assert_eq!(v["dropped"], 0, "{v}");
    assert!(
        v["server_memory"]["rss_connected_bytes"].as_u64().unwrap() > 0,
        "{v}"
    );
}

#[test]
fn typing_storm_reaches_the_other_members() {
    let s = Server::start();
    let base = admin_args(&s);
    let (v, ok) = run(
        &base,
        &[
            "--duration",
            "1",
            "typing-storm",
            "--channels",
            "3",
            "--members",
            "4",
            "--interval-ms",
            "100",
        ],
    );
    assert!(ok, "{v}");
    let sent = v["published"].as_u64().unwrap();
    assert!(sent > 0, "{v}");
    assert_eq!(v["expected"].as_u64().unwrap(), sent * 3, "{v}");
    assert_eq!(v["delivered"], v["expected"], "{v}");
}

#[test]
fn bad_arguments_are_refused_with_a_message() {
    let s = Server::start();
    let base = admin_args(&s);
    let out = Command::new(BIN)
        .arg("loadgen")
        .args(&base)
        .args(["fanout", "--channels", "1", "--publishers", "2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--publishers must not exceed"));
    let out = Command::new(BIN)
        .args(["loadgen", "--admin-token", "wrong", "--admin"])
        .arg(s.admin_url.trim_end_matches('/'))
        .args(["fanout", "--subscribers", "2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A server pid that is no process: refused before anything runs, in
    // one line, rather than accounted as zero CPU. (u32::MAX is above any
    // kernel's pid_max.)
    let out = Command::new(BIN)
        .arg("loadgen")
        .args(&base)
        .args(["--server-pid", &u32::MAX.to_string(), "fanout"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("loadgen: --server-pid 4294967295: cannot read /proc/4294967295/stat"),
        "{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A peer server process, killed on drop.
struct Peer(Child, std::path::PathBuf);

impl Peer {
    /// `--server-pid` for the load generator.
    fn pid_arg(&self) -> String {
        self.0.id().to_string()
    }
}

impl Peer {
    /// Starts `cmd` (quietly) and waits until it listens on `port`.
    fn spawn(cmd: &mut Command, dir: std::path::PathBuf, port: u16) -> Peer {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?} (tests/run.sh installs it): {e}"));
        let peer = Peer(child, dir);
        wait_listening(port);
        peer
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("lg-{name}-{}", common::unique()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn speaks_nats_over_websocket() {
    let dir = temp_dir("nats");
    let (port, ws) = (free_port(), free_port());
    let conf = dir.join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "listen: 127.0.0.1:{port}\nwebsocket {{ listen: \"127.0.0.1:{ws}\", no_tls: true, compression: false }}\n"
        ),
    )
    .unwrap();
    let peer = Peer::spawn(Command::new("nats-server").arg("-c").arg(&conf), dir, ws);
    small_fanout(&[
        "--target",
        "nats",
        "--nats",
        &format!("ws://127.0.0.1:{ws}/"),
        "--server-pid",
        &peer.pid_arg(),
    ]);
}

#[test]
fn speaks_redis_pubsub() {
    let dir = temp_dir("redis");
    let port = free_port();
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--protected-mode",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
        ])
        .arg(&dir);
    let peer = Peer::spawn(&mut cmd, dir, port);
    small_fanout(&[
        "--target",
        "redis",
        "--redis",
        &format!("127.0.0.1:{port}"),
        "--server-pid",
        &peer.pid_arg(),
    ]);
}

/// A 5 × 3 fan-out with 2 publishers against a peer (its pid given):
/// everything must arrive, and its CPU is accounted.
fn small_fanout(target: &[&str]) {
    let mut args = target.to_vec();
    args.extend([
        "--duration",
        "1",
        "fanout",
        "--channels",
        "5",
        "--subscribers",
        "3",
        "--publishers",
        "2",
    ]);
    let (v, ok) = loadgen(&args);
    assert_complete(&v, ok);
    assert_server_cpu(&v);
}
