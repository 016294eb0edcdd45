//! What the process-level benches (idle_connections, post_throughput,
//! channel_density) share: starting the server as a child that dies with the
//! bench, reading its ready line, waiting for its exit, showing its stderr.
//! Each bench includes it with `#[path = "support/mod.rs"] mod support;`.

#![allow(dead_code)] // each bench uses a different part

use std::io::{self, BufRead, BufReader};
use std::net::SocketAddrV4;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdout, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The server's first stdout line, within `limit`. Keeps draining stdout.
pub fn read_ready_line(stdout: ChildStdout, limit: Duration) -> String {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next());
        for _ in lines {}
    });
    match rx.recv_timeout(limit) {
        Ok(Some(Ok(line))) => line,
        Ok(_) => panic!("server closed stdout without a ready line"),
        Err(_) => panic!("server printed no ready line within {limit:?}"),
    }
}

pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let until = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return Some(s);
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `scheme://a.b.c.d:port/…` → the address.
pub fn host_port(url: &str, scheme: &str) -> SocketAddrV4 {
    let rest = url
        .strip_prefix(scheme)
        .unwrap_or_else(|| panic!("{url} does not start with {scheme}"));
    let hp = rest.split('/').next().unwrap();
    hp.parse()
        .unwrap_or_else(|_| panic!("{hp} is not an IPv4 address and port"))
}

pub fn print_stderr_tail(path: &Path, lines: usize) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(lines);
    eprintln!(
        "--- server stderr: {} lines, last {} ---",
        all.len(),
        all.len() - from
    );
    for l in &all[from..] {
        eprintln!("{l}");
    }
    eprintln!("--- end of server stderr ---");
}

/// Makes the spawned process die with the bench (SIGKILL when the thread
/// that spawned it, the main thread, ends).
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
