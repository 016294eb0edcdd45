//! The PostgreSQL backend: `--store postgres://user@host:port/db`, one
//! database that several nodes can share.
//!
//! The sync `postgres` client, only on the store's own threads (it drives
//! its socket on a private runtime inside each call, never on a shard's
//! executor): the writer thread's connection runs group commit exactly as
//! SQLite's does — one transaction per batch, a savepoint per job, answers
//! after COMMIT — and each reader thread has its own connection, reading in
//! `REPEATABLE READ READ ONLY` transactions (one snapshot per job).
//!
//! # Errors that do not poison
//!
//! After any failed statement a PostgreSQL transaction refuses every
//! further command until it is rolled back to a savepoint. Jobs are allowed
//! to catch `Conflict` or `NotFound` and go on (a reaction added twice is a
//! refusal, not a failure), so the queries never raise those: inserts use
//! `ON CONFLICT DO NOTHING` and report `Conflict` when no row was
//! inserted. Any other failed statement marks the job poisoned, and the
//! writer undoes that job alone (`JobEnd::Poisoned` in `session.rs`).
//!
//! # Reconnecting
//!
//! A job that fails because the connection dropped (the server restarted)
//! gets that error. The next transaction on that thread reconnects first
//! (a lost connection is noticed at BEGIN, before any job ran, so BEGIN is
//! retried once on a fresh connection).

mod import;
pub(crate) mod migrations;
mod scheduled;
mod tx;

use std::collections::HashMap;
use std::time::Duration;

use postgres::types::ToSql;
use postgres::{Client, Config, NoTls, Row, Statement};

use super::error::StoreError;
use super::session::{JobEnd, Session};
use super::teams::{DEFAULT_TEAM_DOMAIN, DEFAULT_TEAM_ID, DEFAULT_TEAM_NAME};
use super::tx::Tx;
use super::Durability;

/// How long connecting may take when the URL does not say
/// (`connect_timeout`): a store thread waiting on a dead address waits
/// this long, not forever.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a connection is for: the settings it gets at every (re)connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Writer(Durability),
    Reader,
    /// Autocommit, for tests and the migration.
    Plain,
}

/// A PostgreSQL connection as a [`Tx`] and a store thread's [`Session`].
/// Owned by the store thread that uses it.
pub(crate) struct PgTx {
    client: Client,
    config: Config,
    role: Role,
    /// Prepared statements of this connection, by SQL text. Cleared on
    /// reconnect (statements belong to a server session).
    statements: HashMap<&'static str, Statement>,
    /// A statement failed since the current job's savepoint.
    poisoned: bool,
    /// The last job's savepoint is to be released: sent with the next
    /// job's SAVEPOINT (one round trip for both), or implied by COMMIT.
    release_pending: bool,
    /// The `application_name` the URL gave (default "transponder"): the
    /// prefix of a cluster node's session label (`Tx::label_session`), so
    /// clusters (and tests) sharing one server tell their sessions apart.
    label_base: String,
}

/// Connects, migrates, makes sure the default team exists, and returns the
/// writer's session and `readers` reader sessions.
pub(crate) fn open(
    url: &str,
    durability: Durability,
    readers: usize,
    now: i64,
) -> Result<(PgTx, Vec<PgTx>), StoreError> {
    let config = parse(url)?;
    let mut writer = PgTx::connect(config.clone(), Role::Plain)?;
    migrations::migrate(&mut writer.client)?;
    writer.execute(
        "INSERT INTO teams (id, name, domain, created) VALUES ($1, $2, $3, $4)
         ON CONFLICT DO NOTHING",
        &[
            &DEFAULT_TEAM_ID,
            &DEFAULT_TEAM_NAME,
            &DEFAULT_TEAM_DOMAIN,
            &now,
        ],
    )?;
    writer.role = Role::Writer(durability);
    writer.configure()?;
    let readers = (0..readers)
        .map(|_| PgTx::connect(config.clone(), Role::Reader))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((writer, readers))
}

/// The URL as a client configuration, with a connect timeout by default.
fn parse(url: &str) -> Result<Config, StoreError> {
    let mut config: Config = url
        .parse()
        .map_err(|e| StoreError::Corrupt(format!("bad PostgreSQL URL: {e}")))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("transponder");
    }
    Ok(config)
}

impl PgTx {
    fn connect(config: Config, role: Role) -> Result<PgTx, StoreError> {
        let client = config.connect(NoTls)?;
        let label_base = config
            .get_application_name()
            .unwrap_or("transponder")
            .to_string();
        let mut tx = PgTx {
            label_base,
            client,
            config,
            role,
            statements: HashMap::new(),
            poisoned: false,
            release_pending: false,
        };
        tx.configure()?;
        Ok(tx)
    }

    /// An autocommit connection to `url`, for tests.
    #[cfg(test)]
    pub(crate) fn plain(url: &str) -> PgTx {
        PgTx::connect(parse(url).unwrap(), Role::Plain).unwrap()
    }

    /// The client, for tests that migrate a schema by hand.
    #[cfg(test)]
    pub(crate) fn client_mut(&mut self) -> &mut Client {
        &mut self.client
    }

    /// The session settings of the connection's role.
    fn configure(&mut self) -> Result<(), StoreError> {
        let settings = match self.role {
            // on: COMMIT returns once the WAL is flushed. off: once it is
            // written to the server's memory; a crash of this process loses
            // nothing, a crash of the server may lose the last commits.
            Role::Writer(Durability::Full) => "SET synchronous_commit = on",
            Role::Writer(Durability::Normal) => "SET synchronous_commit = off",
            Role::Reader => "SET default_transaction_read_only = on",
            Role::Plain => return Ok(()),
        };
        self.client.batch_execute(settings)?;
        Ok(())
    }

    /// A fresh connection in place of a lost one.
    fn reconnect(&mut self) -> Result<(), StoreError> {
        tracing::warn!("store: reconnecting to PostgreSQL");
        self.statements.clear();
        self.client = self.config.connect(NoTls)?;
        self.configure()?;
        tracing::info!("store: reconnected to PostgreSQL");
        Ok(())
    }

    /// Runs `sql` (a transaction-control statement) as a simple query; on a
    /// lost connection, reconnects and runs it once more.
    fn begin(&mut self, sql: &str) -> Result<(), StoreError> {
        self.poisoned = false;
        self.release_pending = false;
        if self.client.is_closed() {
            self.reconnect()?;
        }
        match self.client.batch_execute(sql) {
            Err(e) if e.is_closed() || self.client.is_closed() => {
                self.reconnect()?;
                Ok(self.client.batch_execute(sql)?)
            }
            other => Ok(other?),
        }
    }

    fn control(&mut self, sql: &str) -> Result<(), StoreError> {
        Ok(self.client.batch_execute(sql)?)
    }

    /// [`PgTx::control`] inside a job: a failure poisons the job, as a
    /// failed query does.
    fn control_in_job(&mut self, sql: &str) -> Result<(), StoreError> {
        self.client.batch_execute(sql).map_err(|e| self.failed(e))
    }

    /// The error of a failed query; marks the job poisoned (see the module
    /// notes).
    fn failed(&mut self, e: postgres::Error) -> StoreError {
        self.poisoned = true;
        StoreError::from(e)
    }

    fn prepared(&mut self, sql: &'static str) -> Result<Statement, StoreError> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql).map_err(|e| self.failed(e))?;
        self.statements.insert(sql, s.clone());
        Ok(s)
    }

    fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let s = self.prepared(sql)?;
        self.client.query(&s, params).map_err(|e| self.failed(e))
    }

    fn query_opt(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, StoreError> {
        let s = self.prepared(sql)?;
        self.client
            .query_opt(&s, params)
            .map_err(|e| self.failed(e))
    }

    fn execute(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        let s = self.prepared(sql)?;
        self.client.execute(&s, params).map_err(|e| self.failed(e))
    }

    /// Streams the rows of `sql` (no parameters) into `f`, without
    /// collecting them: the warm-up reads millions.
    fn each_row(
        &mut self,
        sql: &'static str,
        mut f: impl FnMut(&Row) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        use postgres::fallible_iterator::FallibleIterator;
        let s = self.prepared(sql)?;
        let mut n = 0;
        let streamed = (|| {
            let mut rows = self
                .client
                .query_raw(&s, std::iter::empty::<&(dyn ToSql + Sync)>())?;
            while let Some(row) = rows.next()? {
                f(&row).map_err(Streamed::Row)?;
                n += 1;
            }
            Ok::<(), Streamed>(())
        })();
        match streamed {
            Ok(()) => Ok(n),
            Err(Streamed::Row(e)) => Err(e),
            Err(Streamed::Query(e)) => Err(self.failed(e)),
        }
    }
}

/// Why streaming rows stopped: the query failed (the transaction is
/// poisoned), or the caller refused a row (it is not).
enum Streamed {
    Query(postgres::Error),
    Row(StoreError),
}

impl From<postgres::Error> for Streamed {
    fn from(e: postgres::Error) -> Streamed {
        Streamed::Query(e)
    }
}

impl Session for PgTx {
    fn begin_write(&mut self) -> Result<(), StoreError> {
        self.begin("BEGIN")
    }

    fn begin_read(&mut self) -> Result<(), StoreError> {
        self.begin("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    }

    fn savepoint(&mut self) -> Result<(), StoreError> {
        self.poisoned = false;
        if std::mem::take(&mut self.release_pending) {
            self.control("RELEASE SAVEPOINT job; SAVEPOINT job")
        } else {
            self.control("SAVEPOINT job")
        }
    }

    fn release(&mut self) -> Result<(), StoreError> {
        // Deferred: a round trip per job saved (see `release_pending`).
        // Kept savepoints must not pile up either way: PostgreSQL slows
        // down past 64 open subtransactions.
        self.release_pending = true;
        Ok(())
    }

    fn rollback_to_savepoint(&mut self) -> Result<(), StoreError> {
        self.poisoned = false;
        self.control("ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job")
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        // COMMIT releases every savepoint.
        self.release_pending = false;
        self.control("COMMIT")
    }

    fn rollback(&mut self) -> Result<(), StoreError> {
        self.release_pending = false;
        if self.client.is_closed() {
            // The server rolls back a transaction whose connection is gone.
            return Ok(());
        }
        self.control("ROLLBACK")
    }

    fn job_end(&mut self) -> JobEnd {
        if self.poisoned {
            JobEnd::Poisoned
        } else {
            JobEnd::Intact
        }
    }

    fn tx(&mut self) -> &mut dyn Tx {
        self
    }
}
