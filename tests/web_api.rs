//! The Slack Web API (`/api/<method>`) over real HTTP against the real
//! binary: every method's success path and error codes, the envelope rules
//! (GET with a query string, form body, JSON body, an empty body labelled
//! JSON, Bearer or `token` parameter, unknown methods, bad tokens,
//! malformed bodies), rate limiting, and that refused input changes
//! nothing.
//!
//! The requests are written by hand here (std::net, through the harness's
//! HTTP helpers): form bodies the way the Node SDK sends them (values as
//! text, `blocks` JSON-encoded), JSON bodies the way the Python SDK sends
//! chat.postMessage.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------
// A small Web API client
// ---------------------------------------------------------------------------

fn api_addr(server: &Server) -> SocketAddr {
    let rest = server
        .api_url
        .strip_prefix("http://")
        .expect("api url is http://");
    rest.split('/')
        .next()
        .unwrap()
        .parse()
        .expect("api host:port")
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A JSON object as a form, the Node SDK's way: strings as they are, other
/// scalars written out, arrays and objects JSON-encoded.
fn form_of(args: &Value) -> String {
    let Some(obj) = args.as_object() else {
        panic!("args must be an object: {args}")
    };
    obj.iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Array(_) | Value::Object(_) => v.to_string(),
                other => other.to_string(),
            };
            format!("{}={}", enc(k), enc(&v))
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[derive(Clone, Copy)]
enum Style {
    /// `application/x-www-form-urlencoded` body.
    Form,
    /// `application/json` body.
    Json,
    /// GET with a query string.
    Get,
}

struct Web {
    addr: SocketAddr,
}

impl Web {
    fn new(server: &Server) -> Web {
        Web {
            addr: api_addr(server),
        }
    }

    /// One raw exchange with `/api/<method><query>`.
    fn raw(
        &self,
        http_method: &str,
        method_and_query: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> HttpResponse {
        http_request(
            self.addr,
            http_method,
            &format!("/api/{method_and_query}"),
            headers,
            body,
        )
    }

    /// Calls `method` with `args` in the given style, the token as a Bearer
    /// header (`None`: no token at all). Asserts HTTP 200 and JSON with a
    /// boolean `ok`.
    #[track_caller]
    fn call_as(&self, style: Style, token: Option<&str>, method: &str, args: &Value) -> Value {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(a) = &auth {
            headers.push(("Authorization", a));
        }
        let resp = match style {
            Style::Form => {
                headers.push(("Content-Type", "application/x-www-form-urlencoded"));
                let body = form_of(args);
                self.raw("POST", method, &headers, Some(body.as_bytes()))
            }
            Style::Json => {
                headers.push(("Content-Type", "application/json; charset=utf-8"));
                let body = args.to_string();
                self.raw("POST", method, &headers, Some(body.as_bytes()))
            }
            Style::Get => {
                let q = form_of(args);
                let path = if q.is_empty() {
                    method.to_string()
                } else {
                    format!("{method}?{q}")
                };
                self.raw("GET", &path, &headers, None)
            }
        };
        envelope(&resp, method)
    }

    /// A form call that must succeed.
    #[track_caller]
    fn ok(&self, token: &str, method: &str, args: Value) -> Value {
        self.ok_as(Style::Form, token, method, args)
    }

    #[track_caller]
    fn ok_as(&self, style: Style, token: &str, method: &str, args: Value) -> Value {
        let v = self.call_as(style, Some(token), method, &args);
        assert_eq!(
            v["ok"],
            json!(true),
            "{method} {}: expected ok, got {}",
            shorten(&args.to_string()),
            shorten(&v.to_string())
        );
        v
    }

    /// A form call that must fail; its error code.
    #[track_caller]
    fn err(&self, token: &str, method: &str, args: Value) -> String {
        self.err_as(Style::Form, token, method, args)
    }

    #[track_caller]
    fn err_as(&self, style: Style, token: &str, method: &str, args: Value) -> String {
        let v = self.call_as(style, Some(token), method, &args);
        error_code(&v, method)
    }
}

/// Checks Slack's envelope: HTTP 200, JSON, a boolean `ok`.
#[track_caller]
fn envelope(resp: &HttpResponse, what: &str) -> Value {
    assert_eq!(
        resp.status,
        200,
        "{what}: application answers are HTTP 200; got {} {}",
        resp.status,
        shorten(&resp.text())
    );
    assert!(
        resp.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{what}: content-type {:?}",
        resp.header("content-type")
    );
    let v = resp.json();
    assert!(v["ok"].is_boolean(), "{what}: no boolean ok: {v}");
    v
}

#[track_caller]
fn error_code(v: &Value, what: &str) -> String {
    assert_eq!(v["ok"], json!(false), "{what}: expected an error, got {v}");
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: error without a code: {v}"))
        .to_string()
}

/// The `ts` strings of a list of messages.
fn tss(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a message list: {v}"))
        .iter()
        .map(|m| s(m, "ts").to_string())
        .collect()
}

fn texts(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a message list: {v}"))
        .iter()
        .map(|m| s(m, "text").to_string())
        .collect()
}

/// Reads frames until one matches `pred` (others are skipped), bounded.
#[track_caller]
fn wait_event(ws: &mut Ws, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    let mut skipped = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match ws.try_recv_json(left.max(Duration::from_millis(1))) {
            Some(v) if pred(&v) => return v,
            Some(v) => skipped.push(shorten(&v.to_string())),
            None => panic!(
                "{}: no {what} within {EVENT_TIMEOUT:?}; skipped: {skipped:#?}",
                ws.name
            ),
        }
    }
}

fn create_private_channel(admin: &Admin, name: &str) -> String {
    let v = admin.ok(
        "POST",
        "/v1/channels",
        Some(&json!({"name": name, "private": true})),
    );
    v["channel"]["id"].as_str().unwrap().to_string()
}

/// The whole history of `channel` as `user` sees it (one page of 1000).
#[track_caller]
fn history(web: &Web, token: &str, channel: &str) -> Value {
    web.ok_as(
        Style::Get,
        token,
        "conversations.history",
        json!({"channel": channel, "limit": 1000}),
    )
}

// ---------------------------------------------------------------------------
// Envelope (none of these needs a valid token)
// ---------------------------------------------------------------------------

#[test]
fn envelope_rules() {
    let server = Server::start();
    let web = Web::new(&server);

    // api.test in every style; it echoes its arguments (never the token).
    let v = web.call_as(
        Style::Get,
        None,
        "api.test",
        &json!({"foo": "bar", "token": "t"}),
    );
    assert_eq!(v, json!({"ok": true, "args": {"foo": "bar"}}));
    let v = web.call_as(Style::Form, None, "api.test", &json!({"foo": "a b&c"}));
    assert_eq!(v["args"], json!({"foo": "a b&c"}));
    let v = web.call_as(Style::Json, None, "api.test", &json!({"n": 1, "l": [1, 2]}));
    assert_eq!(v["args"], json!({"n": 1, "l": [1, 2]}));
    // api.test's error argument fails the call with that code.
    let v = web.call_as(Style::Form, None, "api.test", &json!({"error": "my_error"}));
    assert_eq!(error_code(&v, "api.test"), "my_error");

    // An empty body is no parameters, whatever its Content-Type.
    for ct in [
        "application/json",
        "application/json; charset=utf-8",
        "application/x-www-form-urlencoded",
        "text/plain",
        "application/octet-stream",
    ] {
        let r = web.raw("POST", "api.test", &[("Content-Type", ct)], Some(b""));
        assert_eq!(envelope(&r, ct), json!({"ok": true}), "{ct}");
        // The same for a method that needs a token: not_authed, not a
        // complaint about the body.
        let r = web.raw("POST", "auth.test", &[("Content-Type", ct)], Some(b""));
        assert_eq!(error_code(&envelope(&r, ct), ct), "not_authed", "{ct}");
    }

    // No token at all: not_authed, in every style.
    for style in [Style::Get, Style::Form, Style::Json] {
        let v = web.call_as(style, None, "auth.test", &json!({}));
        assert_eq!(error_code(&v, "auth.test"), "not_authed");
        let v = web.call_as(
            style,
            None,
            "conversations.history",
            &json!({"channel": "C1"}),
        );
        assert_eq!(error_code(&v, "conversations.history"), "not_authed");
    }
    let r = web.raw(
        "POST",
        "auth.test",
        &[("Authorization", "Bearer ")],
        Some(b""),
    );
    assert_eq!(error_code(&envelope(&r, "empty bearer"), "x"), "not_authed");

    // Unknown methods, with or without a token.
    for token in [None, Some("xoxp-whatever")] {
        let v = web.call_as(Style::Form, token, "chat.noSuchMethod", &json!({}));
        assert_eq!(error_code(&v, "unknown"), "unknown_method");
    }
    let v = web.call_as(Style::Get, None, "", &json!({}));
    assert_eq!(error_code(&v, "empty method"), "unknown_method");
    // Outside /api/ is not the Web API.
    let r = http_request(web.addr, "GET", "/nothing", &[], None);
    assert_eq!(r.status, 404);

    // Malformed bodies get Slack's codes, as HTTP 200.
    let cases: &[(Option<&str>, &[u8], &str)] = &[
        (Some("application/json"), b"{\"channel\":", "invalid_json"),
        (Some("application/json"), b"[1,2,3]", "json_not_object"),
        (Some("application/json"), b"\xff\xfe", "invalid_json"),
        (
            Some("application/x-www-form-urlencoded"),
            b"channel=%zz",
            "invalid_form_data",
        ),
        (
            Some("application/x-www-form-urlencoded"),
            b"text=%C3%28",
            "invalid_form_data",
        ),
        (
            Some("multipart/form-data; boundary=x"),
            b"garbage",
            "invalid_form_data",
        ),
        (None, b"channel=C1", "missing_post_type"),
        (Some("application/xml"), b"<a/>", "invalid_post_type"),
        (
            Some("application/x-www-form-urlencoded; charset=koi8-r"),
            b"a=1",
            "invalid_charset",
        ),
    ];
    // A real token: a bad one is refused before its body is read.
    let auth = format!("Bearer {}", server.admin.create_user("parser").token);
    for (ct, body, want) in cases {
        let mut headers = vec![("Authorization", auth.as_str())];
        if let Some(ct) = ct {
            headers.push(("Content-Type", ct));
        }
        let r = web.raw("POST", "chat.postMessage", &headers, Some(body));
        let what = format!("{ct:?} {:?}", String::from_utf8_lossy(body));
        assert_eq!(error_code(&envelope(&r, &what), &what), *want, "{what}");
    }
    // A malformed query string too.
    let r = web.raw("GET", "api.test?a=%", &[], None);
    assert_eq!(
        error_code(&envelope(&r, "query"), "query"),
        "invalid_form_data"
    );

    // An oversized body (declared; refused before it is read): still 200,
    // still JSON.
    let stream = TcpStream::connect(web.addr).unwrap();
    stream.set_read_timeout(Some(HTTP_TIMEOUT)).unwrap();
    (&stream)
        .write_all(
            b"POST /api/api.test HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
              Content-Type: application/x-www-form-urlencoded\r\n\
              Content-Length: 2097152\r\n\r\na=aaaa",
        )
        .unwrap();
    let r = read_http_response(stream).unwrap();
    assert_eq!(error_code(&envelope(&r, "big"), "big"), "request_too_large");

    // Multipart fields are parameters.
    let body = "--B0\r\nContent-Disposition: form-data; name=\"k\"\r\n\r\nv\r\n--B0--\r\n";
    let r = web.raw(
        "POST",
        "api.test",
        &[("Content-Type", "multipart/form-data; boundary=B0")],
        Some(body.as_bytes()),
    );
    assert_eq!(envelope(&r, "multipart")["args"], json!({"k": "v"}));

    // Still serving.
    let h = http_request(server.admin.addr, "GET", "/healthz", &[], None);
    assert_eq!(h.status, 200);
}

#[test]
fn rate_limit_answers_429_with_retry_after() {
    let server = Server::start();
    let addr = api_addr(&server);
    // One keep-alive connection stays on one shard: its bucket for this
    // token is drained far faster than it refills.
    let mut http = KeepAlive::new(addr);
    let token = format!("rl-{}", unique());
    let path = format!("/api/api.test?token={token}");
    let mut oks = 0;
    let mut limited = None;
    for _ in 0..5000 {
        let r = http
            .request("GET", &path, &[], None)
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        match r.status {
            200 => oks += 1,
            429 => {
                limited = Some(r);
                break;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(http.connects, 1, "the keep-alive connection was not kept");
    let limited = limited.expect("no 429 after 5000 requests");
    assert!(oks >= 150, "limited after only {oks} requests");
    let retry: u64 = limited
        .header("retry-after")
        .map(|v| v.parse().expect("Retry-After in whole seconds"))
        .expect("429 without Retry-After");
    assert!(retry >= 1);
    let v: Value = serde_json::from_slice(&limited.body).unwrap();
    assert_eq!(v, json!({"ok": false, "error": "ratelimited"}));
    // Another token is not limited.
    let v = envelope(
        &http_request(addr, "GET", "/api/api.test?token=someone-else", &[], None),
        "other token",
    );
    assert_eq!(v["ok"], json!(true));
}

// ---------------------------------------------------------------------------
// auth.test, rtm.connect
// ---------------------------------------------------------------------------

#[test]
fn auth_test_and_rtm_connect() {
    let server = Server::start();
    let web = Web::new(&server);
    let alice = server.admin.create_user("alice");
    let bot = server.admin.ok(
        "POST",
        "/v1/users",
        Some(&json!({"name": "robot", "bot": true})),
    );
    let bot_id = bot["user"]["id"].as_str().unwrap().to_string();
    let bot_token = bot["token"].as_str().unwrap().to_string();

    // Bearer header, in every style.
    let mut teams = Vec::new();
    for style in [Style::Get, Style::Form, Style::Json] {
        let a = web.ok_as(style, &alice.token, "auth.test", json!({}));
        assert_eq!(a["user_id"], json!(alice.id));
        assert_eq!(a["user"], json!("alice"));
        assert!(s(&a, "team_id").starts_with('T'), "{a}");
        assert!(
            !s(&a, "team").is_empty() && s(&a, "url").starts_with("http"),
            "{a}"
        );
        assert!(a.get("bot_id").is_none(), "a user token has no bot_id: {a}");
        teams.push(a["team_id"].clone());
    }
    // The token as a parameter: query string, form field, JSON field.
    for style in [Style::Get, Style::Form, Style::Json] {
        let v = web.call_as(style, None, "auth.test", &json!({"token": alice.token}));
        assert_eq!(v["user_id"], json!(alice.id), "{v}");
    }
    // An empty body labelled JSON, as the Python SDK sends auth.test.
    let auth = format!("Bearer {}", alice.token);
    let r = web.raw(
        "POST",
        "auth.test",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        Some(b""),
    );
    assert_eq!(envelope(&r, "empty json")["user_id"], json!(alice.id));

    let b = web.ok(&bot_token, "auth.test", json!({}));
    assert_eq!(b["user_id"], json!(bot_id));
    assert_eq!(b["team_id"], teams[0]);
    assert!(s(&b, "bot_id").starts_with('B'), "{b}");

    // Bad tokens.
    let tampered = {
        let mut t = alice.token.clone();
        let last = t.pop().unwrap();
        t.push(if last == '0' { '1' } else { '0' });
        t
    };
    for bad in [
        "xoxp-not-a-real-token",
        tampered.as_str(),
        "garbage",
        "xoxp-U0000000000-00",
    ] {
        assert_eq!(
            web.err(bad, "auth.test", json!({})),
            "invalid_auth",
            "{bad}"
        );
        let v = web.call_as(Style::Form, None, "auth.test", &json!({"token": bad}));
        assert_eq!(error_code(&v, bad), "invalid_auth");
        assert_eq!(
            web.err(bad, "conversations.list", json!({})),
            "invalid_auth"
        );
    }

    // rtm.connect: a working websocket URL and who we are.
    let team_id = teams[0].as_str().unwrap().to_string();
    for args in [
        json!({}),
        json!({"batch_presence_aware": true, "presence_sub": true}),
        json!({"batch_presence_aware": "1", "presence_sub": "0"}),
    ] {
        let r = web.ok(&alice.token, "rtm.connect", args);
        let url = s(&r, "url");
        assert!(url.starts_with("ws://"), "{r}");
        let path = url["ws://".len()..]
            .split_once('/')
            .map(|x| x.1)
            .unwrap_or("");
        assert!(!path.is_empty(), "the URL needs a non-empty path: {url}");
        assert_eq!(r["self"], json!({"id": alice.id, "name": "alice"}));
        assert_eq!(r["team"]["id"], json!(team_id));
        assert!(r["team"]["name"].is_string() && r["team"]["domain"].is_string());
    }
    // Without batch_presence_aware, presence_change names one user…
    let r = web.ok_as(Style::Json, &alice.token, "rtm.connect", json!({}));
    let mut ws = Ws::connect(s(&r, "url"));
    ws.send_json(&json!({"type": "presence_sub", "ids": [bot_id]}));
    let ev = wait_event(&mut ws, "presence_change", |e| {
        e["type"] == json!("presence_change")
    });
    assert_eq!(ev["user"], json!(bot_id), "{ev}");
    ws.close();
    // … with it, the batch form.
    let r = web.ok_as(
        Style::Json,
        &alice.token,
        "rtm.connect",
        json!({"batch_presence_aware": true}),
    );
    assert!(s(&r, "url").contains("batch_presence_aware=1"), "{r}");
    let mut ws = Ws::connect(s(&r, "url"));
    ws.send_json(&json!({"type": "presence_sub", "ids": [bot_id]}));
    let ev = wait_event(&mut ws, "presence_change", |e| {
        e["type"] == json!("presence_change")
    });
    assert_eq!(ev["users"], json!([bot_id]), "{ev}");
    ws.close();
    // since is passed through to the gateway.
    let r = web.ok(
        &alice.token,
        "rtm.connect",
        json!({"since": "1700000000.000100"}),
    );
    assert!(s(&r, "url").ends_with("since=1700000000.000100"), "{r}");
    let ws = Ws::connect(s(&r, "url"));
    ws.close();
    assert_eq!(
        web.err(&alice.token, "rtm.connect", json!({"since": "yesterday"})),
        "invalid_since"
    );
}

// ---------------------------------------------------------------------------
// chat.postMessage and conversations.history
// ---------------------------------------------------------------------------

#[test]
fn post_message_and_history() {
    let server = Server::start();
    let web = Web::new(&server);
    let admin = &server.admin;
    let alice = admin.create_user("alice");
    let bob = admin.create_user("bob");
    let outsider = admin.create_user("outsider");
    let channel = admin.create_channel("lobby");
    admin.add_member(&channel, &alice.id);
    admin.add_member(&channel, &bob.id);
    let other = admin.create_channel("elsewhere");
    let secret = create_private_channel(admin, "secret");
    admin.add_member(&secret, &alice.id);
    let mut bob_ws = server.connect(&bob.id).named("bob");
    let team = web.ok(&alice.token, "auth.test", json!({}))["team_id"].clone();

    // JSON body with blocks (the Python SDK's way).
    let blocks = json!([{"type": "section", "text": {"type": "mrkdwn", "text": "*bold*"}}]);
    let a = web.ok_as(
        Style::Json,
        &alice.token,
        "chat.postMessage",
        json!({"channel": channel, "text": "hello", "blocks": blocks}),
    );
    assert_eq!(a["channel"], json!(channel));
    let ts1 = s(&a, "ts").to_string();
    ts_micros(&ts1);
    let m = &a["message"];
    assert_eq!(m["type"], json!("message"));
    assert_eq!(m["user"], json!(alice.id));
    assert_eq!(m["text"], json!("hello"));
    assert_eq!(m["ts"], json!(ts1));
    assert_eq!(m["team"], team);
    assert_eq!(m["blocks"], blocks);
    // Delivered live to members.
    let ev = wait_event(&mut bob_ws, "the message", |e| e["ts"] == json!(ts1));
    assert_eq!(ev["text"], json!("hello"));
    assert_eq!(ev["channel"], json!(channel));

    // Form body, blocks JSON-encoded in a field (the Node SDK's way); by
    // name, with and without '#'.
    let b = web.ok(
        &alice.token,
        "chat.postMessage",
        json!({"channel": "lobby", "text": "by name", "blocks": blocks.to_string()}),
    );
    assert_eq!(b["channel"], json!(channel));
    assert_eq!(b["message"]["blocks"], blocks);
    let c = web.ok(
        &bob.token,
        "chat.postMessage",
        json!({"channel": "#lobby", "text": "hash name"}),
    );
    assert_eq!(c["channel"], json!(channel));
    assert!(ts_micros(s(&c, "ts")) > ts_micros(s(&b, "ts")));
    assert!(ts_micros(s(&b, "ts")) > ts_micros(&ts1));
    // Blocks alone are enough.
    web.ok(
        &alice.token,
        "chat.postMessage",
        json!({"channel": channel, "blocks": blocks.to_string()}),
    );
    // Exactly 40,000 characters is allowed (multi-byte ones count once).
    let longest = "é".repeat(40_000);
    web.ok_as(
        Style::Json,
        &alice.token,
        "chat.postMessage",
        json!({"channel": channel, "text": longest}),
    );

    let before = history(&web, &alice.token, &channel);
    assert_eq!(before["messages"].as_array().unwrap().len(), 5);

    // Errors, none of which posts anything.
    let e = |token: &str, args: Value| web.err(token, "chat.postMessage", args);
    assert_eq!(e(&alice.token, json!({"text": "x"})), "channel_not_found");
    assert_eq!(
        e(&alice.token, json!({"channel": "CNOSUCHCHAN", "text": "x"})),
        "channel_not_found"
    );
    assert_eq!(
        e(
            &alice.token,
            json!({"channel": "no-such-channel", "text": "x"})
        ),
        "channel_not_found"
    );
    assert_eq!(
        e(&alice.token, json!({"channel": other, "text": "x"})),
        "not_in_channel"
    );
    // A private channel does not exist for non-members.
    assert_eq!(
        e(&bob.token, json!({"channel": secret, "text": "x"})),
        "channel_not_found"
    );
    assert_eq!(
        e(&bob.token, json!({"channel": "secret", "text": "x"})),
        "channel_not_found"
    );
    assert_eq!(e(&alice.token, json!({"channel": channel})), "no_text");
    assert_eq!(
        e(&alice.token, json!({"channel": channel, "text": ""})),
        "no_text"
    );
    assert_eq!(
        e(&alice.token, json!({"channel": channel, "blocks": "[]"})),
        "no_text"
    );
    assert_eq!(
        e(
            &alice.token,
            json!({"channel": channel, "text": "x".repeat(40_001)})
        ),
        "msg_too_long"
    );
    assert_eq!(
        e(&alice.token, json!({"channel": channel, "blocks": "[{"})),
        "invalid_blocks_format"
    );
    assert_eq!(
        e(
            &alice.token,
            json!({"channel": channel, "blocks": "{\"a\":1}"})
        ),
        "invalid_blocks_format"
    );
    assert_eq!(
        e(
            &alice.token,
            json!({"channel": channel, "text": "x", "thread_ts": "not-a-ts"})
        ),
        "thread_not_found"
    );
    assert_eq!(
        e(
            &alice.token,
            json!({"channel": channel, "text": "x", "reply_broadcast": "maybe"})
        ),
        "invalid_arguments"
    );
    assert_eq!(
        history(&web, &alice.token, &channel)["messages"],
        before["messages"],
        "refused posts changed the history"
    );
    // And none reached a member.
    let mut seen = Vec::new();
    while let Some(v) = bob_ws.try_recv_json(QUIET) {
        seen.push(v);
    }
    let after_ts1: Vec<&Value> = seen
        .iter()
        .filter(|v| v["type"] == json!("message") && v["ts"].as_str() > Some(ts1.as_str()))
        .collect();
    assert_eq!(after_ts1.len(), 4, "only the 4 later posts: {seen:#?}");

    // History: newest first; pages with cursors; windows.
    let mut posted = vec![ts1.clone()];
    for m in before["messages"].as_array().unwrap().iter().rev().skip(1) {
        posted.push(s(m, "ts").to_string());
    }
    for i in 0..20 {
        let p = web.ok(
            &bob.token,
            "chat.postMessage",
            json!({"channel": channel, "text": format!("m{i:02}")}),
        );
        posted.push(s(&p, "ts").to_string());
    }
    let newest_first: Vec<String> = posted.iter().rev().cloned().collect();
    let h = history(&web, &bob.token, &channel);
    assert_eq!(tss(&h["messages"]), newest_first);
    assert_eq!(h["has_more"], json!(false));
    assert_eq!(h["response_metadata"]["next_cursor"], json!(""));
    assert_eq!(h["messages"][0]["text"], json!("m19"));
    assert_eq!(h["messages"][0]["user"], json!(bob.id));

    let (mut seen, mut cursor, mut sizes) = (Vec::new(), String::new(), Vec::new());
    loop {
        let mut args = json!({"channel": channel, "limit": 10});
        if !cursor.is_empty() {
            args["cursor"] = json!(cursor);
        }
        let page = web.ok_as(Style::Get, &alice.token, "conversations.history", args);
        sizes.push(page["messages"].as_array().unwrap().len());
        seen.extend(tss(&page["messages"]));
        cursor = s(&page["response_metadata"], "next_cursor").to_string();
        if page["has_more"] == json!(false) {
            assert_eq!(cursor, "");
            break;
        }
        assert!(!cursor.is_empty(), "has_more without a cursor");
        assert!(sizes.len() < 10, "pagination does not end");
    }
    assert_eq!(sizes, [10, 10, 5]);
    assert_eq!(seen, newest_first);

    let t = &posted;
    let win = |args: Value| {
        let mut a = args;
        a["channel"] = json!(channel);
        web.ok(&alice.token, "conversations.history", a)
    };
    let r = win(json!({"oldest": t[5], "latest": t[10]}));
    assert_eq!(
        tss(&r["messages"]),
        t[6..10].iter().rev().cloned().collect::<Vec<_>>()
    );
    let r = win(json!({"oldest": t[5], "latest": t[10], "inclusive": true}));
    assert_eq!(
        tss(&r["messages"]),
        t[5..11].iter().rev().cloned().collect::<Vec<_>>()
    );
    let r = win(json!({"oldest": t[5], "latest": t[10], "inclusive": "1", "limit": 2}));
    assert_eq!(tss(&r["messages"]), [t[10].clone(), t[9].clone()]);
    assert_eq!(r["has_more"], json!(true));
    let r = win(json!({"latest": t[2]}));
    assert_eq!(tss(&r["messages"]), [t[1].clone(), t[0].clone()]);
    let r = win(json!({"oldest": t[24]}));
    assert!(r["messages"].as_array().unwrap().is_empty());
    let r = win(json!({"oldest": "0"}));
    assert_eq!(r["messages"].as_array().unwrap().len(), 25);

    let he = |token: &str, args: Value| web.err(token, "conversations.history", args);
    assert_eq!(he(&alice.token, json!({})), "invalid_arguments");
    assert_eq!(
        he(&alice.token, json!({"channel": channel, "latest": "x"})),
        "invalid_ts_latest"
    );
    assert_eq!(
        he(&alice.token, json!({"channel": channel, "oldest": "1.2.3"})),
        "invalid_ts_oldest"
    );
    assert_eq!(
        he(
            &alice.token,
            json!({"channel": channel, "cursor": "bm9wZQ"})
        ),
        "invalid_cursor"
    );
    assert_eq!(
        he(&alice.token, json!({"channel": channel, "limit": "ten"})),
        "invalid_arguments"
    );
    assert_eq!(
        he(&outsider.token, json!({"channel": channel})),
        "not_in_channel"
    );
    assert_eq!(
        he(&bob.token, json!({"channel": secret})),
        "channel_not_found"
    );
    assert_eq!(
        he(&alice.token, json!({"channel": "CNOSUCHCHAN"})),
        "channel_not_found"
    );
    // The private channel's member reads it.
    web.ok(
        &alice.token,
        "chat.postMessage",
        json!({"channel": secret, "text": "shh"}),
    );
    assert_eq!(
        texts(&history(&web, &alice.token, &secret)["messages"]),
        ["shh"]
    );
}

// ---------------------------------------------------------------------------
// chat.update, chat.delete
// ---------------------------------------------------------------------------

#[test]
fn update_and_delete() {
    let server = Server::start();
    let web = Web::new(&server);
    let admin = &server.admin;
    let alice = admin.create_user("alice");
    let bob = admin.create_user("bob");
    let channel = admin.create_channel("room");
    admin.add_member(&channel, &alice.id);
    admin.add_member(&channel, &bob.id);
    let mut bob_ws = server.connect(&bob.id).named("bob");

    let keep = s(
        &web.ok(
            &alice.token,
            "chat.postMessage",
            json!({"channel": channel, "text": "keep"}),
        ),
        "ts",
    )
    .to_string();
    let ts = s(
        &web.ok(
            &alice.token,
            "chat.postMessage",
            json!({"channel": channel, "text": "before"}),
        ),
        "ts",
    )
    .to_string();
    let snapshot = history(&web, &alice.token, &channel)["messages"].clone();

    // Refused edits change nothing.
    let ue = |token: &str, args: Value| web.err(token, "chat.update", args);
    assert_eq!(
        ue(
            &bob.token,
            json!({"channel": channel, "ts": ts, "text": "hijack"})
        ),
        "cant_update_message"
    );
    assert_eq!(
        ue(
            &alice.token,
            json!({"channel": channel, "ts": "1000000000.000001", "text": "x"})
        ),
        "message_not_found"
    );
    assert_eq!(
        ue(
            &alice.token,
            json!({"channel": channel, "ts": "garbage", "text": "x"})
        ),
        "message_not_found"
    );
    assert_eq!(
        ue(&alice.token, json!({"channel": channel, "ts": ts})),
        "no_text"
    );
    assert_eq!(
        ue(
            &alice.token,
            json!({"channel": channel, "ts": ts, "text": "y".repeat(40_001)})
        ),
        "msg_too_long"
    );
    assert_eq!(
        ue(&alice.token, json!({"channel": channel, "text": "x"})),
        "invalid_arguments"
    );
    assert_eq!(
        ue(&alice.token, json!({"ts": ts, "text": "x"})),
        "invalid_arguments"
    );
    assert_eq!(
        ue(
            &alice.token,
            json!({"channel": "CNOSUCHCHAN", "ts": ts, "text": "x"})
        ),
        "channel_not_found"
    );
    assert_eq!(
        history(&web, &alice.token, &channel)["messages"],
        snapshot,
        "a refused chat.update changed the history"
    );

    // The author edits (JSON body, as Python sends it).
    let a = web.ok_as(
        Style::Json,
        &alice.token,
        "chat.update",
        json!({"channel": channel, "ts": ts, "text": "after"}),
    );
    assert_eq!(a["channel"], json!(channel));
    assert_eq!(a["ts"], json!(ts));
    assert_eq!(a["text"], json!("after"));
    assert_eq!(a["message"]["text"], json!("after"));
    let ev = wait_event(&mut bob_ws, "message_changed", |e| {
        e["subtype"] == json!("message_changed")
    });
    assert_eq!(ev["message"]["text"], json!("after"));
    let h = history(&web, &bob.token, &channel);
    assert_eq!(texts(&h["messages"]), ["after", "keep"]);
    let edited = &h["messages"][0]["edited"];
    assert_eq!(edited["user"], json!(alice.id), "{h}");
    ts_micros(s(edited, "ts"));

    // Deleting.
    let de = |token: &str, args: Value| web.err(token, "chat.delete", args);
    assert_eq!(
        de(&bob.token, json!({"channel": channel, "ts": ts})),
        "cant_delete_message"
    );
    assert_eq!(
        de(
            &alice.token,
            json!({"channel": channel, "ts": "1000000000.000001"})
        ),
        "message_not_found"
    );
    assert_eq!(
        de(&alice.token, json!({"channel": channel})),
        "invalid_arguments"
    );
    assert_eq!(
        texts(&history(&web, &bob.token, &channel)["messages"]),
        ["after", "keep"]
    );
    let d = web.ok(
        &alice.token,
        "chat.delete",
        json!({"channel": channel, "ts": ts}),
    );
    assert_eq!(d["channel"], json!(channel));
    assert_eq!(d["ts"], json!(ts));
    wait_event(&mut bob_ws, "message_deleted", |e| {
        e["subtype"] == json!("message_deleted") && e["deleted_ts"] == json!(ts)
    });
    assert_eq!(
        tss(&history(&web, &bob.token, &channel)["messages"]),
        [keep.as_str()]
    );
    assert_eq!(
        de(&alice.token, json!({"channel": channel, "ts": ts})),
        "message_not_found"
    );
    assert_eq!(
        ue(
            &alice.token,
            json!({"channel": channel, "ts": ts, "text": "zombie"})
        ),
        "message_not_found"
    );
}

// ---------------------------------------------------------------------------
// Threads
// ---------------------------------------------------------------------------

#[test]
fn threads_and_replies() {
    let server = Server::start();
    let web = Web::new(&server);
    let admin = &server.admin;
    let alice = admin.create_user("alice");
    let bob = admin.create_user("bob");
    let outsider = admin.create_user("outsider");
    let channel = admin.create_channel("threads");
    admin.add_member(&channel, &alice.id);
    admin.add_member(&channel, &bob.id);

    let post = |token: &str, args: Value| {
        let mut a = args;
        a["channel"] = json!(channel);
        web.ok(token, "chat.postMessage", a)
    };
    let parent = s(&post(&alice.token, json!({"text": "parent"})), "ts").to_string();
    let mut replies = Vec::new();
    for (token, text) in [(&bob.token, "r1"), (&alice.token, "r2"), (&bob.token, "r3")] {
        let a = post(token, json!({"text": text, "thread_ts": parent}));
        assert_eq!(a["message"]["thread_ts"], json!(parent), "{a}");
        replies.push(s(&a, "ts").to_string());
    }
    let r = web.ok(
        &alice.token,
        "conversations.replies",
        json!({"channel": channel, "ts": parent}),
    );
    let mut want = vec![parent.clone()];
    want.extend(replies.iter().cloned());
    assert_eq!(tss(&r["messages"]), want);
    assert_eq!(texts(&r["messages"]), ["parent", "r1", "r2", "r3"]);
    let head = &r["messages"][0];
    assert_eq!(head["thread_ts"], json!(parent));
    assert_eq!(head["reply_count"], json!(3));
    assert_eq!(head["reply_users_count"], json!(2));
    let mut ru: Vec<String> = head["reply_users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap().to_string())
        .collect();
    ru.sort();
    let mut both = vec![alice.id.clone(), bob.id.clone()];
    both.sort();
    assert_eq!(ru, both);
    assert_eq!(head["latest_reply"], json!(replies[2]));
    assert!(r["messages"].as_array().unwrap()[1..]
        .iter()
        .all(|m| m["thread_ts"] == json!(parent)));
    assert_eq!(r["has_more"], json!(false));
    assert_eq!(r["response_metadata"]["next_cursor"], json!(""));

    // A reply's ts names its thread too.
    let r2 = web.ok(
        &bob.token,
        "conversations.replies",
        json!({"channel": channel, "ts": replies[1]}),
    );
    assert_eq!(tss(&r2["messages"]), want);

    // Pages of 2 replies: the parent leads every page, every reply once.
    let (mut got, mut cursor, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let mut args = json!({"channel": channel, "ts": parent, "limit": 2});
        if !cursor.is_empty() {
            args["cursor"] = json!(cursor);
        }
        let p = web.ok_as(Style::Get, &alice.token, "conversations.replies", args);
        let t = tss(&p["messages"]);
        assert_eq!(t[0], parent);
        got.extend(t.into_iter().skip(1));
        cursor = s(&p["response_metadata"], "next_cursor").to_string();
        pages += 1;
        if p["has_more"] == json!(false) {
            break;
        }
        assert!(pages < 10);
    }
    assert_eq!(got, replies);
    assert_eq!(pages, 2);

    // History shows the parent with its summary, not the replies.
    let h = history(&web, &alice.token, &channel);
    assert_eq!(tss(&h["messages"]), [parent.as_str()]);
    assert_eq!(h["messages"][0]["reply_count"], json!(3));
    assert_eq!(h["messages"][0]["latest_reply"], json!(replies[2]));
    // A broadcast reply is in both.
    let b = post(
        &bob.token,
        json!({"text": "loud", "thread_ts": parent, "reply_broadcast": true}),
    );
    let h = history(&web, &alice.token, &channel);
    assert_eq!(
        tss(&h["messages"]),
        [s(&b, "ts").to_string(), parent.clone()]
    );

    // A message without replies is its own thread.
    let lone = s(&post(&alice.token, json!({"text": "lone"})), "ts").to_string();
    let r = web.ok(
        &alice.token,
        "conversations.replies",
        json!({"channel": channel, "ts": lone}),
    );
    assert_eq!(tss(&r["messages"]), [lone]);

    let re = |token: &str, args: Value| web.err(token, "conversations.replies", args);
    assert_eq!(
        re(
            &alice.token,
            json!({"channel": channel, "ts": "1000000000.000001"})
        ),
        "thread_not_found"
    );
    assert_eq!(
        re(&alice.token, json!({"channel": channel, "ts": "nope"})),
        "thread_not_found"
    );
    assert_eq!(
        re(&alice.token, json!({"channel": channel})),
        "invalid_arguments"
    );
    assert_eq!(
        re(&outsider.token, json!({"channel": channel, "ts": parent})),
        "not_in_channel"
    );
    assert_eq!(
        re(
            &alice.token,
            json!({"channel": channel, "ts": parent, "cursor": "xyz"})
        ),
        "invalid_cursor"
    );
    // A non-member learns nothing about the channel's messages.
    assert_eq!(
        web.err(
            &outsider.token,
            "chat.postMessage",
            json!({"channel": channel, "text": "x", "thread_ts": "1000000000.000001"})
        ),
        "not_in_channel"
    );
    // Replying to a reply replies to its thread: threads do not nest.
    let nested = post(
        &bob.token,
        json!({"text": "nested", "thread_ts": replies[0]}),
    );
    assert_eq!(nested["message"]["thread_ts"], json!(parent), "{nested}");
    let r = web.ok(
        &alice.token,
        "conversations.replies",
        json!({"channel": channel, "ts": parent}),
    );
    assert_eq!(
        texts(&r["messages"]).last().map(String::as_str),
        Some("nested")
    );
    // Replying to nothing.
    assert_eq!(
        web.err(
            &alice.token,
            "chat.postMessage",
            json!({"channel": channel, "text": "x", "thread_ts": "1000000000.000001"})
        ),
        "thread_not_found"
    );
}

// ---------------------------------------------------------------------------
// Reactions
// ---------------------------------------------------------------------------

#[test]
fn reactions() {
    let server = Server::start();
    let web = Web::new(&server);
    let admin = &server.admin;
    let alice = admin.create_user("alice");
    let bob = admin.create_user("bob");
    let outsider = admin.create_user("outsider");
    let channel = admin.create_channel("reacts");
    admin.add_member(&channel, &alice.id);
    admin.add_member(&channel, &bob.id);
    let mut bob_ws = server.connect(&bob.id).named("bob");
    let ts = s(
        &web.ok(
            &alice.token,
            "chat.postMessage",
            json!({"channel": channel, "text": "react"}),
        ),
        "ts",
    )
    .to_string();
    let reactions_of = || {
        let h = history(&web, &alice.token, &channel);
        h["messages"][0]
            .get("reactions")
            .cloned()
            .unwrap_or(json!([]))
    };
    let args = |name: &str| json!({"channel": channel, "timestamp": ts, "name": name});

    web.ok(&alice.token, "reactions.add", args("thumbsup"));
    let ev = wait_event(&mut bob_ws, "reaction_added", |e| {
        e["type"] == json!("reaction_added")
    });
    assert_eq!(ev["reaction"], json!("thumbsup"));
    assert_eq!(
        ev["item"],
        json!({"type": "message", "channel": channel, "ts": ts})
    );
    // Colons are stripped.
    web.ok_as(Style::Json, &bob.token, "reactions.add", args(":thumbsup:"));
    web.ok(&bob.token, "reactions.add", args("eyes"));
    assert_eq!(
        reactions_of(),
        json!([
            {"name": "thumbsup", "users": [alice.id, bob.id], "count": 2},
            {"name": "eyes", "users": [bob.id], "count": 1},
        ])
    );
    let snapshot = reactions_of();

    let e = |token: &str, method: &str, a: Value| web.err(token, method, a);
    assert_eq!(
        e(&alice.token, "reactions.add", args("thumbsup")),
        "already_reacted"
    );
    assert_eq!(
        e(&alice.token, "reactions.remove", args("eyes")),
        "no_reaction"
    );
    for bad in ["", "::", "Thumbs Up", "a:b", "<script>"] {
        assert_eq!(
            e(&alice.token, "reactions.add", args(bad)),
            "invalid_name",
            "{bad:?}"
        );
    }
    let missing = json!({"channel": channel, "timestamp": "1000000000.000001", "name": "eyes"});
    assert_eq!(
        e(&alice.token, "reactions.add", missing.clone()),
        "message_not_found"
    );
    assert_eq!(
        e(&alice.token, "reactions.remove", missing),
        "message_not_found"
    );
    assert_eq!(
        e(
            &alice.token,
            "reactions.add",
            json!({"channel": channel, "timestamp": "x", "name": "eyes"})
        ),
        "message_not_found"
    );
    assert_eq!(
        e(
            &alice.token,
            "reactions.add",
            json!({"channel": channel, "name": "eyes"})
        ),
        "no_item_specified"
    );
    assert_eq!(
        e(&outsider.token, "reactions.add", args("eyes")),
        "not_in_channel"
    );
    assert_eq!(
        e(
            &alice.token,
            "reactions.add",
            json!({"channel": "CNOSUCHCHAN", "timestamp": ts, "name": "eyes"})
        ),
        "channel_not_found"
    );
    assert_eq!(
        reactions_of(),
        snapshot,
        "refused reactions changed something"
    );

    web.ok(&alice.token, "reactions.remove", args("thumbsup"));
    let ev = wait_event(&mut bob_ws, "reaction_removed", |e| {
        e["type"] == json!("reaction_removed")
    });
    assert_eq!(ev["user"], json!(alice.id));
    web.ok(&bob.token, "reactions.remove", args(":thumbsup:"));
    web.ok(&bob.token, "reactions.remove", args("eyes"));
    assert_eq!(reactions_of(), json!([]));
}

// ---------------------------------------------------------------------------
// conversations.*
// ---------------------------------------------------------------------------

#[test]
fn conversations_lifecycle() {
    let server = Server::start();
    let web = Web::new(&server);
    let admin = &server.admin;
    let alice = admin.create_user("alice");
    let bob = admin.create_user("bob");
    let carol = admin.create_user("carol");
    let dave = admin.create_user("dave");
    let mut dave_ws = server.connect(&dave.id).named("dave");

    // create
    let created = web.ok(
        &alice.token,
        "conversations.create",
        json!({"name": "plans"}),
    )["channel"]
        .clone();
    for field in [
        "id",
        "name",
        "is_channel",
        "is_group",
        "is_im",
        "is_private",
        "is_archived",
        "is_general",
        "created",
        "creator",
        "is_member",
        "topic",
        "purpose",
    ] {
        assert!(
            created.get(field).is_some(),
            "channel lacks {field}: {created}"
        );
    }
    let channel = s(&created, "id").to_string();
    assert!(channel.starts_with('C'));
    assert_eq!(created["name"], json!("plans"));
    assert_eq!(created["creator"], json!(alice.id));
    assert_eq!(created["is_member"], json!(true));
    assert_eq!(created["is_channel"], json!(true));
    assert_eq!(created["is_private"], json!(false));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let secs = created["created"].as_i64().expect("created is an integer");
    assert!((secs - now).abs() < 600, "created is in seconds: {secs}");
    let ev = wait_event(&mut dave_ws, "channel_created", |e| {
        e["type"] == json!("channel_created")
    });
    assert_eq!(ev["channel"]["id"], json!(channel));
    assert_eq!(ev["channel"]["name"], json!("plans"));
    assert_eq!(ev["channel"]["creator"], json!(alice.id));

    let listed = |token: &str, args: Value| -> Vec<String> {
        let (mut ids, mut cursor) = (Vec::new(), String::new());
        for _ in 0..100 {
            let mut a = args.clone();
            if !cursor.is_empty() {
                a["cursor"] = json!(cursor);
            }
            let page = web.ok(token, "conversations.list", a);
            for c in page["channels"].as_array().unwrap() {
                ids.push(s(c, "id").to_string());
            }
            cursor = s(&page["response_metadata"], "next_cursor").to_string();
            if cursor.is_empty() {
                return ids;
            }
        }
        panic!("conversations.list does not end");
    };
    let all_before = listed(&bob.token, json!({"limit": 1000}));

    let ce = |args: Value| web.err(&alice.token, "conversations.create", args);
    assert_eq!(ce(json!({"name": "plans"})), "name_taken");
    assert_eq!(ce(json!({})), "invalid_name_required");
    assert_eq!(ce(json!({"name": ""})), "invalid_name_required");
    assert_eq!(
        ce(json!({"name": "x".repeat(81)})),
        "invalid_name_maxlength"
    );
    assert_eq!(ce(json!({"name": "Has Caps"})), "invalid_name_specials");
    assert_eq!(ce(json!({"name": "dots.dots"})), "invalid_name_specials");
    assert_eq!(ce(json!({"name": "--"})), "invalid_name_punctuation");
    assert_eq!(
        ce(json!({"name": "ok", "is_private": "perhaps"})),
        "invalid_arguments"
    );
    assert_eq!(
        listed(&bob.token, json!({"limit": 1000})),
        all_before,
        "a refused create made a channel"
    );

    // info
    let info = web.ok(
        &alice.token,
        "conversations.info",
        json!({"channel": channel, "include_num_members": true}),
    )["channel"]
        .clone();
    assert_eq!(info["id"], json!(channel));
    assert_eq!(info["num_members"], json!(1));
    let info = web.ok(
        &bob.token,
        "conversations.info",
        json!({"channel": channel}),
    )["channel"]
        .clone();
    assert_eq!(info["is_member"], json!(false));
    assert!(info.get("num_members").is_none());
    let ie = |args: Value| web.err(&alice.token, "conversations.info", args);
    assert_eq!(ie(json!({"channel": "CNOSUCHCHAN"})), "channel_not_found");
    assert_eq!(ie(json!({})), "invalid_arguments");

    // invite
    let ve = |args: Value| web.err(&alice.token, "conversations.invite", args);
    let members_of = |token: &str| -> Vec<String> {
        let (mut ids, mut cursor) = (Vec::new(), String::new());
        for _ in 0..100 {
            let mut a = json!({"channel": channel, "limit": 2});
            if !cursor.is_empty() {
                a["cursor"] = json!(cursor);
            }
            let page = web.ok(token, "conversations.members", a);
            for m in page["members"].as_array().unwrap() {
                ids.push(m.as_str().unwrap().to_string());
            }
            assert!(page["members"].as_array().unwrap().len() <= 2);
            cursor = s(&page["response_metadata"], "next_cursor").to_string();
            if cursor.is_empty() {
                ids.sort();
                return ids;
            }
        }
        panic!("conversations.members does not end");
    };
    // A list with one bad user adds nobody.
    assert_eq!(
        ve(json!({"channel": channel, "users": format!("{},UNOSUCHUSER", bob.id)})),
        "user_not_found"
    );
    assert_eq!(
        ve(json!({"channel": channel, "users": format!("{},{}", bob.id, alice.id)})),
        "cant_invite_self"
    );
    assert_eq!(members_of(&alice.token), [alice.id.as_str()]);
    assert_eq!(ve(json!({"channel": channel})), "no_user");
    assert_eq!(ve(json!({"channel": channel, "users": ","})), "no_user");
    assert_eq!(
        web.err(
            &bob.token,
            "conversations.invite",
            json!({"channel": channel, "users": carol.id})
        ),
        "not_in_channel"
    );
    let inv = web.ok(
        &alice.token,
        "conversations.invite",
        json!({"channel": channel, "users": format!("{}, {}", bob.id, carol.id)}),
    );
    assert_eq!(inv["channel"]["id"], json!(channel));
    assert_eq!(
        ve(json!({"channel": channel, "users": bob.id})),
        "already_in_channel"
    );
    let mut want = vec![alice.id.clone(), bob.id.clone(), carol.id.clone()];
    want.sort();
    assert_eq!(members_of(&bob.token), want);
    assert_eq!(
        web.err(
            &alice.token,
            "conversations.members",
            json!({"channel": channel, "cursor": "zz"})
        ),
        "invalid_cursor"
    );

    // leave / join
    web.ok(
        &bob.token,
        "chat.postMessage",
        json!({"channel": channel, "text": "bob was here"}),
    );
    web.ok(
        &bob.token,
        "conversations.leave",
        json!({"channel": channel}),
    );
    assert_eq!(
        web.err(
            &bob.token,
            "conversations.leave",
            json!({"channel": channel})
        ),
        "not_in_channel"
    );
    assert_eq!(
        web.err(
            &bob.token,
            "chat.postMessage",
            json!({"channel": channel, "text": "x"})
        ),
        "not_in_channel"
    );
    let joined = web.ok(
        &bob.token,
        "conversations.join",
        json!({"channel": channel}),
    );
    assert_eq!(joined["channel"]["id"], json!(channel));
    assert!(joined.get("warning").is_none());
    let again = web.ok(
        &bob.token,
        "conversations.join",
        json!({"channel": "#plans"}),
    );
    assert_eq!(again["channel"]["id"], json!(channel));
    assert_eq!(again["warning"], json!("already_in_channel"));
    assert_eq!(
        web.err(
            &bob.token,
            "conversations.join",
            json!({"channel": "CNOSUCHCHAN"})
        ),
        "channel_not_found"
    );

    // Private conversations are invisible to non-members.
    let private = web.ok(
        &alice.token,
        "conversations.create",
        json!({"name": "hush", "is_private": true}),
    )["channel"]
        .clone();
    let secret = s(&private, "id").to_string();
    assert_eq!(private["is_private"], json!(true));
    assert_eq!(private["is_member"], json!(true));
    for method in [
        "conversations.info",
        "conversations.join",
        "conversations.members",
        "conversations.history",
        "conversations.leave",
    ] {
        assert_eq!(
            web.err(&bob.token, method, json!({"channel": secret})),
            "channel_not_found",
            "{method}"
        );
    }
    assert_eq!(
        web.err(&bob.token, "conversations.info", json!({"channel": "hush"})),
        "channel_not_found"
    );
    let everything = json!({"types": "public_channel,private_channel", "limit": 1});
    let bob_sees = listed(&bob.token, everything.clone());
    assert!(
        bob_sees.contains(&channel) && !bob_sees.contains(&secret),
        "{bob_sees:?}"
    );
    let alice_sees = listed(&alice.token, everything);
    assert!(alice_sees.contains(&channel) && alice_sees.contains(&secret));
    assert_eq!(
        alice_sees.len(),
        alice_sees
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        "a channel listed twice: {alice_sees:?}"
    );
    let only_private = listed(&alice.token, json!({"types": "private_channel"}));
    assert_eq!(only_private, [secret.as_str()]);
    assert!(
        !listed(&alice.token, json!({})).contains(&secret),
        "public by default"
    );
    assert!(listed(&alice.token, json!({"types": "im,mpim"})).is_empty());
    // is_member is right in lists.
    let page = web.ok(&carol.token, "conversations.list", json!({"limit": 1000}));
    for c in page["channels"].as_array().unwrap() {
        assert_eq!(c["is_member"], json!(c["id"] == json!(channel)), "{c}");
    }
    let le = |args: Value| web.err(&alice.token, "conversations.list", args);
    assert_eq!(
        le(json!({"types": "public_channel,bogus"})),
        "invalid_types"
    );
    assert_eq!(le(json!({"cursor": "garbage!"})), "invalid_cursor");
    assert_eq!(le(json!({"exclude_archived": "2"})), "invalid_arguments");
    // Invited into the private channel, bob sees it.
    web.ok(
        &alice.token,
        "conversations.invite",
        json!({"channel": secret, "users": bob.id}),
    );
    let info = web.ok(&bob.token, "conversations.info", json!({"channel": secret}));
    assert_eq!(info["channel"]["is_member"], json!(true));
}

// ---------------------------------------------------------------------------
// users.*
// ---------------------------------------------------------------------------

#[test]
fn users_and_presence() {
    let server = Server::start();
    let web = Web::new(&server);
    let admin = &server.admin;
    let alice = admin.create_user("alice");
    let bot = admin.ok(
        "POST",
        "/v1/users",
        Some(&json!({"name": "robot", "bot": true})),
    );
    let bot_id = bot["user"]["id"].as_str().unwrap().to_string();
    let bot_token = bot["token"].as_str().unwrap().to_string();
    let team_id = web.ok(&alice.token, "auth.test", json!({}))["team_id"].clone();

    let u = web.ok(&alice.token, "users.info", json!({"user": alice.id}))["user"].clone();
    assert_eq!(u["id"], json!(alice.id));
    assert_eq!(u["name"], json!("alice"));
    assert_eq!(u["team_id"], team_id);
    assert_eq!(u["deleted"], json!(false));
    assert_eq!(u["is_bot"], json!(false));
    assert!(u["profile"].is_object() && u.get("real_name").is_some() && u.get("tz").is_some());
    let b = web.ok_as(
        Style::Get,
        &alice.token,
        "users.info",
        json!({"user": bot_id}),
    )["user"]
        .clone();
    assert_eq!(b["is_bot"], json!(true));
    assert_eq!(
        web.err(&alice.token, "users.info", json!({"user": "UNOSUCHUSER"})),
        "user_not_found"
    );
    assert_eq!(
        web.err(&alice.token, "users.info", json!({"user": "not-an-id"})),
        "user_not_found"
    );
    assert_eq!(
        web.err(&alice.token, "users.info", json!({})),
        "invalid_arguments"
    );

    for i in 0..5 {
        admin.create_user(&format!("extra{i}"));
    }
    let (mut ids, mut cursor, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let mut a = json!({"limit": 2});
        if !cursor.is_empty() {
            a["cursor"] = json!(cursor);
        }
        let page = web.ok(&alice.token, "users.list", a);
        let members = page["members"].as_array().unwrap();
        assert!(members.len() <= 2);
        ids.extend(members.iter().map(|m| s(m, "id").to_string()));
        cursor = s(&page["response_metadata"], "next_cursor").to_string();
        pages += 1;
        if cursor.is_empty() {
            break;
        }
        assert!(pages < 100);
    }
    assert_eq!(ids.len(), 7, "{ids:?}");
    assert!(ids.contains(&alice.id) && ids.contains(&bot_id));
    let all = web.ok(&alice.token, "users.list", json!({}));
    assert_eq!(all["members"].as_array().unwrap().len(), 7);
    assert_eq!(all["response_metadata"]["next_cursor"], json!(""));

    // Presence: offline, then online, then manually away, then back.
    let other = |who: &str| {
        web.ok(&alice.token, "users.getPresence", json!({"user": who}))["presence"].clone()
    };
    assert_eq!(other(&bot_id), json!("away"));
    let ws = server.connect(&bot_id).named("robot");
    assert_eq!(other(&bot_id), json!("active"));
    let me = web.ok(&bot_token, "users.getPresence", json!({}));
    assert_eq!(me["presence"], json!("active"));
    assert_eq!(me["online"], json!(true));
    assert_eq!(me["manual_away"], json!(false));
    assert_eq!(me["auto_away"], json!(false));
    assert_eq!(me["connection_count"], json!(1));
    assert!(me.get("last_activity").is_some());
    web.ok(&bot_token, "users.setPresence", json!({"presence": "away"}));
    assert_eq!(other(&bot_id), json!("away"));
    let me = web.ok(&bot_token, "users.getPresence", json!({"user": bot_id}));
    assert_eq!(me["presence"], json!("away"));
    assert_eq!(me["manual_away"], json!(true));
    assert_eq!(me["online"], json!(true));
    web.ok(&bot_token, "users.setPresence", json!({"presence": "auto"}));
    assert_eq!(other(&bot_id), json!("active"));
    for bad in ["busy", "AWAY", "active"] {
        assert_eq!(
            web.err(&bot_token, "users.setPresence", json!({"presence": bad})),
            "invalid_presence"
        );
    }
    assert_eq!(
        other(&bot_id),
        json!("active"),
        "a refused setPresence changed it"
    );
    assert_eq!(
        web.err(
            &alice.token,
            "users.getPresence",
            json!({"user": "UNOSUCHUSER"})
        ),
        "user_not_found"
    );
    ws.close();
}

// ---------------------------------------------------------------------------
// Refused input changes nothing (one place for all of it)
// ---------------------------------------------------------------------------

#[test]
fn refused_input_changes_nothing() {
    let server = Server::start();
    let web = Web::new(&server);
    let admin = &server.admin;
    let alice = admin.create_user("alice");
    let bob = admin.create_user("bob");
    let mallory = admin.create_user("mallory");
    let channel = admin.create_channel("stable");
    admin.add_member(&channel, &alice.id);
    admin.add_member(&channel, &bob.id);
    let ts = s(
        &web.ok(
            &alice.token,
            "chat.postMessage",
            json!({"channel": channel, "text": "original"}),
        ),
        "ts",
    )
    .to_string();
    web.ok(
        &bob.token,
        "reactions.add",
        json!({"channel": channel, "timestamp": ts, "name": "eyes"}),
    );

    let state = || {
        let h = history(&web, &alice.token, &channel);
        let m = web.ok(
            &alice.token,
            "conversations.members",
            json!({"channel": channel}),
        );
        let l = web.ok(&alice.token, "conversations.list", json!({"limit": 1000}));
        (
            h["messages"].clone(),
            m["members"].clone(),
            l["channels"].clone(),
        )
    };
    let before = state();

    let refusals: Vec<(&str, &str, Value, &str)> = vec![
        (
            &mallory.token,
            "chat.postMessage",
            json!({"channel": channel, "text": "spam"}),
            "not_in_channel",
        ),
        (
            &alice.token,
            "chat.postMessage",
            json!({"channel": channel, "text": "z".repeat(40_001)}),
            "msg_too_long",
        ),
        (
            &bob.token,
            "chat.update",
            json!({"channel": channel, "ts": ts, "text": "forged"}),
            "cant_update_message",
        ),
        (
            &alice.token,
            "chat.update",
            json!({"channel": channel, "ts": ts, "text": "q".repeat(40_001)}),
            "msg_too_long",
        ),
        (
            &alice.token,
            "chat.update",
            json!({"channel": channel, "ts": ts, "blocks": "[oops"}),
            "invalid_blocks_format",
        ),
        (
            &bob.token,
            "chat.delete",
            json!({"channel": channel, "ts": ts}),
            "cant_delete_message",
        ),
        (
            &mallory.token,
            "reactions.add",
            json!({"channel": channel, "timestamp": ts, "name": "skull"}),
            "not_in_channel",
        ),
        (
            &alice.token,
            "reactions.add",
            json!({"channel": channel, "timestamp": ts, "name": "no spaces"}),
            "invalid_name",
        ),
        (
            &mallory.token,
            "conversations.invite",
            json!({"channel": channel, "users": mallory.id}),
            "not_in_channel",
        ),
        (
            &alice.token,
            "conversations.invite",
            json!({"channel": channel, "users": format!("{},U0BOGUS", mallory.id)}),
            "user_not_found",
        ),
        (
            &alice.token,
            "conversations.invite",
            json!({"channel": channel, "users": format!("{},{}", mallory.id, bob.id)}),
            "already_in_channel",
        ),
        (
            &mallory.token,
            "conversations.leave",
            json!({"channel": channel}),
            "not_in_channel",
        ),
        (
            &alice.token,
            "conversations.create",
            json!({"name": "Bad Name"}),
            "invalid_name_specials",
        ),
        (
            &alice.token,
            "conversations.create",
            json!({"name": "stable"}),
            "name_taken",
        ),
    ];
    for (token, method, args, want) in refusals {
        let got = web.err(token, method, args.clone());
        assert_eq!(got, want, "{method} {}", shorten(&args.to_string()));
    }
    // Malformed envelopes on writing methods.
    let auth = format!("Bearer {}", alice.token);
    for (ct, body) in [
        (
            "application/json",
            format!("{{\"channel\":\"{channel}\",\"text\":"),
        ),
        (
            "application/x-www-form-urlencoded",
            format!("channel={channel}&text=%ZZ"),
        ),
        ("application/xml", "<post/>".to_string()),
    ] {
        let r = web.raw(
            "POST",
            "chat.postMessage",
            &[("Authorization", &auth), ("Content-Type", ct)],
            Some(body.as_bytes()),
        );
        assert_eq!(envelope(&r, ct)["ok"], json!(false), "{ct}");
    }
    assert_eq!(state(), before, "refused calls changed the state");
    // The server is fine and the same calls done right work.
    web.ok(
        &alice.token,
        "chat.update",
        json!({"channel": channel, "ts": ts, "text": "edited"}),
    );
    assert_eq!(
        texts(&history(&web, &alice.token, &channel)["messages"]),
        ["edited"]
    );
}

/// A bot's messages carry the `bot_id` that auth.test gives the bot, so RTM
/// clients can skip their own messages (Python's RTM v2 does); a person's
/// carry none.
#[test]
fn bot_messages_carry_the_bots_id() {
    let server = Server::start();
    let admin = &server.admin;
    let v = admin.ok(
        "POST",
        "/v1/users",
        Some(&json!({"name": "robot", "bot": true})),
    );
    let bot_token = v["token"].as_str().unwrap().to_string();
    let bot = v["user"]["id"].as_str().unwrap().to_string();
    let human = admin.create_user("human");
    let channel = admin.create_channel("botroom");
    admin.add_member(&channel, &bot);
    admin.add_member(&channel, &human.id);
    let mut ws = server.connect(&human.id);
    let mut api = WebApi::new(&server);
    let bot_id = api.ok(&bot_token, "auth.test", json!({}))["bot_id"]
        .as_str()
        .unwrap()
        .to_string();

    let posted = api.ok(
        &bot_token,
        "chat.postMessage",
        json!({"channel": channel, "text": "beep"}),
    );
    let event = loop {
        let e = ws.recv_json(Duration::from_secs(10));
        if e["type"] == "message" {
            break e;
        }
    };
    assert_eq!(event["ts"], posted["ts"]);
    assert_eq!(event["bot_id"], json!(bot_id), "{event}");

    api.ok(
        &human.token,
        "chat.postMessage",
        json!({"channel": channel, "text": "hi"}),
    );
    let event = loop {
        let e = ws.recv_json(Duration::from_secs(10));
        if e["type"] == "message" {
            break e;
        }
    };
    assert_eq!(event["text"], "hi");
    assert!(event.get("bot_id").is_none(), "{event}");
}
