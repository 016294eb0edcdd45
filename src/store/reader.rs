//! The reader threads, the same for every backend.
//!
//! Readers never wait for the writer (SQLite in WAL mode, PostgreSQL's
//! MVCC), so reads get their own threads and connections: a history page is
//! not queued behind a batch of inserts waiting for its flush. The reader
//! threads share one job queue (flume is multi-consumer); whichever is free
//! takes the next job.

use super::session::{JobEnd, Session};
use super::writer::Job;

/// A reader: owned by one `store-reader-N` thread, with its own read-only
/// connection.
pub(crate) struct Reader {
    session: Box<dyn Session>,
    jobs: flume::Receiver<Box<dyn Job>>,
}

impl Reader {
    pub(crate) fn new(session: Box<dyn Session>, jobs: flume::Receiver<Box<dyn Job>>) -> Reader {
        Reader { session, jobs }
    }

    /// The thread's body: returns once every sender is gone and the queue is
    /// drained.
    pub(crate) fn run(mut self) {
        while let Ok(job) = self.jobs.recv() {
            self.serve(job);
        }
        tracing::debug!("store reader stopped");
    }

    /// Runs one job inside a read transaction, so all of its queries see the
    /// same snapshot (a history page and its reply counts and reactions
    /// agree with each other), and answers at once.
    fn serve(&mut self, job: Box<dyn Job>) {
        if let Err(e) = self.session.begin_read() {
            job.abort(e);
            return;
        }
        let pending = job.run(self.session.tx());
        // Nothing to keep: ending a read transaction cannot lose data.
        let end = match self.session.job_end() {
            JobEnd::BatchLost => Ok(()),
            JobEnd::Intact if pending.succeeded() => self.session.commit(),
            JobEnd::Intact | JobEnd::Poisoned => self.session.rollback(),
        };
        if let Err(e) = end {
            tracing::warn!(error = %e, "store reader: ending a read transaction failed");
        }
        pending.deliver(None);
    }
}
