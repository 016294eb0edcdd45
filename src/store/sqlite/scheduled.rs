//! SQLite: scheduled messages (`store::scheduled`).

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::store::error::StoreError;
use crate::store::scheduled::{NewScheduled, ScheduledFilter, ScheduledRow};
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

pub fn insert(conn: &Connection, s: &NewScheduled) -> Result<i64, StoreError> {
    conn.prepare_cached(
        "INSERT INTO scheduled (channel_id, post_at, created, user_id, text, blocks, thread_ts, event)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        s.channel,
        s.post_at,
        s.created,
        s.user,
        s.text,
        s.blocks,
        s.thread_ts,
        s.event
    ])?;
    Ok(conn.last_insert_rowid())
}

pub fn get(conn: &Connection, id: i64) -> Result<Option<ScheduledRow>, StoreError> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM scheduled WHERE id = ?1"))?
        .query_row(params![id], row)
        .optional()?)
}

pub fn delete(conn: &Connection, id: i64) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached("DELETE FROM scheduled WHERE id = ?1")?
        .execute(params![id])?;
    Ok(n > 0)
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
    let mut stmt =
        conn.prepare("SELECT id, channel_id, post_at FROM scheduled ORDER BY post_at, id")?;
    let mut rows = stmt.query([])?;
    let mut n = 0;
    while let Some(r) = rows.next()? {
        let channel: String = r.get(1)?;
        f(r.get(0)?, &channel, r.get(2)?);
        n += 1;
    }
    Ok(n)
}
