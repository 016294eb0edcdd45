//! The top-of-the-hour spike (issue 11, item 3): many scheduled messages
//! due the same second, and what they do to live traffic.
//!
//! Provisioning, offline on a fresh data dir with the server stopped (the
//! CLI and the library, so it takes seconds, not an hour of HTTP):
//! SPIKE_SUBSCRIBERS users, SPIKE_CHANNELS channels (`transponder channel
//! import`; channel i's one member is subscriber i mod SUBSCRIBERS), a live
//! room with a poster and a watcher, and SPIKE_MESSAGES pending messages
//! spread round-robin over the channels, all due at the same second
//! (`post_at` = start + SPIKE_LEAD_SECS), written through `Tx::insert_scheduled`
//! exactly as `POST /v1/schedule` writes them (a backend's `message` event
//! with `user` and `text`, which lands in history as a message).
//!
//! Then it starts the release server (`--shards 2`, outbound queues raised
//! to 1 GiB so a subscriber reading 100k messages a second is not cut off as
//! a slow consumer), which loads the pending messages at start (its RSS is
//! printed before and after the spike), connects one websocket per
//! subscriber, and a live publisher posts SPIKE_LIVE_RATE persisted
//! messages per second to the live room through `POST /v1/publish` from
//! 5 s before the spike until the last scheduled message is delivered.
//!
//! Printed: the time from `post_at` until the last scheduled message
//! arrived, the lateness (arrival − post_at) p50/p99/max over all of them,
//! the live room's publish → delivery latency p50/p99/max before and during
//! the spike, and the server's RSS and CPU. Fails only if a message is
//! missing or duplicated (each text is unique) or the server misbehaves;
//! never on a figure.
//!
//! `cargo bench --bench scheduled_spike`; environment: SPIKE_MESSAGES
//! (1000000), SPIKE_CHANNELS (10000), SPIKE_SUBSCRIBERS (10),
//! SPIKE_LEAD_SECS (60: the rows are written and the server started within it), SPIKE_LIVE_RATE (100), SPIKE_TIMEOUT_SECS (600).

#[path = "support/mod.rs"]
mod support;

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use support::*;
use transponder::store::scheduled::NewScheduled;
use transponder::store::{Durability, Store};

const ADMIN_TOKEN: &str = "scheduled-spike-bench-token";

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} is a number")))
        .unwrap_or(default)
}

fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn transponder(args: &[&str], dir: &Path, stdin: Option<&str>) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_transponder"));
    cmd.args(args)
        .arg("--data-dir")
        .arg(dir)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().expect("run transponder");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "transponder {args:?} failed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A user made offline: (id, token). Tokens are `xoxp-<id>-<secret>`.
fn add_user(dir: &Path, name: &str) -> (String, String) {
    let token = transponder(&["user", "add", name], dir, None);
    let id = token
        .split('-')
        .nth(1)
        .expect("token names its user")
        .to_string();
    (id, token)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn admin(addr: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    let req = ureq::request(method, &format!("http://{addr}{path}"))
        .set("Authorization", &format!("Bearer {ADMIN_TOKEN}"));
    let resp = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    }
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    resp.into_json().unwrap()
}

/// A websocket for `user`, its `hello` read.
fn connect(admin_addr: &str, user: &str) -> tungstenite::WebSocket<TcpStream> {
    let url = admin(
        admin_addr,
        "POST",
        "/v1/tickets",
        Some(json!({"user": user})),
    )["url"]
        .as_str()
        .unwrap()
        .to_string();
    let addr = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let (mut ws, _) = tungstenite::client::client(url.as_str(), stream).expect("handshake");
    let hello: Value = serde_json::from_str(ws.read().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(hello["type"], "hello");
    ws
}

/// The next text frame, `None` on a read timeout; panics if the server
/// closed the socket.
fn next_text(ws: &mut tungstenite::WebSocket<TcpStream>) -> Option<tungstenite::Utf8Bytes> {
    match ws.read() {
        Ok(tungstenite::Message::Text(t)) => Some(t),
        Ok(_) => None,
        Err(tungstenite::Error::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => panic!("subscriber socket failed: {e}"),
    }
}

/// The one field of an event the clients look at.
#[derive(serde::Deserialize)]
struct TextOf<'a> {
    #[serde(borrow)]
    text: Option<std::borrow::Cow<'a, str>>,
}

/// CPU seconds this process (the load generator) has used.
fn own_cpu_secs() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn main() {
    let messages = env("SPIKE_MESSAGES", 1_000_000) as usize;
    let channels = env("SPIKE_CHANNELS", 10_000) as usize;
    let subscribers = env("SPIKE_SUBSCRIBERS", 10) as usize;
    let lead_secs = env("SPIKE_LEAD_SECS", 60) as i64;
    let live_rate = env("SPIKE_LIVE_RATE", 100);
    let timeout = Duration::from_secs(env("SPIKE_TIMEOUT_SECS", 600));
    remove_stale_dirs("transponder-spike-");
    let dir: PathBuf =
        std::env::temp_dir().join(format!("transponder-spike-{}", std::process::id()));
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();

    // Provisioning, offline.
    let t = Instant::now();
    let subs: Vec<(String, String)> = (0..subscribers)
        .map(|i| add_user(&data, &format!("spike-s{i}")))
        .collect();
    let (poster, _) = add_user(&data, "spike-live-poster");
    let (watcher, _) = add_user(&data, "spike-live-watcher");
    let mut csv = String::new();
    for i in 0..channels {
        csv.push_str(&format!("spike-c{i},false,{}\n", subs[i % subscribers].0));
    }
    csv.push_str(&format!("spike-live,false,{poster} {watcher}\n"));
    let ids_file = dir.join("ids.tsv");
    transponder(
        &[
            "channel",
            "import",
            "-",
            "--ids",
            ids_file.to_str().unwrap(),
        ],
        &data,
        Some(&csv),
    );
    let mut ids = std::collections::HashMap::new();
    for line in std::fs::read_to_string(&ids_file).unwrap().lines() {
        let (id, name) = line.split_once('\t').unwrap();
        ids.insert(name.to_string(), id.to_string());
    }
    let channel_ids: Vec<String> = (0..channels)
        .map(|i| ids[&format!("spike-c{i}")].clone())
        .collect();
    let live_room = ids["spike-live"].clone();
    let post_at = unix_millis() / 1000 + lead_secs;
    let store = Store::open(&data, Durability::Normal).expect("open the store");
    let rows: Vec<NewScheduled> = (0..messages)
        .map(|k| {
            let c = k % channels;
            let user = &subs[c % subscribers].0;
            let text = format!("spike {k}");
            NewScheduled {
                channel: channel_ids[c].clone(),
                post_at,
                created: post_at - lead_secs,
                user: None,
                text: text.clone(),
                blocks: None,
                thread_ts: None,
                event: Some(json!({"type": "message", "user": user, "text": text}).to_string()),
            }
        })
        .collect();
    store
        .write_blocking(move |tx| {
            for r in &rows {
                tx.insert_scheduled(r)?;
            }
            Ok(())
        })
        .expect("insert the scheduled rows");
    store.close();
    eprintln!(
        "scheduled_spike: {messages} messages over {channels} channels due at {post_at} (in {} s); provisioned in {:.1?}",
        post_at - unix_millis() / 1000,
        t.elapsed()
    );

    // The server.
    let stderr = std::fs::File::create(dir.join("stderr.log")).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_transponder"));
    cmd.args(["serve", "--shards", "2"])
        .args(support::EPHEMERAL_PORTS)
        .args([
            "--admin-token",
            ADMIN_TOKEN,
            "--max-queue-bytes",
            &(1u64 << 30).to_string(),
        ])
        .arg("--data-dir")
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    die_with_parent(&mut cmd);
    let started = Instant::now();
    let mut server = cmd.spawn().expect("start the server");
    let pid = server.id();
    let ready = read_ready_line(server.stdout.take().unwrap(), Duration::from_secs(120));
    let ready: Value = serde_json::from_str(ready.strip_prefix("ready ").unwrap()).unwrap();
    let admin_addr = ready["admin"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    eprintln!(
        "scheduled_spike: server pid {pid} ready in {:.1?} with the pending messages loaded, RSS {} MiB; {} s to post_at",
        started.elapsed(),
        rss_kib(pid) / 1024,
        post_at - unix_millis() / 1000
    );
    assert!(
        unix_millis() < post_at * 1000 - 2000,
        "SPIKE_LEAD_SECS too short for this machine"
    );

    // Subscribers: lateness of every scheduled message.
    let base = Instant::now();
    let base_unix_ms = unix_millis();
    let done = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let lateness = Arc::new(Mutex::new(Histogram::<u64>::new(3).unwrap()));
    let seen = Arc::new(Mutex::new(vec![false; messages]));
    let mut threads = Vec::new();
    for (id, _) in &subs {
        let mut ws = connect(&admin_addr, id);
        let (done, received, lateness, seen) = (
            done.clone(),
            received.clone(),
            lateness.clone(),
            seen.clone(),
        );
        threads.push(thread::spawn(move || {
            let mut local = Histogram::<u64>::new(3).unwrap();
            let mut got = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let Some(text) = next_text(&mut ws) else {
                    continue;
                };
                // Only the text is read, borrowed: the clients share the
                // server's two CPUs, so they must cost it little.
                let frame: TextOf = serde_json::from_str(text.as_str()).unwrap();
                let Some(k) = frame.text.as_deref().and_then(|t| t.strip_prefix("spike ")) else {
                    continue;
                };
                let now = base_unix_ms + base.elapsed().as_millis() as i64;
                local.record((now - post_at * 1000).max(0) as u64).unwrap();
                got.push(k.parse::<usize>().unwrap());
                received.fetch_add(1, Ordering::Relaxed);
            }
            lateness.lock().unwrap().add(&local).unwrap();
            let mut seen = seen.lock().unwrap();
            for k in got {
                assert!(!seen[k], "scheduled message {k} delivered twice");
                seen[k] = true;
            }
        }));
    }

    // Live traffic: the watcher measures publish → delivery.
    let live_before = Arc::new(Mutex::new(Histogram::<u64>::new(3).unwrap()));
    let live_during = Arc::new(Mutex::new(Histogram::<u64>::new(3).unwrap()));
    {
        let mut ws = connect(&admin_addr, &watcher);
        let (done, before, during) = (done.clone(), live_before.clone(), live_during.clone());
        threads.push(thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let Some(text) = next_text(&mut ws) else {
                    continue;
                };
                let v: Value = serde_json::from_str(&text).unwrap();
                let Some(sent) = v["text"].as_str().and_then(|t| t.strip_prefix("live ")) else {
                    continue;
                };
                let sent_us: u64 = sent.parse().unwrap();
                let latency_us = (base.elapsed().as_micros() as u64).saturating_sub(sent_us);
                let sent_unix_ms = base_unix_ms + (sent_us / 1000) as i64;
                let h = if sent_unix_ms < post_at * 1000 {
                    &before
                } else {
                    &during
                };
                h.lock().unwrap().record(latency_us.max(1)).unwrap();
            }
        }));
    }
    {
        let (done, room, poster, admin_addr) = (
            done.clone(),
            live_room.clone(),
            poster.clone(),
            admin_addr.clone(),
        );
        let start_ms = post_at * 1000 - 5000;
        threads.push(thread::spawn(move || {
            let wait = start_ms - unix_millis();
            if wait > 0 {
                thread::sleep(Duration::from_millis(wait as u64));
            }
            let period = Duration::from_micros(1_000_000 / live_rate.max(1));
            let mut next = Instant::now();
            while !done.load(Ordering::Relaxed) {
                let sent = base.elapsed().as_micros();
                admin(
                    &admin_addr,
                    "POST",
                    "/v1/publish",
                    Some(json!({"channel": room, "event": {"type": "message", "user": poster, "text": format!("live {sent}")}})),
                );
                next += period;
                if let Some(d) = next.checked_duration_since(Instant::now()) {
                    thread::sleep(d);
                }
            }
        }));
    }

    // Until every scheduled message has arrived.
    let cpu0 = process_tree_ticks(pid);
    let own_cpu0 = own_cpu_secs();
    let deadline = Instant::now() + timeout + Duration::from_secs(lead_secs as u64);
    let mut last_count = 0;
    while received.load(Ordering::Relaxed) < messages as u64 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
        let n = received.load(Ordering::Relaxed);
        if n / 100_000 != last_count / 100_000 {
            eprintln!(
                "  {n} delivered, {:.1} s after post_at",
                (unix_millis() - post_at * 1000) as f64 / 1000.0
            );
        }
        last_count = n;
    }
    let all_ms = unix_millis() - post_at * 1000;
    thread::sleep(Duration::from_secs(2)); // live traffic after the spike, and any duplicate
    let rss_after = rss_kib(pid);
    let cpu = process_tree_ticks(pid) - cpu0;
    let own_cpu = own_cpu_secs() - own_cpu0;
    done.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("a bench thread failed");
    }
    let n = received.load(Ordering::Relaxed);
    let missing = seen.lock().unwrap().iter().filter(|s| !**s).count();
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = wait_timeout(&mut server, Duration::from_secs(30));

    let l = lateness.lock().unwrap();
    let (b, d) = (live_before.lock().unwrap(), live_during.lock().unwrap());
    println!("scheduled_spike: {messages} messages over {channels} channels, due the same second; {subscribers} subscriber sockets; live {live_rate}/s");
    println!(
        "  delivered {n} (missing {missing}); last one {:.2} s after post_at",
        all_ms as f64 / 1000.0
    );
    println!(
        "  lateness (arrival - post_at): p50 {} ms, p99 {} ms, max {} ms",
        l.value_at_quantile(0.5),
        l.value_at_quantile(0.99),
        l.max()
    );
    for (name, h) in [("before the spike", &*b), ("during the spike", &*d)] {
        println!(
            "  live publish -> delivery {name}: {} samples, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            h.len(),
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            h.max() as f64 / 1000.0
        );
    }
    println!(
        "  server RSS {} MiB after the spike; CPU {:.1} s (ticks/100) from post_at - {lead_secs} s to the end; the clients' CPU {own_cpu:.1} s",
        rss_after / 1024,
        cpu as f64 / 100.0
    );
    assert_eq!(missing, 0, "scheduled messages missing");
    let _ = std::fs::remove_dir_all(&dir);
}
