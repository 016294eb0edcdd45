//! SQLite: channels.

use rusqlite::{params, Connection, Row};

use crate::store::channels::{ChannelRow, ChannelTypes};
use crate::store::error::StoreError;
use crate::store::{limit_plus_one, page};

const COLUMNS: &str =
    "c.id, c.team_id, c.name, c.is_private, c.is_archived, c.is_general, c.created, c.creator, c.topic, c.purpose";

fn read(r: &Row<'_>) -> rusqlite::Result<ChannelRow> {
    Ok(ChannelRow {
        id: r.get(0)?,
        team_id: r.get(1)?,
        name: r.get(2)?,
        is_private: r.get(3)?,
        is_archived: r.get(4)?,
        is_general: r.get(5)?,
        created: r.get(6)?,
        creator: r.get(7)?,
        topic: r.get(8)?,
        purpose: r.get(9)?,
    })
}

/// Adds a channel. `Conflict` if the id or the name within the team is
/// taken (`name_taken`).
pub fn insert(conn: &Connection, ch: &ChannelRow) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO channels (id, team_id, name, is_private, is_archived, is_general, created, creator, topic, purpose)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        ch.id,
        ch.team_id,
        ch.name,
        ch.is_private,
        ch.is_archived,
        ch.is_general,
        ch.created,
        ch.creator,
        ch.topic,
        ch.purpose,
    ])
    .map_err(StoreError::conflict_or_sqlite)?;
    Ok(())
}

pub fn get(conn: &Connection, id: &str) -> Result<Option<ChannelRow>, StoreError> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {COLUMNS} FROM channels c WHERE c.id = ?1"))?;
    let mut rows = stmt.query([id])?;
    Ok(rows.next()?.map(read).transpose()?)
}

pub fn by_name(
    conn: &Connection,
    team_id: &str,
    name: &str,
) -> Result<Option<ChannelRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM channels c WHERE c.team_id = ?1 AND c.name = ?2"
    ))?;
    let mut rows = stmt.query([team_id, name])?;
    Ok(rows.next()?.map(read).transpose()?)
}

/// Channels ordered by id, after `cursor` (the last id of the previous
/// page). Private channels are listed only if `types` asks for them and,
/// when `member_of` is a user, only those that user belongs to
/// (`member_of: None` is the operator's view: all of them).
pub fn list(
    conn: &Connection,
    types: ChannelTypes,
    exclude_archived: bool,
    member_of: Option<&str>,
    cursor: Option<&str>,
    limit: usize,
) -> Result<(Vec<ChannelRow>, bool), StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM channels c
         WHERE c.id > ?1
           AND (?2 = 0 OR c.is_archived = 0)
           AND (   (c.is_private = 0 AND ?3)
                OR (c.is_private = 1 AND ?4 AND (?5 IS NULL OR EXISTS (
                        SELECT 1 FROM members m WHERE m.channel_id = c.id AND m.user_id = ?5))))
         ORDER BY c.id
         LIMIT ?6"
    ))?;
    let rows = stmt
        .query_map(
            params![
                cursor.unwrap_or(""),
                exclude_archived,
                types.public,
                types.private,
                member_of,
                limit_plus_one(limit)
            ],
            read,
        )?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page(rows, limit))
}

/// Archives or unarchives a channel. `NotFound` if no such channel.
pub fn set_archived(conn: &Connection, id: &str, archived: bool) -> Result<(), StoreError> {
    let n = conn
        .prepare_cached("UPDATE channels SET is_archived = ?2 WHERE id = ?1")?
        .execute(params![id, archived])?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Calls `f(id, is_private)` for every channel, without collecting them
/// (warming the channel servers at start: there may be millions). The id is
/// borrowed from SQLite's row: no allocation per row. Returns how many.
pub fn for_each_id(conn: &Connection, f: &mut dyn FnMut(&str, bool)) -> Result<u64, StoreError> {
    let mut stmt = conn.prepare("SELECT id, is_private FROM channels")?;
    let mut rows = stmt.query([])?;
    let mut n = 0;
    while let Some(r) = rows.next()? {
        f(r.get_ref(0)?.as_str()?, r.get(1)?);
        n += 1;
    }
    Ok(n)
}
