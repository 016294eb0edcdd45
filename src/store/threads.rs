//! Where the store's threads run, so they do not take the shards' CPU time.
//!
//! A shard is a whole slice of the server: whatever else runs on its CPU
//! delays every connection it owns. The store's threads mostly wait (on the
//! disk's flush, on their queue) but the writer and the checkpointer also
//! burn CPU: running SQL, copying the WAL into the database file. So:
//!
//! - When the process may use more CPUs than it runs shards (e.g. systemd
//!   `CPUAffinity=2-18` with `shards = 16`), every store thread is pinned to
//!   the CPUs the shards left free ([`ThreadPlacement::spare`]).
//! - When there is none (2 shards on 2 cores), the store threads float: the
//!   scheduler puts them on whichever shard CPU is idle, and they take time
//!   from a shard when both are busy. Nothing better is possible there
//!   except giving the cost it can wait to a lower priority: the
//!   checkpointer runs at nice [`CHECKPOINTER_NICE`], so the kernel's fair
//!   scheduler gives it about a tenth of a shard's share when they compete.
//!   The writer keeps the normal priority: every post waits for its commit.

use std::io;
use std::thread::{self, JoinHandle};

use core_affinity::CoreId;

/// Nice value of the checkpointer thread (0 is normal, 19 the lowest). At
/// nice 10 CFS weighs a thread 110 against a normal thread's 1024.
pub const CHECKPOINTER_NICE: i32 = 10;

/// The CPUs the store's threads are pinned to; empty: not pinned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreadPlacement {
    pub cpus: Vec<usize>,
}

impl ThreadPlacement {
    /// The CPUs of `allowed` (the process's affinity mask, in order) that
    /// `shards` pinned shards leave free: shard *i* takes `allowed[i]`.
    pub fn spare(allowed: &[CoreId], shards: usize) -> ThreadPlacement {
        ThreadPlacement {
            cpus: allowed.iter().skip(shards).map(|c| c.id).collect(),
        }
    }
}

/// Starts a store thread named `name`, placed per `placement`, at nice
/// `nice` (0: unchanged).
pub(crate) fn spawn<F>(
    name: String,
    placement: &ThreadPlacement,
    nice: i32,
    body: F,
) -> io::Result<JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    let cpus = placement.cpus.clone();
    thread::Builder::new().name(name.clone()).spawn(move || {
        if !cpus.is_empty() {
            pin_to(&cpus, &name);
        }
        if nice != 0 {
            renice(nice, &name);
        }
        body()
    })
}

/// Restricts the calling thread to `cpus` (core_affinity pins to one CPU
/// only; a store thread may use any of the spare ones).
fn pin_to(cpus: &[usize], name: &str) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes inside it
    // for ids below CPU_SETSIZE, which the check keeps to.
    let ok = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    };
    if ok {
        tracing::debug!(thread = name, ?cpus, "store thread pinned");
    } else {
        let e = io::Error::last_os_error();
        tracing::warn!(thread = name, ?cpus, error = %e, "could not pin a store thread");
    }
}

/// Lowers the calling thread's priority (Linux: nice is per thread).
fn renice(nice: i32, name: &str) {
    // SAFETY: plain system calls on the calling thread's own id.
    let rc = unsafe {
        let tid = libc::gettid() as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, nice)
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        tracing::warn!(thread = name, nice, error = %e, "could not lower a store thread's priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[usize]) -> Vec<CoreId> {
        v.iter().map(|&id| CoreId { id }).collect()
    }

    #[test]
    fn store_threads_get_the_cpus_the_shards_leave() {
        assert_eq!(ThreadPlacement::spare(&ids(&[2, 3, 4]), 2).cpus, vec![4]);
        assert_eq!(
            ThreadPlacement::spare(&ids(&[0, 1]), 2).cpus,
            Vec::<usize>::new()
        );
        assert_eq!(
            ThreadPlacement::spare(&ids(&[0, 1]), 4).cpus,
            Vec::<usize>::new()
        );
    }

    #[test]
    fn a_store_thread_runs_on_its_cpus_at_its_nice() {
        let mine = core_affinity::get_core_ids().expect("this thread's CPUs");
        let last = mine.last().expect("at least one CPU").id;
        let placement = ThreadPlacement { cpus: vec![last] };
        let (tx, rx) = std::sync::mpsc::channel();
        spawn("store-test".into(), &placement, 5, move || {
            let cpus: Vec<usize> = core_affinity::get_core_ids()
                .unwrap_or_default()
                .iter()
                .map(|c| c.id)
                .collect();
            // SAFETY: reads the calling thread's own priority.
            let nice =
                unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
            tx.send((cpus, nice)).unwrap();
        })
        .unwrap()
        .join()
        .unwrap();
        let (cpus, nice) = rx.recv().unwrap();
        assert_eq!(cpus, vec![last]);
        assert_eq!(nice, 5);
        // The caller's thread is untouched.
        assert_eq!(core_affinity::get_core_ids().unwrap().len(), mine.len());
    }
}
