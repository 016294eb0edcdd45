//! `transponder serve --etcd …` where it cannot join: a build without the
//! `cluster` feature says how to get one; a build with it says which etcd
//! it could not reach. Either way the start stops before the ready line,
//! exits 2 and prints one line on stderr (README "Configuration").

mod common;

use std::time::Duration;

use common::{fresh_dir, run_to_exit, transponder_command};

fn serve_with_etcd(endpoint: &str) -> common::Exited {
    let data = fresh_dir();
    let mut cmd = transponder_command(&["serve", "--etcd", endpoint, "--shards", "1"]);
    cmd.arg("--data-dir")
        .arg(&data)
        .args(["--admin-token", "it-cluster-flags-shared-token"])
        .args(common::EPHEMERAL_PORTS);
    let out = run_to_exit(&mut cmd, Duration::from_secs(60));
    let _ = std::fs::remove_dir_all(data);
    out
}

#[test]
#[cfg(not(feature = "cluster"))]
fn etcd_needs_a_build_with_the_cluster_feature() {
    let out = serve_with_etcd("127.0.0.1:2379");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(
        out.stderr.contains("built without cluster support"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("--features cluster"), "{}", out.stderr);
}

#[test]
#[cfg(feature = "cluster")]
fn an_unreachable_etcd_stops_the_start_with_its_address() {
    // A port nobody listens on.
    let port = common::free_ports(1)[0];
    let endpoint = format!("127.0.0.1:{port}");
    let out = serve_with_etcd(&endpoint);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(
        out.stderr.contains("cannot join the cluster"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains(&endpoint), "{}", out.stderr);
}

#[test]
fn cluster_flags_without_etcd_are_refused() {
    let data = fresh_dir();
    let mut cmd = transponder_command(&["serve", "--spare", "--shards", "1"]);
    cmd.arg("--data-dir").arg(&data);
    let out = run_to_exit(&mut cmd, Duration::from_secs(30));
    let _ = std::fs::remove_dir_all(data);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        out.stderr.contains("--spare needs --etcd"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_cluster_node_without_an_admin_token_is_refused() {
    // Each node would generate its own, and the nodes' links would refuse
    // each other.
    let data = fresh_dir();
    let mut cmd = transponder_command(&["serve", "--etcd", "127.0.0.1:2379", "--shards", "1"]);
    cmd.arg("--data-dir").arg(&data);
    let out = run_to_exit(&mut cmd, Duration::from_secs(30));
    let _ = std::fs::remove_dir_all(data);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(out.stderr.contains("needs --admin-token"), "{}", out.stderr);
}
