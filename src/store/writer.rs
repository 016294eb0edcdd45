//! The writer thread and its group commit, the same for every backend.
//!
//! SQLite allows one writer at a time, and with `synchronous=FULL` every
//! COMMIT waits for the disk to flush (about 3.5 ms on the project's VMs);
//! a PostgreSQL COMMIT waits for its WAL flush the same way. One
//! transaction per write would cap the server at a few hundred writes a
//! second. So the single writer thread takes *every* job already queued (up
//! to [`MAX_BATCH`]), runs them in one transaction and flushes once: the cost
//! of the flush is shared by the whole batch, and the batch grows by itself
//! when the load does.
//!
//! Each job runs inside its own SAVEPOINT, so a job that fails is rolled back
//! alone and its neighbours still commit. Answers are sent only after COMMIT
//! returns: an acknowledged write is as durable as [`Durability`] promises,
//! and a job never tells its caller "done" for work a failed COMMIT undid.
//!
//! [`Durability`]: super::Durability

use std::collections::VecDeque;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::error::StoreError;
use super::session::{JobEnd, Session};
use super::tx::Tx;
use crate::limits;

/// Most jobs in one transaction. Bounds the latency a huge backlog adds to
/// the first job of a batch, and the memory held by pending answers.
pub(crate) const MAX_BATCH: usize = 1024;

/// What a caller waits for: the job's result, or the panic it raised (so
/// the panic resurfaces in the caller, where the bug is, and the store
/// thread lives on).
pub(crate) type Answer<R> = std::thread::Result<Result<R, StoreError>>;

/// A unit of work sent to a store thread, with its result type erased so
/// one queue carries every kind of job.
pub(crate) trait Job: Send {
    /// Runs the job on `tx`; what it returns is sent to the caller later
    /// (after COMMIT for writes).
    fn run(self: Box<Self>, tx: &mut dyn Tx) -> Box<dyn Pending>;
    /// Answers `err` without running (the transaction could not start).
    fn abort(self: Box<Self>, err: StoreError);
}

/// A job that ran and whose answer waits for the end of its transaction.
pub(crate) trait Pending: Send {
    /// True if the job returned `Ok`: its savepoint is kept.
    fn succeeded(&self) -> bool;
    /// Sends the answer. `failure` is set when the transaction did not
    /// commit; a job that had succeeded then reports that error instead.
    fn deliver(self: Box<Self>, failure: Option<&StoreError>);
}

/// A caller's closure and the channel its answer goes back on. Built on
/// the caller's thread, moved through the queue, owned from then on by the
/// store thread that runs it.
pub(crate) struct ClosureJob<F, R> {
    pub(crate) f: F,
    pub(crate) reply: flume::Sender<Answer<R>>,
}

impl<F, R> Job for ClosureJob<F, R>
where
    F: FnOnce(&mut dyn Tx) -> Result<R, StoreError> + Send + 'static,
    R: Send + 'static,
{
    fn run(self: Box<Self>, tx: &mut dyn Tx) -> Box<dyn Pending> {
        let ClosureJob { f, reply } = *self;
        // A panicking job must not take the store thread down with it.
        let result = panic::catch_unwind(AssertUnwindSafe(|| f(tx)));
        Box::new(Ran { result, reply })
    }

    fn abort(self: Box<Self>, err: StoreError) {
        // The caller may be gone (its future dropped); nobody to tell then.
        let _ = self.reply.send(Ok(Err(err)));
    }
}

/// A job that ran, held by the writer thread until its batch commits.
struct Ran<R> {
    result: Answer<R>,
    reply: flume::Sender<Answer<R>>,
}

impl<R: Send + 'static> Pending for Ran<R> {
    fn succeeded(&self) -> bool {
        matches!(self.result, Ok(Ok(_)))
    }

    fn deliver(self: Box<Self>, failure: Option<&StoreError>) {
        let answer = match (failure, self.result) {
            (Some(e), Ok(Ok(_))) => Ok(Err(e.duplicate())),
            (_, result) => result,
        };
        let _ = self.reply.send(answer);
    }
}

/// Batches and jobs committed since open, for benchmarks and `/v1/stats`.
/// Written by the writer thread only, read by any thread (relaxed atomics:
/// counters, not synchronization).
#[derive(Default, Debug)]
pub(crate) struct WriterStats {
    batches: AtomicU64,
    jobs: AtomicU64,
}

impl WriterStats {
    /// (transactions attempted, jobs run in them).
    pub(crate) fn get(&self) -> (u64, u64) {
        (
            self.batches.load(Ordering::Relaxed),
            self.jobs.load(Ordering::Relaxed),
        )
    }
}

/// A job that ran, and the error it gets instead of its own result if the
/// batch commits but the job's work had to be undone.
type RanJob = (Box<dyn Pending>, Option<StoreError>);

/// The writer: owned by the `store-writer` thread, which alone touches the
/// read-write connection.
pub(crate) struct Writer {
    session: Box<dyn Session>,
    jobs: flume::Receiver<Box<dyn Job>>,
    stats: Arc<WriterStats>,
}

impl Writer {
    pub(crate) fn new(
        session: Box<dyn Session>,
        jobs: flume::Receiver<Box<dyn Job>>,
        stats: Arc<WriterStats>,
    ) -> Writer {
        Writer {
            session,
            jobs,
            stats,
        }
    }

    /// The thread's body: returns once every sender is gone and the queue is
    /// drained (flume hands out queued jobs before reporting disconnection).
    pub(crate) fn run(mut self) {
        let mut batch: VecDeque<Box<dyn Job>> = VecDeque::with_capacity(MAX_BATCH);
        // Deferred work waits for a quiet writer; once started it goes on
        // batch by batch, between jobs, until done or until the backend
        // says more of what deferred it is coming (a spike still firing).
        let mut deferring = false;
        loop {
            // Block for the first job only; the rest of the batch is
            // whatever queued up meanwhile (typically during the previous
            // flush).
            let first = if self.session.has_deferred_work() && !deferring {
                match self
                    .jobs
                    .recv_timeout(limits::STORE_IDLE_BEFORE_DEFERRED_WORK)
                {
                    Ok(job) => job,
                    Err(flume::RecvTimeoutError::Timeout) => {
                        deferring = true;
                        self.deferred_work(true);
                        continue;
                    }
                    Err(flume::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match self.jobs.recv() {
                    Ok(job) => job,
                    Err(_) => break,
                }
            };
            batch.push_back(first);
            while batch.len() < MAX_BATCH {
                match self.jobs.try_recv() {
                    Ok(job) => batch.push_back(job),
                    Err(_) => break,
                }
            }
            while !batch.is_empty() {
                self.commit_some(&mut batch);
            }
            if self.session.deferred_work_interrupted() {
                deferring = false;
            }
            if deferring || self.session.deferred_work_overdue() {
                self.deferred_work(deferring);
            }
            deferring &= self.session.has_deferred_work();
        }
        tracing::debug!("store writer stopped");
    }

    /// Runs jobs from the front of `batch` in one transaction and commits.
    /// Normally consumes the whole batch; stops early only when the backend
    /// rolled the transaction back under us, leaving the rest for a new one.
    fn commit_some(&mut self, batch: &mut VecDeque<Box<dyn Job>>) {
        if let Err(e) = self.session.begin_write() {
            tracing::error!(error = %e, jobs = batch.len(), "store: BEGIN failed");
            for job in batch.drain(..) {
                job.abort(e.duplicate());
            }
            return;
        }
        let mut ran: Vec<RanJob> = Vec::with_capacity(batch.len());
        while let Some(job) = batch.pop_front() {
            if let Err(e) = self.session.savepoint() {
                job.abort(e.duplicate());
                self.abandon(ran, &e);
                return;
            }
            let pending = job.run(self.session.tx());
            let ended = match self.session.job_end() {
                JobEnd::BatchLost => {
                    // The job's failure (disk full, I/O error…) made the
                    // backend roll back the whole transaction: the earlier
                    // jobs' work is gone. (A job must not run
                    // BEGIN/COMMIT/ROLLBACK itself.)
                    tracing::error!("store: a job's failure rolled back its batch");
                    self.count(ran.len() + 1);
                    let e = StoreError::batch_rolled_back();
                    for (p, _) in ran {
                        p.deliver(Some(&e));
                    }
                    pending.deliver(Some(&e));
                    return;
                }
                JobEnd::Poisoned => {
                    // A statement failed and the job went on: its work is
                    // undone, and a job that thought it succeeded is told.
                    let own = pending.succeeded().then(StoreError::job_undone);
                    ran.push((pending, own));
                    self.session.rollback_to_savepoint()
                }
                JobEnd::Intact => {
                    let ended = if pending.succeeded() {
                        self.session.release()
                    } else {
                        self.session.rollback_to_savepoint()
                    };
                    ran.push((pending, None));
                    ended
                }
            };
            if let Err(e) = ended {
                self.abandon(ran, &e);
                return;
            }
        }
        self.count(ran.len());
        match self.session.commit() {
            Ok(()) => {
                for (p, own) in ran {
                    p.deliver(own.as_ref());
                }
            }
            Err(e) => {
                tracing::error!(error = %e, jobs = ran.len(), "store: COMMIT failed");
                self.abandon(ran, &e);
            }
        }
    }

    /// Runs the backend's deferred work, a batch per transaction: one, then
    /// (`more`) others while no job waits. What it costs a job that arrives
    /// meanwhile is one batch.
    fn deferred_work(&mut self, more: bool) {
        let mut first = true;
        while self.session.has_deferred_work() && (first || (more && self.jobs.is_empty())) {
            first = false;
            let done = self
                .session
                .begin_write()
                .and_then(|()| self.session.deferred_work())
                .and_then(|()| self.session.commit());
            if let Err(e) = done {
                tracing::warn!(error = %e, "store: deferred work failed; left for later");
                if let Err(rb) = self.session.rollback() {
                    tracing::error!(error = %rb, "store: ROLLBACK failed");
                }
                return;
            }
        }
    }

    /// Rolls the open transaction back and tells every job that ran in it.
    fn abandon(&mut self, ran: Vec<RanJob>, e: &StoreError) {
        if let Err(rb) = self.session.rollback() {
            tracing::error!(error = %rb, "store: ROLLBACK failed");
        }
        for (p, _) in ran {
            p.deliver(Some(e));
        }
    }

    fn count(&self, jobs: usize) {
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats.jobs.fetch_add(jobs as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{join_all, message, temp_stores, user};
    use super::super::{Durability, Store, StoreError, Window, MAX_PAGE};
    use std::thread;
    use std::time::{Duration, Instant};

    fn count_messages(store: &Store) -> i64 {
        store
            .read_blocking(|tx| tx.scalar("SELECT count(*) FROM messages"))
            .unwrap()
    }

    #[test]
    fn concurrent_writes_get_their_own_answers_and_share_commits() {
        for (temp, store) in temp_stores(Durability::Full) {
            eprint!("{}: ", temp.name());
            concurrent_writes(store);
        }
    }

    fn concurrent_writes(store: Store) {
        let (b0, j0) = store.stats();
        let threads: Vec<_> = (0..8i64)
            .map(|t| {
                let store = store.clone();
                thread::spawn(move || {
                    let writes = (0..250i64).map(|i| {
                        let store = store.clone();
                        let ts = t * 1000 + i + 1;
                        async move {
                            let got = store
                                .write(move |tx| {
                                    tx.insert_message(&message("C1", ts, "U1", "hi"))?;
                                    Ok(ts * 7)
                                })
                                .await
                                .unwrap();
                            assert_eq!(got, ts * 7, "an answer went to the wrong caller");
                        }
                    });
                    join_all(writes.collect());
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let (b1, j1) = store.stats();
        let (batches, jobs) = (b1 - b0, j1 - j0);
        assert_eq!(jobs, 2000);
        assert!(
            batches < jobs,
            "group commit never grouped: {batches} batches"
        );
        assert_eq!(count_messages(&store), 2000);
        eprintln!("2000 writes from 8 threads: {batches} commits");
    }

    /// Runs `f` on its own thread (each submission blocks until answered).
    fn submit<F>(store: &Store, f: F) -> thread::JoinHandle<Result<(), StoreError>>
    where
        F: FnOnce(&Store) -> Result<(), StoreError> + Send + 'static,
    {
        let store = store.clone();
        thread::spawn(move || f(&store))
    }

    #[test]
    fn a_failing_job_does_not_undo_its_neighbours() {
        for (temp, store) in temp_stores(Durability::Full) {
            eprintln!("{}", temp.name());
            failing_job(store);
        }
    }

    fn failing_job(store: Store) {
        store
            .write_blocking(|tx| tx.insert_user(&user("U1", "alice"), None))
            .unwrap();

        // Park the writer inside a job so the next ones queue up behind it
        // and are taken as one batch.
        let (started_tx, started_rx) = flume::bounded::<()>(1);
        let (gate_tx, gate_rx) = flume::bounded::<()>(1);
        let blocker = {
            let store = store.clone();
            thread::spawn(move || {
                store.write_blocking(move |_| {
                    started_tx.send(()).unwrap();
                    gate_rx.recv().unwrap();
                    Ok(())
                })
            })
        };
        started_rx.recv().unwrap();
        let (b0, j0) = store.stats();

        let a = submit(&store, |s| {
            s.write_blocking(|tx| tx.insert_message(&message("C1", 1, "U1", "a")))
        });
        let b = submit(&store, |s| {
            s.write_blocking(|tx| {
                tx.insert_message(&message("C1", 2, "U1", "b"))?;
                Err(StoreError::NotFound)
            })
        });
        let c = submit(&store, |s| {
            s.write_blocking(|tx| {
                tx.insert_message(&message("C1", 3, "U1", "c"))?;
                // The same name again: a constraint violation mid-job.
                tx.insert_user(&user("U2", "alice"), None)
            })
        });
        let d = submit(&store, |s| {
            s.write_blocking(|tx| {
                // A refusal the job recovers from: the rest of it commits.
                if tx.add_reaction("C1", 99, "x", "U1", 1).is_ok() {
                    return Err(StoreError::Conflict);
                }
                tx.insert_message(&message("C1", 4, "U1", "d"))
            })
        });
        let e = submit(&store, |s| {
            s.write_blocking(|tx| {
                tx.insert_message(&message("C1", 5, "U1", "e"))?;
                panic!("a bug in a job");
            })
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.queued_writes() < 5 {
            assert!(Instant::now() < deadline, "jobs never queued");
            thread::sleep(Duration::from_millis(1));
        }
        gate_tx.send(()).unwrap();
        blocker.join().unwrap().unwrap();

        a.join().unwrap().unwrap();
        assert!(matches!(b.join().unwrap(), Err(StoreError::NotFound)));
        assert!(matches!(c.join().unwrap(), Err(StoreError::Conflict)));
        d.join().unwrap().unwrap();
        assert!(e.join().is_err(), "the job's panic reaches its caller");

        let (b1, j1) = store.stats();
        assert_eq!(
            (b1 - b0, j1 - j0),
            (2, 6),
            "blocker's batch + one batch of five"
        );
        let (rows, _) = store
            .read_blocking(|tx| tx.history("C1", Window::default(), None, MAX_PAGE))
            .unwrap();
        let present: Vec<i64> = rows.iter().rev().map(|m| m.ts).collect();
        assert_eq!(present, vec![1, 4]);
        // The writer survived the panic.
        store
            .write_blocking(|tx| tx.insert_message(&message("C1", 6, "U1", "f")))
            .unwrap();
    }

    #[test]
    fn a_job_that_ignores_a_failed_statement() {
        for (temp, store) in temp_stores(Durability::Full) {
            let got = store.write_blocking(|tx| {
                tx.insert_message(&message("C1", 1, "U1", "a"))?;
                let _ = tx.exec("SELECT * FROM no_such_table");
                let _ = tx.insert_message(&message("C1", 2, "U1", "b"));
                Ok(())
            });
            match temp.name() {
                // SQLite goes on after a failed statement: the job commits.
                "sqlite" => {
                    got.unwrap();
                    assert_eq!(count_messages(&store), 2);
                }
                // A PostgreSQL transaction cannot: the job is undone alone,
                // and told so although it returned Ok.
                _ => {
                    assert!(matches!(got, Err(StoreError::Undone(_))), "{got:?}");
                    assert_eq!(count_messages(&store), 0);
                }
            }
            store
                .write_blocking(|tx| tx.insert_message(&message("C1", 3, "U1", "c")))
                .unwrap();
        }
    }

    #[test]
    fn stats_count_one_batch_per_lone_write() {
        for (_temp, store) in temp_stores(Durability::Normal) {
            let (b0, j0) = store.stats();
            for ts in 1..=3 {
                store
                    .write_blocking(move |tx| tx.insert_message(&message("C1", ts, "U1", "x")))
                    .unwrap();
            }
            assert_eq!(store.stats(), (b0 + 3, j0 + 3));
        }
    }
}
