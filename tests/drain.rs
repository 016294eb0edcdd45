//! Going away: POST /v1/drain says goodbye and closes with 4001, and the
//! gateway stops accepting; SIGTERM/SIGINT say goodbye, close with 1001 and the
//! process exits 0. A region drain (`?region=`) needs a cluster with etcd:
//! a single node refuses it with `not_in_cluster` (tests/cluster_drain.rs
//! drains a region).

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

fn goodbye_then_close(ws: &mut Ws, code: u16) {
    let ev = ws.recv();
    assert_type(&ev, "goodbye");
    ws.expect_close(code, EVENT_TIMEOUT);
}

#[test]
fn drain_says_goodbye_closes_4001_and_stops_accepting() {
    let server = Server::start();
    let admin = &server.admin;
    let users = admin.create_users("leaving", 3);
    let mut conns: Vec<Ws> = Vec::new();
    for (i, u) in users.iter().enumerate() {
        for k in 0..2 {
            conns.push(server.connect(&u.id).named(format!("user{i}/conn{k}")));
        }
    }
    let later_url = server.ticket(&users[0].id);

    admin.ok("POST", "/v1/drain", None);
    for ws in conns.iter_mut() {
        goodbye_then_close(ws, 4001);
    }

    // No new websocket is served: refused, failed or timed-out handshakes,
    // or a socket that is closed at once, are all fine; a hello is not.
    if let Ok(mut ws) = Ws::try_connect(&later_url, Duration::from_secs(3)) {
        if let Some(Frame::Text(t)) = ws.recv_frame(Duration::from_secs(3)) {
            assert!(
                !t.contains("\"hello\""),
                "a new connection was served after drain: {t}"
            );
        }
    }
    // The admin side still answers, and no client is left.
    let left = admin.wait_total_connections(0, Duration::from_secs(10));
    assert_eq!(left, 0, "connections left after drain: {}", admin.stats());
}

#[test]
fn sigterm_says_goodbye_closes_1001_and_exits_0() {
    let mut server = Server::start();
    let admin = server.admin.clone();
    let users = admin.create_users("term", 2);
    let channel = admin.create_channel("before-shutdown");
    for u in &users {
        admin.add_member(&channel, &u.id);
    }
    let mut conns: Vec<Ws> = Vec::new();
    for (i, u) in users.iter().enumerate() {
        for k in 0..2 {
            conns.push(server.connect(&u.id).named(format!("user{i}/conn{k}")));
        }
    }
    server.terminate();
    for ws in conns.iter_mut() {
        goodbye_then_close(ws, 1001);
    }
    let status = server.wait_exit(Duration::from_secs(20));
    let status = status.unwrap_or_else(|| panic!("still running 20 s after SIGTERM"));
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

#[test]
fn sigint_behaves_like_sigterm() {
    let mut server = Server::start();
    let u = server.admin.create_user("int");
    let mut ws = server.connect(&u.id).named("int");
    server.signal(libc::SIGINT);
    goodbye_then_close(&mut ws, 1001);
    let status = server
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("still running 20 s after SIGINT"));
    assert!(status.success(), "exit status after SIGINT: {status}");
}

#[test]
fn a_region_drain_needs_a_cluster() {
    let server = Server::start();
    let admin = &server.admin;
    let (status, body) = admin.request("POST", "/v1/drain?region=east&to=west", None);
    assert_eq!(
        (status, &body["error"]),
        (400, &json!("not_in_cluster")),
        "{body}"
    );
    let (status, body) = admin.request("DELETE", "/v1/drain?region=east", None);
    assert_eq!(
        (status, &body["error"]),
        (400, &json!("not_in_cluster")),
        "{body}"
    );
    // A malformed request is refused for what it is, before anything else.
    let (status, body) = admin.request("POST", "/v1/drain?region=east&to=west&rate=0", None);
    assert_eq!(
        (status, &body["error"]),
        (400, &json!("invalid_rate")),
        "{body}"
    );
    // A target without a region never drains the node by mistake.
    let (status, body) = admin.request("POST", "/v1/drain?to=west", None);
    assert_eq!(
        (status, &body["error"]),
        (400, &json!("invalid_region")),
        "{body}"
    );
    // Nothing was drained: the node still serves websockets.
    let u = admin.create_user("stays");
    server.connect(&u.id).close();
}
