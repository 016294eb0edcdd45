//! What the store threads need of a backend's connection: transaction
//! control around the jobs, and the [`Tx`] the jobs run on. The writer's
//! group commit (`writer.rs`) and the readers (`reader.rs`) are written once
//! against this; SQLite and PostgreSQL each implement it.

use super::error::StoreError;
use super::tx::Tx;

/// One store thread's connection. Owned by that thread.
pub(crate) trait Session: Send + 'static {
    /// Starts the writer's transaction for a batch. A backend that lost its
    /// connection reconnects here, before any job ran, so nothing is lost
    /// by retrying.
    fn begin_write(&mut self) -> Result<(), StoreError>;
    /// Starts a reader's transaction: one consistent, read-only snapshot
    /// for all the queries of one job.
    fn begin_read(&mut self) -> Result<(), StoreError>;
    /// Opens the savepoint one job runs in.
    fn savepoint(&mut self) -> Result<(), StoreError>;
    /// Keeps the job's work (releases its savepoint).
    fn release(&mut self) -> Result<(), StoreError>;
    /// Undoes the job's work alone (rolls back to its savepoint and
    /// releases it).
    fn rollback_to_savepoint(&mut self) -> Result<(), StoreError>;
    fn commit(&mut self) -> Result<(), StoreError>;
    /// Ends the open transaction, if any, without keeping anything.
    fn rollback(&mut self) -> Result<(), StoreError>;
    /// What the job that just ran left of the transaction.
    fn job_end(&mut self) -> JobEnd;
    /// The transaction the jobs run on.
    fn tx(&mut self) -> &mut dyn Tx;

    /// Work the backend put off until the writer has nothing queued
    /// (SQLite: sweeping the ids of fired scheduled messages), one bounded
    /// batch, inside a write transaction the writer opens and commits.
    fn deferred_work(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
    fn has_deferred_work(&self) -> bool {
        false
    }
    /// The deferred work grew past its bound: a batch runs after every
    /// commit, jobs waiting or not.
    fn deferred_work_overdue(&self) -> bool {
        false
    }
    /// Whether jobs since the last call added deferred work (more is
    /// likely coming: the writer waits to be quiet again before going on).
    fn deferred_work_interrupted(&mut self) -> bool {
        false
    }
}

/// The state of the transaction after a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobEnd {
    /// Usable: keep or undo the job's savepoint as its result says.
    Intact,
    /// A statement of the job failed in a way that leaves the transaction
    /// unusable until the job's savepoint is rolled back (PostgreSQL after
    /// any error): the job's work is undone, whatever it returned.
    Poisoned,
    /// The backend rolled back the whole transaction (SQLite after disk
    /// full or an I/O error): every job of the batch is lost.
    BatchLost,
}
