//! Bad input: each on its own connection. Protocol violations close that
//! connection with their code; bad client messages get an error and the
//! connection stays open; bad tickets and bad handshakes are refused. A
//! bystander in a channel keeps receiving, and /healthz keeps answering.

mod common;

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tungstenite::Message;

struct Bystander {
    ws: Ws,
    channel: String,
    author: String,
    n: usize,
}

impl Bystander {
    fn new(server: &Server) -> Bystander {
        let admin = &server.admin;
        let user = admin.create_user("bystander");
        let channel = admin.create_channel("lobby");
        admin.add_member(&channel, &user.id);
        let ws = server.connect(&user.id).named("bystander");
        Bystander {
            ws,
            channel,
            author: user.id,
            n: 0,
        }
    }

    /// Publishes to the bystander's channel; it must be its very next frame.
    /// Then /healthz must answer 200.
    fn still_served(&mut self, server: &Server, after: &str) {
        self.n += 1;
        let text = format!("alive {} after {after}", self.n);
        server.admin.publish(
            &self.channel,
            json!({"type": "message", "user": self.author, "text": text}),
        );
        let ev = self.ws.recv();
        assert_eq!(ev["text"], json!(text), "bystander after {after}: {ev}");
        let h = http_request(server.admin.addr, "GET", "/healthz", &[], None);
        assert_eq!(h.status, 200, "/healthz after {after}: {}", h.text());
    }
}

/// Sends one bad thing over a connection.
type SendBad = Box<dyn Fn(&mut Ws)>;

#[test]
fn protocol_violations_close_with_their_codes() {
    let server = Server::start();
    let mut bystander = Bystander::new(&server);
    let v = server.admin.create_user("vandal");

    let ping = br#"{"id":1,"type":"ping"}"#;
    let big_ping = json!({"id": 1, "type": "ping", "pad": filler(20 * 1024)}).to_string();
    let half = json!({"id": 1, "type": "ping", "pad": filler(10 * 1024)}).to_string();
    let (h1, h2) = half.as_bytes().split_at(half.len() / 2);
    let mut fragmented_big = masked_nofin(0x1, h1);
    fragmented_big.extend(raw_frame(false, 0, 0x0, Some([1, 2, 3, 4]), h2));
    fragmented_big.extend(masked(0x0, &filler(10 * 1024).into_bytes()));

    let cases: Vec<(&str, SendBad, u16)> = vec![
        (
            "a 20 KiB text frame",
            Box::new(move |ws: &mut Ws| ws.send_text(&big_ping)),
            1009,
        ),
        (
            "a 20 KiB message in fragments",
            Box::new(move |ws: &mut Ws| ws.send_raw(&fragmented_big)),
            1009,
        ),
        (
            "a binary frame",
            Box::new(|ws: &mut Ws| ws.send_message(Message::binary(b"{}".to_vec()))),
            1003,
        ),
        (
            "invalid UTF-8",
            Box::new(|ws: &mut Ws| ws.send_raw(&masked(0x1, &[b'{', 0xff, 0xfe, b'}']))),
            1007,
        ),
        (
            "an unmasked frame",
            Box::new(move |ws: &mut Ws| ws.send_raw(&raw_frame(true, 0, 0x1, None, ping))),
            1002,
        ),
        (
            "RSV1 set",
            Box::new(move |ws: &mut Ws| {
                ws.send_raw(&raw_frame(true, 4, 0x1, Some([9, 8, 7, 6]), ping))
            }),
            1002,
        ),
        (
            "reserved data opcode 3",
            Box::new(move |ws: &mut Ws| ws.send_raw(&masked(0x3, ping))),
            1002,
        ),
        (
            "reserved control opcode 0xB",
            Box::new(|ws: &mut Ws| ws.send_raw(&masked(0xB, b""))),
            1002,
        ),
    ];
    for (what, send, code) in cases {
        let mut ws = server.connect(&v.id).named(what);
        send(&mut ws);
        ws.expect_close(code, EVENT_TIMEOUT);
        bystander.still_served(&server, what);
    }
    let left = server
        .admin
        .wait_total_connections(1, Duration::from_secs(10));
    assert_eq!(
        left,
        1,
        "closed connections still counted: {}",
        server.admin.stats()
    );
}

fn masked_nofin(opcode: u8, payload: &[u8]) -> Vec<u8> {
    raw_frame(false, 0, opcode, Some([5, 6, 7, 8]), payload)
}

#[test]
fn legal_fragmentation_and_near_limit_frames_are_accepted() {
    let server = Server::start();
    let v = server.admin.create_user("careful");
    let mut ws = server.connect(&v.id).named("careful");

    // A ping split over three frames, with a websocket ping in between.
    let text = br#"{"id":11,"type":"ping","note":"in pieces"}"#;
    let mut bytes = masked_nofin(0x1, &text[..10]);
    bytes.extend(raw_frame(false, 0, 0x0, Some([1, 1, 1, 1]), &text[10..20]));
    bytes.extend(masked(0x9, b"between"));
    bytes.extend(masked(0x0, &text[20..]));
    ws.send_raw(&bytes);
    let mut got_pong_frame = false;
    let mut got_pong_json = false;
    for _ in 0..2 {
        match ws.recv_frame(EVENT_TIMEOUT) {
            Some(Frame::Pong(p)) => {
                assert_eq!(p, b"between".to_vec());
                got_pong_frame = true;
            }
            Some(Frame::Text(t)) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                assert_eq!(v["type"], json!("pong"), "{v}");
                assert_eq!(v["reply_to"], json!(11), "{v}");
                assert_eq!(v["note"], json!("in pieces"), "{v}");
                got_pong_json = true;
            }
            other => panic!("expected pongs, got {other:?}"),
        }
    }
    assert!(got_pong_frame && got_pong_json);

    // 15,000 bytes in one frame: under the 16 KiB limit.
    let pad = filler(15_000);
    ws.send_json(&json!({"id": 12, "type": "ping", "pad": pad}));
    let pong = ws.recv();
    assert_eq!(pong["reply_to"], json!(12), "{}", pong["type"]);
    assert_eq!(pong["pad"], json!(pad));
    ws.expect_no_event(QUIET);
}

/// PROTOCOL.md: a pong is `{"type":"pong","reply_to":N,…}` echoing the
/// ping's other fields. The ping's own `reply_to` (a client mirroring a
/// server message back, or one that wants to fool a reply-matcher like the
/// Node SDK's) must not replace ours, and without an `id` there is no
/// `reply_to` at all: it is always the number of the ping it answers.
#[test]
fn a_pings_own_reply_to_never_overrides_the_servers() {
    let server = Server::start();
    let u = server.admin.create_user("mirror");
    let mut ws = server.connect(&u.id).named("mirror");

    ws.send_json(&json!({"id": 5, "type": "ping", "reply_to": 999, "note": "x"}));
    let pong = ws.recv();
    assert_eq!(pong, json!({"type": "pong", "reply_to": 5, "note": "x"}));

    ws.send_json(&json!({"id": 6, "reply_to": {"forged": true}, "type": "ping"}));
    let pong = ws.recv();
    assert_eq!(pong, json!({"type": "pong", "reply_to": 6}));

    ws.send_json(&json!({"type": "ping", "reply_to": "spoof", "time": 1}));
    let pong = ws.recv();
    assert_eq!(pong, json!({"type": "pong", "time": 1}));
    ws.expect_no_event(QUIET);
}

fn assert_error_reply(v: &Value, id: u64, code: u64, what: &str) {
    assert_eq!(v["ok"], json!(false), "{what}: {v}");
    assert_eq!(v["reply_to"], json!(id), "{what}: {v}");
    assert_eq!(v["error"]["code"], json!(code), "{what}: {v}");
    assert!(v["error"]["msg"].is_string(), "{what}: error.msg: {v}");
}

fn assert_error_event(v: &Value, code: u64, what: &str) {
    assert_eq!(v["type"], json!("error"), "{what}: {v}");
    assert!(
        v.get("reply_to").is_none(),
        "{what}: no id, so no reply_to: {v}"
    );
    assert_eq!(v["error"]["code"], json!(code), "{what}: {v}");
    assert!(v["error"]["msg"].is_string(), "{what}: error.msg: {v}");
}

#[test]
fn bad_messages_get_errors_and_the_connection_stays_open() {
    let server = Server::start();
    let mut bystander = Bystander::new(&server);
    let admin = &server.admin;
    let v = admin.create_user("clumsy");
    let own = admin.create_channel("clumsy-room");
    admin.add_member(&own, &v.id);
    let lobby = bystander.channel.clone();

    let too_many: Vec<String> = (0..501).map(|i| format!("UZZ{i:08}")).collect();
    // (what, frame text, Some(id) for the reply form, code)
    let cases: Vec<(&str, String, Option<u64>, u64)> = vec![
        (
            "message without text",
            json!({"id": 1, "type": "message", "channel": own}).to_string(),
            Some(1),
            2,
        ),
        (
            "message without text, no id",
            json!({"type": "message", "channel": own}).to_string(),
            None,
            2,
        ),
        (
            "invalid JSON",
            "{\"id\": 2, \"type\": \"ping\"".to_string(),
            None,
            3,
        ),
        ("not JSON at all", "hello there".to_string(), None, 3),
        (
            "unsupported type",
            json!({"id": 3, "type": "teleport"}).to_string(),
            Some(3),
            4,
        ),
        (
            "unsupported type, no id",
            json!({"type": "teleport"}).to_string(),
            None,
            4,
        ),
        (
            "unknown channel",
            json!({"id": 4, "type": "message", "channel": "CZZZZZZZZZ0", "text": "x"}).to_string(),
            Some(4),
            5,
        ),
        (
            "not in channel",
            json!({"id": 5, "type": "message", "channel": lobby, "text": "x"}).to_string(),
            Some(5),
            6,
        ),
        (
            "message without channel",
            json!({"id": 6, "type": "message", "text": "x"}).to_string(),
            Some(6),
            7,
        ),
        (
            "typing without channel",
            json!({"id": 7, "type": "typing"}).to_string(),
            Some(7),
            7,
        ),
        (
            "presence_sub with 501 ids",
            json!({"id": 8, "type": "presence_sub", "ids": too_many}).to_string(),
            Some(8),
            8,
        ),
        (
            "presence_query with 501 ids, no id",
            json!({"type": "presence_query", "ids": too_many}).to_string(),
            None,
            8,
        ),
    ];
    let mut open = Vec::new();
    for (what, text, id, code) in cases {
        let mut ws = server.connect(&v.id).named(what);
        ws.send_text(&text);
        let reply = ws.recv();
        match id {
            Some(id) => assert_error_reply(&reply, id, code, what),
            None => assert_error_event(&reply, code, what),
        }
        bystander.still_served(&server, what);
        open.push(ws);
    }
    // Every one of them is still open and answering.
    for ws in open.iter_mut() {
        ws.expect_no_event(Duration::from_millis(20));
        ws.ping_roundtrip();
    }
    // Nothing reached the lobby from the refused message.
    bystander.ws.expect_no_event(QUIET);
    // A good message on one of them still works.
    let ws = &mut open[0];
    ws.send_json(&json!({"id": 99, "type": "message", "channel": own, "text": "finally"}));
    let mut saw = 0;
    for _ in 0..2 {
        let f = ws.recv();
        if f.get("reply_to").is_some() {
            assert_eq!(f["ok"], json!(true), "{f}");
        } else {
            assert_eq!(f["text"], json!("finally"), "{f}");
        }
        saw += 1;
    }
    assert_eq!(saw, 2);
}

/// Connects with `url`; the handshake completes, then error code 1 and close 4500.
fn assert_ticket_refused(url: &str, what: &str) {
    let mut ws = Ws::connect_no_hello(url).named(what);
    let ev = ws.recv();
    assert_eq!(
        ev["type"],
        json!("error"),
        "{what}: expected an error, got {ev}"
    );
    assert_eq!(ev["error"]["code"], json!(1), "{what}: {ev}");
    assert!(ev["error"]["msg"].is_string(), "{what}: {ev}");
    ws.expect_close(4500, EVENT_TIMEOUT);
}

#[test]
fn bad_tickets_get_error_1_and_close_4500() {
    let server = Server::start();
    let mut bystander = Bystander::new(&server);
    let v = server.admin.create_user("ticketed");

    // Not a ticket at all.
    let url = server.ticket(&v.id);
    let (base, ticket) = url.rsplit_once('/').unwrap();
    assert!(
        !ticket.is_empty(),
        "ticket url has an empty last segment: {url}"
    );
    assert_ticket_refused(&format!("{base}/not-a-ticket"), "garbage ticket");
    bystander.still_served(&server, "garbage ticket");

    // A real ticket with one character changed.
    let mut chars: Vec<char> = ticket.chars().collect();
    let mid = chars.len() / 2;
    chars[mid] = if chars[mid] == 'A' { 'B' } else { 'A' };
    let tampered: String = chars.into_iter().collect();
    assert_ticket_refused(&format!("{base}/{tampered}"), "tampered ticket");
    bystander.still_served(&server, "tampered ticket");

    // A ticket used twice: the first use works, the second is refused.
    let url = server.ticket(&v.id);
    let mut first = Ws::connect(&url).named("first use");
    assert_ticket_refused(&url, "reused ticket");
    bystander.still_served(&server, "reused ticket");
    first.ping_roundtrip();

    // Resuming does not make a used ticket valid again.
    assert_ticket_refused(
        &with_since(&url, "1700000000.000001"),
        "reused ticket with since",
    );
    bystander.still_served(&server, "reused ticket with since");
}

/// Sends `request` raw to the gateway; expects 400 or 426 and then EOF.
fn assert_handshake_refused(server: &Server, request: &[u8], what: &str) {
    let mut s = TcpStream::connect_timeout(&server.gateway, Duration::from_secs(10)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s.write_all(request).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut closed = false;
    while Instant::now() < deadline && buf.len() < 1 << 20 {
        match s.read(&mut chunk) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) if !buf.is_empty() => {
                // A reset after the answer also closes the socket.
                let _ = e;
                closed = true;
                break;
            }
            Err(e) => panic!("{what}: read failed before any answer: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let status_line = text.lines().next().unwrap_or("");
    let status = status_line.split(' ').nth(1).unwrap_or("");
    assert!(
        status_line.starts_with("HTTP/1.") && (status == "400" || status == "426"),
        "{what}: expected HTTP 400 or 426, got {text:?}"
    );
    assert!(
        closed,
        "{what}: the server answered {status} but did not close the socket within 5 s"
    );
}

#[test]
fn non_websocket_handshakes_get_400_and_close() {
    let server = Server::start();
    let mut bystander = Bystander::new(&server);
    let v = server.admin.create_user("plain");
    let host = server.gateway.to_string();

    let url = server.ticket(&v.id);
    let path = format!("/{}", url.splitn(4, '/').nth(3).unwrap());
    let plain_get = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    assert_handshake_refused(&server, plain_get.as_bytes(), "GET without Upgrade");
    bystander.still_served(&server, "GET without Upgrade");

    let url = server.ticket(&v.id);
    let path = format!("/{}", url.splitn(4, '/').nth(3).unwrap());
    let no_key = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    assert_handshake_refused(
        &server,
        no_key.as_bytes(),
        "upgrade without Sec-WebSocket-Key",
    );
    bystander.still_served(&server, "upgrade without key");

    assert_handshake_refused(&server, b"THIS IS NOT HTTP\r\n\r\n", "garbage request line");
    bystander.still_served(&server, "garbage request line");

    assert_handshake_refused(
        &server,
        b"POST /websocket/x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
        "POST",
    );
    bystander.still_served(&server, "POST");
}

/// How long an answer that needs no body may take: generous, not a speed
/// assertion. A server that waited for the body would answer only at its
/// 60 s idle timeout.
const PROMPT: Duration = Duration::from_secs(5);

/// Sends a request `head` that announces a body and never sends it;
/// expects a prompt Web API answer `want`, with the connection closed
/// rather than kept for the body.
fn assert_refused_before_the_body(server: &Server, head: &str, want: &Value) {
    let mut conn = send_raw(server.api, head.as_bytes(), PROMPT);
    let r = read_http_response_from(&mut conn, PROMPT)
        .unwrap_or_else(|e| panic!("{want}: {e}: the server waits for the body"));
    assert_eq!((r.status, r.json()), (200, want.clone()), "{head}");
    assert_eq!(r.header("connection"), Some("close"), "{want}");
    assert!(
        closed_by_server(&mut conn),
        "{want}: the server keeps the connection open for the body"
    );
}

#[test]
fn web_api_bodies_are_read_only_after_their_token_is_checked() {
    let server = Server::start();
    let api = server.api;
    let alice = server.admin.create_user("alice");

    // A bad Bearer token: invalid_auth from the head alone.
    let head = format!(
        "POST /api/chat.postMessage HTTP/1.1\r\nHost: {api}\r\n\
         Authorization: Bearer xoxp-U0000000000-0bad\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000000\r\n\r\n"
    );
    assert_refused_before_the_body(
        &server,
        &head,
        &json!({"ok": false, "error": "invalid_auth"}),
    );

    // Without the header only the body can name the token, so it is read,
    // but under the tokenless bound: 100 kB announced is refused at once.
    let head = format!(
        "POST /api/auth.test HTTP/1.1\r\nHost: {api}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\n"
    );
    assert_refused_before_the_body(
        &server,
        &head,
        &json!({"ok": false, "error": "request_too_large"}),
    );

    // After a good Bearer token the same 100 kB is read whole.
    let auth = format!("Bearer {}", alice.token);
    let pad = format!("pad={}", "x".repeat(100_000 - 4));
    let form = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    let r = http_request(api, "POST", "/api/auth.test", &form, Some(pad.as_bytes()));
    assert_eq!(r.json()["user_id"], json!(alice.id), "{}", r.text());
    // And a token in a small body still works.
    let body = format!("token={}", alice.token);
    let r = http_request(
        api,
        "POST",
        "/api/auth.test",
        &form[1..],
        Some(body.as_bytes()),
    );
    assert_eq!(r.json()["user_id"], json!(alice.id), "{}", r.text());
}

/// Opens connections to `addr` that each send `request` and stay open,
/// while the server answers `held` (taken); stops once 24 in a row were
/// refused with 503. Returns the held connections and the last refusal.
fn flood(addr: SocketAddr, request: &str, held: u16) -> (Vec<BufReader<TcpStream>>, HttpResponse) {
    let mut conns = Vec::new();
    let mut refused_in_a_row = 0;
    let mut refusal = None;
    while refused_in_a_row < 24 {
        assert!(
            conns.len() < 2000,
            "{} unauthenticated connections hold what they were sent and none \
             was refused: unauthenticated memory is not bounded",
            conns.len()
        );
        let mut conn = send_raw(addr, request.as_bytes(), HTTP_TIMEOUT);
        let r = read_http_response_from(&mut conn, HTTP_TIMEOUT).unwrap();
        if r.status == held {
            conns.push(conn);
            refused_in_a_row = 0;
        } else {
            assert_eq!(r.status, 503, "{request:?}: {}", r.text());
            refused_in_a_row += 1;
            refusal = Some(r);
        }
    }
    (conns, refusal.unwrap())
}

#[test]
fn unauthenticated_memory_is_bounded_per_shard_and_authenticated_clients_keep_their_service() {
    // 1 MiB per shard: a few dozen held requests spend it.
    let server = Server::start_with(&["--max-unauthenticated-bytes", "1048576"]);
    let admin_auth = format!("Bearer {}", server.admin.token.as_deref().unwrap());
    let alice = server.admin.create_user("alice");
    let channel = server.admin.create_channel("calm");
    server.admin.add_member(&channel, &alice.id);
    let mut ws = server.connect(&alice.id).named("alice");
    // Clients that authenticated before the flood, over several
    // connections (SO_REUSEPORT spreads them over the shards).
    let mut webs: Vec<WebApi> = (0..4).map(|_| WebApi::new(&server)).collect();
    for web in &mut webs {
        web.ok(&alice.token, "auth.test", json!({}));
    }
    let mut backend = KeepAlive::new(server.admin.addr);
    let mut admin_call = |method: &str, path: &str, body: Option<Value>| {
        let body = body.map(|b| b.to_string());
        let auth = [("Authorization", admin_auth.as_str())];
        let r = backend
            .request(method, path, &auth, body.as_ref().map(|b| b.as_bytes()))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_eq!(r.status, 200, "{method} {path}: {}", r.text());
        r.json()
    };
    admin_call("GET", "/v1/ring", None);

    // The flood, in three waves, from the largest holders to the smallest.
    // Each new connection lands on either shard, so an HTTP wave has spent
    // both once many in a row are refused.
    // First, tokenless requests that announce a 16 KiB body (the most a
    // tokenless body may be) and never send it; `Expect: 100-continue`
    // makes the server say at once whether it took one (100) or not (503).
    let api = server.api;
    let hold_body = format!(
        "POST /api/api.test HTTP/1.1\r\nHost: {api}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 16384\r\n\
         Expect: 100-continue\r\n\r\n"
    );
    let (mut held, refusal) = flood(api, &hold_body, 100);
    // Then idle keep-alive connections that never authenticated, until not
    // even a bare HTTP connection fits.
    let idle = format!("GET /api/api.test HTTP/1.1\r\nHost: {api}\r\n\r\n");
    let (idle_held, _) = flood(api, &idle, 200);
    held.extend(idle_held);
    // Last, websocket upgrade requests that never end: each takes less than
    // an HTTP connection, and a shard's last few KiB go to the first few.
    // (They are answered 503 or not at all, so they are not counted.)
    let partial = format!("GET /websocket/x HTTP/1.1\r\nHost: {}\r\n", server.gateway);
    let partial_upgrades: Vec<_> = (0..40)
        .map(|_| send_raw(server.gateway, partial.as_bytes(), HTTP_TIMEOUT))
        .collect();
    assert_eq!(refusal.json(), json!({"ok": false, "error": "server_busy"}));
    let retry = refusal
        .header("retry-after")
        .and_then(|v| v.parse::<u64>().ok());
    assert!(retry.is_some_and(|s| s >= 1), "Retry-After: {retry:?}");
    assert_eq!(refusal.header("connection"), Some("close"));

    // New connections are refused on every listener, a good token or not:
    // reading even a good request's head takes memory.
    let auth = [("Authorization", admin_auth.as_str())];
    let r = try_http_request(server.admin.addr, "GET", "/v1/ring", &auth, None).unwrap();
    assert_eq!(r.status, 503, "admin: {}", r.text());
    let url = admin_call("POST", "/v1/tickets", Some(json!({"user": alice.id})))["url"]
        .as_str()
        .unwrap()
        .to_string();
    let err = Ws::try_connect(&url, Duration::from_secs(10))
        .err()
        .expect("a websocket handshake while the budget is spent");
    assert!(err.contains("503"), "websocket: {err}");

    // Connections that authenticated are served, bodies included: a body
    // read after its token is checked costs the budget nothing.
    let pad = "x".repeat(100_000);
    for web in &mut webs {
        let v = web.ok(&alice.token, "auth.test", json!({"pad": pad}));
        assert_eq!(v["user_id"], json!(alice.id));
    }
    let event = json!({"type": "message", "user": alice.id, "text": "still here"});
    admin_call(
        "POST",
        "/v1/publish",
        Some(json!({"channel": channel, "event": event})),
    );
    assert_eq!(ws.recv()["text"], json!("still here"));

    // Closing the held requests gives the budget back: new connections are
    // served again on both shards.
    drop((held, partial_upgrades));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut served_in_a_row = 0;
    while served_in_a_row < 8 {
        match try_http_request(server.api, "GET", "/api/api.test", &[], None) {
            Ok(r) if r.status == 200 => served_in_a_row += 1,
            other => {
                served_in_a_row = 0;
                let what = other.map_or_else(|e| e, |r| format!("{} {}", r.status, r.text()));
                assert!(
                    Instant::now() < deadline,
                    "still refused 10 s after the held requests closed: {what}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    let mut again = server.connect(&alice.id).named("alice again");
    again.ping_roundtrip();
    ws.ping_roundtrip();
}
