//! Backpressure: a client that stops reading is disconnected with close code
//! 4000 once its outbound queue passes --max-queue-bytes; a fast client in the
//! same channel gets every event, in order.

mod common;

use std::collections::HashSet;
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use socket2::{Domain, Protocol, Socket, Type};

const PUBLISHERS: usize = 4;
const PER_PUBLISHER: usize = 1000;
const TOTAL: usize = PUBLISHERS * PER_PUBLISHER;
const PAYLOAD_BYTES: usize = 2000;

/// Checks that `events` are the published messages in strictly increasing ts,
/// each publisher's in its sending order, none twice. Returns the keys seen.
fn check_order(events: &[Value], channel: &str, who: &str) -> HashSet<(u64, u64)> {
    let mut last_ts = 0u64;
    let mut last_seq = [None::<u64>; PUBLISHERS];
    let mut seen = HashSet::new();
    for ev in events {
        assert_type(ev, "message");
        assert_eq!(ev["channel"], json!(channel), "{who}: {}", ev["channel"]);
        let p = ev["publisher"]
            .as_u64()
            .unwrap_or_else(|| panic!("{who}: no publisher field")) as usize;
        let i = ev["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("{who}: no seq field"));
        assert!(p < PUBLISHERS);
        if let Some(prev) = last_seq[p] {
            assert!(i > prev, "{who}: publisher {p}: seq {i} after {prev}");
        }
        last_seq[p] = Some(i);
        assert_eq!(
            ev["text"].as_str().map(str::len),
            Some(PAYLOAD_BYTES),
            "{who}: payload mangled"
        );
        let t = ts_micros(s(ev, "ts"));
        assert!(
            t > last_ts,
            "{who}: ts not strictly increasing at publisher {p} seq {i}"
        );
        last_ts = t;
        assert!(
            seen.insert((p as u64, i)),
            "{who}: ({p},{i}) delivered twice"
        );
    }
    seen
}

#[test]
fn slow_consumer_is_closed_with_4000_and_the_fast_one_gets_everything() {
    let server = Server::start_with(&["--max-queue-bytes", "65536"]);
    let admin = server.admin.clone();
    let slow_user = admin.create_user("slow");
    let fast_user = admin.create_user("fast");
    let channel = admin.create_channel("firehose");
    admin.add_member(&channel, &slow_user.id);
    admin.add_member(&channel, &fast_user.id);

    // The slow client: a tiny receive buffer, set before connect so the
    // advertised window stays small; it reads hello, then nothing more until
    // the publishing is over.
    let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect_timeout(&server.gateway.into(), Duration::from_secs(10))
        .unwrap();
    let stream: TcpStream = sock.into();
    let url = server.ticket(&slow_user.id);
    let mut slow = Ws::handshake_over(&url, stream, EVENT_TIMEOUT)
        .unwrap_or_else(|e| panic!("slow client: {e}"))
        .named("slow");
    let hello = slow.recv();
    assert_type(&hello, "hello");

    let mut fast = server.connect(&fast_user.id).named("fast");
    let fast_reader = thread::spawn(move || {
        let mut got = Vec::with_capacity(TOTAL);
        for _ in 0..TOTAL {
            match fast.try_recv_json(Duration::from_secs(30)) {
                Some(v) => got.push(v),
                None => break,
            }
        }
        (fast, got)
    });

    let text = filler(PAYLOAD_BYTES);
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let admin = admin.clone();
            let channel = channel.clone();
            let author = fast_user.id.clone();
            let text = text.clone();
            thread::spawn(move || {
                for i in 0..PER_PUBLISHER {
                    admin.publish(
                        &channel,
                        json!({"type": "message", "user": author, "text": text, "publisher": p, "seq": i}),
                    );
                }
            })
        })
        .collect();
    for h in publishers {
        join_within(h, Duration::from_secs(240), "publisher");
    }

    // The fast client got all of them, in one order.
    let (mut fast, got) = join_within(fast_reader, Duration::from_secs(120), "fast reader");
    assert_eq!(
        got.len(),
        TOTAL,
        "fast client received {} of {TOTAL}",
        got.len()
    );
    let seen = check_order(&got, &channel, "fast");
    assert_eq!(seen.len(), TOTAL);

    // Now read the slow client's socket: whatever the kernel buffered, then
    // the close frame.
    let (before_close, end) = slow.read_until_close(Duration::from_secs(30), TOTAL + 10);
    eprintln!(
        "slow client: {} events before {:?}",
        before_close.len(),
        end.as_ref().map(|f| match f {
            Frame::Close(c, _) => format!("close {c:?}"),
            other => format!("{other:?}"),
        })
    );
    let delivered = check_order(&before_close, &channel, "slow");
    assert!(
        delivered.len() < TOTAL,
        "the slow client got all {TOTAL} events: it was never treated as a slow consumer"
    );
    match end {
        Some(Frame::Close(Some(4000), _)) => {}
        Some(Frame::Ended(how)) => {
            // The server could not get its close frame through; tolerated only
            // if the connection is really gone.
            let left = admin.wait_total_connections(1, Duration::from_secs(10));
            assert_eq!(
                left, 1,
                "slow client's socket ended ({how}) without close 4000 and stats still count it"
            );
            eprintln!("note: slow client's connection ended without a close frame: {how}");
        }
        other => panic!(
            "slow client: expected close 4000, got {other:?} after {} events",
            before_close.len()
        ),
    }

    // Its connection is gone; the fast one is still served.
    let left = admin.wait_total_connections(1, Duration::from_secs(10));
    assert_eq!(
        left,
        1,
        "stats after the slow consumer was dropped: {}",
        admin.stats()
    );
    admin.publish(
        &channel,
        json!({"type": "message", "user": fast_user.id, "text": "still here"}),
    );
    assert_eq!(fast.recv()["text"], json!("still here"));
}
