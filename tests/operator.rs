//! Operator mistakes (issue 8): a start that cannot or must not succeed
//! exits non-zero at once with a clear error on stderr, and never prints
//! the ready line. A second server on the ports or the data dir of a live
//! one, `--shards` out of range or beyond the process's limits, an empty
//! admin token.
//!
//! Every wait is bounded; nothing asserts speed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// Generous bound for a start that must fail; a failing start takes well
/// under a second, the old behaviour waited 30 s or forever.
const FAIL_TIMEOUT: Duration = Duration::from_secs(20);

fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("transponder-{what}-{}", unique()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `transponder serve` of `shards` shards on `data` and the given ports
/// (gateway, Web API, admin; 0: any), its admin token generated.
fn serve(data: &Path, shards: usize, ports: [u16; 3]) -> Command {
    let [gateway, api, admin] = ports.map(|p| p.to_string());
    let mut cmd = transponder_command(&["serve", "--shards", &shards.to_string()]);
    cmd.args(["--gateway-port", &gateway, "--api-port", &api])
        .args(["--admin-port", &admin, "--data-dir"])
        .arg(data);
    cmd
}

/// Runs `cmd`, which must fail: exit code 2, nothing on stdout (no ready
/// line), an error on stderr. Returns stderr.
#[track_caller]
fn must_fail(cmd: &mut Command) -> String {
    let out = run_to_exit(cmd, FAIL_TIMEOUT);
    assert_eq!(out.status.code(), Some(2), "expected exit code 2: {out:?}");
    assert_eq!(out.stdout, "", "a failed start printed on stdout: {out:?}");
    assert!(!out.stderr.trim().is_empty(), "no error on stderr: {out:?}");
    out.stderr
}

#[track_caller]
fn assert_contains(text: &str, part: &str) {
    assert!(text.contains(part), "expected {part:?} in:\n{text}");
}

/// The first server keeps serving: every shard answers.
#[track_caller]
fn assert_serving(server: &Server) {
    let health = http_request(server.admin.addr, "GET", "/healthz", &[], None);
    assert_eq!(health.status, 200, "healthz: {}", health.text());
}

#[test]
fn a_second_server_on_the_ports_of_a_live_one_fails_naming_the_listener() {
    let first = Server::start();
    let ports = [
        first.gateway.port(),
        first.api.port(),
        first.admin.addr.port(),
    ];
    let other_data = temp_dir("operator-ports");

    let err = must_fail(&mut serve(&other_data, 2, ports));
    assert_contains(
        &err,
        &format!("cannot bind the gateway listener on 127.0.0.1:{}", ports[0]),
    );
    assert_contains(&err, "address in use (is another Transponder running?");

    // Only the admin port taken: the error names that listener.
    let err = must_fail(&mut serve(&other_data, 2, [0, 0, ports[2]]));
    assert_contains(
        &err,
        &format!("cannot bind the admin listener on 127.0.0.1:{}", ports[2]),
    );
    assert_serving(&first);

    // The first server's own shards still share its port: connections
    // spread over both (all 24 on one shard: odds 2^-23).
    let users = first.admin.create_users("spread", 24);
    let clients: Vec<Ws> = users.iter().map(|u| first.connect(&u.id)).collect();
    let per_shard = first.admin.shard_connections();
    assert_eq!(per_shard.iter().sum::<u64>(), 24, "{per_shard:?}");
    assert!(
        per_shard.iter().all(|&n| n > 0),
        "every shard should accept some connections: {per_shard:?}"
    );
    drop(clients);
    let _ = std::fs::remove_dir_all(other_data);
}

#[test]
fn a_second_server_on_the_data_dir_of_a_live_one_fails() {
    let data = temp_dir("operator-data");
    let mut first = Server::start_in(&data, &[]);

    let err = must_fail(&mut serve(&data, 2, [0, 0, 0]));
    assert_contains(&err, "is in use by another Transponder process");
    assert_contains(&err, &format!("pid {}", first.pid()));

    // A bulk import is refused too while the server runs...
    let mut import = transponder_command(&["channel", "import", "--data-dir"]);
    import.arg(&data);
    let err = must_fail(&mut import);
    assert_contains(&err, "run `channel import` with the server stopped");

    // ...but adding one user stays possible (documented: the server sees
    // it at its next start).
    let mut add = transponder_command(&["user", "add", "dora", "--data-dir"]);
    let added = run_to_exit(add.arg(&data), FAIL_TIMEOUT);
    assert!(added.status.success(), "user add: {added:?}");
    assert!(added.stdout.starts_with("xoxp-"), "{added:?}");
    assert_serving(&first);

    // The kernel drops the lock with the process, however it dies.
    first.kill();
    let again = Server::start_in(&data, &[]);
    assert_serving(&again);
    drop(again);
    let _ = std::fs::remove_dir_all(data);
}

#[test]
fn shards_outside_1_to_64_are_refused_by_the_command_line() {
    let data = temp_dir("operator-shards");
    for shards in ["0", "65", "200"] {
        let mut cmd = transponder_command(&["serve", "--shards", shards, "--data-dir"]);
        let err = must_fail(cmd.arg(&data));
        assert_contains(&err, &format!("invalid value '{shards}' for '--shards"));
        assert_contains(&err, "between 1 and 64");
    }
    let mut cmd = transponder_command(&["serve", "--data-dir"]);
    cmd.arg(&data).env("TRANSPONDER_SHARDS", "65");
    assert_contains(&must_fail(&mut cmd), "between 1 and 64");
    let _ = std::fs::remove_dir_all(data);
}

/// `cmd` with a soft and hard limit on `resource` in the child only.
fn with_limit(cmd: &mut Command, resource: libc::__rlimit_resource_t, value: u64) {
    use std::os::unix::process::CommandExt;
    let limit = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setrlimit(resource, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[test]
fn shards_beyond_the_open_files_limit_fail_promptly_saying_why() {
    // 8 shards with 56 descriptors: the old start got part-way, then either
    // waited 30 s for the shard that ran out, or a glommio panic killed it.
    let data = temp_dir("operator-nofile");
    let mut cmd = serve(&data, 8, [0, 0, 0]);
    with_limit(&mut cmd, libc::RLIMIT_NOFILE, 56);
    let err = must_fail(&mut cmd);
    assert_contains(&err, "the open files limit (ulimit -n) is 56");
    assert_contains(&err, "8 shards");
    let _ = std::fs::remove_dir_all(data);
}

#[test]
fn a_locked_memory_limit_below_what_io_uring_needs_is_named() {
    let data = temp_dir("operator-memlock");
    let mut cmd = serve(&data, 2, [0, 0, 0]);
    with_limit(&mut cmd, libc::RLIMIT_MEMLOCK, 256 * 1024);
    let err = must_fail(&mut cmd);
    assert_contains(&err, "the locked-memory limit (ulimit -l) is 256 KiB");
    let _ = std::fs::remove_dir_all(data);
}

#[test]
fn an_empty_admin_token_is_refused() {
    let data = temp_dir("operator-token");
    let mut flag = serve(&data, 1, [0, 0, 0]);
    let err = must_fail(flag.args(["--admin-token", ""]));
    assert_contains(&err, "the admin token is empty");
    for blank in ["", "   "] {
        let mut env = serve(&data, 1, [0, 0, 0]);
        env.env("TRANSPONDER_ADMIN_TOKEN", blank);
        assert_contains(&must_fail(&mut env), "the admin token is empty");
    }
    let _ = std::fs::remove_dir_all(data);
}
