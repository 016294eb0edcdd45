//! Channels (conversations): public `C…` and private `G…`.

use rusqlite::{params, Connection, Row};
use serde::{Deserialize, Serialize};

use super::error::StoreError;
use super::{limit_plus_one, page};

/// A channel, as stored. Plain data: whichever thread runs the query owns
/// it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRow {
    pub id: String,
    pub team_id: String,
    /// Unique within the team.
    pub name: String,
    pub is_private: bool,
    pub is_archived: bool,
    pub is_general: bool,
    /// Microseconds since the epoch.
    pub created: i64,
    /// User id of the creator.
    pub creator: String,
    pub topic: String,
    pub purpose: String,
}

/// Which kinds of channel a listing includes (`types=public_channel,
/// private_channel`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelTypes {
    pub public: bool,
    pub private: bool,
}

impl ChannelTypes {
    pub const ALL: ChannelTypes = ChannelTypes {
        public: true,
        private: true,
    };
    pub const PUBLIC: ChannelTypes = ChannelTypes {
        public: true,
        private: false,
    };
    pub const PRIVATE: ChannelTypes = ChannelTypes {
        public: false,
        private: true,
    };
}

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
pub fn for_each_id(conn: &Connection, mut f: impl FnMut(&str, bool)) -> Result<u64, StoreError> {
    let mut stmt = conn.prepare("SELECT id, is_private FROM channels")?;
    let mut rows = stmt.query([])?;
    let mut n = 0;
    while let Some(r) = rows.next()? {
        f(r.get_ref(0)?.as_str()?, r.get(1)?);
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::super::members;
    use super::super::testutil::{channel, mem};
    use super::super::DEFAULT_TEAM_ID;
    use super::*;

    fn ids(rows: &[ChannelRow]) -> Vec<&str> {
        rows.iter().map(|c| c.id.as_str()).collect()
    }

    #[test]
    fn insert_get_by_name_and_conflicts() {
        let conn = mem();
        let mut general = channel("C1", "general", false);
        general.is_general = true;
        general.topic = "all hands".into();
        general.purpose = "everyone".into();
        insert(&conn, &general).unwrap();
        assert_eq!(get(&conn, "C1").unwrap(), Some(general.clone()));
        assert_eq!(get(&conn, "C9").unwrap(), None);
        assert_eq!(
            by_name(&conn, DEFAULT_TEAM_ID, "general").unwrap(),
            Some(general)
        );
        assert_eq!(by_name(&conn, DEFAULT_TEAM_ID, "random").unwrap(), None);
        assert!(matches!(
            insert(&conn, &channel("C2", "general", true)),
            Err(StoreError::Conflict)
        ));
        assert!(matches!(
            insert(&conn, &channel("C1", "other", false)),
            Err(StoreError::Conflict)
        ));
    }

    #[test]
    fn archiving() {
        let conn = mem();
        insert(&conn, &channel("C1", "old", false)).unwrap();
        set_archived(&conn, "C1", true).unwrap();
        assert!(get(&conn, "C1").unwrap().unwrap().is_archived);
        set_archived(&conn, "C1", false).unwrap();
        assert!(!get(&conn, "C1").unwrap().unwrap().is_archived);
        assert!(matches!(
            set_archived(&conn, "C9", true),
            Err(StoreError::NotFound)
        ));
    }

    #[test]
    fn list_filters_types_archived_and_private_visibility() {
        let conn = mem();
        insert(&conn, &channel("C1", "general", false)).unwrap();
        insert(&conn, &channel("C2", "old", false)).unwrap();
        set_archived(&conn, "C2", true).unwrap();
        insert(&conn, &channel("G1", "secret", true)).unwrap();
        insert(&conn, &channel("G2", "hidden", true)).unwrap();
        members::add(&conn, "G1", "U1", 1).unwrap();

        let l = |types, exclude, member: Option<&str>| {
            ids(&list(&conn, types, exclude, member, None, 100).unwrap().0)
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>()
        };
        assert_eq!(l(ChannelTypes::ALL, false, None), ["C1", "C2", "G1", "G2"]);
        assert_eq!(l(ChannelTypes::PUBLIC, false, None), ["C1", "C2"]);
        assert_eq!(l(ChannelTypes::PUBLIC, true, None), ["C1"]);
        assert_eq!(l(ChannelTypes::PRIVATE, false, None), ["G1", "G2"]);
        assert_eq!(l(ChannelTypes::ALL, false, Some("U1")), ["C1", "C2", "G1"]);
        assert_eq!(l(ChannelTypes::ALL, true, Some("U2")), ["C1"]);
        assert_eq!(
            l(ChannelTypes::PRIVATE, false, Some("U2")),
            Vec::<String>::new()
        );
        let none = ChannelTypes {
            public: false,
            private: false,
        };
        assert!(l(none, false, None).is_empty());
    }

    #[test]
    fn list_pages_by_id() {
        let conn = mem();
        for i in 0..250 {
            insert(
                &conn,
                &channel(&format!("C{i:04}"), &format!("c{i}"), i % 2 == 1),
            )
            .unwrap();
        }
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let (rows, more) = list(
                &conn,
                ChannelTypes::ALL,
                false,
                None,
                cursor.as_deref(),
                100,
            )
            .unwrap();
            seen.extend(rows.iter().map(|c| c.id.clone()));
            if !more {
                break;
            }
            cursor = Some(rows.last().unwrap().id.clone());
        }
        assert_eq!(
            seen,
            (0..250).map(|i| format!("C{i:04}")).collect::<Vec<_>>()
        );
        // Filtering happens before the page is cut: a page of public
        // channels is full.
        let (rows, more) = list(&conn, ChannelTypes::PUBLIC, false, None, None, 100).unwrap();
        assert_eq!(rows.len(), 100);
        assert!(more);
        assert_eq!(rows[99].id, "C0198");
    }
}
