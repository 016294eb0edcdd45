//! Several real nodes forming one cluster, for the tests of node links:
//! a fixed cluster (`--cluster-file`), every node a separate process on
//! loopback with its own store, sharing the admin token (and so the ticket
//! key).

use std::fs;

use serde_json::json;

use super::{free_ports, fresh_dir, unique, Server};

/// A fixed cluster of `nodes` nodes with `shards` shards each: logical
/// member `m` runs on node `m / shards + 1`, core `m % shards`.
pub struct Cluster {
    pub nodes: Vec<Server>,
    pub token: String,
    /// Each node's link port (node `i + 1` listens on `links[i]`).
    pub links: Vec<u16>,
}

impl Cluster {
    pub fn start(nodes: usize, shards: usize) -> Cluster {
        let token = format!("it-cluster-{}", unique());
        let links = free_ports(nodes);
        let addrs: serde_json::Map<String, serde_json::Value> = links
            .iter()
            .enumerate()
            .map(|(i, port)| ((i + 1).to_string(), json!(format!("127.0.0.1:{port}"))))
            .collect();
        let assignment: Vec<serde_json::Value> = (0..nodes * shards)
            .map(|m| json!([m, m / shards + 1, m % shards]))
            .collect();
        let dir = fresh_dir();
        let servers = (0..nodes)
            .map(|i| {
                let file = dir.join(format!("node{}.json", i + 1));
                let body = json!({
                    "node": i + 1,
                    "nodes": addrs,
                    "placement": {"version": 1, "vnodes": 2048, "assignment": assignment},
                });
                fs::write(&file, body.to_string()).expect("write the cluster file");
                let (file, port, shards) = (
                    file.to_string_lossy().into_owned(),
                    links[i].to_string(),
                    shards.to_string(),
                );
                Server::start_with(&[
                    "--cluster-file",
                    &file,
                    "--link-port",
                    &port,
                    "--admin-token",
                    &token,
                    "--shards",
                    &shards,
                ])
            })
            .collect();
        Cluster {
            nodes: servers,
            token,
            links,
        }
    }
}
