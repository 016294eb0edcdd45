//! Node links and relays, end to end: three real nodes of a fixed cluster
//! (`--cluster-file`), two shards each, on loopback. Users and channels
//! are made through any node; their homes and channel servers land on all
//! three (the placement decides); connections on every node get every
//! event of their channels, once, in order, whichever node published it;
//! typing skips its sender across nodes; presence crosses nodes; a removal
//! stops delivery on every node; a link whose hello does not prove the
//! cluster's secret is closed before anything it sends is read.

mod common;

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::cluster::Cluster;
use common::*;
use serde_json::json;
use transponder::cluster::link::frame;
use transponder::ticket::TicketKey;

fn message_texts(frames: &[serde_json::Value], channel: &str) -> Vec<String> {
    frames
        .iter()
        .filter(|f| f["type"] == json!("message") && f["channel"] == json!(channel))
        .map(|f| s(f, "text").to_string())
        .collect()
}

#[test]
fn events_cross_nodes_once_and_in_order() {
    let cluster = Cluster::start(3, 2);
    let [n1, n2, n3] = [&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]];
    // Twelve channels and users, made through different nodes, so owners
    // and homes spread over all three.
    let mut pairs = Vec::new();
    for i in 0..12 {
        let via = &cluster.nodes[i % 3].admin;
        let user = via.create_user(&format!("member{i}"));
        let channel = via.create_channel(&format!("room{i}"));
        via.add_member(&channel, &user.id);
        pairs.push((user, channel));
    }
    // Each user connects to every node (a ticket from one node opens a
    // websocket on another: the nodes share the ticket key).
    let mut conns: Vec<(usize, Ws)> = Vec::new();
    for (i, (user, _)) in pairs.iter().enumerate() {
        for (n, node) in cluster.nodes.iter().enumerate() {
            let url = cluster.nodes[(n + 1) % 3].admin.ticket(&user.id);
            let url = url.replace(
                &cluster.nodes[(n + 1) % 3].gateway.port().to_string(),
                &node.gateway.port().to_string(),
            );
            conns.push((i, Ws::connect(&url).named(format!("user{i}@node{}", n + 1))));
        }
    }
    // Every channel gets 5 events from each node, interleaved.
    for round in 0..5 {
        for (i, (user, channel)) in pairs.iter().enumerate() {
            for (n, node) in [n1, n2, n3].iter().enumerate() {
                node.admin.publish(
                    channel,
                    json!({"type": "message", "user": user.id, "text": format!("r{round}n{n}c{i}")}),
                );
            }
        }
    }
    for (i, ws) in conns.iter_mut() {
        let channel = &pairs[*i].1;
        let frames = ws.collect_until_quiet(QUIET, Duration::from_secs(20), 1000);
        let texts = message_texts(&frames, channel);
        let expected: Vec<String> = (0..5)
            .flat_map(|r| (0..3).map(move |n| (r, n)))
            .map(|(r, n)| format!("r{r}n{n}c{i}"))
            .collect();
        assert_eq!(texts, expected, "{}: every event once, in order", ws.name);
    }
}

#[test]
fn typing_presence_and_removal_cross_nodes() {
    let cluster = Cluster::start(2, 2);
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let alice = a.admin.create_user("alice");
    let bob = b.admin.create_user("bob");
    let channel = a.admin.create_channel("talk");
    a.admin.add_member(&channel, &alice.id);
    b.admin.add_member(&channel, &bob.id);
    let mut alice_ws = a.connect(&alice.id).named("alice@1");
    let mut bob_ws = b.connect(&bob.id).named("bob@2");

    // Typing: to the other node's member, never back to the typist.
    alice_ws.send_json(&json!({"id": 1, "type": "typing", "channel": channel}));
    let ev = bob_ws.recv();
    assert_type(&ev, "user_typing");
    assert_eq!(ev["user"], json!(alice.id));
    alice_ws.expect_no_event(QUIET);

    // Presence across nodes: bob watches alice (home wherever it is).
    bob_ws.send_json(&json!({"type": "presence_sub", "ids": [alice.id]}));
    let ev = bob_ws.recv();
    assert_type(&ev, "presence_change");
    assert_eq!(ev["presence"], json!("active"), "{ev}");
    alice_ws.close();
    let ev = bob_ws.recv();
    assert_type(&ev, "presence_change");
    assert_eq!(ev["presence"], json!("away"), "{ev}");

    // Removal through the other node: bob hears member_left_channel, then
    // nothing more of the channel, on whichever node the channel lives.
    a.admin.remove_member(&channel, &bob.id);
    let ev = bob_ws.recv();
    assert_type(&ev, "member_left_channel");
    a.admin
        .publish(&channel, json!({"type": "message", "text": "after"}));
    b.admin
        .publish(&channel, json!({"type": "message", "text": "after too"}));
    bob_ws.expect_no_event(QUIET);
}

/// Opens a link to `port` as a would-be node and reads the challenge.
fn link_to(port: u16) -> (BufReader<TcpStream>, [u8; 16]) {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut conn = BufReader::new(stream);
    let mut challenge = [0u8; 4 + 1 + 16];
    conn.read_exact(&mut challenge).expect("a challenge first");
    assert_eq!(&challenge[..5], &[0, 0, 0, 17, 4], "a challenge frame");
    (conn, challenge[5..].try_into().unwrap())
}

/// Sends a hello from node `node`, MAC'd with `key` over `nonce`, and a
/// heartbeat after it.
fn hello_and_message(
    conn: &mut BufReader<TcpStream>,
    key: &TicketKey,
    nonce: &[u8; 16],
    node: u16,
) {
    let mut out = Vec::new();
    frame::encode_hello(&mut out, node, 1, &key.link_hello_mac(nonce, node, 1));
    frame::encode_beat(&mut out, 1);
    conn.get_mut().write_all(&out).unwrap();
}

#[test]
fn a_link_without_the_clusters_secret_is_closed() {
    let cluster = Cluster::start(2, 1);
    let port = cluster.links[0];
    let ours = TicketKey::derived_from(&cluster.token);
    let theirs = TicketKey::derived_from("some other cluster's admin token");

    // A hello MAC'd with another key, claiming to be node 2: closed.
    let (mut conn, nonce) = link_to(port);
    hello_and_message(&mut conn, &theirs, &nonce, 2);
    assert!(closed_by_server(&mut conn), "a forged hello was accepted");

    // A hello recorded from an earlier challenge (a replay): closed.
    let (first, old_nonce) = link_to(port);
    drop(first);
    let (mut conn, nonce) = link_to(port);
    assert_ne!(nonce, old_nonce, "challenges repeat");
    hello_and_message(&mut conn, &ours, &old_nonce, 2);
    assert!(closed_by_server(&mut conn), "a replayed hello was accepted");

    // More than a hello before the hello (a 16 MiB frame announced): closed.
    let (mut conn, _) = link_to(port);
    let mut big = (16u32 << 20).to_be_bytes().to_vec();
    big.push(3);
    big.extend_from_slice(&[0u8; 4096]);
    conn.get_mut().write_all(&big).unwrap();
    assert!(
        closed_by_server(&mut conn),
        "a link buffered junk before its hello"
    );

    // The real secret over this challenge: the link stays open.
    let (mut conn, nonce) = link_to(port);
    hello_and_message(&mut conn, &ours, &nonce, 2);
    conn.get_mut()
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    assert!(!closed_by_server(&mut conn), "a good hello was refused");

    // And the cluster's own links still work: an event crosses nodes.
    let [n1, n2] = [&cluster.nodes[0], &cluster.nodes[1]];
    let user = n1.admin.create_user("linked");
    let c = n1.admin.create_channel("linked");
    n1.admin.add_member(&c, &user.id);
    let mut ws = n2.connect(&user.id);
    n1.admin.ok(
        "POST",
        "/v1/publish",
        Some(&json!({"channel": c, "event": {"type": "message", "text": "across"}})),
    );
    let frames =
        ws.collect_until_quiet(Duration::from_secs(2), Duration::from_secs(20), usize::MAX);
    assert_eq!(message_texts(&frames, &c), vec!["across".to_string()]);
}

#[test]
fn a_drained_node_still_serves_its_channels_to_the_other_nodes() {
    // A drain sends a node's clients away; the node still owns its
    // channels until it leaves, so its link listener must keep accepting:
    // other nodes' shards open their links to it on first use.
    let cluster = Cluster::start(2, 2);
    let [n1, n2] = [&cluster.nodes[0], &cluster.nodes[1]];
    n1.admin.ok("POST", "/v1/drain", None);
    let channels: Vec<String> = (0..16)
        .map(|i| n2.admin.create_channel(&format!("drained{i}")))
        .collect();
    // Every channel takes a post through node 2, whichever node owns it
    // and whichever of node 2's shards the request lands on.
    for round in 0..4 {
        for c in &channels {
            let body =
                json!({"channel": c, "event": {"type": "message", "text": format!("r{round}")}});
            let (status, answer) = n2.admin.request("POST", "/v1/publish", Some(&body));
            assert_eq!(status, 200, "{c} after node 1's drain: {answer}");
        }
    }
}
