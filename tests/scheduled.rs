//! Scheduled messages (chat.scheduleMessage, chat.scheduledMessages.list,
//! chat.deleteScheduledMessage, admin `/v1/schedule`) against the real
//! binary: they arrive at a websocket subscriber and in history at or after
//! their time, in order, once; a cancelled one never; and a kill -9 neither
//! loses one nor fires one twice.
//!
//! Every wait is bounded; nothing asserts speed (only "not before").

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{json, Value};

/// How long after its time a message may take to show up before a test
/// gives up (generous: the machine is shared).
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(20);

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A whole second at least `secs` seconds from now.
fn seconds_ahead(secs: i64) -> i64 {
    now_millis() / 1000 + 1 + secs
}

/// Sleeps until wall-clock `unix_ms`.
fn sleep_until_millis(unix_ms: i64) {
    let wait = unix_ms - now_millis();
    if wait > 0 {
        thread::sleep(Duration::from_millis(wait as u64));
    }
}

/// A user who is a member of a fresh channel.
fn member_of_new_channel(server: &Server, name: &str) -> (User, String) {
    let user = server.admin.create_user(name);
    let channel = server.admin.create_channel(&format!("{name}-room"));
    server.admin.add_member(&channel, &user.id);
    (user, channel)
}

fn schedule(api: &mut WebApi, user: &User, channel: &str, post_at: i64, text: &str) -> String {
    let v = api.ok(
        &user.token,
        "chat.scheduleMessage",
        json!({"channel": channel, "post_at": post_at, "text": text}),
    );
    s(&v, "scheduled_message_id").to_string()
}

/// `scheduled_pending` of `/v1/stats`, summed over the shards.
fn scheduled_pending(server: &Server) -> u64 {
    let stats = server.admin.stats();
    stats["shards"]
        .as_array()
        .unwrap_or_else(|| panic!("stats without shards[]: {stats}"))
        .iter()
        .map(|s| {
            s["scheduled_pending"]
                .as_u64()
                .unwrap_or_else(|| panic!("no scheduled_pending in {s}"))
        })
        .sum()
}

/// The error code of a call that must fail (HTTP 200, `ok:false`).
#[track_caller]
fn error_of(api: &mut WebApi, token: &str, method: &str, args: Value) -> String {
    let resp = api.call(token, method, &args).unwrap();
    let v = resp.json();
    assert_eq!(resp.status, 200, "{method}: {v}");
    assert_eq!(v["ok"], json!(false), "{method} {args} should fail: {v}");
    v["error"].as_str().unwrap().to_string()
}

/// The `message` events a socket gets until `n` have come (other events
/// are skipped), each within [`ARRIVAL_TIMEOUT`]; with the wall-clock
/// millisecond each arrived at.
fn messages(ws: &mut Ws, n: usize) -> Vec<(Value, i64)> {
    let mut out = Vec::new();
    let deadline = Instant::now() + ARRIVAL_TIMEOUT * n.max(1) as u32;
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let v = ws
            .try_recv_json(left)
            .unwrap_or_else(|| panic!("only {} of {n} messages arrived: {out:?}", out.len()));
        if v["type"] == "message" {
            out.push((v, now_millis()));
        }
    }
    out
}

/// The texts of a channel's history, oldest first.
fn history_texts(api: &mut WebApi, token: &str, channel: &str) -> Vec<String> {
    let v = api.ok(
        token,
        "conversations.history",
        json!({"channel": channel, "limit": 1000}),
    );
    let mut texts: Vec<String> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| s(m, "text").to_string())
        .collect();
    texts.reverse();
    texts
}

fn list(api: &mut WebApi, token: &str, args: Value) -> Value {
    api.ok(token, "chat.scheduledMessages.list", args)
}

#[test]
fn a_scheduled_message_arrives_at_its_time_in_order_and_in_history() {
    let server = Server::start();
    let (alice, channel) = member_of_new_channel(&server, "alice");
    let mut api = WebApi::new(&server);
    let mut ws = server.connect(&alice.id);

    let post_at = seconds_ahead(2);
    let v = api.ok(
        &alice.token,
        "chat.scheduleMessage",
        json!({"channel": channel, "post_at": post_at.to_string(), "text": "first",
               "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "first"}}]}),
    );
    assert_eq!(v["channel"], json!(channel), "{v}");
    assert_eq!(v["post_at"], json!(post_at), "{v}");
    assert_eq!(v["message"]["type"], "delayed_message", "{v}");
    assert_eq!(v["message"]["text"], "first", "{v}");
    let id = s(&v, "scheduled_message_id").to_string();
    assert!(id.starts_with('Q') && id.len() == 11, "{id}");
    // Several for the same second: they land in the order they were
    // scheduled.
    let later: Vec<String> = (0..5).map(|i| format!("same-second-{i}")).collect();
    for text in &later {
        schedule(&mut api, &alice, &channel, post_at, text);
    }

    let pending = list(&mut api, &alice.token, json!({"channel": channel}));
    let items = pending["scheduled_messages"].as_array().unwrap();
    assert_eq!(items.len(), 6, "{pending}");
    assert_eq!(items[0]["id"], json!(id));
    assert_eq!(items[0]["channel_id"], json!(channel));
    assert_eq!(items[0]["post_at"], json!(post_at));
    assert_eq!(items[0]["text"], "first");
    assert!(items[0]["date_created"].as_i64().unwrap() <= post_at);
    assert_eq!(pending["response_metadata"]["next_cursor"], "");
    assert_eq!(scheduled_pending(&server), 6);

    let got = messages(&mut ws, 6);
    let texts: Vec<&str> = got.iter().map(|(m, _)| s(m, "text")).collect();
    let mut expected = vec!["first"];
    expected.extend(later.iter().map(String::as_str));
    assert_eq!(texts, expected);
    let mut last_ts = 0;
    for (m, at_ms) in &got {
        assert!(
            *at_ms >= post_at * 1000,
            "arrived at {at_ms} ms, before {post_at} s: {m}"
        );
        let ts = ts_micros(s(m, "ts"));
        assert!(ts >= post_at as u64 * 1_000_000, "ts before post_at: {m}");
        assert!(ts > last_ts, "ts not increasing: {m}");
        last_ts = ts;
        assert_eq!(m["user"], json!(alice.id));
        assert_eq!(m["channel"], json!(channel));
    }
    assert_eq!(got[0].0["blocks"][0]["type"], "section", "{}", got[0].0);
    assert_eq!(history_texts(&mut api, &alice.token, &channel), expected);
    let pending = list(&mut api, &alice.token, json!({}));
    assert_eq!(
        pending["scheduled_messages"],
        json!([]),
        "fired ones are gone"
    );
    assert_eq!(scheduled_pending(&server), 0, "fired ones are not pending");
    ws.expect_no_event(Duration::from_millis(500));
}

#[test]
fn a_deleted_message_never_arrives() {
    let server = Server::start();
    let (alice, channel) = member_of_new_channel(&server, "dana");
    let mut api = WebApi::new(&server);
    let mut ws = server.connect(&alice.id);

    let post_at = seconds_ahead(2);
    let doomed = schedule(&mut api, &alice, &channel, post_at, "doomed");
    // A marker one second later: once it has arrived, the doomed one would
    // have, had it fired.
    schedule(&mut api, &alice, &channel, post_at + 1, "marker");
    api.ok(
        &alice.token,
        "chat.deleteScheduledMessage",
        json!({"channel": channel, "scheduled_message_id": doomed}),
    );
    let again = error_of(
        &mut api,
        &alice.token,
        "chat.deleteScheduledMessage",
        json!({"channel": channel, "scheduled_message_id": doomed}),
    );
    assert_eq!(again, "invalid_scheduled_message_id");
    let got = messages(&mut ws, 1);
    assert_eq!(s(&got[0].0, "text"), "marker");
    ws.expect_no_event(Duration::from_millis(1500));
    assert_eq!(history_texts(&mut api, &alice.token, &channel), ["marker"]);
}

#[test]
fn every_error_code() {
    let server = Server::start();
    let (alice, channel) = member_of_new_channel(&server, "erin");
    let bob = server.admin.create_user("bob");
    let private = server.admin.ok(
        "POST",
        "/v1/channels",
        Some(&json!({"name": "secret", "private": true})),
    )["channel"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut api = WebApi::new(&server);
    let t = alice.token.clone();
    let at = seconds_ahead(600);
    let mut check = |token: &str, method: &str, args: Value, code: &str| {
        let got = error_of(&mut api, token, method, args.clone());
        assert_eq!(got, code, "{method} {args}");
    };
    let sm = "chat.scheduleMessage";
    check(
        &t,
        sm,
        json!({"channel": channel, "post_at": 1_000_000_000, "text": "x"}),
        "time_in_past",
    );
    check(
        &t,
        sm,
        json!({"channel": channel, "post_at": at + 121 * 86400, "text": "x"}),
        "time_too_far",
    );
    check(
        &t,
        sm,
        json!({"channel": channel, "post_at": "soon", "text": "x"}),
        "invalid_time",
    );
    check(
        &t,
        sm,
        json!({"channel": channel, "text": "x"}),
        "invalid_arguments",
    );
    check(
        &t,
        sm,
        json!({"channel": "C0NOSUCH01", "post_at": at, "text": "x"}),
        "channel_not_found",
    );
    check(
        &t,
        sm,
        json!({"post_at": at, "text": "x"}),
        "channel_not_found",
    );
    check(
        &bob.token,
        sm,
        json!({"channel": private, "post_at": at, "text": "x"}),
        "channel_not_found",
    );
    check(
        &bob.token,
        sm,
        json!({"channel": channel, "post_at": at, "text": "x"}),
        "not_in_channel",
    );
    check(
        &t,
        sm,
        json!({"channel": channel, "post_at": at}),
        "no_text",
    );
    check(
        &t,
        sm,
        json!({"channel": channel, "post_at": at, "text": filler(40_001)}),
        "msg_too_long",
    );
    check(
        &t,
        sm,
        json!({"channel": channel, "post_at": at, "blocks": "[1]"}),
        "invalid_blocks_format",
    );
    check(
        &t,
        sm,
        json!({"channel": channel, "post_at": at, "text": "x", "thread_ts": "nope"}),
        "thread_not_found",
    );
    // Slack's limit: 30 per channel within 5 minutes of each other.
    for i in 0..30 {
        let mut api = WebApi::new(&server);
        schedule(&mut api, &alice, &channel, at + i, "ok");
    }
    check(
        &t,
        sm,
        json!({"channel": channel, "post_at": at + 100, "text": "x"}),
        "restricted_too_many",
    );
    // Far enough from the others: allowed again.
    let mut api2 = WebApi::new(&server);
    let far = schedule(&mut api2, &alice, &channel, at + 1000, "far");

    let del = "chat.deleteScheduledMessage";
    for bad in ["Q1", "X0000000001", "Q9999999999", "Q00000000001x"] {
        check(
            &t,
            del,
            json!({"channel": channel, "scheduled_message_id": bad}),
            "invalid_scheduled_message_id",
        );
    }
    // Someone else's, or named with the wrong channel: not yours to delete.
    server.admin.add_member(&channel, &bob.id);
    check(
        &bob.token,
        del,
        json!({"channel": channel, "scheduled_message_id": far}),
        "invalid_scheduled_message_id",
    );
    let other = server.admin.create_channel("other-room");
    server.admin.add_member(&other, &alice.id);
    check(
        &t,
        del,
        json!({"channel": other, "scheduled_message_id": far}),
        "invalid_scheduled_message_id",
    );
    check(
        &t,
        del,
        json!({"channel": "C0NOSUCH01", "scheduled_message_id": far}),
        "channel_not_found",
    );
    check(
        &t,
        del,
        json!({"scheduled_message_id": far}),
        "invalid_arguments",
    );

    let ls = "chat.scheduledMessages.list";
    check(&t, ls, json!({"cursor": "bm9wZQ"}), "invalid_cursor");
    check(
        &t,
        ls,
        json!({"channel": "C0NOSUCH01"}),
        "channel_not_found",
    );
    check(&t, ls, json!({"latest": "later"}), "invalid_latest");
    check(&t, ls, json!({"oldest": "sooner"}), "invalid_oldest");
    check("xoxp-nope", ls, json!({}), "invalid_auth");
    // Bob sees none of Alice's.
    let mut api3 = WebApi::new(&server);
    assert_eq!(
        list(&mut api3, &bob.token, json!({}))["scheduled_messages"],
        json!([])
    );
}

#[test]
fn the_list_pages_and_filters() {
    let server = Server::start();
    let (alice, channel) = member_of_new_channel(&server, "fay");
    let other = server.admin.create_channel("fay-other");
    server.admin.add_member(&other, &alice.id);
    let mut api = WebApi::new(&server);
    let base = seconds_ahead(3600);
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(schedule(
            &mut api,
            &alice,
            &channel,
            base + 10 * i,
            &format!("m{i}"),
        ));
    }
    let elsewhere = schedule(&mut api, &alice, &other, base + 5, "elsewhere");

    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let v = list(
            &mut api,
            &alice.token,
            json!({"channel": channel, "limit": 2, "cursor": cursor}),
        );
        let page = v["scheduled_messages"].as_array().unwrap();
        assert!(page.len() <= 2, "{v}");
        seen.extend(page.iter().map(|m| s(m, "id").to_string()));
        cursor = s(&v["response_metadata"], "next_cursor").to_string();
        if cursor.is_empty() {
            break;
        }
    }
    assert_eq!(seen, ids, "every message once, earliest first");
    let all = list(&mut api, &alice.token, json!({}));
    let all: Vec<&str> = all["scheduled_messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| s(m, "id"))
        .collect();
    assert_eq!(all.len(), 6);
    assert_eq!(all[1], elsewhere, "ordered by post_at across channels");
    let window = list(
        &mut api,
        &alice.token,
        json!({"channel": channel, "oldest": (base + 10).to_string(), "latest": base + 30}),
    );
    let window: Vec<&str> = window["scheduled_messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| s(m, "text"))
        .collect();
    assert_eq!(window, ["m1", "m2", "m3"]);
}

/// A data directory kept across server runs.
fn data_dir(name: &str) -> PathBuf {
    let d = fresh_dir().join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn kill_9_with_pending_messages_then_each_fires_exactly_once() {
    let dir = data_dir("kill9");
    let mut server = Server::start_in(&dir, &[]);
    let (alice, channel) = member_of_new_channel(&server, "gus");
    let mut api = WebApi::new(&server);
    // One falls due while the server is down, one after it is back.
    let overdue_at = seconds_ahead(1);
    let later_at = overdue_at + 6;
    schedule(&mut api, &alice, &channel, overdue_at, "overdue");
    schedule(&mut api, &alice, &channel, later_at, "later");
    let reminder = server.admin.ok(
        "POST",
        "/v1/schedule",
        Some(&json!({"channel": channel, "post_at": overdue_at,
                     "event": {"type": "message", "user": alice.id, "text": "backend-overdue"}})),
    );
    assert!(s(&reminder, "id").starts_with('Q'), "{reminder}");
    server.kill();
    sleep_until_millis(overdue_at * 1000 + 1500);

    let server = Server::start_in(&dir, &[]);
    let mut api = WebApi::new(&server);
    let mut ws = server.connect(&alice.id);
    let got = messages(&mut ws, 1);
    // The overdue ones may have fired before the socket subscribed: history
    // is the authority on "exactly once", the socket on "after its time".
    let got_later: Vec<(Value, i64)> = if s(&got[0].0, "text") == "later" {
        got
    } else {
        let mut rest = got;
        while s(&rest.last().unwrap().0, "text") != "later" {
            rest.extend(messages(&mut ws, 1));
        }
        rest
    };
    let (later, at_ms) = got_later.last().unwrap();
    assert!(*at_ms >= later_at * 1000, "{later}");
    ws.expect_no_event(Duration::from_millis(1500));
    let texts = history_texts(&mut api, &alice.token, &channel);
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for t in &texts {
        *counts.entry(t.as_str()).or_default() += 1;
    }
    assert_eq!(counts.get("overdue"), Some(&1), "{texts:?}");
    assert_eq!(counts.get("backend-overdue"), Some(&1), "{texts:?}");
    assert_eq!(counts.get("later"), Some(&1), "{texts:?}");
    assert_eq!(texts.len(), 3, "{texts:?}");
    assert_eq!(texts.last().map(String::as_str), Some("later"));
    assert_eq!(
        list(&mut api, &alice.token, json!({}))["scheduled_messages"],
        json!([])
    );
}

/// SIGKILL at moments around the firing of many messages: whatever had
/// committed stays fired once, whatever had not fires after the restart,
/// so every message is in history exactly once. (The store job deletes the
/// row in the transaction that writes the message: both or neither.) With
/// the row deleted in a transaction of its own after the message's, this
/// test saw messages posted twice (1 run in 2 with three kill moments).
#[test]
fn a_crash_around_firing_never_loses_nor_doubles_one() {
    const MESSAGES: usize = 25;
    for (round, offset_ms) in [0i64, 10, 20, 40, 80].into_iter().enumerate() {
        let dir = data_dir(&format!("crash{round}"));
        let mut server = Server::start_in(&dir, &[]);
        let (alice, channel) = member_of_new_channel(&server, &format!("hal{round}"));
        let mut api = WebApi::new(&server);
        let post_at = seconds_ahead(1);
        for i in 0..MESSAGES {
            schedule(&mut api, &alice, &channel, post_at, &format!("m{i}"));
        }
        sleep_until_millis(post_at * 1000 + offset_ms);
        server.kill();

        let server = Server::start_in(&dir, &[]);
        let mut api = WebApi::new(&server);
        let deadline = Instant::now() + ARRIVAL_TIMEOUT;
        let texts = loop {
            let texts = history_texts(&mut api, &alice.token, &channel);
            if texts.len() >= MESSAGES || Instant::now() > deadline {
                break texts;
            }
            thread::sleep(Duration::from_millis(100));
        };
        let expected: Vec<String> = (0..MESSAGES).map(|i| format!("m{i}")).collect();
        assert_eq!(texts, expected, "round {round} (kill at +{offset_ms} ms)");
        thread::sleep(Duration::from_millis(500));
        assert_eq!(
            history_texts(&mut api, &alice.token, &channel).len(),
            MESSAGES
        );
        assert_eq!(
            list(&mut api, &alice.token, json!({}))["scheduled_messages"],
            json!([])
        );
    }
}

#[test]
fn the_admin_api_schedules_any_event() {
    let server = Server::start();
    let (ivy, channel) = member_of_new_channel(&server, "ivy");
    let admin = &server.admin;
    let mut ws = server.connect(&ivy.id);
    let post_at = seconds_ahead(2);
    let reminder = json!({"type": "reminder_fired", "text": "stand-up", "reminder": "Rm1"});
    let v = admin.ok(
        "POST",
        "/v1/schedule",
        Some(&json!({"channel": channel, "post_at": post_at, "event": reminder})),
    );
    assert_eq!(v["post_at"], json!(post_at));
    let id = s(&v, "id").to_string();
    let cancelled = admin.ok(
        "POST",
        "/v1/schedule",
        Some(&json!({"channel": channel, "post_at": post_at, "event": {"type": "reminder_fired", "text": "cancelled"}})),
    );
    let listed = admin.ok("GET", &format!("/v1/schedule?channel={channel}"), None);
    let items = listed["scheduled"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{listed}");
    assert_eq!(items[0]["id"], json!(id));
    assert_eq!(items[0]["event"], reminder);
    let page = admin.ok(
        "GET",
        &format!("/v1/schedule?channel={channel}&limit=1"),
        None,
    );
    assert_eq!(page["next"], json!(id), "{page}");
    let rest = admin.ok(
        "GET",
        &format!("/v1/schedule?channel={channel}&after={id}"),
        None,
    );
    assert_eq!(rest["scheduled"][0]["id"], cancelled["id"], "{rest}");
    admin.ok(
        "DELETE",
        &format!("/v1/schedule/{}", s(&cancelled, "id")),
        None,
    );
    let (status, v) = admin.request(
        "DELETE",
        &format!("/v1/schedule/{}", s(&cancelled, "id")),
        None,
    );
    assert_eq!(
        (status, s(&v, "error")),
        (404, "invalid_scheduled_message_id")
    );

    let e = ws.recv_json(ARRIVAL_TIMEOUT);
    let at = now_millis();
    assert_eq!(e["type"], "reminder_fired", "{e}");
    assert_eq!(e["text"], "stand-up");
    assert_eq!(e["reminder"], "Rm1");
    assert_eq!(e["channel"], json!(channel));
    assert!(at >= post_at * 1000);
    assert!(ts_micros(s(&e, "ts")) >= post_at as u64 * 1_000_000, "{e}");
    ws.expect_no_event(Duration::from_millis(1500));
    assert_eq!(
        admin.ok("GET", "/v1/schedule", None)["scheduled"],
        json!([])
    );

    // Refusals.
    let bad = |body: Value, status: u16, code: &str| {
        let (st, v) = admin.request("POST", "/v1/schedule", Some(&body));
        assert_eq!((st, s(&v, "error")), (status, code), "{body}");
    };
    let at = seconds_ahead(60);
    bad(
        json!({"channel": channel, "post_at": at, "event": {"text": "no type"}}),
        400,
        "invalid_event",
    );
    bad(
        json!({"channel": channel, "post_at": 1_000_000_000, "event": {"type": "x"}}),
        400,
        "time_in_past",
    );
    bad(
        json!({"channel": channel, "post_at": at + 121 * 86400, "event": {"type": "x"}}),
        400,
        "time_too_far",
    );
    bad(
        json!({"channel": "C0NOSUCH01", "post_at": at, "event": {"type": "x"}}),
        404,
        "channel_not_found",
    );
    bad(
        json!({"channel": channel, "post_at": "soon", "event": {"type": "x"}}),
        400,
        "invalid_json",
    );
    let (st, v) = admin.request("DELETE", "/v1/schedule/nope", None);
    assert_eq!((st, s(&v, "error")), (404, "invalid_scheduled_message_id"));
}

/// More messages of one channel due the same second than one firing round
/// takes (`limits::SCHEDULE_FIRE_BATCH_MAX`, 512): the rounds are admitted
/// while the one before commits, and still each message arrives once, in
/// the order it was scheduled, and in history in that order. Afterwards
/// none is pending, and a fired id is no message to cancel.
#[test]
fn a_channel_due_over_several_rounds_keeps_its_order() {
    const N: usize = 1_300;
    let server = Server::start();
    let (ivy, channel) = member_of_new_channel(&server, "ivy");
    let admin = &server.admin;
    let mut ws = server.connect(&ivy.id);
    let post_at = seconds_ahead(4);
    let mut ids = Vec::new();
    for i in 0..N {
        let event = json!({"type": "message", "user": ivy.id, "text": format!("round {i}")});
        let v = admin.ok(
            "POST",
            "/v1/schedule",
            Some(&json!({"channel": channel, "post_at": post_at, "event": event})),
        );
        ids.push(s(&v, "id").to_string());
    }
    assert!(
        now_millis() < post_at * 1000,
        "scheduling took past post_at"
    );
    let got = messages(&mut ws, N);
    let texts: Vec<String> = got.iter().map(|(v, _)| s(v, "text").to_string()).collect();
    let want: Vec<String> = (0..N).map(|i| format!("round {i}")).collect();
    assert_eq!(texts, want);
    let ts: Vec<u64> = got.iter().map(|(v, _)| ts_micros(s(v, "ts"))).collect();
    assert!(ts.windows(2).all(|w| w[0] < w[1]), "ts out of order");
    ws.expect_no_event(Duration::from_millis(1500));
    // A history page holds the newest 1,000: they are the last 1,000 sent.
    let mut api = WebApi::new(&server);
    let history = history_texts(&mut api, &ivy.token, &channel);
    assert_eq!(history, want[N - 1000..]);
    assert_eq!(scheduled_pending(&server), 0);
    assert_eq!(
        admin.ok("GET", &format!("/v1/schedule?channel={channel}"), None)["scheduled"],
        json!([])
    );
    for id in [&ids[0], &ids[N / 2], &ids[N - 1]] {
        let (st, v) = admin.request("DELETE", &format!("/v1/schedule/{id}"), None);
        assert_eq!((st, s(&v, "error")), (404, "invalid_scheduled_message_id"));
    }
}
