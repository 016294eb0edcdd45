//! The admin API's contract: auth, errors, stats, ring, metrics, health; and
//! keepalive over the websocket (JSON ping and ping frames).

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

fn assert_error(status: u16, v: &serde_json::Value, want_status: u16, code: &str, what: &str) {
    assert_eq!(status, want_status, "{what}: HTTP status (body {v})");
    assert_eq!(v["ok"], json!(false), "{what}: {v}");
    assert_eq!(v["error"], json!(code), "{what}: {v}");
}

#[test]
fn auth_and_application_errors() {
    let server = Server::start();
    let admin = &server.admin;
    let anonymous = admin.with_token(None);
    let wrong = admin.with_token(Some("not-the-token"));

    for (method, path, body) in [
        ("POST", "/v1/users", Some(json!({"name": "mallory"}))),
        ("GET", "/v1/stats", None),
        ("GET", "/v1/ring", None),
        ("POST", "/v1/drain", None),
    ] {
        let (status, v) = anonymous.request(method, path, body.as_ref());
        assert_error(
            status,
            &v,
            401,
            "not_authed",
            &format!("{method} {path} without token"),
        );
        let (status, v2) = wrong.request(method, path, body.as_ref());
        assert_error(
            status,
            &v2,
            401,
            "invalid_auth",
            &format!("{method} {path} with a wrong token"),
        );
    }

    // The refused drain did nothing, the refused user does not exist.
    let alice = admin.create_user("alice");
    assert!(
        alice.token.starts_with("xoxp-"),
        "user token: {}",
        alice.token
    );
    let mut ws = server.connect(&alice.id).named("alice");
    ws.ping_roundtrip();

    let (status, v) = admin.request(
        "POST",
        "/v1/users",
        Some(&json!({"name": "robot", "bot": true})),
    );
    assert_eq!(status, 200, "{v}");
    assert!(
        v["token"].as_str().is_some_and(|t| t.starts_with("xoxb-")),
        "bot token: {v}"
    );

    // Channel names are unique.
    admin.create_channel("general");
    let (status, v) = admin.request("POST", "/v1/channels", Some(&json!({"name": "general"})));
    assert_error(
        status,
        &v,
        409,
        "name_taken",
        "second channel named general",
    );

    // Tickets for unknown users.
    let (status, v) = admin.request("POST", "/v1/tickets", Some(&json!({"user": "UZZZZZZZZZ0"})));
    assert_error(
        status,
        &v,
        404,
        "user_not_found",
        "ticket for an unknown user",
    );

    // No auth needed for metrics and health.
    let m = http_request(admin.addr, "GET", "/metrics", &[], None);
    assert_eq!(m.status, 200, "{}", m.text());
    let h = http_request(admin.addr, "GET", "/healthz", &[], None);
    assert_eq!(h.status, 200, "{}", h.text());
    ws.ping_roundtrip();
}

/// How long an answer that needs no body may take: generous, not a speed
/// assertion. A server that waited for the body would answer only at its
/// 60 s idle timeout.
const PROMPT: Duration = Duration::from_secs(5);

#[test]
fn refused_tokens_are_answered_from_the_head_and_the_body_is_never_read() {
    let server = Server::start();
    let addr = server.admin.addr;
    for (auth, code) in [
        ("Authorization: Bearer not-the-token\r\n", "invalid_auth"),
        ("", "not_authed"),
    ] {
        // A 1 MB body is announced and never sent.
        let head = format!(
            "POST /v1/users HTTP/1.1\r\nHost: {addr}\r\n{auth}\
             Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
        );
        let mut conn = send_raw(addr, head.as_bytes(), PROMPT);
        let r = read_http_response_from(&mut conn, PROMPT)
            .unwrap_or_else(|e| panic!("{code}: {e}: the server waits for the body"));
        assert_error(r.status, &r.json(), 401, code, code);
        assert_eq!(
            r.header("connection"),
            Some("close"),
            "{code}: the connection is not kept for the body"
        );
        assert!(
            closed_by_server(&mut conn),
            "{code}: the server keeps the connection open for the body"
        );
    }

    // With the token, the body is read as always, and a refused request
    // without a body keeps its connection.
    let mut http = KeepAlive::new(addr);
    let r = http
        .request(
            "GET",
            "/v1/ring",
            &[("Authorization", "Bearer wrong")],
            None,
        )
        .unwrap();
    assert_eq!(r.status, 401);
    let auth = format!("Bearer {}", server.admin.token.as_deref().unwrap());
    let body = json!({"name": "after"}).to_string();
    let r = http
        .request(
            "POST",
            "/v1/users",
            &[("Authorization", &auth)],
            Some(body.as_bytes()),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        http.connects, 1,
        "a refusal without a body closed the connection"
    );
}

/// The value of `transponder_connections{shard="i"}` in a Prometheus text.
fn gauge(text: &str, shard: usize) -> f64 {
    let prefix = format!("transponder_connections{{shard=\"{shard}\"}}");
    let line = text
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("/metrics lacks {prefix}:\n{text}"));
    line[prefix.len()..]
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("bad sample line {line:?}"))
}

fn metric_connections(server: &Server) -> f64 {
    let m = http_request(server.admin.addr, "GET", "/metrics", &[], None);
    assert_eq!(m.status, 200);
    let text = m.text();
    gauge(&text, 0) + gauge(&text, 1)
}

#[test]
fn stats_ring_metrics_and_ready_line() {
    let server = Server::start();
    let admin = &server.admin;

    let stats = admin.stats();
    let shards = stats["shards"]
        .as_array()
        .unwrap_or_else(|| panic!("{stats}"));
    assert_eq!(shards.len(), 2, "one entry per shard: {stats}");
    let mut ids: Vec<u64> = shards
        .iter()
        .map(|s| s["shard"].as_u64().expect("shard index"))
        .collect();
    ids.sort();
    assert_eq!(ids, vec![0, 1], "{stats}");
    for s in shards {
        assert_eq!(s["connections"], json!(0), "fresh server: {stats}");
    }
    assert_eq!(metric_connections(&server), 0.0);

    let ring = admin.ok("GET", "/v1/ring", None);
    assert_eq!(ring["ring"]["version"], json!(1), "{ring}");
    assert_eq!(ring["ring"]["members"], json!([0, 1]), "{ring}");
    assert!(
        !ring["ring"]["vnodes"].is_null(),
        "ring without vnodes: {ring}"
    );

    let u = admin.create_user("counted");
    let conns: Vec<Ws> = (0..3)
        .map(|i| server.connect(&u.id).named(format!("c{i}")))
        .collect();
    assert_eq!(
        admin.wait_total_connections(3, Duration::from_secs(10)),
        3,
        "{}",
        admin.stats()
    );
    assert_eq!(
        metric_connections(&server),
        3.0,
        "metrics disagree with stats"
    );
    for ws in conns {
        ws.close();
    }
    assert_eq!(
        admin.wait_total_connections(0, Duration::from_secs(10)),
        0,
        "{}",
        admin.stats()
    );
    assert_eq!(metric_connections(&server), 0.0);

    // Exactly one stdout line.
    let lines = server.stdout_lines();
    assert_eq!(
        lines.len(),
        1,
        "stdout should hold only the ready line: {lines:?}"
    );
}

#[test]
fn ping_json_and_ping_frames_are_answered() {
    let server = Server::start();
    let u = server.admin.create_user("pinger");
    let mut ws = server.connect(&u.id).named("pinger");

    ws.send_json(&json!({"id": 7, "type": "ping", "time": 1234, "note": "echo me"}));
    let pong = ws.recv();
    assert_type(&pong, "pong");
    assert_eq!(pong["reply_to"], json!(7), "{pong}");
    assert_eq!(pong["time"], json!(1234), "{pong}");
    assert_eq!(pong["note"], json!("echo me"), "{pong}");

    for payload in [&b"keepalive-1"[..], &b""[..], &[0u8, 255, 1, 254][..]] {
        ws.send_message(tungstenite::Message::Ping(payload.to_vec().into()));
        match ws.recv_frame(EVENT_TIMEOUT) {
            Some(Frame::Pong(p)) => assert_eq!(p, payload.to_vec(), "pong payload"),
            other => panic!("expected a pong frame, got {other:?}"),
        }
    }

    // Several JSON pings in a row each get their own reply.
    for id in [8u64, 9, 10] {
        ws.send_json(&json!({"id": id, "type": "ping"}));
    }
    let mut replies: Vec<u64> = (0..3)
        .map(|_| ws.recv()["reply_to"].as_u64().expect("reply_to"))
        .collect();
    replies.sort();
    assert_eq!(replies, vec![8, 9, 10]);
    ws.expect_no_event(QUIET);
}
