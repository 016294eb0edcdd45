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

/// Events of `channel` after `after`, oldest first, at most `limit`.
pub fn after(
    conn: &Connection,
    channel: &str,
    after: i64,
    limit: usize,
) -> Result<Vec<(i64, String)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT ts, json FROM events WHERE channel_id = ?1 AND ts > ?2 ORDER BY ts LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![channel, after, limit as i64], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The newest `limit` events of `channel`, oldest first.
pub fn last(
    conn: &Connection,
    channel: &str,
    limit: usize,
) -> Result<Vec<(i64, String)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT ts, json FROM events WHERE channel_id = ?1 ORDER BY ts DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![channel, limit as i64], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    let mut out: Vec<(i64, String)> = rows.collect::<Result<_, _>>()?;
    out.reverse();
    Ok(out)
}

/// The newest ts of `channel`, events and messages alike.
pub fn channel_max_ts(conn: &Connection, channel: &str) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT MAX(ts) FROM (
                 SELECT ts FROM events WHERE channel_id = ?1
                 UNION ALL SELECT ts FROM messages WHERE channel_id = ?1
             )",
        )?
        .query_row(params![channel], |r| r.get(0))?)
}

/// `Tx::claim_member`.
pub fn claim_member(conn: &Connection, member: u32, epoch: u64) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached(
            "INSERT INTO member_epochs (member, epoch) VALUES (?1, ?2)
             ON CONFLICT (member) DO UPDATE SET epoch = excluded.epoch
             WHERE member_epochs.epoch <= excluded.epoch",
        )?
        .execute(params![member, epoch as i64])?;
    Ok(n > 0)
}

/// `Tx::member_epoch_holds` (one writer: no lock needed beyond SQLite's).
pub fn member_epoch_holds(conn: &Connection, member: u32, epoch: u64) -> Result<bool, StoreError> {
    let claimed: Option<i64> = conn
        .prepare_cached("SELECT epoch FROM member_epochs WHERE member = ?1")?
        .query_row(params![member], |r| r.get(0))
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    Ok(claimed.is_none_or(|c| c as u64 <= epoch))
}
