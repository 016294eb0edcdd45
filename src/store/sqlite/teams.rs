//! SQLite: teams.

use rusqlite::{params, Connection, OptionalExtension};

use crate::store::error::StoreError;
use crate::store::teams::{TeamRow, DEFAULT_TEAM_DOMAIN, DEFAULT_TEAM_ID, DEFAULT_TEAM_NAME};

/// Adds a team; `Conflict` if the id exists.
pub fn insert(conn: &Connection, team: &TeamRow) -> Result<(), StoreError> {
    conn.prepare_cached("INSERT INTO teams (id, name, domain, created) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![team.id, team.name, team.domain, team.created])
        .map_err(StoreError::conflict_or_sqlite)?;
    Ok(())
}

pub fn get(conn: &Connection, id: &str) -> Result<Option<TeamRow>, StoreError> {
    let row = conn
        .prepare_cached("SELECT id, name, domain, created FROM teams WHERE id = ?1")?
        .query_row([id], |r| {
            Ok(TeamRow {
                id: r.get(0)?,
                name: r.get(1)?,
                domain: r.get(2)?,
                created: r.get(3)?,
            })
        })
        .optional()?;
    Ok(row)
}

/// Creates the default team unless it exists (every open calls this).
pub(crate) fn ensure_default(conn: &Connection, now: i64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT OR IGNORE INTO teams (id, name, domain, created) VALUES (?1, ?2, ?3, ?4)",
        params![DEFAULT_TEAM_ID, DEFAULT_TEAM_NAME, DEFAULT_TEAM_DOMAIN, now],
    )?;
    Ok(())
}
