//! Membership changes racing connection admission (issue 8, item 1).
//!
//! A connection is admitted in steps (ticket claim and channel list at the
//! user's home shard, registration on its gateway shard, subscriptions at
//! the channel servers), and a membership change too (store, channel
//! server, home, live connections). Each trial starts a connection of a
//! user and a change of that user's membership at (nearly) the same time,
//! with a varying head start for one or the other, then checks what must
//! hold once both are done:
//!
//! - after a removal is acknowledged, no connection of the user gets
//!   another event of the channel (a private channel: this is security);
//! - after a join is acknowledged, every live connection of the user gets
//!   every later event of the channel.
//!
//! Trials run in parallel batches; enough of them that the windows are hit
//! whatever the machine's speed (before the fix, both tests failed within
//! the first batches here).

mod common;

use std::thread;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Trials per test, and how many race at once.
const TRIALS: usize = 600;
const PARALLEL: usize = 20;

/// The head start of trial `i`, in microseconds: how long the membership
/// change runs before the connection starts (negative: the other way
/// round). Spread over -1..4 ms: before the fix, trials between 0.8 and
/// 3.5 ms hit both windows (a change's store commit takes about as long
/// as the start of an admission).
fn head_start_us(i: usize) -> i64 {
    (i as i64 * 617) % 5_000 - 1_000
}

fn sleep_us(us: i64) {
    if us > 0 {
        thread::sleep(Duration::from_micros(us as u64));
    }
}

fn private_channel(admin: &Admin, name: &str) -> String {
    let v = admin.ok(
        "POST",
        "/v1/channels",
        Some(&json!({ "name": name, "private": true })),
    );
    v["channel"]["id"].as_str().expect("channel id").to_string()
}

/// Runs `change` and opens a websocket with `url` at nearly the same time;
/// returns the connection once both are done (hello received, change
/// acknowledged).
fn race(url: String, head_start: i64, change: impl FnOnce() + Send + 'static) -> Ws {
    let changer = thread::spawn(move || {
        sleep_us(-head_start);
        change();
    });
    sleep_us(head_start);
    let ws = Ws::connect(&url);
    join_within(changer, Duration::from_secs(30), "membership change");
    ws
}

fn is_message(frame: &Value, channel: &str, text: &str) -> bool {
    frame["type"] == json!("message")
        && frame["channel"] == json!(channel)
        && frame["text"] == json!(text)
}

/// Reads `ws` until the message `text` of `channel` arrives (true) or
/// `timeout` passes (false).
fn wait_for(ws: &mut Ws, channel: &str, text: &str, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match ws.try_recv_json(left) {
            Some(f) if is_message(&f, channel, text) => return true,
            Some(_) => {}
            None => return false,
        }
    }
}

#[test]
fn no_event_reaches_a_removed_user() {
    let server = Server::start();
    let admin = &server.admin;
    let mut leaks = Vec::new();
    for batch in 0..TRIALS / PARALLEL {
        // A witness in every channel of the batch: once it has the last
        // event, the channel servers have sent it to every gateway watching.
        let witness = admin.create_user(&format!("witness-{batch}")).id;
        let mut witness_ws = server.connect(&witness);
        // Per trial: a private channel the user is a member of, and a
        // ticket, ready before the race.
        let trials: Vec<(String, String, String)> = (0..PARALLEL)
            .map(|j| {
                let user = admin.create_user(&format!("leaver-{batch}-{j}")).id;
                let channel = private_channel(admin, &format!("secret-{batch}-{j}"));
                admin.add_member(&channel, &witness);
                admin.add_member(&channel, &user);
                let url = admin.ticket(&user);
                (user, channel, url)
            })
            .collect();
        let racers: Vec<_> = trials
            .iter()
            .enumerate()
            .map(|(j, (user, channel, url))| {
                let admin = admin.with_token(admin.token.as_deref());
                let (user, channel, url) = (user.clone(), channel.clone(), url.clone());
                let head_start = head_start_us(batch * PARALLEL + j);
                thread::spawn(move || {
                    race(url, head_start, move || {
                        admin.remove_member(&channel, &user)
                    })
                })
            })
            .collect();
        let mut conns: Vec<Ws> = racers
            .into_iter()
            .map(|r| join_within(r, Duration::from_secs(60), "racer"))
            .collect();
        // Both acknowledged: nothing of the channel may reach the user now.
        for (_, channel, _) in &trials {
            admin.publish(channel, json!({"type": "message", "text": "after-removal"}));
        }
        for (_, channel, _) in &trials {
            assert!(
                wait_for(&mut witness_ws, channel, "after-removal", EVENT_TIMEOUT),
                "the witness did not get {channel}'s event"
            );
        }
        // Deliveries to other gateway shards left at the same time; give
        // them a moment to be written, then read what each leaver got.
        thread::sleep(Duration::from_millis(100));
        for (j, (ws, (user, channel, _))) in conns.iter_mut().zip(&trials).enumerate() {
            if wait_for(ws, channel, "after-removal", Duration::from_millis(20)) {
                let head_start = head_start_us(batch * PARALLEL + j);
                leaks.push(format!(
                    "{user} got {channel}'s event after its removal (head start {head_start} µs)"
                ));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "{} of {TRIALS} trials leaked: {leaks:?}",
        leaks.len()
    );
}

#[test]
fn a_joined_user_gets_every_later_event() {
    let server = Server::start();
    let admin = &server.admin;
    let mut missed = Vec::new();
    for batch in 0..TRIALS / PARALLEL {
        let trials: Vec<(String, String, String)> = (0..PARALLEL)
            .map(|j| {
                let user = admin.create_user(&format!("joiner-{batch}-{j}")).id;
                let channel = admin.create_channel(&format!("room-{batch}-{j}"));
                let url = admin.ticket(&user);
                (user, channel, url)
            })
            .collect();
        let racers: Vec<_> = trials
            .iter()
            .enumerate()
            .map(|(j, (user, channel, url))| {
                let admin = admin.with_token(admin.token.as_deref());
                let (user, channel, url) = (user.clone(), channel.clone(), url.clone());
                let head_start = head_start_us(batch * PARALLEL + j);
                thread::spawn(move || {
                    race(url, head_start, move || admin.add_member(&channel, &user))
                })
            })
            .collect();
        let mut conns: Vec<Ws> = racers
            .into_iter()
            .map(|r| join_within(r, Duration::from_secs(60), "racer"))
            .collect();
        // Both acknowledged: the user's connection gets the channel's events.
        for (_, channel, _) in &trials {
            admin.publish(channel, json!({"type": "message", "text": "after-join"}));
        }
        for (j, (ws, (user, channel, _))) in conns.iter_mut().zip(&trials).enumerate() {
            if !wait_for(ws, channel, "after-join", Duration::from_secs(3)) {
                let head_start = head_start_us(batch * PARALLEL + j);
                missed.push(format!(
                    "{user} missed {channel}'s event after joining it (head start {head_start} µs)"
                ));
            }
        }
    }
    assert!(
        missed.is_empty(),
        "{} of {TRIALS} trials missed: {missed:?}",
        missed.len()
    );
}

/// Joins and leaves of one (user, channel) from many shards at once end in
/// one state that every part of the server agrees on: the store (what
/// conversations.members says), the channel's server (who gets its
/// events), and the user's home (what a new connection subscribes to).
#[test]
fn concurrent_joins_and_leaves_agree_at_the_end() {
    const PAIRS: usize = 24;
    const FLIPS: usize = 12;
    let server = Server::start();
    let admin = &server.admin;
    let pairs: Vec<(User, String)> = (0..PAIRS)
        .map(|i| {
            let user = admin.create_user(&format!("flipper-{i}"));
            let channel = admin.create_channel(&format!("flips-{i}"));
            (user, channel)
        })
        .collect();
    let mut live: Vec<Ws> = pairs.iter().map(|(u, _)| server.connect(&u.id)).collect();
    // Two threads per pair, each flipping membership; every request is
    // a new HTTP connection, so they land on any shard.
    let flippers: Vec<_> = pairs
        .iter()
        .enumerate()
        .flat_map(|(i, (user, channel))| {
            (0..2).map(move |t| {
                let admin = admin.with_token(admin.token.as_deref());
                let (user, channel) = (user.id.clone(), channel.clone());
                thread::spawn(move || {
                    for k in 0..FLIPS {
                        let (status, v) = if (i + t + k) % 2 == 0 {
                            let body = json!({ "user": user });
                            admin.request(
                                "POST",
                                &format!("/v1/channels/{channel}/members"),
                                Some(&body),
                            )
                        } else {
                            admin.request(
                                "DELETE",
                                &format!("/v1/channels/{channel}/members/{user}"),
                                None,
                            )
                        };
                        let code = v["error"].as_str().unwrap_or("");
                        assert!(
                            status == 200
                                || ["already_in_channel", "not_in_channel"].contains(&code),
                            "a flip failed: {status} {v}"
                        );
                    }
                })
            })
        })
        .collect();
    for f in flippers {
        join_within(f, Duration::from_secs(60), "flipper");
    }
    let mut web = WebApi::new(&server);
    for ((user, channel), ws) in pairs.iter().zip(live.iter_mut()) {
        let v = web.ok(
            &user.token,
            "conversations.members",
            json!({ "channel": channel }),
        );
        let member = v["members"]
            .as_array()
            .expect("members")
            .contains(&json!(user.id));
        let mut fresh = server.connect(&user.id);
        admin.publish(channel, json!({"type": "message", "text": "final"}));
        for (who, ws) in [("live", &mut *ws), ("new", &mut fresh)] {
            let got = wait_for(
                ws,
                channel,
                "final",
                Duration::from_secs(if member { 5 } else { 1 }),
            );
            assert_eq!(
                got, member,
                "{who} connection of {} {} the event of {channel}, but the store says member={member}",
                user.id,
                if got { "got" } else { "missed" }
            );
        }
    }
}
