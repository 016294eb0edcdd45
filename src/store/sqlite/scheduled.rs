//! SQLite: scheduled messages (`store::scheduled`).

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::store::error::StoreError;
use crate::store::scheduled::{NewScheduled, ScheduledFilter, ScheduledKey, ScheduledRow};
use crate::store::{limit_plus_one, page};

const COLUMNS: &str = "id, channel_id, post_at, created, user_id, text, blocks, thread_ts, event";

fn row(r: &Row) -> rusqlite::Result<ScheduledRow> {
    Ok(ScheduledRow {
        id: r.get(0)?,
        row: NewScheduled {
            channel: r.get(1)?,
            post_at: r.get(2)?,
            created: r.get(3)?,
            user: r.get(4)?,
            text: r.get(5)?,
            blocks: r.get(6)?,
            thread_ts: r.get(7)?,
            event: r.get(8)?,
        },
    })
}

/// Two rows: the id's entry (which hands out the id) and the message under
/// its key.
pub fn insert(conn: &Connection, s: &NewScheduled) -> Result<i64, StoreError> {
    conn.prepare_cached("INSERT INTO scheduled_ids (post_at, channel_id) VALUES (?1, ?2)")?
        .execute(params![s.post_at, s.channel])?;
    let id = conn.last_insert_rowid();
    conn.prepare_cached(
        "INSERT INTO scheduled (post_at, channel_id, id, created, user_id, text, blocks, thread_ts, event)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        s.post_at,
        s.channel,
        id,
        s.created,
        s.user,
        s.text,
        s.blocks,
        s.thread_ts,
        s.event
    ])?;
    Ok(id)
}

/// The key of pending message `id`: `None` if it has none, or if its entry
/// outlived the row (fired, and not swept yet).
fn key_of(conn: &Connection, id: i64) -> Result<Option<ScheduledKey>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT post_at, channel_id FROM scheduled_ids WHERE id = ?1")?
        .query_row(params![id], |r| {
            Ok(ScheduledKey {
                post_at: r.get(0)?,
                channel: r.get(1)?,
                id,
            })
        })
        .optional()?)
}

pub fn get(conn: &Connection, id: i64) -> Result<Option<ScheduledRow>, StoreError> {
    match key_of(conn, id)? {
        Some(k) => Ok(between(conn, k.post_at, &k.channel, id, id)?.pop()),
        None => Ok(None),
    }
}

pub fn between(
    conn: &Connection,
    post_at: i64,
    channel: &str,
    lo: i64,
    hi: i64,
) -> Result<Vec<ScheduledRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM scheduled
         WHERE post_at = ?1 AND channel_id = ?2 AND id BETWEEN ?3 AND ?4 ORDER BY id"
    ))?;
    let rows = stmt.query_map(params![post_at, channel, lo, hi], row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Cancels `id`: its row and its entry (one message; the pages it dirties
/// are its own business).
pub fn delete(conn: &Connection, id: i64) -> Result<bool, StoreError> {
    let Some(key) = key_of(conn, id)? else {
        return Ok(false);
    };
    let deleted = retire(conn, &key)?;
    conn.prepare_cached("DELETE FROM scheduled_ids WHERE id = ?1")?
        .execute(params![id])?;
    Ok(deleted)
}

/// Deletes the row under `key` and leaves its id's entry for
/// [`sweep_ids`]: a firing round deletes rows that are neighbours under
/// their keys, but whose ids are scattered.
pub fn retire(conn: &Connection, key: &ScheduledKey) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached("DELETE FROM scheduled WHERE post_at = ?1 AND channel_id = ?2 AND id = ?3")?
        .execute(params![key.post_at, key.channel, key.id])?;
    Ok(n > 0)
}

/// An entry of `scheduled_ids` whose row is gone (its message fired).
const ORPHANED_ID: &str = "NOT EXISTS (
    SELECT 1 FROM scheduled s
    WHERE s.post_at = scheduled_ids.post_at AND s.channel_id = scheduled_ids.channel_id
      AND s.id = scheduled_ids.id)";

/// Deletes the entries of `ids` whose row is gone; `ids` ascending, so
/// they are neighbours in the entries' table. An id whose row is back
/// (its firing was rolled back) keeps its entry.
pub fn sweep_ids(conn: &Connection, ids: &[i64]) -> Result<usize, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "DELETE FROM scheduled_ids WHERE id = ?1 AND {ORPHANED_ID}"
    ))?;
    let mut swept = 0;
    for id in ids {
        swept += stmt.execute(params![id])?;
    }
    Ok(swept)
}

/// Deletes every entry whose row is gone: at open, for the ids of messages
/// that fired before a crash or stop let them be swept. Every row has its
/// entry, so equal counts mean there is none to sweep, and a start with a
/// million pending messages does not look each one up.
pub fn sweep_all_ids(conn: &Connection) -> Result<usize, StoreError> {
    let count = |table: &str| -> Result<i64, StoreError> {
        Ok(conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?)
    };
    if count("scheduled_ids")? == count("scheduled")? {
        return Ok(0);
    }
    Ok(conn.execute(
        &format!("DELETE FROM scheduled_ids WHERE {ORPHANED_ID}"),
        [],
    )?)
}

pub fn list(
    conn: &Connection,
    f: &ScheduledFilter,
    limit: usize,
) -> Result<(Vec<ScheduledRow>, bool), StoreError> {
    let (after_at, after_id) = f.after.unzip();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM scheduled
         WHERE (?1 IS NULL OR channel_id = ?1) AND (?2 IS NULL OR user_id = ?2)
           AND (?3 IS NULL OR post_at >= ?3) AND (?4 IS NULL OR post_at <= ?4)
           AND (?5 IS NULL OR post_at > ?5 OR (post_at = ?5 AND id > ?6))
         ORDER BY post_at, id LIMIT ?7"
    ))?;
    let rows = stmt.query_map(
        params![
            f.channel,
            f.user,
            f.oldest,
            f.latest,
            after_at,
            after_id,
            limit_plus_one(limit)
        ],
        row,
    )?;
    Ok(page(rows.collect::<Result<_, _>>()?, limit))
}

pub fn count_between(
    conn: &Connection,
    channel: &str,
    lo: i64,
    hi: i64,
) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT count(*) FROM scheduled WHERE channel_id = ?1 AND post_at BETWEEN ?2 AND ?3",
        )?
        .query_row(params![channel, lo, hi], |r| r.get(0))?)
}

pub fn each(conn: &Connection, f: &mut dyn FnMut(i64, &str, i64)) -> Result<u64, StoreError> {
    // In key order: by time, then channel (the order timers are kept in).
    let mut stmt = conn.prepare("SELECT id, channel_id, post_at FROM scheduled")?;
    let mut rows = stmt.query([])?;
    let mut n = 0;
    while let Some(r) = rows.next()? {
        let channel: String = r.get(1)?;
        f(r.get(0)?, &channel, r.get(2)?);
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use crate::store::scheduled::{NewScheduled, ScheduledKey};
    use crate::store::session::Session;
    use crate::store::sqlite::SqliteTx;
    use crate::store::testutil::open_temp;
    use crate::store::{Durability, Tx};

    fn new(channel: &str, post_at: i64) -> NewScheduled {
        NewScheduled {
            channel: channel.into(),
            post_at,
            created: 1,
            user: None,
            text: format!("at {post_at}"),
            blocks: None,
            thread_ts: None,
            event: Some("{}".into()),
        }
    }

    fn key(channel: &str, post_at: i64, id: i64) -> ScheduledKey {
        ScheduledKey {
            post_at,
            channel: channel.into(),
            id,
        }
    }

    fn entries(tx: &mut SqliteTx) -> i64 {
        tx.scalar("SELECT count(*) FROM scheduled_ids").unwrap()
    }

    #[test]
    fn fired_ids_are_swept_later_unless_their_row_came_back() {
        let mut tx = SqliteTx::memory();
        let ids: Vec<i64> = [("C1", 10), ("C2", 10), ("C1", 20)]
            .iter()
            .map(|&(c, at)| tx.insert_scheduled(&new(c, at)).unwrap())
            .collect();
        assert!(tx.retire_scheduled(&key("C2", 10, ids[1])).unwrap());
        assert!(tx.retire_scheduled(&key("C1", 10, ids[0])).unwrap());
        assert_eq!(entries(&mut tx), 3, "a firing leaves the id's entry");
        assert!(tx.scheduled(ids[0]).unwrap().is_none());
        // A firing whose transaction rolled back: its row is back.
        tx.exec("BEGIN").unwrap();
        assert!(tx.retire_scheduled(&key("C1", 20, ids[2])).unwrap());
        tx.exec("ROLLBACK").unwrap();
        assert!(tx.has_deferred_work());
        tx.deferred_work().unwrap();
        assert!(!tx.has_deferred_work(), "one batch took all three");
        assert_eq!(entries(&mut tx), 1);
        assert_eq!(tx.scheduled(ids[2]).unwrap().unwrap().row.post_at, 20);
    }

    #[test]
    fn opening_sweeps_the_ids_a_stop_left() {
        let (dir, store) = open_temp(Durability::Normal);
        let id = store
            .write_blocking(|tx| tx.insert_scheduled(&new("C1", 10)))
            .unwrap();
        // What a firing committed just before a stop leaves: the row gone,
        // the entry not swept yet.
        store
            .write_blocking(move |tx| tx.exec(&format!("DELETE FROM scheduled WHERE id = {id}")))
            .unwrap();
        let left = store
            .read_blocking(|tx| tx.scalar("SELECT count(*) FROM scheduled_ids"))
            .unwrap();
        assert_eq!(left, 1);
        store.close();
        let store = crate::store::Store::open(dir.path(), Durability::Normal).unwrap();
        let left = store
            .read_blocking(|tx| tx.scalar("SELECT count(*) FROM scheduled_ids"))
            .unwrap();
        assert_eq!(left, 0);
    }

    #[test]
    fn the_idle_writer_sweeps_what_fired() {
        let (_dir, store) = open_temp(Durability::Normal);
        let ids: Vec<i64> = store
            .write_blocking(|tx| (0..3).map(|i| tx.insert_scheduled(&new("C1", i))).collect())
            .unwrap();
        let keys: Vec<ScheduledKey> = ids
            .iter()
            .zip(0..)
            .map(|(&id, at)| key("C1", at, id))
            .collect();
        let fired = store
            .write_blocking(move |tx| {
                keys[..2]
                    .iter()
                    .map(|k| tx.retire_scheduled(k))
                    .collect::<Result<Vec<bool>, _>>()
            })
            .unwrap();
        assert_eq!(fired, [true, true]);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = store
                .read_blocking(|tx| tx.scalar("SELECT count(*) FROM scheduled_ids"))
                .unwrap();
            if left == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "{left} entries after 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
