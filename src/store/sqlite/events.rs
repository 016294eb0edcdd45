//! SQLite: persisted events that are not message rows.

use rusqlite::{params, Connection};

use crate::store::error::StoreError;

/// Stores an event's final JSON (with its `ts`/`event_ts`). `Conflict` if
/// the channel already has an event at `ts`.
pub fn insert(conn: &Connection, channel: &str, ts: i64, json: &str) -> Result<(), StoreError> {
    conn.prepare_cached("INSERT INTO events (channel_id, ts, json) VALUES (?1, ?2, ?3)")?
        .execute(params![channel, ts, json])
        .map_err(StoreError::conflict_or_sqlite)?;
    Ok(())
}

/// The newest event ts of every channel (warm-up: a restarted channel
/// server continues after what is stored).
pub fn max_ts_all(conn: &Connection, f: &mut dyn FnMut(&str, i64)) -> Result<(), StoreError> {
    let mut stmt = conn.prepare(
        "SELECT channel_id, MAX(ts) FROM (
             SELECT channel_id, ts FROM events
             UNION ALL SELECT channel_id, ts FROM messages
         ) GROUP BY channel_id",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let channel: String = r.get(0)?;
        f(&channel, r.get(1)?);
    }
    Ok(())
}
