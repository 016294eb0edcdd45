//! SQLite: channel memberships.

use rusqlite::{params, Connection};

use crate::store::error::StoreError;
use crate::store::{limit_plus_one, page};

/// Adds `user` to `channel`. `false` if they already were a member (the
/// API's `already_in_channel`).
pub fn add(conn: &Connection, channel: &str, user: &str, joined: i64) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO members (channel_id, user_id, joined) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![channel, user, joined])?;
    Ok(n == 1)
}

/// Removes `user` from `channel`. `false` if they were not a member
/// (`not_in_channel`).
pub fn remove(conn: &Connection, channel: &str, user: &str) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached("DELETE FROM members WHERE channel_id = ?1 AND user_id = ?2")?
        .execute([channel, user])?;
    Ok(n == 1)
}

pub fn is_member(conn: &Connection, channel: &str, user: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM members WHERE channel_id = ?1 AND user_id = ?2")?
        .exists([channel, user])?)
}

/// A channel's members ordered by user id, after `cursor` (the last user
/// id of the previous page).
pub fn list_members(
    conn: &Connection,
    channel: &str,
    cursor: Option<&str>,
    limit: usize,
) -> Result<(Vec<String>, bool), StoreError> {
    let rows = conn
        .prepare_cached(
            "SELECT user_id FROM members WHERE channel_id = ?1 AND user_id > ?2 ORDER BY user_id LIMIT ?3",
        )?
        .query_map(
            params![channel, cursor.unwrap_or(""), limit_plus_one(limit)],
            |r| r.get(0),
        )?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(page(rows, limit))
}

/// Every channel `user` belongs to, ordered by id.
pub fn channels_of(conn: &Connection, user: &str) -> Result<Vec<String>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT channel_id FROM members WHERE user_id = ?1 ORDER BY channel_id")?
        .query_map([user], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?)
}

/// How many members `channel` has.
pub fn count(conn: &Connection, channel: &str) -> Result<usize, StoreError> {
    let n: i64 = conn
        .prepare_cached("SELECT count(*) FROM members WHERE channel_id = ?1")?
        .query_row([channel], |r| r.get(0))?;
    Ok(n as usize)
}

/// Calls `f(channel, user)` for every membership, ordered by channel then
/// user, without collecting them (warming the membership caches at start;
/// there may be millions). Returns how many there were.
pub fn all(conn: &Connection, f: &mut dyn FnMut(&str, &str)) -> Result<u64, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT channel_id, user_id FROM members ORDER BY channel_id, user_id")?;
    let mut rows = stmt.query([])?;
    let mut n = 0;
    while let Some(r) = rows.next()? {
        // Borrowed straight from SQLite's row buffer: no allocation per row.
        let channel = r.get_ref(0)?.as_str()?;
        let user = r.get_ref(1)?.as_str()?;
        f(channel, user);
        n += 1;
    }
    Ok(n)
}
