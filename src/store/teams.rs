//! Teams (workspaces). A server starts with one, [`DEFAULT_TEAM_ID`]; the
//! table exists so a second team is a row, not a migration.

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::error::StoreError;

/// The team every server has from its first start.
pub const DEFAULT_TEAM_ID: &str = "T0000000001";
const DEFAULT_TEAM_NAME: &str = "Transponder";
const DEFAULT_TEAM_DOMAIN: &str = "transponder";

/// A team, as stored. Plain data: whichever thread runs the query owns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamRow {
    pub id: String,
    pub name: String,
    pub domain: String,
    /// Microseconds since the epoch.
    pub created: i64,
}

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

#[cfg(test)]
mod tests {
    use super::super::testutil::mem;
    use super::*;

    #[test]
    fn insert_get_and_the_default_team() {
        let conn = mem();
        assert_eq!(get(&conn, DEFAULT_TEAM_ID).unwrap(), None);
        ensure_default(&conn, 5).unwrap();
        ensure_default(&conn, 6).unwrap();
        let t = get(&conn, DEFAULT_TEAM_ID).unwrap().unwrap();
        assert_eq!(t.created, 5, "a second ensure_default changes nothing");
        let other = TeamRow {
            id: "T2".into(),
            name: "Other".into(),
            domain: "other".into(),
            created: 7,
        };
        insert(&conn, &other).unwrap();
        assert_eq!(get(&conn, "T2").unwrap(), Some(other.clone()));
        assert!(matches!(insert(&conn, &other), Err(StoreError::Conflict)));
    }
}
