//! What the process-level benches (idle_connections, post_throughput,
//! channel_density, soak, scheduled_spike) share: the server's listener
//! flags, starting it as a child that dies with the bench, reading its
//! ready line, waiting for its exit, showing its
//! stderr, reading CPU time from /proc (through the library's
//! [`transponder::loadgen::procfs`]).
//! Each bench includes it with `#[path = "support/mod.rs"] mod support;`.

#![allow(dead_code)] // each bench uses a different part

use std::io::{self, BufRead, BufReader};
use std::net::SocketAddrV4;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdout, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

// The library's /proc reading (the one `transponder loadgen --server-pid`
// uses), so the benches and the load generator count CPU time alike.
use transponder::loadgen::procfs::cpu_ticks;

/// The server's listener flags for a bench: every port ephemeral (the
/// ready line says which it got).
pub const EPHEMERAL_PORTS: [&str; 6] = [
    "--gateway-port",
    "0",
    "--api-port",
    "0",
    "--admin-port",
    "0",
];

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

/// Removes the temp dirs `<prefix><pid>-…` of earlier runs that were killed
/// before they could clean up (no process `<pid>` runs any more).
pub fn remove_stale_dirs(prefix: &str) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
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

/// Ticks of all cores, from /proc/stat: [user + nice + system, irq +
/// softirq, steal, idle + iowait] (guest time is inside user).
pub fn machine_ticks() -> [u64; 4] {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return [0; 4];
    };
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let get = |i: usize| f.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    [
        get(0) + get(1) + get(2),
        get(5) + get(6),
        get(7),
        get(3) + get(4),
    ]
}

/// CPU time (user + system) a process has used so far, in clock ticks
/// (`transponder::loadgen::procfs::ticks_per_sec` a second); 0 once it is
/// gone.
pub fn process_ticks(pid: u32) -> u64 {
    cpu_ticks(pid).unwrap_or(0)
}

/// CPU time of a process and its children (a loadgen and its workers),
/// in clock ticks; children that ended are not counted.
pub fn process_tree_ticks(pid: u32) -> u64 {
    let mut ticks = process_ticks(pid);
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return ticks;
    };
    for t in tasks.flatten() {
        let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            ticks += process_tree_ticks(child);
        }
    }
    ticks
}
