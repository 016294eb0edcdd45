//! The reader threads.
//!
//! In WAL mode readers never wait for the writer, so reads get their own
//! threads and connections: a history page is not queued behind a batch of
//! inserts waiting for its flush. The reader threads share one job queue
//! (flume is multi-consumer); whichever is free takes the next job.

use rusqlite::Connection;

use super::error::StoreError;
use super::writer::Job;

/// A reader: owned by one `store-reader-N` thread, with its own read-only
/// connection.
pub(crate) struct Reader {
    conn: Connection,
    jobs: flume::Receiver<Box<dyn Job>>,
}

impl Reader {
    pub(crate) fn new(conn: Connection, jobs: flume::Receiver<Box<dyn Job>>) -> Reader {
        Reader { conn, jobs }
    }

    /// The thread's body: returns once every sender is gone and the queue is
    /// drained.
    pub(crate) fn run(self) {
        while let Ok(job) = self.jobs.recv() {
            self.serve(job);
        }
        tracing::debug!("store reader stopped");
    }

    /// Runs one job inside a read transaction, so all of its queries see the
    /// same snapshot (a history page and its reply counts and reactions
    /// agree with each other), and answers at once.
    fn serve(&self, job: Box<dyn Job>) {
        if let Err(e) = self
            .conn
            .prepare_cached("BEGIN")
            .and_then(|mut s| s.execute([]))
        {
            job.abort(StoreError::from(e));
            return;
        }
        let pending = job.run(&self.conn);
        if !self.conn.is_autocommit() {
            // Nothing to keep: ending a read transaction cannot lose data.
            let end = if pending.succeeded() {
                "COMMIT"
            } else {
                "ROLLBACK"
            };
            if let Err(e) = self.conn.execute_batch(end) {
                tracing::warn!(error = %e, "store reader: ending a read transaction failed");
            }
        }
        pending.deliver(None);
    }
}
