//! What can go wrong in the store, as one enum the Web API maps to Slack
//! error codes (`Conflict` → `name_taken` / `already_reacted`, `NotFound` →
//! `channel_not_found` / `message_not_found`, anything else → `internal_error`).

use std::sync::Arc;

use rusqlite::ffi;
use rusqlite::ErrorCode;

#[derive(thiserror::Error, Debug)]
pub enum StoreError {
    /// A row with the same key or the same unique name already exists.
    #[error("conflict: a row with this key or name already exists")]
    Conflict,
    /// The row an update, delete or reaction refers to does not exist (or is
    /// deleted).
    #[error("not found")]
    NotFound,
    /// The store threads have stopped (`Store::close`, or the last handle
    /// was dropped); nothing was done.
    #[error("the store is closed")]
    Closed,
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A PostgreSQL error (shared, so one COMMIT failure can be told to
    /// every job of its batch). A lost connection is one: the job failed,
    /// and the next job reconnects.
    #[error("postgres: {0}")]
    Postgres(Arc<postgres::Error>),
    /// The job's work was undone although the job returned `Ok`: one of its
    /// statements had failed, which a PostgreSQL transaction cannot go on
    /// from, and the job did not pass the error on.
    #[error("store job undone: {0}")]
    Undone(String),
    /// The file holds something this binary cannot use: a schema from a newer
    /// version, malformed JSON in a column, a token hash of the wrong length.
    #[error("store unusable: {0}")]
    Corrupt(String),
    /// Creating the data folder or starting a store thread failed.
    #[error("store i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A job turned down its own input (a bulk import's bad line); like any
    /// failed job, everything it wrote was rolled back.
    #[error("{0}")]
    Rejected(String),
}

/// A column that did not hold the expected type (read through `get_ref`).
impl From<rusqlite::types::FromSqlError> for StoreError {
    fn from(e: rusqlite::types::FromSqlError) -> StoreError {
        StoreError::Sqlite(e.into())
    }
}

/// A unique violation is the caller's `Conflict` (the PostgreSQL queries
/// avoid raising one where they can: see `postgres/mod.rs`); anything else
/// stays a PostgreSQL error.
impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> StoreError {
        if e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION) {
            return StoreError::Conflict;
        }
        StoreError::Postgres(Arc::new(e))
    }
}

impl StoreError {
    /// Maps a failed INSERT: a UNIQUE / PRIMARY KEY violation is the caller's
    /// `Conflict`, anything else stays a SQLite error.
    pub(crate) fn conflict_or_sqlite(e: rusqlite::Error) -> StoreError {
        match &e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation => {
                StoreError::Conflict
            }
            _ => StoreError::Sqlite(e),
        }
    }

    /// A copy of this error for each job of a batch whose COMMIT failed.
    /// (`rusqlite::Error` is not `Clone`; a SQLite failure is copied exactly,
    /// anything else keeps its message under SQLITE_ERROR.)
    pub(crate) fn duplicate(&self) -> StoreError {
        match self {
            StoreError::Conflict => StoreError::Conflict,
            StoreError::NotFound => StoreError::NotFound,
            StoreError::Closed => StoreError::Closed,
            StoreError::Corrupt(s) => StoreError::Corrupt(s.clone()),
            StoreError::Rejected(s) => StoreError::Rejected(s.clone()),
            StoreError::Undone(s) => StoreError::Undone(s.clone()),
            StoreError::Postgres(e) => StoreError::Postgres(e.clone()),
            StoreError::Io(e) => StoreError::Io(std::io::Error::new(e.kind(), e.to_string())),
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(code, msg)) => {
                StoreError::Sqlite(rusqlite::Error::SqliteFailure(*code, msg.clone()))
            }
            StoreError::Sqlite(other) => StoreError::Sqlite(rusqlite::Error::SqliteFailure(
                ffi::Error::new(ffi::SQLITE_ERROR),
                Some(other.to_string()),
            )),
        }
    }

    /// The error given to a job that returned `Ok` after one of its
    /// statements failed, once its work was undone (see
    /// [`StoreError::Undone`]).
    pub(crate) fn job_undone() -> StoreError {
        StoreError::Undone(
            "a statement of the job failed and the job went on; its work was rolled back".into(),
        )
    }

    /// The error given to jobs whose work SQLite rolled back because a later
    /// job of the same transaction failed hard (disk full, I/O error).
    pub(crate) fn batch_rolled_back() -> StoreError {
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(
            ffi::Error::new(ffi::SQLITE_ABORT),
            Some("the batch transaction was rolled back by another job's failure".into()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraint_violations_become_conflict() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY)")
            .unwrap();
        conn.execute("INSERT INTO t VALUES ('a')", []).unwrap();
        let e = conn.execute("INSERT INTO t VALUES ('a')", []).unwrap_err();
        assert!(matches!(
            StoreError::conflict_or_sqlite(e),
            StoreError::Conflict
        ));
        let e = conn.execute("INSERT INTO nope VALUES (1)", []).unwrap_err();
        assert!(matches!(
            StoreError::conflict_or_sqlite(e),
            StoreError::Sqlite(_)
        ));
    }

    #[test]
    fn duplicate_keeps_the_sqlite_code() {
        let e = StoreError::Sqlite(rusqlite::Error::SqliteFailure(
            ffi::Error::new(ffi::SQLITE_FULL),
            Some("disk full".into()),
        ));
        match e.duplicate() {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, Some(m))) => {
                assert_eq!(f.code, ErrorCode::DiskFull);
                assert_eq!(m, "disk full");
            }
            other => panic!("unexpected {other:?}"),
        }
        let e = StoreError::Sqlite(rusqlite::Error::QueryReturnedNoRows);
        assert!(matches!(e.duplicate(), StoreError::Sqlite(_)));
        assert!(matches!(
            StoreError::Corrupt("x".into()).duplicate(),
            StoreError::Corrupt(s) if s == "x"
        ));
    }
}
