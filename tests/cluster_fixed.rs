//! Node links and relays, end to end: three real nodes of a fixed cluster
//! (`--cluster-file`), two shards each, on loopback. Users and channels
//! are made through any node; their homes and channel servers land on all
//! three (the placement decides); connections on every node get every
//! event of their channels, once, in order, whichever node published it;
//! typing skips its sender across nodes; presence crosses nodes; a removal
//! stops delivery on every node.

mod common;

use std::time::Duration;

use common::cluster::Cluster;
use common::*;
use serde_json::json;

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
