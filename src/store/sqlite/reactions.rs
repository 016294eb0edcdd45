//! SQLite: reactions. A rowid table: rowid order is the order reactions
//! were added (see migration 1).

use rusqlite::{params, Connection};

use crate::store::error::StoreError;

pub fn insert(
    conn: &Connection,
    channel: &str,
    ts: i64,
    name: &str,
    user: &str,
    created: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO reactions (channel_id, ts, name, user_id, created) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![channel, ts, name, user, created])
    .map_err(StoreError::conflict_or_sqlite)?;
    Ok(())
}

pub fn delete(
    conn: &Connection,
    channel: &str,
    ts: i64,
    name: &str,
    user: &str,
) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached(
            "DELETE FROM reactions WHERE channel_id = ?1 AND ts = ?2 AND name = ?3 AND user_id = ?4",
        )?
        .execute(params![channel, ts, name, user])?;
    Ok(n == 1)
}

pub fn rows(
    conn: &Connection,
    channel: &str,
    lo: i64,
    hi: i64,
) -> Result<Vec<(i64, String, String)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT ts, name, user_id FROM reactions
         WHERE channel_id = ?1 AND ts >= ?2 AND ts <= ?3
         ORDER BY rowid",
    )?;
    let rows = stmt
        .query_map(params![channel, lo, hi], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}
