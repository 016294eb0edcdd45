//! The publish stream (`GET /publish` on the gateway port, admin token as a
//! bearer): events reach subscribers in stream order, frames with an id are
//! answered, bad frames get an RTM error and cost nothing else, and a wrong
//! token is refused with close 4500.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::{Server, Ws};
use serde_json::json;
use socket2::{Domain, Protocol, Socket, Type};

const T: Duration = Duration::from_secs(10);

fn publish_url(s: &Server) -> String {
    format!("{}publish", s.gateway_url)
}

/// A server, a channel with one member subscribed (`sub`), and a publish
/// stream past its `hello` (`p`).
fn one_channel_and_a_stream() -> (Server, String, Ws, Ws) {
    let s = Server::start();
    let alice = s.admin.create_user("alice");
    let c = s.admin.create_channel("general");
    s.admin.add_member(&c, &alice.id);
    let sub = s.connect(&alice.id);
    let token = s.admin.token.clone().unwrap();
    let mut p = Ws::try_connect_bearer(&publish_url(&s), &token, T).unwrap();
    assert_eq!(p.recv_json(T)["type"], "hello");
    (s, c, sub, p)
}

#[test]
fn events_arrive_in_order_and_ids_are_answered() {
    let s = Server::start();
    let alice = s.admin.create_user("alice");
    let chans: Vec<String> = (0..3)
        .map(|i| s.admin.create_channel(&format!("c{i}")))
        .collect();
    for c in &chans {
        s.admin.add_member(c, &alice.id);
    }
    let mut sub = s.connect(&alice.id);
    let token = s.admin.token.clone().unwrap();
    let mut p = Ws::try_connect_bearer(&publish_url(&s), &token, T).expect("publish stream");
    assert_eq!(p.recv_json(T)["type"], "hello");
    // 300 events round-robin over 3 channels, no ids: no answers.
    for i in 0..300 {
        let c = &chans[i % 3];
        p.send_json(&json!({"channel": c, "event": {"type": "message", "text": format!("n{i}")}, "transient": true}));
    }
    let got = sub.recv_n(300, T);
    for c in &chans {
        let texts: Vec<u64> = got
            .iter()
            .filter(|e| e["channel"] == json!(c))
            .map(|e| e["text"].as_str().unwrap()[1..].parse().unwrap())
            .collect();
        assert_eq!(texts.len(), 100, "{c}");
        assert!(texts.windows(2).all(|w| w[0] < w[1]), "{c}: out of order");
    }
    // With an id: a stored event, answered with its ts.
    p.send_json(
        &json!({"id": 7, "channel": chans[0], "event": {"type": "message", "text": "kept"}}),
    );
    let ack = p.recv_json(T);
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(ack["reply_to"], 7);
    let ts = ack["ts"].as_str().expect("ts").to_string();
    let ev = sub.recv_json(T);
    assert_eq!(ev["text"], "kept");
    assert_eq!(ev["ts"], json!(ts));
    // Unknown channel with an id: refused.
    p.send_json(&json!({"id": 8, "channel": "C0000000000", "event": {"type": "x"}}));
    let no = p.recv_json(T);
    assert_eq!(no["ok"], false, "{no}");
    assert_eq!(no["reply_to"], 8);
}

#[test]
fn bad_frames_are_answered_and_the_stream_goes_on() {
    let (_server, c, mut sub, mut p) = one_channel_and_a_stream();
    p.send_text("{not json");
    assert_eq!(p.recv_json(T)["type"], "error");
    p.send_json(&json!({"event": {"type": "message"}}));
    assert_eq!(p.recv_json(T)["type"], "error");
    p.send_json(&json!({"channel": c, "event": {"text": "no type"}}));
    assert_eq!(p.recv_json(T)["type"], "error");
    p.send_json(
        &json!({"channel": c, "event": {"type": "message", "text": "fine"}, "transient": true}),
    );
    assert_eq!(sub.recv_json(T)["text"], "fine");
}

#[test]
fn a_wrong_or_missing_token_is_refused() {
    let s = Server::start();
    let mut p = Ws::try_connect_bearer(&publish_url(&s), "wrong", T).unwrap();
    assert_eq!(p.recv_json(T)["type"], "error");
    p.expect_close(4500, T);
    let mut p = Ws::connect_no_hello(&publish_url(&s));
    assert_eq!(p.recv_json(T)["type"], "error");
    p.expect_close(4500, T);
}

/// Frames the general path refuses as JSON (`serde_json::Value`) must not
/// slip through the fast path: a lone surrogate escape, a number beyond
/// f64, nesting deeper than serde_json's limit, a frame that is an array.
/// A stored event is parsed again on the channel's shard (its history
/// row), so one such frame used to panic that shard. Each is answered
/// with an RTM error, nothing is delivered, and the stream goes on.
#[test]
fn frames_that_are_not_json_values_are_refused_not_published() {
    let (_server, c, mut sub, mut p) = one_channel_and_a_stream();
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let bad = [
        format!(
            r#"{{"id":1,"channel":"{c}","event":{{"type":"message","user":"U1","text":"\ud800"}}}}"#
        ),
        format!(r#"{{"id":2,"channel":"{c}","event":{{"type":"message","n":1e400}}}}"#),
        format!(r#"{{"id":3,"channel":"{c}","event":{{"type":"message","deep":{deep}}}}}"#),
        format!(r#"{{"id":4,"channel":"{c}","event":{{"type":"message"}},"x":"\udc00"}}"#),
        format!(r#"["{c}",{{"type":"message","text":"array"}},true,null]"#),
    ];
    for frame in &bad {
        p.send_text(frame);
        let answer = p.recv_json(T);
        assert_eq!(answer["type"], "error", "{frame}: {answer}");
    }
    p.send_json(&json!({"id": 5, "channel": c, "event": {"type": "message", "text": "fine"}}));
    assert_eq!(p.recv_json(T)["ok"], true);
    assert_eq!(sub.recv_json(T)["text"], "fine");
}

/// A channel's burst arrives in runs (its events laid back to back on the
/// gateway shard, `gateway::event_runs`): a client reading at once and one
/// whose small socket stays full for a second (its queue keeps runs open
/// across flushes) each get every event whole, in order, interleaved with
/// another channel's and with frames too large for a run.
#[test]
fn a_burst_reaches_a_fast_and_a_stalled_reader_whole_and_in_order() {
    let s = Server::start();
    let (fast_user, slow_user) = (s.admin.create_user("fast"), s.admin.create_user("slow"));
    let (burst, other) = (
        s.admin.create_channel("burst"),
        s.admin.create_channel("other"),
    );
    for c in [&burst, &other] {
        s.admin.add_member(c, &fast_user.id);
        s.admin.add_member(c, &slow_user.id);
    }
    let mut fast = s.connect(&fast_user.id);
    let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect_timeout(&s.gateway.into(), T).unwrap();
    let mut slow = Ws::handshake_over(&s.ticket(&slow_user.id), TcpStream::from(sock), T).unwrap();
    assert_eq!(slow.recv_json(T)["type"], "hello");

    let token = s.admin.token.clone().unwrap();
    let mut p = Ws::try_connect_bearer(&publish_url(&s), &token, T).unwrap();
    assert_eq!(p.recv_json(T)["type"], "hello");
    // ~1.3 MB in all: under the default queue bound, far over the slow
    // client's socket. Sizes cross the 125-byte and 2 KiB frame limits.
    const N: usize = 3_000;
    let text = |i: usize| {
        let len = match i % 50 {
            0 => 3_000,
            _ => (i * 53) % 700,
        };
        format!("{i}:{}", "x".repeat(len))
    };
    for i in 0..N {
        let c = if i.is_multiple_of(7) { &other } else { &burst };
        p.send_json(&json!({"channel": c, "event": {"type": "message", "text": text(i)}, "transient": true}));
    }
    let check = |got: Vec<serde_json::Value>, who: &str| {
        let mut next = [0usize; 2];
        for e in &got {
            let t = e["text"].as_str().expect("text");
            let i: usize = t.split(':').next().unwrap().parse().unwrap();
            assert_eq!(t, text(i), "{who}: event {i} whole");
            let k = usize::from(e["channel"] == json!(other));
            assert_eq!(
                k,
                usize::from(i.is_multiple_of(7)),
                "{who}: event {i} on its channel"
            );
            assert!(i >= next[k], "{who}: event {i} out of order");
            next[k] = i + 1;
        }
        assert_eq!(got.len(), N, "{who}");
    };
    check(fast.recv_n(N, Duration::from_secs(60)), "fast");
    std::thread::sleep(Duration::from_secs(1));
    check(slow.recv_n(N, Duration::from_secs(60)), "slow");
}
