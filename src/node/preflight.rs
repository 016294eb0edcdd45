//! What can be checked before anything starts, so that a start that cannot
//! succeed says why at once instead of failing halfway: a shard thread
//! that runs out of descriptors or locked memory fails (or glommio panics)
//! while the others wait for it, and a mesh too big for the host's memory
//! gets the process killed.

use std::mem::size_of;
use std::sync::atomic::AtomicBool;

use crate::limits;
use crate::shard::message::Msg;

/// Every check for a node of `shards` shards.
pub fn check(shards: usize) -> Result<(), String> {
    open_files(shards)?;
    locked_memory()?;
    mesh_memory(shards)
}

/// What `getrlimit` takes: an unsigned enum in glibc, an int elsewhere.
#[cfg(target_env = "gnu")]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
type Resource = libc::c_int;

/// The soft limit of `resource` (`RLIM_INFINITY` as `u64::MAX`).
fn soft_limit(resource: Resource) -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    if unsafe { libc::getrlimit(resource, &mut limit) } != 0 {
        return None;
    }
    Some(limit.rlim_cur)
}

fn open_files(shards: usize) -> Result<(), String> {
    let Some(limit) = soft_limit(libc::RLIMIT_NOFILE) else {
        return Ok(());
    };
    let needed =
        limits::OPEN_FILES_AT_START_FIXED + limits::OPEN_FILES_AT_START_PER_SHARD * shards as u64;
    if limit < needed {
        return Err(format!(
            "the open files limit (ulimit -n) is {limit}, too low to start {shards} shards: \
             that takes about {needed} ({} per shard and {}), and every connection takes one \
             more; raise it (ulimit -n, or LimitNOFILE= under systemd) or use fewer --shards",
            limits::OPEN_FILES_AT_START_PER_SHARD,
            limits::OPEN_FILES_AT_START_FIXED,
        ));
    }
    Ok(())
}

fn locked_memory() -> Result<(), String> {
    let Some(limit) = soft_limit(libc::RLIMIT_MEMLOCK) else {
        return Ok(());
    };
    if limit < limits::MEMLOCK_BYTES_MIN {
        return Err(format!(
            "the locked-memory limit (ulimit -l) is {} KiB; io_uring (glommio) needs at least \
             {} KiB: raise it (ulimit -l, or LimitMEMLOCK= under systemd)",
            limit / 1024,
            limits::MEMLOCK_BYTES_MIN / 1024,
        ));
    }
    Ok(())
}

/// Bytes the mesh allocates (and touches) up front: a queue of
/// `MESH_QUEUE_MESSAGES` slots for every ordered pair of shards. It grows
/// with the square of the shard count: ~2 GiB at 64 shards.
pub fn mesh_bytes(shards: usize) -> u64 {
    // glommio's slot: a flag beside the message, rounded to alignment.
    let slot = size_of::<(AtomicBool, Msg)>() as u64;
    let queues = (shards * shards.saturating_sub(1)) as u64;
    queues * limits::MESH_QUEUE_MESSAGES.next_power_of_two() as u64 * slot
}

fn mesh_memory(shards: usize) -> Result<(), String> {
    let needed = mesh_bytes(shards);
    let Some(available) = available_memory_bytes() else {
        return Ok(());
    };
    if needed > available {
        return Err(format!(
            "{shards} shards need about {} MiB for the queues between them ({} queues of {} \
             messages), but only {} MiB of memory is available: use fewer --shards",
            needed >> 20,
            shards * (shards - 1),
            limits::MESH_QUEUE_MESSAGES,
            available >> 20,
        ));
    }
    Ok(())
}

/// `MemAvailable` of /proc/meminfo: what can be allocated without swapping.
fn available_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mesh_grows_with_the_square_of_the_shards() {
        assert_eq!(mesh_bytes(1), 0);
        assert_eq!(mesh_bytes(64), mesh_bytes(2) * 64 * 63 / 2);
        // Measured: 64 shards hold ~2.1 GB more than 1 shard once ready.
        let gib = mesh_bytes(64) as f64 / (1u64 << 30) as f64;
        assert!((1.0..4.0).contains(&gib), "{gib} GiB");
    }

    #[test]
    fn this_machine_can_start_two_shards() {
        check(2).unwrap();
    }
}
