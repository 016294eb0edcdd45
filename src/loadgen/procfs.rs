//! What the load generator (and the process-level benches) read of another
//! process in /proc: its resident memory and the CPU time it has used.
//!
//! CPU time is utime + stime of /proc/PID/stat: every thread of the process,
//! those that already ended included. It counts what the kernel charged to
//! the process, so the loopback work done inside its own `send`s counts and
//! softirq work the kernel deferred to `ksoftirqd` does not; the same holds
//! for every server compared.

/// Resident set size of a process, in bytes.
pub fn rss_of(pid: u32) -> Result<u64, String> {
    status_bytes(pid, "VmRSS")
}

/// A size in /proc/PID/status (`VmRSS`, `RssAnon`, …), in bytes.
pub fn status_bytes(pid: u32, field: &str) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("process {pid}: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| format!("process {pid}: no {field}"))
}

/// CPU time (user + system, all threads) a process has used so far, in
/// clock ticks (see [`ticks_per_sec`]).
pub fn cpu_ticks(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    stat_ticks(&stat).ok_or_else(|| format!("{path} has no utime and stime"))
}

/// CPU time a process has used so far, in seconds. The kernel counts it
/// in clock ticks, 10 ms each here (USER_HZ = 100): fine for the windows of
/// seconds it is read over, not for shorter ones.
pub fn cpu_secs(pid: u32) -> Result<f64, String> {
    Ok(cpu_ticks(pid)? as f64 / ticks_per_sec())
}

/// utime + stime of one /proc/…/stat line (a process's or a thread's), in
/// clock ticks; None if the line is not one.
pub fn stat_ticks(stat: &str) -> Option<u64> {
    // The comm, in parentheses, may hold spaces and parentheses: count the
    // fields after its last ')'.
    let close = stat.rfind(')')?;
    // After the comm: state is field 3 of the line, utime 14, stime 15.
    let mut after = stat[close + 1..].split_whitespace().skip(11);
    let utime: u64 = after.next()?.parse().ok()?;
    let stime: u64 = after.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second of /proc's CPU times.
pub fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utime_and_stime_follow_a_comm_with_spaces_and_parentheses() {
        let line = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    731 269 0 0 20 0 3 0 12345 1000000 200";
        assert_eq!(stat_ticks(line), Some(1000));
    }

    #[test]
    fn a_line_that_is_not_a_stat_line_is_none() {
        assert_eq!(stat_ticks(""), None);
        assert_eq!(stat_ticks("4242 (x) S 1 2"), None);
        assert_eq!(
            stat_ticks("no parenthesis 1 2 3 4 5 6 7 8 9 10 11 12 13"),
            None
        );
    }

    #[test]
    fn this_process_has_used_cpu_and_a_missing_one_is_an_error() {
        let me = std::process::id();
        let spin = std::time::Instant::now();
        while cpu_ticks(me).unwrap() == 0 && spin.elapsed().as_secs() < 5 {}
        assert!(cpu_secs(me).unwrap() > 0.0);
        assert!(ticks_per_sec() >= 1.0);
        // Above the kernel's pid_max (4,194,304 at most): never a process.
        let err = cpu_ticks(u32::MAX).unwrap_err();
        assert!(err.contains("/proc/4294967295/stat"), "{err}");
    }
}
