//! Opening and configuring the SQLite connections: one read-write connection
//! for the writer thread, one for the checkpointer thread, one read-only
//! connection per reader thread.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use crate::store::error::StoreError;
use crate::store::Durability;

/// How long a connection waits for a lock held by another process (the
/// `transponder user add` CLI writing while a server runs) before SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Statements kept prepared per connection: every query of this module fits.
const STATEMENT_CACHE: usize = 64;

/// Upper bound on the WAL file kept after a checkpoint, so one burst does
/// not leave a huge file behind.
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// The writer's connection: WAL journal, the chosen durability.
pub(crate) fn open_writer(path: &Path, durability: Durability) -> Result<Connection, StoreError> {
    let conn = open(path)?;
    // WAL: readers never block the writer nor the writer them, and a commit
    // is one sequential append (+ one flush) instead of two random writes.
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Corrupt(format!(
            "could not switch the database to WAL mode (it is in {mode} mode)"
        )));
    }
    // FULL in WAL mode: COMMIT flushes the WAL before returning, so an
    // acknowledged write survives power loss. NORMAL: no flush on COMMIT
    // (only at checkpoints): a process crash loses nothing (the bytes are in
    // the OS cache), a power loss may lose the last commits — never
    // corrupts.
    let sync = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    // When the WAL restarts, a file grown past this is truncated to it.
    // Checkpoints are not this connection's job: see `checkpoint.rs`.
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
    Ok(conn)
}

/// The checkpointer's connection. A checkpoint flushes the database file
/// in every durability but OFF (SQLite's default FULL here): a WAL is only
/// reused once the pages it held are on disk, whatever commits promised.
pub(crate) fn open_checkpointer(path: &Path) -> Result<Connection, StoreError> {
    let conn = open(path)?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    // A connection opens the WAL when it first reads the file; until then
    // a checkpoint on it finds no WAL and does nothing (it answers -1).
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Corrupt(format!(
            "the checkpointer found the database in {mode} mode, not WAL"
        )));
    }
    Ok(conn)
}

/// A reader's connection: refuses writes, so a mistaken write in a `read`
/// closure fails loudly instead of bypassing group commit.
pub(crate) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = open(path)?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

fn open(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // Temporary b-trees (ORDER BY on reactions, GROUP BY on replies) stay in
    // memory: they are small, and a temp file would be disk I/O per query.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(conn)
}
