//! Shared harness of Transponder's integration tests.
//!
//! * [`Server`]: starts the real binary on ephemeral ports with a fresh data
//!   directory, waits for its `ready` line, kills it on drop (SIGKILL) and
//!   prints the tail of its stderr when the test failed.
//!   [`Server::start_in`] starts one on an existing data directory (a
//!   restart after a kill or a stop).
//! * [`transponder_command`], [`run_to_exit`]: any other run of the binary
//!   (a start that must fail, the offline commands), bounded.
//! * [`KeepAlive`], [`WebApi`]: one keep-alive HTTP/1.1 connection that
//!   never retries by itself, and a Web API client (JSON bodies, Bearer
//!   token) over it.
//! * [`fresh_dir`], [`free_ports`], [`unique`]: scratch directories, ports
//!   for a process started with fixed port numbers, unique names.
//! * [`Admin`]: a tiny std::net HTTP/1.1 client of the admin API
//!   (`Connection: close`, Content-Length bodies).
//! * [`Ws`]: a synchronous tungstenite client over a `TcpStream` whose reads
//!   are always bounded by a timeout; it answers nothing by itself and skips
//!   nothing: [`Ws::recv_json`] returns the very next frame, which must be a
//!   JSON text frame.
//!
//! * [`etcd::Etcd`]: a real etcd on free loopback ports, for cluster tests.
//! * [`fleet::Fleet`]: nodes on one etcd and one PostgreSQL store, for
//!   failover tests; who owns an id; publishers that record what was
//!   acknowledged.
//! * [`pg`]: the test PostgreSQL server (a schema per test, a restart),
//!   for tests of `--store postgres://…`.
//!
//! Every wait in here is bounded; nothing asserts speed.
#![allow(dead_code)]

pub mod cluster;
pub mod etcd;
#[cfg(feature = "cluster")]
pub mod etcd_keys;
pub mod fleet;
pub mod netns;
pub mod pg;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tungstenite::protocol::WebSocket;
use tungstenite::{HandshakeError, Message};

/// How long the server may take to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default bound for one expected event to arrive.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound for one admin HTTP exchange.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long we listen to conclude that nothing (more) arrives.
pub const QUIET: Duration = Duration::from_millis(400);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A process-wide unique small string (for directory and object names).
/// `serve` flags that put the gateway, Web API and admin listeners on
/// ports the kernel picks (tests run in parallel).
pub const EPHEMERAL_PORTS: [&str; 6] = [
    "--gateway-port",
    "0",
    "--api-port",
    "0",
    "--admin-port",
    "0",
];

pub fn unique() -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{}-{}-{}", std::process::id(), n, nanos)
}

/// A new, empty directory under the system's temp dir, removed when the
/// test binary exits (set `TRANSPONDER_KEEP_TEST_DIRS=1` to keep them for a
/// post-mortem). Removal at exit, not on drop: callers hand out paths
/// inside it (`fresh_dir().join("data")`) that outlive any guard, and
/// restarts reuse a data directory after its server is gone. Before this,
/// a day of test runs left ~2,000 directories (etcd WALs, stores) in /tmp.
/// A server dropped while its test panics keeps them all (its stderr
/// names its directory).
pub fn fresh_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("transponder-it-{}", unique()));
    fs::create_dir_all(&dir).expect("create temp dir");
    remove_at_exit(dir.clone());
    dir
}

static DIRS_TO_REMOVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
/// Set by a [`Server`] dropped during a panic: keep the evidence.
static A_TEST_FAILED: AtomicBool = AtomicBool::new(false);

fn remove_at_exit(dir: PathBuf) {
    static REGISTER: std::sync::Once = std::sync::Once::new();
    REGISTER.call_once(|| {
        // SAFETY: registers a plain `extern "C"` function with no
        // arguments, as atexit(3) requires.
        let rc = unsafe { libc::atexit(remove_dirs) };
        assert_eq!(rc, 0, "atexit");
    });
    DIRS_TO_REMOVE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(dir);
}

/// Runs when the test binary exits, after every test (and its `Drop`s,
/// which kill the servers using these directories).
extern "C" fn remove_dirs() {
    if std::env::var_os("TRANSPONDER_KEEP_TEST_DIRS").is_some()
        || A_TEST_FAILED.load(Ordering::SeqCst)
    {
        return;
    }
    for dir in DIRS_TO_REMOVE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
    {
        let _ = fs::remove_dir_all(dir);
    }
}

/// `n` distinct ports of 127.0.0.1 that were free a moment ago, for a
/// process that must be told its ports by number. They are bound all at once
/// (so they differ), then released; another process could take one in
/// between, which on loopback in a test run is rare enough.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

fn parse_host_port(url: &str, scheme: &str) -> SocketAddr {
    let rest = url
        .strip_prefix(scheme)
        .unwrap_or_else(|| panic!("url {url:?} does not start with {scheme:?}"));
    let hostport = rest.split('/').next().unwrap();
    let addr: SocketAddr = hostport
        .parse()
        .unwrap_or_else(|e| panic!("url {url:?}: bad host:port {hostport:?}: {e}"));
    assert!(
        addr.ip().is_loopback(),
        "url {url:?} is not on the loopback interface"
    );
    addr
}

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

pub struct Server {
    child: Option<Child>,
    pub dir: PathBuf,
    pub stderr_path: PathBuf,
    pub gateway: SocketAddr,
    pub gateway_url: String,
    pub api_url: String,
    /// The Web API's address (from `api_url`).
    pub api: SocketAddr,
    pub admin_url: String,
    pub admin: Admin,
    /// The parsed JSON of the ready line.
    pub ready: Value,
    /// Every stdout line the server printed (the ready line included).
    stdout_lines: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// `transponder serve --shards 2` on ephemeral ports with a fresh data dir.
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    /// Same as [`Server::start`] with extra flags appended.
    pub fn start_with(extra: &[&str]) -> Server {
        let dir = fresh_dir();
        let data = dir.join("data");
        fs::create_dir_all(&data).unwrap();
        Self::spawn(dir, &data, extra, &[])
    }

    /// Starts on an existing data directory `data_dir` (e.g. the one of a
    /// server that was killed or stopped), with extra flags appended. The
    /// caller owns `data_dir`: Drop removes only this server's own fresh
    /// directory (its stderr log), never `data_dir`.
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Server {
        fs::create_dir_all(data_dir).unwrap();
        Self::spawn(fresh_dir(), data_dir, extra, &[])
    }

    /// [`Server::start_in`] inside network namespace `ns` (add `--host
    /// <ns.ip>` to `extra` so that it binds the namespace's address).
    pub fn start_in_netns(data_dir: &Path, extra: &[&str], ns: &netns::Netns) -> Server {
        fs::create_dir_all(data_dir).unwrap();
        Self::spawn(fresh_dir(), data_dir, extra, &ns.prefix())
    }

    /// Starts the binary with `--data-dir data`, its stderr in
    /// `dir/stderr.log`, and waits for the ready line; `prefix` (if any) runs
    /// it (e.g. `ip netns exec <name>`).
    fn spawn(dir: PathBuf, data: &Path, extra: &[&str], prefix: &[String]) -> Server {
        let stderr_path = dir.join("stderr.log");
        let stderr = File::create(&stderr_path).unwrap();
        // The caller's own token (a cluster's nodes share one) wins.
        let given = extra
            .iter()
            .position(|&a| a == "--admin-token")
            .and_then(|i| extra.get(i + 1));
        let token = given.map_or_else(|| format!("it-admin-{}", unique()), |t| t.to_string());
        let default_token = ["--admin-token", token.as_str()];
        let token_args: &[&str] = if given.is_some() { &[] } else { &default_token };

        let mut cmd = transponder_command_in(prefix, &["serve"]);
        if !extra.contains(&"--shards") {
            cmd.args(["--shards", "2"]);
        }
        cmd.args(EPHEMERAL_PORTS)
            .arg("--data-dir")
            .arg(data)
            .args(token_args)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        let mut child = cmd.spawn().expect("spawn transponder");

        let stdout = child.stdout.take().unwrap();
        let stdout_lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<String>();
        {
            let lines = stdout_lines.clone();
            std::thread::spawn(move || {
                let reader = BufReader::new(stdout);
                for line in reader.lines() {
                    let Ok(line) = line else { break };
                    lines.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }

        let started = Instant::now();
        let line = loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => break line,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = child.kill();
                    let status = child.wait();
                    panic!(
                        "server closed stdout before printing ready (status {status:?}); stderr tail:\n{}",
                        tail_of(&stderr_path, 60)
                    );
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                // Give the stdout thread a moment to forward a line printed just before exit.
                if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
                    break line;
                }
                panic!(
                    "server exited with {status} before ready; stderr tail:\n{}",
                    tail_of(&stderr_path, 60)
                );
            }
            if started.elapsed() > READY_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "server printed no ready line within {READY_TIMEOUT:?}; stderr tail:\n{}",
                    tail_of(&stderr_path, 60)
                );
            }
        };

        let json_text = line.strip_prefix("ready ").unwrap_or_else(|| {
            let _ = child.kill();
            panic!("first stdout line is not `ready {{…}}`: {line:?}")
        });
        let ready: Value = serde_json::from_str(json_text)
            .unwrap_or_else(|e| panic!("ready line is not JSON ({e}): {line:?}"));
        let field = |k: &str| -> String {
            ready[k]
                .as_str()
                .unwrap_or_else(|| panic!("ready line lacks string {k:?}: {line}"))
                .to_string()
        };
        let gateway_url = field("gateway");
        let api_url = field("api");
        let admin_url = field("admin");
        let ready_token = field("admin_token");
        assert_eq!(
            ready_token, token,
            "ready line's admin_token is not --admin-token"
        );
        let gateway = parse_host_port(&gateway_url, "ws://");
        let admin_addr = parse_host_port(&admin_url, "http://");
        let api = parse_host_port(&api_url, "http://");

        Server {
            child: Some(child),
            dir,
            stderr_path,
            gateway,
            gateway_url,
            api_url,
            api,
            admin_url,
            admin: Admin {
                addr: admin_addr,
                token: Some(token),
            },
            ready,
            stdout_lines,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server already stopped").id()
    }

    /// Every stdout line printed so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout_lines.lock().unwrap().clone()
    }

    /// The last `n` lines of the server's stderr.
    pub fn stderr_tail(&self, n: usize) -> String {
        tail_of(&self.stderr_path, n)
    }

    /// Sends a signal (e.g. `libc::SIGTERM`) to the server.
    pub fn signal(&self, sig: i32) {
        let pid = self.pid() as libc::pid_t;
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {sig}) failed: {}",
            std::io::Error::last_os_error()
        );
    }

    /// SIGTERM.
    pub fn terminate(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still
    /// running then. Once it returned `Some`, Drop has nothing left to kill.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("server already reaped");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            None => false,
            Some(c) => c.try_wait().ok().flatten().is_none(),
        }
    }

    /// A fresh websocket URL for `user` (single-use ticket).
    pub fn ticket(&self, user: &str) -> String {
        self.admin.ticket(user)
    }

    /// Opens a websocket for `user`; `hello` already consumed and checked.
    pub fn connect(&self, user: &str) -> Ws {
        Ws::connect(&self.ticket(user))
    }

    /// Opens a websocket for `user` resuming after `since`.
    pub fn connect_since(&self, user: &str, since: &str) -> Ws {
        Ws::connect(&with_since(&self.ticket(user), since))
    }
}

/// `transponder <args>` as the harness runs it: no `TRANSPONDER_*`
/// variable inherited from the test's environment, no colours, stdin null.
pub fn transponder_command(args: &[&str]) -> Command {
    transponder_command_in(&[], args)
}

/// [`transponder_command`] run by `prefix` (none: directly).
pub fn transponder_command_in(prefix: &[String], args: &[&str]) -> Command {
    let bin = env!("CARGO_BIN_EXE_transponder");
    let mut cmd = match prefix.split_first() {
        None => Command::new(bin),
        Some((program, rest)) => {
            let mut c = Command::new(program);
            c.args(rest).arg(bin);
            c
        }
    };
    cmd.args(args).env("NO_COLOR", "1").stdin(Stdio::null());
    for (k, _) in std::env::vars() {
        if k.starts_with("TRANSPONDER_") {
            cmd.env_remove(k);
        }
    }
    // Debugging a test: `TEST_TRANSPONDER_LOG=transponder::cluster=debug
    // cargo test …` sets the servers' log filter.
    if let Ok(filter) = std::env::var("TEST_TRANSPONDER_LOG") {
        cmd.env("TRANSPONDER_LOG", filter);
    }
    cmd
}

/// What a process that ended printed, and how it ended.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` (stdout and stderr captured) until it exits. Panics, with
/// what it printed, if it is still running after `timeout` (it is killed).
#[track_caller]
pub fn run_to_exit(cmd: &mut Command, timeout: Duration) -> Exited {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn transponder");
    let collect = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = collect(Box::new(child.stdout.take().unwrap()));
    let stderr = collect(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = join_within(stdout, Duration::from_secs(10), "stdout reader");
    let stderr = join_within(stderr, Duration::from_secs(10), "stderr reader");
    match status {
        Some(status) => Exited {
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "still running after {timeout:?} (killed); stdout:\n{stdout}\nstderr:\n{}",
            shorten(&stderr)
        ),
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if panicking {
            A_TEST_FAILED.store(true, Ordering::SeqCst);
            eprintln!(
                "---- transponder stderr (last 80 lines of {}) ----\n{}\n---- end of stderr ----",
                self.stderr_path.display(),
                tail_of(&self.stderr_path, 80)
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn tail_of(path: &std::path::Path, n: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(n);
            lines[start..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// `url` with `since=<ts>` appended as a query parameter.
pub fn with_since(url: &str, since: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}since={since}")
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "HTTP {} body is not JSON ({e}): {:?}",
                self.status,
                self.text()
            )
        })
    }
}

/// `text` cut to at most 300 characters for failure messages.
pub fn shorten(text: &str) -> String {
    if text.chars().count() <= 300 {
        return text.to_string();
    }
    let head: String = text.chars().take(300).collect();
    format!("{head}… ({} bytes)", text.len())
}

/// One HTTP/1.1 exchange over a fresh connection (`Connection: close`).
#[track_caller]
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> HttpResponse {
    try_http_request(addr, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} http://{addr}{path}: {e}"))
}

pub fn try_http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<HttpResponse, String> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(HTTP_TIMEOUT)).unwrap();
    let _ = stream.set_nodelay(true);
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or(b"");
    if !body.is_empty() || method == "POST" || method == "PUT" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    (&stream)
        .write_all(&bytes)
        .map_err(|e| format!("write: {e}"))?;
    read_http_response(stream)
}

/// Reads one HTTP/1.x response: Content-Length, chunked, or until EOF.
pub fn read_http_response(stream: TcpStream) -> Result<HttpResponse, String> {
    read_http_response_from(&mut BufReader::new(stream), HTTP_TIMEOUT)
}

/// [`read_http_response`] off a buffered stream that stays usable for the
/// next response (keep-alive); `timeout` is the stream's read timeout, for
/// the error message.
pub fn read_http_response_from(
    r: &mut BufReader<TcpStream>,
    timeout: Duration,
) -> Result<HttpResponse, String> {
    let mut status_line = String::new();
    r.read_line(&mut status_line).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            format!("no answer within {timeout:?}")
        }
        _ => format!("read status line: {e}"),
    })?;
    if status_line.is_empty() {
        return Err("connection closed before a status line".into());
    }
    let mut parts = status_line.trim_end().splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(format!("bad status line {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut headers = Vec::new();
    for _ in 0..200 {
        let mut line = String::new();
        r.read_line(&mut line)
            .map_err(|e| format!("read header: {e}"))?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if let Some(len) = get("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| format!("bad content-length {len:?}"))?;
        body.resize(len, 0);
        r.read_exact(&mut body)
            .map_err(|e| format!("read body: {e}"))?;
    } else if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        for _ in 0..100_000 {
            let mut size_line = String::new();
            r.read_line(&mut size_line)
                .map_err(|e| format!("read chunk size: {e}"))?;
            let size_hex = size_line.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| format!("bad chunk size {size_line:?}"))?;
            if size == 0 {
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])
                .map_err(|e| format!("read chunk: {e}"))?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf)
                .map_err(|e| format!("read chunk end: {e}"))?;
        }
    } else if status != 204 && status != 304 && !(100..200).contains(&status) {
        r.read_to_end(&mut body)
            .map_err(|e| format!("read body to EOF: {e}"))?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// Connects to `addr` and writes `bytes` as they are, e.g. a request head
/// whose body never follows; reads on the returned stream wait at most
/// `timeout`. A write the server cut short by closing shows on the read.
pub fn send_raw(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> BufReader<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(timeout)).unwrap();
    stream.set_write_timeout(Some(HTTP_TIMEOUT)).unwrap();
    let _ = stream.set_nodelay(true);
    if let Err(e) = (&stream).write_all(bytes) {
        use std::io::ErrorKind::{BrokenPipe, ConnectionReset};
        assert!(
            matches!(e.kind(), BrokenPipe | ConnectionReset),
            "write to {addr}: {e}"
        );
    }
    BufReader::new(stream)
}

/// Whether the server closed `conn` (EOF or reset) within its read
/// timeout; false if it is still open then. A byte instead is a failure.
pub fn closed_by_server(conn: &mut BufReader<TcpStream>) -> bool {
    let mut buf = [0u8; 256];
    match conn.read(&mut buf) {
        Ok(0) => true,
        Ok(n) => panic!(
            "expected the server to close the connection; it sent {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            false
        }
        Err(_) => true,
    }
}

// ---------------------------------------------------------------------------
// Keep-alive HTTP and the Web API
// ---------------------------------------------------------------------------

/// One keep-alive HTTP/1.1 connection to `addr`: opened on first use,
/// reused while the server keeps it, dropped after any error or a
/// close-delimited answer (the next request opens a new one). It never
/// retries by itself: after an error the caller cannot know whether the
/// server acted on the request, and only the caller knows whether sending
/// it again is harmless.
pub struct KeepAlive {
    pub addr: SocketAddr,
    timeout: Duration,
    conn: Option<BufReader<TcpStream>>,
    /// Connections opened so far.
    pub connects: usize,
}

impl KeepAlive {
    /// Connect, read and write timeouts of [`HTTP_TIMEOUT`].
    pub fn new(addr: SocketAddr) -> KeepAlive {
        Self::with_timeout(addr, HTTP_TIMEOUT)
    }

    pub fn with_timeout(addr: SocketAddr, timeout: Duration) -> KeepAlive {
        KeepAlive {
            addr,
            timeout,
            conn: None,
            connects: 0,
        }
    }

    /// One exchange on the kept connection (a new one if there is none).
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<HttpResponse, String> {
        let result = self.exchange(method, path, headers, body);
        let reusable = result.as_ref().is_ok_and(|r| {
            let framed = r.header("content-length").is_some()
                || r.header("transfer-encoding")
                    .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
            let closing = r
                .header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"));
            framed && !closing
        });
        if !reusable {
            self.conn = None;
        }
        result
    }

    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<HttpResponse, String> {
        if self.conn.is_none() {
            let stream = TcpStream::connect_timeout(&self.addr, self.timeout)
                .map_err(|e| format!("connect: {e}"))?;
            stream.set_read_timeout(Some(self.timeout)).unwrap();
            stream.set_write_timeout(Some(self.timeout)).unwrap();
            let _ = stream.set_nodelay(true);
            self.conn = Some(BufReader::new(stream));
            self.connects += 1;
        }
        let r = self.conn.as_mut().expect("connected above");
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        let body = body.unwrap_or(b"");
        if !body.is_empty() || method == "POST" || method == "PUT" {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        r.get_mut()
            .write_all(&bytes)
            .map_err(|e| format!("write: {e}"))?;
        read_http_response_from(r, self.timeout)
    }
}

/// A Web API client over one keep-alive connection: `POST /api/<method>`
/// with a JSON body and the token as a Bearer header.
pub struct WebApi {
    pub http: KeepAlive,
}

impl WebApi {
    pub fn new(server: &Server) -> WebApi {
        WebApi {
            http: KeepAlive::new(server.api),
        }
    }

    pub fn with_timeout(addr: SocketAddr, timeout: Duration) -> WebApi {
        WebApi {
            http: KeepAlive::with_timeout(addr, timeout),
        }
    }

    /// One call; the raw answer, or the transport error.
    pub fn call(
        &mut self,
        token: &str,
        method: &str,
        args: &Value,
    ) -> Result<HttpResponse, String> {
        let auth = format!("Bearer {token}");
        let body = args.to_string();
        self.http.request(
            "POST",
            &format!("/api/{method}"),
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json; charset=utf-8"),
            ],
            Some(body.as_bytes()),
        )
    }

    /// A call that must answer HTTP 200 `{"ok":true,…}`.
    #[track_caller]
    pub fn ok(&mut self, token: &str, method: &str, args: Value) -> Value {
        let resp = self
            .call(token, method, &args)
            .unwrap_or_else(|e| panic!("{method} {}: {e}", shorten(&args.to_string())));
        let v = resp.json();
        assert!(
            resp.status == 200 && v["ok"] == json!(true),
            "{method} {}: expected 200 ok:true, got {} {}",
            shorten(&args.to_string()),
            resp.status,
            shorten(&v.to_string())
        );
        v
    }
}

// ---------------------------------------------------------------------------
// Admin API
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub name: String,
    pub token: String,
}

#[derive(Clone, Debug)]
pub struct Admin {
    pub addr: SocketAddr,
    /// Sent as `Authorization: Bearer <token>` when set.
    pub token: Option<String>,
}

impl Admin {
    /// The same client with another (or no) token.
    pub fn with_token(&self, token: Option<&str>) -> Admin {
        Admin {
            addr: self.addr,
            token: token.map(str::to_string),
        }
    }

    /// An exchange that may fail (a node going down): status and JSON body,
    /// or `None` if the request could not be made or answered.
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Option<(u16, Value)> {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(a) = &auth {
            headers.push(("Authorization", a));
        }
        let body_bytes = body.map(|b| b.to_string().into_bytes());
        if body_bytes.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        let resp =
            try_http_request(self.addr, method, path, &headers, body_bytes.as_deref()).ok()?;
        let json = serde_json::from_slice(&resp.body).ok()?;
        Some((resp.status, json))
    }

    /// Raw exchange: status and parsed JSON body.
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let resp = self.request_raw(method, path, body);
        let json = resp.json();
        (resp.status, json)
    }

    pub fn request_raw(&self, method: &str, path: &str, body: Option<&Value>) -> HttpResponse {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(a) = &auth {
            headers.push(("Authorization", a));
        }
        let body_bytes = body.map(|b| b.to_string().into_bytes());
        if body_bytes.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        http_request(self.addr, method, path, &headers, body_bytes.as_deref())
    }

    /// An exchange that must answer 200 `{"ok":true,…}`.
    #[track_caller]
    pub fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (status, json) = self.request(method, path, body);
        assert!(
            status == 200 && json["ok"] == json!(true),
            "{method} {path} {}: expected 200 ok:true, got {status} {}",
            body.map(|b| shorten(&b.to_string())).unwrap_or_default(),
            shorten(&json.to_string())
        );
        json
    }

    #[track_caller]
    pub fn create_user(&self, name: &str) -> User {
        let v = self.ok("POST", "/v1/users", Some(&json!({ "name": name })));
        let id = v["user"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no user.id: {v}"))
            .to_string();
        assert!(id.starts_with('U'), "user id {id:?} does not start with U");
        assert_eq!(v["user"]["name"], json!(name), "user name echoed: {v}");
        let token = v["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token: {v}"))
            .to_string();
        User {
            id,
            name: name.to_string(),
            token,
        }
    }

    /// `n` users named `{prefix}{i}`.
    pub fn create_users(&self, prefix: &str, n: usize) -> Vec<User> {
        (0..n)
            .map(|i| self.create_user(&format!("{prefix}{i}")))
            .collect()
    }

    #[track_caller]
    pub fn create_channel(&self, name: &str) -> String {
        let v = self.ok("POST", "/v1/channels", Some(&json!({ "name": name })));
        let id = v["channel"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no channel.id: {v}"))
            .to_string();
        assert!(
            id.starts_with('C'),
            "channel id {id:?} does not start with C"
        );
        assert_eq!(
            v["channel"]["name"],
            json!(name),
            "channel name echoed: {v}"
        );
        id
    }

    #[track_caller]
    pub fn add_member(&self, channel: &str, user: &str) {
        self.ok(
            "POST",
            &format!("/v1/channels/{channel}/members"),
            Some(&json!({ "user": user })),
        );
    }

    #[track_caller]
    pub fn remove_member(&self, channel: &str, user: &str) {
        self.ok(
            "DELETE",
            &format!("/v1/channels/{channel}/members/{user}"),
            None,
        );
    }

    /// A fresh single-use websocket URL for `user`.
    #[track_caller]
    pub fn ticket(&self, user: &str) -> String {
        let v = self.ok("POST", "/v1/tickets", Some(&json!({ "user": user })));
        let url = v["url"]
            .as_str()
            .unwrap_or_else(|| panic!("no url: {v}"))
            .to_string();
        assert!(url.starts_with("ws://"), "ticket url {url:?} is not ws://");
        url
    }

    /// Persisted publish; returns the assigned ts.
    #[track_caller]
    pub fn publish(&self, channel: &str, event: Value) -> String {
        let v = self.ok(
            "POST",
            "/v1/publish",
            Some(&json!({ "channel": channel, "event": event, "transient": false })),
        );
        let ts = v["ts"]
            .as_str()
            .unwrap_or_else(|| panic!("publish answered without ts: {v}"))
            .to_string();
        ts_micros(&ts);
        ts
    }

    /// Transient publish (nothing stored, no ts).
    #[track_caller]
    pub fn publish_transient(&self, channel: &str, event: Value) {
        self.ok(
            "POST",
            "/v1/publish",
            Some(&json!({ "channel": channel, "event": event, "transient": true })),
        );
    }

    /// GET /v1/presence for these users.
    #[track_caller]
    pub fn presence(&self, users: &[&str]) -> HashMap<String, String> {
        let v = self.ok(
            "GET",
            &format!("/v1/presence?users={}", users.join(",")),
            None,
        );
        let map = v["presence"]
            .as_object()
            .unwrap_or_else(|| panic!("no presence object: {v}"));
        map.iter()
            .map(|(k, p)| {
                (
                    k.clone(),
                    p.as_str()
                        .unwrap_or_else(|| panic!("presence {k}: {p}"))
                        .to_string(),
                )
            })
            .collect()
    }

    #[track_caller]
    pub fn presence_of(&self, user: &str) -> String {
        self.presence(&[user])
            .remove(user)
            .unwrap_or_else(|| panic!("presence answer lacks {user}"))
    }

    pub fn stats(&self) -> Value {
        self.ok("GET", "/v1/stats", None)
    }

    /// `connections` of each shard, in the order of `shards[]`, indexed by the
    /// `shard` field.
    pub fn shard_connections(&self) -> Vec<u64> {
        let v = self.stats();
        let shards = v["shards"]
            .as_array()
            .unwrap_or_else(|| panic!("stats without shards[]: {v}"));
        let mut out = vec![0; shards.len()];
        for s in shards {
            let i = s["shard"]
                .as_u64()
                .unwrap_or_else(|| panic!("shard without index: {s}")) as usize;
            assert!(i < out.len(), "shard index {i} out of range: {v}");
            out[i] = s["connections"]
                .as_u64()
                .unwrap_or_else(|| panic!("shard without connections: {s}"));
        }
        out
    }

    pub fn total_connections(&self) -> u64 {
        self.shard_connections().iter().sum()
    }

    /// Polls /v1/stats until the total number of connections is `n`
    /// (bounded); returns the last value seen.
    pub fn wait_total_connections(&self, n: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.total_connections();
            if c == n || Instant::now() >= deadline {
                return c;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

// ---------------------------------------------------------------------------
// Event helpers
// ---------------------------------------------------------------------------

/// Parses a Slack ts `"<10 digits>.<6 digits>"` into microseconds; panics on
/// any other shape.
#[track_caller]
pub fn ts_micros(ts: &str) -> u64 {
    let ok = ts.len() == 17
        && ts.as_bytes()[10] == b'.'
        && ts
            .bytes()
            .enumerate()
            .all(|(i, b)| i == 10 || b.is_ascii_digit());
    assert!(ok, "ts {ts:?} is not <10 digits>.<6 digits>");
    let (s, us) = ts.split_at(10);
    s.parse::<u64>().unwrap() * 1_000_000 + us[1..].parse::<u64>().unwrap()
}

/// The string field `key` of `v`, or a panic naming the event.
#[track_caller]
pub fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("event lacks string field {key:?}: {v}"))
}

/// Asserts `v["type"] == ty`.
#[track_caller]
pub fn assert_type(v: &Value, ty: &str) {
    assert_eq!(
        v["type"],
        json!(ty),
        "expected an event of type {ty:?}, got {v}"
    );
}

/// A text payload of `n` bytes.
pub fn filler(n: usize) -> String {
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..n)
        .map(|i| alphabet[i % alphabet.len()] as char)
        .collect()
}

// ---------------------------------------------------------------------------
// Websocket client
// ---------------------------------------------------------------------------

/// One thing read from a websocket.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// A close frame: its code (None when the frame had no body) and reason.
    Close(Option<u16>, String),
    /// The connection ended without (another) close frame: EOF, reset or a
    /// protocol error; the text says which.
    Ended(String),
}

pub struct Ws {
    ws: WebSocket<TcpStream>,
    /// For diagnostics.
    pub name: String,
    next_id: u64,
}

/// Splits `ws://127.0.0.1:P/path?q` into the address.
pub fn ws_addr(url: &str) -> SocketAddr {
    parse_host_port(url, "ws://")
}

impl Ws {
    /// Connects, completes the handshake and asserts the first frame is
    /// `{"type":"hello"}`.
    #[track_caller]
    pub fn connect(url: &str) -> Ws {
        let mut ws = Self::connect_no_hello(url);
        let hello = ws.recv_json(EVENT_TIMEOUT);
        assert_eq!(
            hello["type"],
            json!("hello"),
            "{}: first frame is not hello: {hello}",
            ws.name
        );
        ws
    }

    /// Connects and completes the handshake; reads nothing.
    #[track_caller]
    pub fn connect_no_hello(url: &str) -> Ws {
        Self::try_connect(url, EVENT_TIMEOUT).unwrap_or_else(|e| panic!("websocket {url}: {e}"))
    }

    /// Connects over a fresh TcpStream; Err on refusal, handshake failure or
    /// timeout.
    pub fn try_connect(url: &str, timeout: Duration) -> Result<Ws, String> {
        let addr = ws_addr(url);
        let stream =
            TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
        Self::handshake_over(url, stream, timeout)
    }

    /// Runs the client handshake over an already connected stream (e.g. one
    /// built with socket2).
    pub fn handshake_over(url: &str, stream: TcpStream, timeout: Duration) -> Result<Ws, String> {
        use tungstenite::client::IntoClientRequest;
        let request = url.into_client_request().map_err(|e| e.to_string())?;
        Self::handshake_request(url, request, stream, timeout)
    }

    /// Connects with `Authorization: Bearer <token>` (the publish stream).
    pub fn try_connect_bearer(url: &str, token: &str, timeout: Duration) -> Result<Ws, String> {
        use tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request().map_err(|e| e.to_string())?;
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().map_err(|_| "bad token")?,
        );
        let stream = TcpStream::connect_timeout(&ws_addr(url), timeout)
            .map_err(|e| format!("connect: {e}"))?;
        Self::handshake_request(url, request, stream, timeout)
    }

    fn handshake_request(
        url: &str,
        request: tungstenite::handshake::client::Request,
        stream: TcpStream,
        timeout: Duration,
    ) -> Result<Ws, String> {
        let _ = stream.set_nodelay(true);
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let deadline = Instant::now() + timeout;
        let mut attempt = tungstenite::client::client_with_config(request, stream, None);
        loop {
            match attempt {
                Ok((ws, resp)) => {
                    if resp.status().as_u16() != 101 {
                        return Err(format!("handshake answered {}", resp.status()));
                    }
                    let name = url
                        .rsplit('/')
                        .next()
                        .unwrap_or(url)
                        .chars()
                        .take(12)
                        .collect();
                    return Ok(Ws {
                        ws,
                        name,
                        next_id: 1,
                    });
                }
                Err(HandshakeError::Interrupted(mid)) => {
                    if Instant::now() >= deadline {
                        return Err(format!("handshake did not complete within {timeout:?}"));
                    }
                    attempt = mid.handshake();
                }
                Err(HandshakeError::Failure(e)) => return Err(format!("handshake failed: {e}")),
            }
        }
    }

    /// Renames this client in failure messages.
    pub fn named(mut self, name: impl Into<String>) -> Ws {
        self.name = name.into();
        self
    }

    /// A fresh message id for client → server messages.
    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub fn stream(&self) -> &TcpStream {
        self.ws.get_ref()
    }

    pub fn send_json(&mut self, v: &Value) {
        self.send_message(Message::text(v.to_string()));
    }

    pub fn send_text(&mut self, text: &str) {
        self.send_message(Message::text(text.to_string()));
    }

    pub fn send_message(&mut self, m: Message) {
        let name = self.name.clone();
        self.ws
            .send(m)
            .unwrap_or_else(|e| panic!("{name}: send failed: {e}"));
    }

    /// Writes bytes straight to the socket, bypassing tungstenite (after
    /// flushing whatever it had queued).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.ws.flush();
        let stream = self.ws.get_mut();
        stream.write_all(bytes).expect("raw write");
        stream.flush().expect("raw flush");
    }

    /// Reads the next frame; `None` if nothing arrived within `timeout`.
    pub fn recv_frame(&mut self, timeout: Duration) -> Option<Frame> {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            self.ws.get_mut().set_read_timeout(Some(remaining)).unwrap();
            match self.ws.read() {
                Ok(Message::Text(t)) => return Some(Frame::Text(t.as_str().to_string())),
                Ok(Message::Binary(b)) => return Some(Frame::Binary(b.to_vec())),
                Ok(Message::Ping(b)) => return Some(Frame::Ping(b.to_vec())),
                Ok(Message::Pong(b)) => return Some(Frame::Pong(b.to_vec())),
                Ok(Message::Close(cf)) => {
                    return Some(match cf {
                        Some(cf) => {
                            Frame::Close(Some(u16::from(cf.code)), cf.reason.as_str().to_string())
                        }
                        None => Frame::Close(None, String::new()),
                    })
                }
                Ok(Message::Frame(f)) => {
                    return Some(Frame::Ended(format!("unexpected raw frame {f:?}")))
                }
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if Instant::now() >= deadline {
                        return None;
                    }
                }
                Err(e) => return Some(Frame::Ended(e.to_string())),
            }
        }
    }

    /// The next frame, which must be a JSON object in a text frame.
    #[track_caller]
    pub fn recv_json(&mut self, timeout: Duration) -> Value {
        match self.try_recv_json(timeout) {
            Some(v) => v,
            None => panic!("{}: no frame within {timeout:?}", self.name),
        }
    }

    /// `recv_json` with [`EVENT_TIMEOUT`].
    #[track_caller]
    pub fn recv(&mut self) -> Value {
        self.recv_json(EVENT_TIMEOUT)
    }

    /// The next frame if one arrives within `timeout` (it must be JSON text).
    #[track_caller]
    pub fn try_recv_json(&mut self, timeout: Duration) -> Option<Value> {
        match self.recv_frame(timeout) {
            None => None,
            Some(Frame::Text(t)) => {
                let v: Value = serde_json::from_str(&t).unwrap_or_else(|e| {
                    panic!("{}: text frame is not JSON ({e}): {t:?}", self.name)
                });
                assert!(
                    v.is_object(),
                    "{}: frame is not a JSON object: {t}",
                    self.name
                );
                Some(v)
            }
            Some(other) => panic!("{}: expected a JSON text frame, got {other:?}", self.name),
        }
    }

    /// The next `n` JSON frames, each within `timeout` of the previous one.
    #[track_caller]
    pub fn recv_n(&mut self, n: usize, timeout: Duration) -> Vec<Value> {
        (0..n).map(|_| self.recv_json(timeout)).collect()
    }

    /// Asserts that no frame at all arrives within `d`.
    #[track_caller]
    pub fn expect_no_event(&mut self, d: Duration) {
        if let Some(f) = self.recv_frame(d) {
            panic!("{}: expected nothing within {d:?}, got {f:?}", self.name);
        }
    }

    /// Asserts the next frame is a close frame with `code`, then sends the
    /// close reply.
    #[track_caller]
    pub fn expect_close(&mut self, code: u16, timeout: Duration) {
        match self.recv_frame(timeout) {
            Some(Frame::Close(Some(c), _)) if c == code => {
                let _ = self.ws.flush();
            }
            other => panic!("{}: expected close {code}, got {other:?}", self.name),
        }
    }

    /// Reads until a close frame or the end of the connection, at most
    /// `max_frames` frames and `timeout` overall. Returns the JSON frames read
    /// before and the final frame (`None` if neither came in time). Pings and
    /// pongs in between are ignored; any other non-JSON frame panics.
    pub fn read_until_close(
        &mut self,
        timeout: Duration,
        max_frames: usize,
    ) -> (Vec<Value>, Option<Frame>) {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        for _ in 0..max_frames {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return (out, None);
            }
            match self.recv_frame(remaining) {
                None => return (out, None),
                Some(Frame::Text(t)) => {
                    let v: Value = serde_json::from_str(&t).unwrap_or_else(|e| {
                        panic!("{}: text frame is not JSON ({e}): {t:?}", self.name)
                    });
                    out.push(v);
                }
                Some(Frame::Ping(_)) | Some(Frame::Pong(_)) => {}
                Some(f @ Frame::Close(..)) => {
                    let _ = self.ws.flush();
                    return (out, Some(f));
                }
                Some(f @ Frame::Ended(_)) => return (out, Some(f)),
                Some(f) => panic!("{}: unexpected frame {f:?}", self.name),
            }
        }
        (out, None)
    }

    /// Reads JSON frames until none arrives for `quiet` (at most `max` frames
    /// and `limit` overall).
    pub fn collect_until_quiet(
        &mut self,
        quiet: Duration,
        limit: Duration,
        max: usize,
    ) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        let mut out = Vec::new();
        while out.len() < max && Instant::now() < deadline {
            match self.try_recv_json(quiet) {
                Some(v) => out.push(v),
                None => break,
            }
        }
        out
    }

    /// Sends `{"id":N,"type":"ping"}` and expects the pong as the next frame.
    #[track_caller]
    pub fn ping_roundtrip(&mut self) {
        let id = self.next_id();
        self.send_json(&json!({"id": id, "type": "ping"}));
        let pong = self.recv();
        assert_eq!(
            pong["type"],
            json!("pong"),
            "{}: expected pong, got {pong}",
            self.name
        );
        assert_eq!(
            pong["reply_to"],
            json!(id),
            "{}: pong reply_to: {pong}",
            self.name
        );
    }

    /// Clean close: sends a close frame and waits (bounded) for the server's.
    pub fn close(mut self) {
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
        let deadline = Instant::now() + Duration::from_secs(5);
        for _ in 0..10_000 {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            match self.recv_frame(remaining) {
                None | Some(Frame::Close(..)) | Some(Frame::Ended(_)) => break,
                Some(_) => {}
            }
        }
    }

    /// Abrupt close: shuts the TCP connection down without a close frame.
    pub fn abort(self) {
        let _ = self.ws.get_ref().shutdown(Shutdown::Both);
    }
}

/// Builds one websocket frame by hand. `rsv` is the three RSV bits (0..=7),
/// `mask` masks the payload as a client must (None: unmasked).
pub fn raw_frame(fin: bool, rsv: u8, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(((fin as u8) << 7) | ((rsv & 7) << 4) | (opcode & 0x0f));
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let len = payload.len();
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= 0xffff {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match mask {
        Some(m) => {
            out.extend_from_slice(&m);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A masked, final frame with a fixed mask.
pub fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    raw_frame(true, 0, opcode, Some([0x37, 0xfa, 0x21, 0x3d]), payload)
}

/// Waits for a thread, with a bound: panics if it has not finished within
/// `timeout`, and propagates its panic.
#[track_caller]
pub fn join_within<T>(h: std::thread::JoinHandle<T>, timeout: Duration, what: &str) -> T {
    let deadline = Instant::now() + timeout;
    while !h.is_finished() {
        if Instant::now() >= deadline {
            panic!("{what}: thread did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    match h.join() {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e),
    }
}

/// Listens on every client for `d` and asserts none received anything.
#[track_caller]
pub fn expect_all_quiet(clients: &mut [&mut Ws], d: Duration) {
    std::thread::sleep(d);
    for c in clients.iter_mut() {
        c.expect_no_event(Duration::from_millis(30));
    }
}
