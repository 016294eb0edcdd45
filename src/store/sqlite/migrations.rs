//! Versioned schema migrations.
//!
//! The schema version is SQLite's `PRAGMA user_version` (an integer in the
//! file header, 0 in a new file). `MIGRATIONS[i]` takes version `i` to
//! `i + 1`. Migrations are only ever appended: a released migration is
//! never edited, because files in the field already ran it.
//!
//! A file whose version is *newer* than this binary knows is refused: an old
//! binary writing rows in an old shape into a new schema would corrupt it
//! quietly.

use rusqlite::Connection;

use crate::store::error::StoreError;

/// Migration 1: the schema of the Slack-compatible Web API.
///
/// Conventions: ids are TEXT (`U0G9QF9C6`); every time is INTEGER
/// microseconds since the epoch (a message's `ts` is its id within its
/// channel); booleans are INTEGER 0/1; JSON is TEXT.
const V1: &str = "
CREATE TABLE teams (
    id      TEXT PRIMARY KEY,
    name    TEXT NOT NULL,
    domain  TEXT NOT NULL,
    created INTEGER NOT NULL
);

CREATE TABLE users (
    id         TEXT PRIMARY KEY,
    team_id    TEXT NOT NULL,
    name       TEXT NOT NULL,
    real_name  TEXT NOT NULL DEFAULT '',
    is_bot     INTEGER NOT NULL DEFAULT 0,
    deleted    INTEGER NOT NULL DEFAULT 0,
    tz         TEXT NOT NULL DEFAULT '',
    token_hash BLOB,                 -- SHA-256 of the token secret; never the token
    created    INTEGER NOT NULL,
    profile    TEXT NOT NULL DEFAULT '{}',
    UNIQUE (team_id, name)
);
-- Authenticating a request looks a user up by the hash of its token.
CREATE UNIQUE INDEX users_token_hash ON users (token_hash) WHERE token_hash IS NOT NULL;

CREATE TABLE channels (
    id          TEXT PRIMARY KEY,
    team_id     TEXT NOT NULL,
    name        TEXT NOT NULL,
    is_private  INTEGER NOT NULL DEFAULT 0,
    is_archived INTEGER NOT NULL DEFAULT 0,
    is_general  INTEGER NOT NULL DEFAULT 0,
    created     INTEGER NOT NULL,
    creator     TEXT NOT NULL,
    topic       TEXT NOT NULL DEFAULT '',
    purpose     TEXT NOT NULL DEFAULT '',
    UNIQUE (team_id, name)
);

CREATE TABLE members (
    channel_id TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    joined     INTEGER NOT NULL,
    PRIMARY KEY (channel_id, user_id)
) WITHOUT ROWID;
-- A connecting user's channel list.
CREATE INDEX members_user ON members (user_id, channel_id);

-- Clustered on (channel, ts): a history page is one contiguous range.
CREATE TABLE messages (
    channel_id    TEXT NOT NULL,
    ts            INTEGER NOT NULL,
    user_id       TEXT NOT NULL,
    text          TEXT NOT NULL DEFAULT '',
    blocks        TEXT,
    thread_ts     INTEGER,
    subtype       TEXT,
    client_msg_id TEXT,
    edited_ts     INTEGER,
    edited_user   TEXT,
    deleted       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (channel_id, ts)
) WITHOUT ROWID;
-- Replies of a thread, and reply counts for a history page. Partial: most
-- messages are not in a thread and cost this index nothing.
CREATE INDEX messages_thread ON messages (channel_id, thread_ts, ts)
    WHERE thread_ts IS NOT NULL;

-- A rowid table on purpose: rowid order is the order reactions were added,
-- which is the order Slack lists a reaction's users (and reactions).
CREATE TABLE reactions (
    channel_id TEXT NOT NULL,
    ts         INTEGER NOT NULL,
    name       TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    created    INTEGER NOT NULL,
    PRIMARY KEY (channel_id, ts, name, user_id)
);
";

/// Migration 2: persisted events that are not messages (admin publishes,
/// membership events), so that "persist, then deliver" holds for every
/// persisted event, not only messages.
const V2: &str = "
CREATE TABLE events (
    channel_id TEXT NOT NULL,
    ts         INTEGER NOT NULL,
    json       TEXT NOT NULL,
    PRIMARY KEY (channel_id, ts)
) WITHOUT ROWID;
";

/// Migration 3: the epoch at which each logical ring member's channels
/// were last claimed (a cluster's fencing: `Tx::claim_member`).
const V3: &str = "
CREATE TABLE member_epochs (
    member INTEGER PRIMARY KEY,
    epoch  INTEGER NOT NULL
);
";

/// Migration 4: scheduled messages waiting for their time
/// (`store::scheduled`). AUTOINCREMENT: an id is never handed out twice,
/// even after the newest row was deleted. Times are Unix seconds here
/// (Slack's `post_at`), not microseconds.
const V4: &str = "
CREATE TABLE scheduled (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    channel_id TEXT NOT NULL,
    post_at    INTEGER NOT NULL,
    created    INTEGER NOT NULL,
    user_id    TEXT,                 -- NULL: a backend's event (admin API)
    text       TEXT NOT NULL DEFAULT '',
    blocks     TEXT,
    thread_ts  INTEGER,
    event      TEXT                  -- the admin API's event object
);
CREATE INDEX scheduled_by_time ON scheduled (post_at, id);
CREATE INDEX scheduled_by_channel ON scheduled (channel_id, post_at, id);
";

/// Every migration, oldest first. Append only.
/// Migration 5: pending rows clustered by when they fire. At the top of the
/// hour hundreds of thousands of messages fire in the same second; keyed by
/// id (V4), each one's delete dirtied its own page of the table and of the
/// time index (ids follow scheduling order, not firing order), and each
/// commit wrote those pages to the WAL again: the writer's ceiling
/// (README, issue 11). Keyed by `(post_at, channel_id, id)`, a firing
/// round (`crate::schedule`, taken in that very order) deletes neighbours.
/// An id is still what clients hold: `scheduled_ids` maps it to the key
/// (AUTOINCREMENT, so never reused, continuing V4's sequence). A firing
/// deletes only the row; its id's entry is swept later in id order, when
/// the writer is idle (`SqliteTx::deferred_work`).
const V5: &str = "
CREATE TABLE scheduled_ids (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    post_at    INTEGER NOT NULL,
    channel_id TEXT NOT NULL
);
INSERT INTO scheduled_ids (id, post_at, channel_id) SELECT id, post_at, channel_id FROM scheduled;
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'scheduled_ids', 0
    WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'scheduled_ids');
UPDATE sqlite_sequence
    SET seq = max(seq, coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'scheduled'), 0))
    WHERE name = 'scheduled_ids';

CREATE TABLE scheduled_by_key (
    post_at    INTEGER NOT NULL,
    channel_id TEXT NOT NULL,
    id         INTEGER NOT NULL,
    created    INTEGER NOT NULL,
    user_id    TEXT,                 -- NULL: a backend's event (admin API)
    text       TEXT NOT NULL DEFAULT '',
    blocks     TEXT,
    thread_ts  INTEGER,
    event      TEXT,                 -- the admin API's event object
    PRIMARY KEY (post_at, channel_id, id)
) WITHOUT ROWID;
INSERT INTO scheduled_by_key
    SELECT post_at, channel_id, id, created, user_id, text, blocks, thread_ts, event FROM scheduled;
DROP TABLE scheduled;
ALTER TABLE scheduled_by_key RENAME TO scheduled;
CREATE INDEX scheduled_by_channel ON scheduled (channel_id, post_at, id);
";

const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5];

/// The schema version this binary writes.
pub const LATEST: u32 = MIGRATIONS.len() as u32;

/// The file's schema version.
pub fn version(conn: &Connection) -> Result<u32, StoreError> {
    let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("schema version {v} is invalid")))
}

/// Brings the file to [`LATEST`]; returns how many migrations ran (0 when it
/// was already there). Each migration commits with its version bump, so a
/// crash leaves the file at a whole version.
pub fn migrate(conn: &mut Connection) -> Result<u32, StoreError> {
    migrate_to(conn, LATEST)
}

/// [`migrate`], stopping at version `target` (tests of one migration).
fn migrate_to(conn: &mut Connection, target: u32) -> Result<u32, StoreError> {
    let mut applied = 0;
    loop {
        // IMMEDIATE: take the write lock before reading the version, so two
        // processes opening a new file do not both run migration 1.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let current = version(&tx)?;
        if current > LATEST {
            return Err(StoreError::Corrupt(format!(
                "the database schema is version {current}, newer than this binary's \
                 {LATEST}: it was written by a newer transponder; refusing to open it \
                 (run the newer version, or restore a backup)"
            )));
        }
        if current >= target {
            return Ok(applied);
        }
        tx.execute_batch(MIGRATIONS[current as usize])?;
        tx.pragma_update(None, "user_version", current + 1)?;
        tx.commit()?;
        tracing::info!(version = current + 1, "store: migrated schema");
        applied += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil::{open_temp, user, TempDir};
    use crate::store::{Durability, Store, StoreError, DB_FILE};

    #[test]
    fn a_new_file_gets_the_latest_schema() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(version(&conn).unwrap(), 0);
        assert_eq!(migrate(&mut conn).unwrap(), LATEST);
        assert_eq!(version(&conn).unwrap(), LATEST);
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            tables,
            [
                "channels",
                "events",
                "member_epochs",
                "members",
                "messages",
                "reactions",
                "scheduled",
                "scheduled_ids",
                // AUTOINCREMENT's counters (scheduled ids are never reused).
                "sqlite_sequence",
                "teams",
                "users"
            ]
        );
    }

    /// V5 re-keys pending scheduled messages: every row keeps its id and
    /// content, and an id V4 handed out is never handed out again, even
    /// the newest one, deleted before the upgrade.
    #[test]
    fn scheduled_rows_keep_their_ids_across_v5() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_to(&mut conn, 4).unwrap();
        conn.execute_batch(
            "INSERT INTO scheduled (channel_id, post_at, created, user_id, text, event)
                 VALUES ('C2', 20, 1, 'U1', 'two', '{}'), ('C1', 10, 1, NULL, 'one', '{}'),
                        ('C1', 30, 1, 'U1', 'gone', '{}');
             DELETE FROM scheduled WHERE id = 3;",
        )
        .unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), LATEST - 4);
        let mut tx = crate::store::sqlite::SqliteTx::new(conn);
        use crate::store::Tx;
        let one = tx.scheduled(2).unwrap().unwrap();
        assert_eq!(
            (one.row.channel.as_str(), one.row.text.as_str()),
            ("C1", "one")
        );
        assert_eq!(tx.scheduled(1).unwrap().unwrap().row.text, "two");
        assert!(tx.scheduled(3).unwrap().is_none());
        let mut pending = Vec::new();
        tx.each_scheduled(&mut |id, c, at| pending.push((id, c.to_string(), at)))
            .unwrap();
        assert_eq!(pending, [(2, "C1".into(), 10), (1, "C2".into(), 20)]);
        let next = tx
            .insert_scheduled(&crate::store::scheduled::NewScheduled {
                channel: "C1".into(),
                post_at: 40,
                created: 2,
                user: None,
                text: "next".into(),
                blocks: None,
                thread_ts: None,
                event: Some("{}".into()),
            })
            .unwrap();
        assert_eq!(next, 4, "id 3 was handed out by V4");
    }

    #[test]
    fn migrating_twice_is_a_no_op() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), 0);
        assert_eq!(version(&conn).unwrap(), LATEST);
    }

    #[test]
    fn reopening_a_migrated_store_keeps_its_data() {
        let (dir, store) = open_temp(Durability::Full);
        store
            .write_blocking(|tx| tx.insert_user(&user("U1", "alice"), None))
            .unwrap();
        // PRAGMA schema_version counts every change to the schema.
        let schema_before = store
            .read_blocking(|tx| tx.scalar("PRAGMA schema_version"))
            .unwrap();
        store.close();
        let store = Store::open(dir.path(), Durability::Full).unwrap();
        let (v, schema_after, alice) = store
            .read_blocking(|tx| {
                let s = tx.scalar("PRAGMA schema_version")?;
                Ok((tx.scalar("PRAGMA user_version")? as u32, s, tx.user("U1")?))
            })
            .unwrap();
        assert_eq!(v, LATEST);
        assert_eq!(schema_after, schema_before, "reopening changed the schema");
        assert_eq!(alice.unwrap().name, "alice");
    }

    #[test]
    fn a_store_from_a_newer_version_is_refused() {
        let dir = TempDir::new("newer");
        Store::open(dir.path(), Durability::Full).unwrap().close();
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.pragma_update(None, "user_version", LATEST + 1)
            .unwrap();
        drop(conn);
        match Store::open(dir.path(), Durability::Full) {
            Err(StoreError::Corrupt(msg)) => {
                assert!(msg.contains("newer"), "{msg}");
                assert!(msg.contains(&format!("version {}", LATEST + 1)), "{msg}");
            }
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("opened a store from the future"),
        }
    }
}
