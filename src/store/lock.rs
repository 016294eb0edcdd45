//! One owner per data dir: a server (`transponder serve`) or a bulk import
//! (`transponder channel import`) holds an exclusive lock on
//! `<data-dir>/transponder.lock` for as long as it runs, so a second one on
//! the same folder stops at once with a clear error instead of sharing the
//! store behind the first one's back (two servers would each keep their own
//! caches of the same channels and hand out clashing `ts`).
//!
//! `transponder user add` / `channel add` take no lock: they are documented
//! to work while a server runs (it sees their rows at its next start), and
//! SQLite serializes their single writes with the server's.
//!
//! # Why `flock`
//!
//! [`std::fs::File::try_lock`] is `flock(LOCK_EX | LOCK_NB)` on Linux. The
//! kernel drops the lock when the process ends, however it ends (SIGKILL,
//! a crash, the OOM killer), so there is never a stale lock to clean up, as
//! there would be with a pid file or an `O_EXCL` marker. Unlike POSIX
//! `fcntl` locks, it belongs to the open file, not to the process, so it is
//! not silently released when some other descriptor of the same file is
//! closed. The file lives beside the database rather than being the
//! database so that it never meets SQLite's own locking. (Over NFS, Linux
//! emulates `flock` with `fcntl` locks on the server; keep data dirs on a
//! local disk anyway.)

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file inside the data folder. It holds the owner's pid, for the
/// error message of whoever finds it locked.
pub const LOCK_FILE: &str = "transponder.lock";

/// The data dir is ours while this lives (drop it, or exit, to release it).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

#[derive(thiserror::Error, Debug)]
pub enum LockError {
    /// Another process holds the lock.
    #[error(
        "the data dir {} is in use by another Transponder process{} \
         (a server or a `channel import`; it holds {})",
        dir.display(),
        match holder { Some(pid) => format!(", pid {pid}"), None => String::new() },
        lock.display()
    )]
    Held {
        dir: PathBuf,
        lock: PathBuf,
        holder: Option<u32>,
    },
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl DataDirLock {
    /// Creates `dir` if needed and takes its lock without waiting: fails
    /// with [`LockError::Held`] if another process has it.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        // Not truncated on open: the holder's pid must survive until we
        // know whether we are the holder.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::Held {
                    dir: dir.to_path_buf(),
                    holder: read_pid(&mut file),
                    lock: path,
                })
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(DataDirLock { _file: file })
    }
}

/// The pid the holder wrote, if it wrote one yet.
fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_dir_is_refused_until_the_first_is_dropped() {
        let dir = std::env::temp_dir().join(format!("tp-lock-{}", std::process::id()));
        let first = DataDirLock::acquire(&dir).unwrap();
        // flock locks belong to the open file, so a second open in the same
        // process conflicts just like another process would.
        match DataDirLock::acquire(&dir) {
            Err(LockError::Held { holder, .. }) => {
                assert_eq!(holder, Some(std::process::id()))
            }
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        let again = DataDirLock::acquire(&dir).unwrap();
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
