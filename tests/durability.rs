//! Durability: "persist, then deliver" seen from outside. A chat.postMessage
//! answered `ok:true` was committed before the answer, so no crash may lose
//! it; the server must start again on whatever a SIGKILL left on disk; and a
//! graceful restart keeps users, tokens, channels and memberships.
//!
//! The crash tests post from many threads over keep-alive HTTP, SIGKILL the
//! server at a random moment (the seed is printed; `DURABILITY_SEED=<n>`
//! replays the same moments), restart it on the same data directory and
//! compare the whole channel history with what every thread was told.
//!
//! Every wait is bounded; nothing asserts speed.

mod common;

use std::collections::HashMap;
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{json, Value};

/// Posting threads and the users they post as (two threads per user).
const SENDERS: usize = 8;
const USERS: usize = 4;
/// The pseudo-sender of the probe posts made from the test thread.
const PROBE: usize = SENDERS;
/// Bound on one HTTP exchange of a posting thread.
const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a posting thread may run at all (a safety net: it stops long
/// before, when the server is gone).
const POSTER_LIFETIME: Duration = Duration::from_secs(20);
/// How long the server may take to die after SIGKILL, or to exit after
/// SIGTERM.
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);
/// Errors listed in a failure message (all are counted).
const ERRORS_SHOWN: usize = 25;

// ---------------------------------------------------------------------------
// Randomness, data directory
// ---------------------------------------------------------------------------

/// `DURABILITY_SEED`, or the clock.
fn seed() -> u64 {
    if let Ok(s) = std::env::var("DURABILITY_SEED") {
        return s.parse().expect("DURABILITY_SEED is a u64");
    }
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    d.as_nanos() as u64 ^ u64::from(std::process::id())
}

/// xorshift64*: enough to pick kill moments reproducibly.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A duration in `lo_ms..hi_ms`.
    fn millis(&mut self, lo_ms: u64, hi_ms: u64) -> Duration {
        Duration::from_millis(lo_ms + self.next() % (hi_ms - lo_ms))
    }
}

/// A data directory shared by successive servers. Removed when the test
/// passes, kept (and its path printed) when it fails.
struct DataDir(PathBuf);

impl DataDir {
    fn new(what: &str) -> DataDir {
        let p = std::env::temp_dir().join(format!("transponder-dur-{what}-{}", unique()));
        fs::create_dir_all(&p).expect("create data dir");
        DataDir(p)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("data directory kept: {}", self.0.display());
        } else {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

// ---------------------------------------------------------------------------
// The ledger of what was sent, and the checker
// ---------------------------------------------------------------------------

/// What a post's sender learnt.
#[derive(Clone, Debug, PartialEq)]
enum Outcome {
    /// `ok:true` with this ts: it must be in history, exactly.
    Acked(String),
    /// No answer (the connection broke): it may or may not be stored.
    Unknown(String),
    /// HTTP 429: refused before anything was done; it must not be stored.
    Refused,
    /// Never sent (the connection could not be opened): not stored either.
    NotSent,
}

#[derive(Clone, Debug)]
struct Post {
    sender: usize,
    seq: u64,
    text: String,
    outcome: Outcome,
}

/// What one check saw.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    history: usize,
    acked: usize,
    unknown: usize,
    /// Posts without an answer that were nevertheless committed.
    unknown_stored: usize,
    refused: usize,
}

/// The numeric value of a ts, or `None` if it is not `<10>.<6>` digits.
fn ts_value(ts: &str) -> Option<u64> {
    let b = ts.as_bytes();
    let shaped = b.len() == 17
        && b[10] == b'.'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 10 || c.is_ascii_digit());
    if !shaped {
        return None;
    }
    Some(ts[..10].parse::<u64>().ok()? * 1_000_000 + ts[11..].parse::<u64>().ok()?)
}

/// Compares a channel's whole history (`(ts, text)` newest first, as
/// conversations.history pages it) with the ledger of every post sent to it
/// (each sender's posts in its sending order). Every violation is listed.
fn check(history: &[(String, String)], posts: &[Post]) -> Result<Tally, Vec<String>> {
    let mut errors = Vec::new();
    let mut tally = Tally {
        history: history.len(),
        ..Tally::default()
    };

    let mut sent: HashMap<&str, &Post> = HashMap::new();
    for p in posts {
        if sent.insert(&p.text, p).is_some() {
            errors.push(format!("harness bug: text {} sent twice", shorten(&p.text)));
        }
    }

    // Order, uniqueness, provenance.
    let mut by_ts: HashMap<&str, (usize, &str)> = HashMap::new();
    let mut by_text: HashMap<&str, (usize, &str)> = HashMap::new();
    let mut previous: Option<(u64, &str)> = None;
    for (i, (ts, text)) in history.iter().enumerate() {
        match ts_value(ts) {
            None => errors.push(format!("history[{i}]: malformed ts {ts:?}")),
            Some(v) => {
                if let Some((pv, pts)) = previous {
                    if v >= pv {
                        errors.push(format!(
                            "history is not strictly newest first: [{}] ts {pts} then [{i}] ts {ts}",
                            i - 1
                        ));
                    }
                }
                previous = Some((v, ts));
            }
        }
        if let Some((j, other)) = by_ts.insert(ts, (i, text)) {
            errors.push(format!(
                "ts {ts} appears twice: [{j}] {} and [{i}] {}",
                shorten(other),
                shorten(text)
            ));
        }
        if let Some((j, other_ts)) = by_text.insert(text, (i, ts)) {
            errors.push(format!(
                "text {} appears twice: [{j}] ts {other_ts} and [{i}] ts {ts}",
                shorten(text)
            ));
        }
        match sent.get(text.as_str()) {
            None => errors.push(format!(
                "history[{i}] ts {ts} holds a text nobody sent: {}",
                shorten(text)
            )),
            Some(p) if matches!(p.outcome, Outcome::Refused | Outcome::NotSent) => {
                errors.push(format!(
                    "history[{i}] ts {ts} holds {}, which was {:?}",
                    shorten(text),
                    p.outcome
                ))
            }
            Some(_) => {}
        }
    }

    // Every acknowledged post, exactly.
    for p in posts {
        match &p.outcome {
            Outcome::Acked(ts) => {
                tally.acked += 1;
                match by_ts.get(ts.as_str()) {
                    None => errors.push(format!(
                        "LOST: sender {} post #{} {} was acknowledged with ts {ts} and is not in history{}",
                        p.sender,
                        p.seq,
                        shorten(&p.text),
                        match by_text.get(p.text.as_str()) {
                            Some((_, other)) => format!(" (its text is, at ts {other})"),
                            None => String::new(),
                        }
                    )),
                    Some((_, text)) if *text != p.text => errors.push(format!(
                        "ts {ts} acknowledged for {} holds {}",
                        shorten(&p.text),
                        shorten(text)
                    )),
                    Some(_) => {}
                }
            }
            Outcome::Unknown(_) => {
                tally.unknown += 1;
                if by_text.contains_key(p.text.as_str()) {
                    tally.unknown_stored += 1;
                }
            }
            Outcome::Refused => tally.refused += 1,
            Outcome::NotSent => {}
        }
    }

    // Each sender's stored posts in its sending order.
    let mut last: HashMap<usize, (u64, u64, &str)> = HashMap::new();
    for p in posts {
        let Some((_, ts)) = by_text.get(p.text.as_str()) else {
            continue;
        };
        let Some(v) = ts_value(ts) else { continue };
        if let Some((lv, lseq, lts)) = last.insert(p.sender, (v, p.seq, ts)) {
            if v <= lv {
                errors.push(format!(
                    "sender {} out of order: post #{lseq} has ts {lts}, its later post #{} has ts {ts}",
                    p.sender, p.seq
                ));
            }
        }
    }

    if errors.is_empty() {
        Ok(tally)
    } else {
        Err(errors)
    }
}

/// Panics with the checker's errors (the first [`ERRORS_SHOWN`]).
#[track_caller]
fn assert_consistent(history: &[(String, String)], posts: &[Post], context: &str) -> Tally {
    match check(history, posts) {
        Ok(t) => t,
        Err(errors) => {
            let shown: Vec<&String> = errors.iter().take(ERRORS_SHOWN).collect();
            panic!(
                "{context}: {} violation(s) over {} stored and {} sent posts:\n{}",
                errors.len(),
                history.len(),
                posts.len(),
                shown
                    .iter()
                    .map(|e| format!("  {e}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        }
    }
}

// ---------------------------------------------------------------------------
// Posting threads
// ---------------------------------------------------------------------------

/// Whether anything accepts connections at `addr` now.
fn accepting(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

/// Posts `t{sender}-{seq}{pad}` to `channel` one after the other, each
/// answer awaited, until the server is gone (a failed exchange, then a
/// refused connection) or `lifetime` is over. Returns every post sent, in
/// order, with what its answer said. Any answer other than ok:true or 429
/// is an error.
#[allow(clippy::too_many_arguments)]
fn post_until_gone(
    api: SocketAddr,
    token: String,
    channel: String,
    sender: usize,
    mut seq: u64,
    pad: String,
    acked: Arc<AtomicUsize>,
    lifetime: Duration,
) -> Result<Vec<Post>, String> {
    let started = Instant::now();
    let mut web = WebApi::with_timeout(api, POST_TIMEOUT);
    let mut posts = Vec::new();
    while started.elapsed() < lifetime {
        seq += 1;
        let text = format!("t{sender}-{seq}{pad}");
        let args = json!({"channel": channel, "text": text});
        let outcome = match web.call(&token, "chat.postMessage", &args) {
            // KeepAlive's error for a connection that could not be opened:
            // nothing was sent.
            Err(e) if e.starts_with("connect:") => Outcome::NotSent,
            Err(e) => Outcome::Unknown(e),
            Ok(r) if r.status == 429 => Outcome::Refused,
            Ok(r) => {
                let v: Value = serde_json::from_slice(&r.body).map_err(|e| {
                    format!(
                        "sender {sender}: answer to {} is not JSON ({e}): {} {}",
                        shorten(&text),
                        r.status,
                        shorten(&r.text())
                    )
                })?;
                let ts = v["ts"].as_str().unwrap_or_default();
                if r.status != 200
                    || v["ok"] != json!(true)
                    || ts_value(ts).is_none()
                    || v["channel"] != json!(channel)
                    || v["message"]["text"] != json!(text)
                {
                    return Err(format!(
                        "sender {sender}: unexpected answer to {}: {} {}",
                        shorten(&text),
                        r.status,
                        shorten(&v.to_string())
                    ));
                }
                Outcome::Acked(ts.to_string())
            }
        };
        let gone = match outcome {
            Outcome::NotSent => true,
            Outcome::Unknown(_) => !accepting(api),
            _ => false,
        };
        match outcome {
            Outcome::Acked(_) => {
                acked.fetch_add(1, Ordering::SeqCst);
            }
            Outcome::Refused => thread::sleep(Duration::from_millis(20)),
            Outcome::Unknown(_) | Outcome::NotSent => {}
        }
        posts.push(Post {
            sender,
            seq,
            text,
            outcome,
        });
        if gone {
            break;
        }
    }
    Ok(posts)
}

/// Posts from [`SENDERS`] threads until `server` is SIGKILLed, `kill_after`
/// after they start (but only once at least one post was acknowledged);
/// returns every post sent. `next_seq[s]` continues each sender's numbering
/// across rounds.
fn post_then_kill(
    server: &mut Server,
    users: &[User],
    channel: &str,
    pad: &str,
    next_seq: &mut [u64],
    kill_after: Duration,
    context: &str,
) -> Vec<Post> {
    let acked = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..SENDERS)
        .map(|s| {
            let (api, token, channel, pad, acked) = (
                server.api,
                users[s % users.len()].token.clone(),
                channel.to_string(),
                pad.to_string(),
                acked.clone(),
            );
            let seq = next_seq[s];
            thread::spawn(move || {
                post_until_gone(api, token, channel, s, seq, pad, acked, POSTER_LIFETIME)
            })
        })
        .collect();

    let first_deadline = Instant::now() + Duration::from_secs(15);
    while acked.load(Ordering::SeqCst) == 0 && Instant::now() < first_deadline {
        thread::sleep(Duration::from_millis(5));
    }
    assert!(
        acked.load(Ordering::SeqCst) > 0,
        "{context}: no post acknowledged within 15 s"
    );
    if let Some(rest) = kill_after.checked_sub(started.elapsed()) {
        thread::sleep(rest);
    }
    let at = started.elapsed();
    server.signal(libc::SIGKILL);
    let status = server
        .wait_exit(EXIT_TIMEOUT)
        .unwrap_or_else(|| panic!("{context}: still running {EXIT_TIMEOUT:?} after SIGKILL"));
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "{context}: the server ended otherwise: {status}"
    );

    let mut posts = Vec::new();
    let mut failures = Vec::new();
    for t in threads {
        match t.join().expect("a posting thread panicked") {
            Ok(p) => posts.extend(p),
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "{context}: unexpected answers before the kill: {failures:#?}"
    );
    for p in &posts {
        next_seq[p.sender] = next_seq[p.sender].max(p.seq);
    }
    let count = |f: fn(&Outcome) -> bool| posts.iter().filter(|p| f(&p.outcome)).count();
    eprintln!(
        "{context}: SIGKILL at {} ms: {} posts sent, {} acknowledged, {} unanswered, {} refused (429)",
        at.as_millis(),
        posts.len(),
        count(|o| matches!(o, Outcome::Acked(_))),
        count(|o| matches!(o, Outcome::Unknown(_))),
        count(|o| matches!(o, Outcome::Refused)),
    );
    posts
}

// ---------------------------------------------------------------------------
// Reading back
// ---------------------------------------------------------------------------

/// The whole history of `channel` as `(ts, text)`, newest first, through
/// conversations.history pages of `page`, each answer checked.
fn read_history(
    web: &mut WebApi,
    token: &str,
    channel: &str,
    page: usize,
    context: &str,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    for _ in 0..10_000 {
        let mut args = json!({"channel": channel, "limit": page});
        if !cursor.is_empty() {
            args["cursor"] = json!(cursor);
        }
        let resp = web
            .call(token, "conversations.history", &args)
            .unwrap_or_else(|e| panic!("{context}: conversations.history: {e}"));
        assert_eq!(
            resp.status,
            200,
            "{context}: conversations.history answered {} {}",
            resp.status,
            shorten(&resp.text())
        );
        let v = resp.json();
        assert_eq!(
            v["ok"],
            json!(true),
            "{context}: conversations.history: {}",
            shorten(&v.to_string())
        );
        let msgs = v["messages"]
            .as_array()
            .unwrap_or_else(|| panic!("{context}: history without messages[]"));
        for m in msgs {
            out.push((s(m, "ts").to_string(), s(m, "text").to_string()));
        }
        cursor = v["response_metadata"]["next_cursor"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if cursor.is_empty() {
            assert_ne!(
                v["has_more"],
                json!(true),
                "{context}: has_more without a next_cursor"
            );
            return out;
        }
        assert!(
            !msgs.is_empty(),
            "{context}: an empty page with a next_cursor"
        );
    }
    panic!("{context}: history did not end within 10000 pages");
}

/// `/healthz` answers 200 and every token still authenticates as its user.
fn assert_serving(server: &Server, web: &mut WebApi, users: &[User], context: &str) {
    let h = http_request(server.admin.addr, "GET", "/healthz", &[], None);
    assert_eq!(h.status, 200, "{context}: /healthz {}", shorten(&h.text()));
    for u in users {
        let v = web.ok(&u.token, "auth.test", json!({}));
        assert_eq!(
            v["user_id"],
            json!(u.id),
            "{context}: auth.test of {}'s token: {v}",
            u.name
        );
    }
}

/// Four users in one fresh channel.
fn provision(server: &Server, prefix: &str) -> (Vec<User>, String) {
    let users = server.admin.create_users(prefix, USERS);
    let channel = server.admin.create_channel(&format!("{prefix}-room"));
    for u in &users {
        server.admin.add_member(&channel, &u.id);
    }
    (users, channel)
}

/// Kill/restart rounds on one data directory; after each restart the
/// server must serve, the history must match the ledger cumulatively, and a
/// new post must get a ts above every stored one.
fn crash_rounds(name: &str, rounds: usize, pad: usize, kill_ms: (u64, u64), page: usize) {
    let seed = seed();
    eprintln!("{name}: seed {seed} (DURABILITY_SEED={seed} replays the kill moments)");
    let mut rng = Rng::new(seed);
    let data = DataDir::new(name);
    let mut server = Server::start_in(data.path(), &[]);
    let (users, channel) = provision(&server, name);
    let pad = if pad == 0 {
        String::new()
    } else {
        format!("-{}", filler(pad))
    };
    let mut ledger: Vec<Post> = Vec::new();
    let mut next_seq = [0u64; SENDERS];
    // Every generation is kept, so that a failure prints each one's stderr.
    let mut dead: Vec<Server> = Vec::new();
    let mut totals = Tally::default();

    for round in 1..=rounds {
        let context = format!("{name} seed {seed} round {round}");
        let kill_after = rng.millis(kill_ms.0, kill_ms.1);
        let posts = post_then_kill(
            &mut server,
            &users,
            &channel,
            &pad,
            &mut next_seq,
            kill_after,
            &context,
        );
        ledger.extend(posts);
        let wal = fs::metadata(data.path().join("transponder.db-wal")).map_or(0, |m| m.len());
        eprintln!("{context}: the kill left a WAL of {wal} bytes to recover");

        let restarted = Server::start_in(data.path(), &[]);
        dead.push(std::mem::replace(&mut server, restarted));
        let mut web = WebApi::new(&server);
        assert_serving(&server, &mut web, &users, &context);
        let history = read_history(&mut web, &users[0].token, &channel, page, &context);
        let tally = assert_consistent(&history, &ledger, &context);
        eprintln!(
            "{context}: after restart: {} stored; cumulatively {} acknowledged (all present), \
             {} unanswered of which {} stored, {} refused",
            tally.history, tally.acked, tally.unknown, tally.unknown_stored, tally.refused
        );
        totals = tally;

        // A new post continues after everything stored.
        let newest = history.first().and_then(|(ts, _)| ts_value(ts));
        let text = format!("probe-{round}{pad}");
        let v = web.ok(
            &users[round % USERS].token,
            "chat.postMessage",
            json!({"channel": channel, "text": text}),
        );
        let ts = s(&v, "ts").to_string();
        let value = ts_value(&ts).unwrap_or_else(|| panic!("{context}: probe ts {ts:?}"));
        assert!(
            newest.is_none_or(|n| value > n),
            "{context}: the first post after the restart got ts {ts}, not above the newest stored {}",
            history[0].0
        );
        ledger.push(Post {
            sender: PROBE,
            seq: round as u64,
            text,
            outcome: Outcome::Acked(ts),
        });
    }
    eprintln!(
        "{name}: {rounds} kills: {} acknowledged, none lost; {} unanswered, {} of them committed",
        totals.acked, totals.unknown, totals.unknown_stored
    );
    drop(dead);
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// 8 threads post over keep-alive HTTP; SIGKILL at a random moment; restart
/// on the same data; every acknowledged post is there with its ts and text,
/// nothing twice, each thread's posts in order. Three rounds, cumulatively.
#[test]
fn acknowledged_posts_survive_kill_9() {
    crash_rounds("kill9", 3, 0, (300, 1500), 1000);
}

/// ~30 KB posts so that the kills land mid-write; five kills in a row, each
/// restart must serve (healthz, auth.test) and read the whole history back
/// (and it must still match what was acknowledged).
#[test]
fn server_starts_cleanly_after_crash_mid_write() {
    crash_rounds("midwrite", 5, 30_000, (200, 1000), 100);
}

/// Membership made through both APIs survives a graceful restart: tokens,
/// members, live delivery to a member, and resume from before the restart
/// (the in-memory ring is gone, so the server asks for a refetch).
#[test]
fn restart_keeps_users_channels_memberships() {
    let data = DataDir::new("graceful");
    let mut server = Server::start_in(data.path(), &[]);
    let admin = server.admin.clone();
    let alice = admin.create_user("alice");
    let bob = admin.create_user("bob");
    let carol = admin.create_user("carol");
    let dave = admin.create_user("dave");
    let everyone = [&alice, &bob, &carol, &dave];

    // Through the admin API.
    let general = admin.create_channel("general-dur");
    for u in [&alice, &bob, &carol] {
        admin.add_member(&general, &u.id);
    }
    // Through the Web API.
    let mut web = WebApi::new(&server);
    let v = web.ok(
        &alice.token,
        "conversations.create",
        json!({"name": "webmade-dur"}),
    );
    let webmade = s(&v["channel"], "id").to_string();
    web.ok(
        &alice.token,
        "conversations.invite",
        json!({"channel": webmade, "users": format!("{},{}", bob.id, dave.id)}),
    );
    web.ok(
        &alice.token,
        "chat.postMessage",
        json!({"channel": webmade, "text": "webmade before"}),
    );
    let since = {
        let v = web.ok(
            &bob.token,
            "chat.postMessage",
            json!({"channel": general, "text": "general before 1"}),
        );
        s(&v, "ts").to_string()
    };
    web.ok(
        &bob.token,
        "chat.postMessage",
        json!({"channel": general, "text": "general before 2"}),
    );

    let members = |web: &mut WebApi, token: &str, channel: &str| -> Vec<String> {
        let v = web.ok(
            token,
            "conversations.members",
            json!({"channel": channel, "limit": 1000}),
        );
        let mut m: Vec<String> = v["members"]
            .as_array()
            .unwrap_or_else(|| panic!("no members[]: {v}"))
            .iter()
            .map(|u| u.as_str().expect("member ids are strings").to_string())
            .collect();
        m.sort();
        m
    };
    let name_of = |web: &mut WebApi, token: &str, channel: &str| -> String {
        let v = web.ok(token, "conversations.info", json!({"channel": channel}));
        s(&v["channel"], "name").to_string()
    };
    let sorted = |ids: &[&User]| -> Vec<String> {
        let mut v: Vec<String> = ids.iter().map(|u| u.id.clone()).collect();
        v.sort();
        v
    };
    let general_members = members(&mut web, &alice.token, &general);
    let webmade_members = members(&mut web, &alice.token, &webmade);
    assert_eq!(general_members, sorted(&[&alice, &bob, &carol]));
    assert_eq!(webmade_members, sorted(&[&alice, &bob, &dave]));

    // Graceful stop.
    server.terminate();
    let status = server
        .wait_exit(EXIT_TIMEOUT)
        .unwrap_or_else(|| panic!("still running {EXIT_TIMEOUT:?} after SIGTERM"));
    assert!(status.success(), "SIGTERM: exit status {status}");
    let old = server;
    let server = Server::start_in(data.path(), &[]);
    let mut web = WebApi::new(&server);

    for u in everyone {
        let v = web.ok(&u.token, "auth.test", json!({}));
        assert_eq!(
            v["user_id"],
            json!(u.id),
            "{}'s token after restart: {v}",
            u.name
        );
    }
    assert_eq!(members(&mut web, &bob.token, &general), general_members);
    assert_eq!(members(&mut web, &dave.token, &webmade), webmade_members);
    assert_eq!(name_of(&mut web, &carol.token, &general), "general-dur");
    assert_eq!(name_of(&mut web, &dave.token, &webmade), "webmade-dur");
    let h = read_history(&mut web, &carol.token, &general, 1000, "general");
    let texts: Vec<&str> = h.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(texts, ["general before 2", "general before 1"]);
    // A non-member is still refused.
    let v = web
        .call(
            &dave.token,
            "conversations.history",
            &json!({"channel": general}),
        )
        .unwrap()
        .json();
    assert_eq!(v["ok"], json!(false), "dave is not in general: {v}");

    // Live delivery to members, one made by each API.
    let mut carol_ws = server.connect(&carol.id).named("carol");
    let mut dave_ws = server.connect(&dave.id).named("dave");
    for (ws, channel, poster, text) in [
        (&mut carol_ws, &general, &bob, "general after"),
        (&mut dave_ws, &webmade, &alice, "webmade after"),
    ] {
        let v = web.ok(
            &poster.token,
            "chat.postMessage",
            json!({"channel": channel, "text": text}),
        );
        let ts = s(&v, "ts").to_string();
        assert!(ts_micros(&ts) > ts_micros(&since));
        let deadline = Instant::now() + EVENT_TIMEOUT;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match ws.try_recv_json(left.max(Duration::from_millis(1))) {
                Some(ev) if ev["type"] == json!("message") && ev["text"] == json!(text) => {
                    assert_eq!(ev["channel"], json!(channel), "{ev}");
                    assert_eq!(ev["ts"], json!(ts), "{ev}");
                    assert_eq!(ev["user"], json!(poster.id), "{ev}");
                    break;
                }
                Some(ev) => skipped.push(ev),
                None => panic!(
                    "{}: no {text:?} within {EVENT_TIMEOUT:?}; got {skipped:?}",
                    ws.name
                ),
            }
        }
    }

    // Resume from before the restart: carol is in general only, whose
    // events after `since` are stored but not in the new process's ring.
    let mut back = server
        .connect_since(&carol.id, &since)
        .named("carol-resume");
    let first = back.recv();
    assert_eq!(
        first,
        json!({"type": "resync_required", "channels": [general]}),
        "resume with since={since} from before the restart"
    );
    let rest = back.collect_until_quiet(QUIET, Duration::from_secs(5), 100);
    assert!(
        rest.iter().all(|ev| ev["type"] != json!("message")),
        "messages replayed besides resync_required: {rest:?}"
    );
    // Still subscribed after the resync.
    web.ok(
        &bob.token,
        "chat.postMessage",
        json!({"channel": general, "text": "after resume"}),
    );
    let ev = back.recv();
    assert_eq!(ev["text"], json!("after resume"), "{ev}");
    drop(old);
}

/// The checker itself: each kind of violation is caught.
#[test]
fn checker_catches_lost_duplicated_foreign_and_reordered_posts() {
    let post = |sender, seq, ts: Option<&str>| Post {
        sender,
        seq,
        text: format!("t{sender}-{seq}"),
        outcome: match ts {
            Some(ts) => Outcome::Acked(ts.to_string()),
            None => Outcome::Unknown("reset".into()),
        },
    };
    let h = |rows: &[(&str, &str)]| -> Vec<(String, String)> {
        rows.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    let posts = vec![
        post(0, 1, Some("1700000000.000001")),
        post(1, 1, Some("1700000000.000002")),
        post(0, 2, Some("1700000000.000003")),
        post(1, 2, None),
    ];
    let good = h(&[
        ("1700000000.000004", "t1-2"),
        ("1700000000.000003", "t0-2"),
        ("1700000000.000002", "t1-1"),
        ("1700000000.000001", "t0-1"),
    ]);
    let t = check(&good, &posts).expect("a consistent history");
    assert_eq!((t.acked, t.unknown, t.unknown_stored), (3, 1, 1));
    // The unanswered post may be missing.
    check(&good[1..], &posts).expect("an unanswered post may be missing");

    let fails = |history: &[(String, String)], posts: &[Post], what: &str| {
        let e = check(history, posts).expect_err(what);
        eprintln!("checker self-test, {what}: caught as expected: {e:?}");
    };
    // An acknowledged post dropped.
    let mut lost = good.clone();
    lost.remove(2);
    fails(&lost, &posts, "lost");
    // Its ts with another text.
    let mut swapped = good.clone();
    swapped[2].1 = "t1-2".into();
    fails(&swapped, &posts, "wrong text");
    // A duplicate text at a new ts.
    let mut dup = good.clone();
    dup.insert(0, ("1700000000.000009".into(), "t0-1".into()));
    fails(&dup, &posts, "duplicate text");
    // A duplicate ts.
    let mut dup_ts = good.clone();
    dup_ts.insert(1, ("1700000000.000004".into(), "t1-2".into()));
    fails(&dup_ts, &posts, "duplicate ts");
    // Not newest first.
    let mut order = good.clone();
    order.swap(0, 1);
    fails(&order, &posts, "order");
    // A text nobody sent.
    let mut foreign = good.clone();
    foreign.insert(0, ("1700000000.000009".into(), "intruder".into()));
    fails(&foreign, &posts, "foreign");
    // A refused or unsent post stored.
    let mut refused = posts.clone();
    refused[3].outcome = Outcome::Refused;
    fails(&good, &refused, "refused but stored");
    refused[3].outcome = Outcome::NotSent;
    fails(&good, &refused, "not sent but stored");
    // A sender's posts stored out of its sending order.
    let reordered = h(&[
        ("1700000000.000004", "t1-2"),
        ("1700000000.000003", "t0-1"),
        ("1700000000.000002", "t1-1"),
        ("1700000000.000001", "t0-2"),
    ]);
    let mut acked_reordered = posts.clone();
    acked_reordered[0].outcome = Outcome::Acked("1700000000.000003".into());
    acked_reordered[2].outcome = Outcome::Acked("1700000000.000001".into());
    fails(&reordered, &acked_reordered, "sender order");
    // A ts of the wrong shape.
    let mut shape = good.clone();
    shape[0].0 = "1700000000.4".into();
    fails(&shape, &posts, "malformed ts");
}
