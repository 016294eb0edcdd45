//! Versioned schema migrations of the PostgreSQL backend.
//!
//! The same schema as SQLite's (`sqlite/migrations.rs`), migration for
//! migration, in PostgreSQL's types: ids and names `TEXT COLLATE "C"`
//! (byte order, as SQLite compares them, whatever the database's locale:
//! cursors page by id), times `BIGINT` microseconds, flags `BOOLEAN`, JSON
//! `TEXT` (kept as given), token hashes `BYTEA`. The keys that make ids,
//! names within a team and `(channel_id, ts)` unique are the same; the
//! last is what fences a stale channel owner in a cluster (a second
//! message at a ts is refused by the store, whoever sends it).
//!
//! The version is the one row of `transponder_schema`. `MIGRATIONS[i]`
//! takes version `i` to `i + 1`; migrations are only ever appended. All of
//! it runs in one transaction under an advisory lock, so nodes starting
//! together migrate once, and a crash leaves the database at a whole
//! version (PostgreSQL's DDL is transactional). A database whose version is
//! newer than this binary knows is refused.

use postgres::Client;

use crate::store::error::StoreError;

/// Migration 1: the schema of the Slack-compatible Web API.
const V1: &str = r#"
CREATE TABLE teams (
    id      TEXT COLLATE "C" PRIMARY KEY,
    name    TEXT NOT NULL,
    domain  TEXT NOT NULL,
    created BIGINT NOT NULL
);

CREATE TABLE users (
    id         TEXT COLLATE "C" PRIMARY KEY,
    team_id    TEXT COLLATE "C" NOT NULL,
    name       TEXT COLLATE "C" NOT NULL,
    real_name  TEXT NOT NULL DEFAULT '',
    is_bot     BOOLEAN NOT NULL DEFAULT FALSE,
    deleted    BOOLEAN NOT NULL DEFAULT FALSE,
    tz         TEXT NOT NULL DEFAULT '',
    token_hash BYTEA,                 -- SHA-256 of the token secret; never the token
    created    BIGINT NOT NULL,
    profile    TEXT NOT NULL DEFAULT '{}',
    UNIQUE (team_id, name)
);
CREATE UNIQUE INDEX users_token_hash ON users (token_hash) WHERE token_hash IS NOT NULL;

CREATE TABLE channels (
    id          TEXT COLLATE "C" PRIMARY KEY,
    team_id     TEXT COLLATE "C" NOT NULL,
    name        TEXT COLLATE "C" NOT NULL,
    is_private  BOOLEAN NOT NULL DEFAULT FALSE,
    is_archived BOOLEAN NOT NULL DEFAULT FALSE,
    is_general  BOOLEAN NOT NULL DEFAULT FALSE,
    created     BIGINT NOT NULL,
    creator     TEXT NOT NULL,
    topic       TEXT NOT NULL DEFAULT '',
    purpose     TEXT NOT NULL DEFAULT '',
    UNIQUE (team_id, name)
);

CREATE TABLE members (
    channel_id TEXT COLLATE "C" NOT NULL,
    user_id    TEXT COLLATE "C" NOT NULL,
    joined     BIGINT NOT NULL,
    PRIMARY KEY (channel_id, user_id)
);
-- A connecting user's channel list.
CREATE INDEX members_user ON members (user_id, channel_id);

CREATE TABLE messages (
    channel_id    TEXT COLLATE "C" NOT NULL,
    ts            BIGINT NOT NULL,
    user_id       TEXT COLLATE "C" NOT NULL,
    text          TEXT NOT NULL DEFAULT '',
    blocks        TEXT,
    thread_ts     BIGINT,
    subtype       TEXT,
    client_msg_id TEXT,
    edited_ts     BIGINT,
    edited_user   TEXT,
    deleted       BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (channel_id, ts)
);
-- Replies of a thread, and reply counts for a history page. Partial: most
-- messages are not in a thread and cost this index nothing.
CREATE INDEX messages_thread ON messages (channel_id, thread_ts, ts)
    WHERE thread_ts IS NOT NULL;

-- seq is the order reactions were added, which is the order Slack lists a
-- reaction's users (and reactions): SQLite's rowid.
CREATE TABLE reactions (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY,
    channel_id TEXT COLLATE "C" NOT NULL,
    ts         BIGINT NOT NULL,
    name       TEXT COLLATE "C" NOT NULL,
    user_id    TEXT COLLATE "C" NOT NULL,
    created    BIGINT NOT NULL,
    PRIMARY KEY (channel_id, ts, name, user_id)
);
CREATE INDEX reactions_order ON reactions (channel_id, ts, seq);
"#;

/// Migration 2: persisted events that are not messages.
const V2: &str = r#"
CREATE TABLE events (
    channel_id TEXT COLLATE "C" NOT NULL,
    ts         BIGINT NOT NULL,
    json       TEXT NOT NULL,
    PRIMARY KEY (channel_id, ts)
);
"#;

/// Migration 3: the epoch at which each logical ring member's channels
/// were last claimed (a cluster's fencing: `Tx::claim_member`).
const V3: &str = r#"
CREATE TABLE member_epochs (
    member BIGINT PRIMARY KEY,
    epoch  BIGINT NOT NULL
);
"#;

/// Migration 4: scheduled messages waiting for their time
/// (`store::scheduled`); BIGSERIAL ids are never handed out twice. Times
/// are Unix seconds here (Slack's `post_at`).
const V4: &str = r#"
CREATE TABLE scheduled (
    id         BIGSERIAL PRIMARY KEY,
    channel_id TEXT NOT NULL,
    post_at    BIGINT NOT NULL,
    created    BIGINT NOT NULL,
    user_id    TEXT,
    text       TEXT NOT NULL DEFAULT '',
    blocks     TEXT,
    thread_ts  BIGINT,
    event      TEXT
);
CREATE INDEX scheduled_by_time ON scheduled (post_at, id);
CREATE INDEX scheduled_by_channel ON scheduled (channel_id, post_at, id);
"#;

/// Every migration, oldest first. Append only.
const MIGRATIONS: &[&str] = &[V1, V2, V3, V4];

/// The schema version this binary writes.
pub const LATEST: u32 = MIGRATIONS.len() as u32;

/// Any constant both sides agree on: the key of the advisory lock that
/// serializes migrations across nodes ("trnspndr" in ASCII).
const MIGRATION_LOCK: i64 = 0x7472_6e73_706e_6472;

/// Brings the database to [`LATEST`]; returns how many migrations ran.
pub fn migrate(client: &mut Client) -> Result<u32, StoreError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS transponder_schema (version INTEGER NOT NULL)")?;
    let current: i32 = match tx.query_opt("SELECT version FROM transponder_schema", &[])? {
        Some(row) => row.get(0),
        None => {
            tx.execute("INSERT INTO transponder_schema (version) VALUES (0)", &[])?;
            0
        }
    };
    let current = u32::try_from(current)
        .map_err(|_| StoreError::Corrupt(format!("schema version {current} is invalid")))?;
    if current > LATEST {
        return Err(StoreError::Corrupt(format!(
            "the database schema is version {current}, newer than this binary's \
             {LATEST}: it was written by a newer transponder; refusing to open it \
             (run the newer version, or restore a backup)"
        )));
    }
    if current == LATEST {
        return Ok(0);
    }
    for v in current..LATEST {
        tx.batch_execute(MIGRATIONS[v as usize])?;
        tracing::info!(version = v + 1, "store: migrated the PostgreSQL schema");
    }
    tx.execute(
        "UPDATE transponder_schema SET version = $1",
        &[&(LATEST as i32)],
    )?;
    tx.commit()?;
    Ok(LATEST - current)
}

/// The database's schema version (0 before the first migration).
#[cfg(test)]
pub fn version(client: &mut Client) -> Result<u32, StoreError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('transponder_schema') IS NOT NULL", &[])?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let v: i32 = client
        .query_opt("SELECT version FROM transponder_schema", &[])?
        .map_or(0, |r| r.get(0));
    Ok(v.max(0) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::pg::PgTx;
    use crate::store::testutil::{user, PgSchema};
    use crate::store::{Backend, Durability, Store, StoreError, Tx};

    #[test]
    fn a_new_schema_gets_the_latest_version_once() {
        let schema = PgSchema::new("migrate");
        let mut tx = PgTx::plain(schema.url());
        let client = tx.client_mut();
        assert_eq!(version(client).unwrap(), 0);
        assert_eq!(migrate(client).unwrap(), LATEST);
        assert_eq!(version(client).unwrap(), LATEST);
        assert_eq!(migrate(client).unwrap(), 0, "migrating twice is a no-op");
        let tables = tx
            .scalar(
                "SELECT count(*) FROM information_schema.tables
                 WHERE table_schema = current_schema()
                   AND table_name IN ('teams', 'users', 'channels', 'members',
                                      'messages', 'reactions', 'events')",
            )
            .unwrap();
        assert_eq!(tables, 7);
    }

    #[test]
    fn reopening_keeps_the_data_and_a_newer_schema_is_refused() {
        let schema = PgSchema::new("newer");
        let backend = Backend::Postgres(schema.url().to_string());
        let store = Store::open_backend(&backend, Durability::Full).unwrap();
        store
            .write_blocking(|tx| tx.insert_user(&user("U1", "alice"), None))
            .unwrap();
        store.close();
        let store = Store::open_backend(&backend, Durability::Full).unwrap();
        let alice = store.read_blocking(|tx| tx.user("U1")).unwrap();
        assert_eq!(alice.unwrap().name, "alice");
        store.close();

        PgTx::plain(schema.url())
            .exec(&format!(
                "UPDATE transponder_schema SET version = {}",
                LATEST + 1
            ))
            .unwrap();
        match Store::open_backend(&backend, Durability::Full) {
            Err(StoreError::Corrupt(msg)) => {
                assert!(msg.contains("newer"), "{msg}");
                assert!(msg.contains(&format!("version {}", LATEST + 1)), "{msg}");
            }
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("opened a store from the future"),
        }
    }
}
