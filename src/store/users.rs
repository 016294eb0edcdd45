//! Users and their token hashes.
//!
//! A token is never stored: only the SHA-256 of its secret (32 bytes). A
//! stolen database file then yields no usable token, and checking a token
//! is one hash plus one indexed lookup.

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use super::error::StoreError;
use super::{limit_plus_one, page};

/// Length of a token hash (SHA-256).
pub const TOKEN_HASH_LEN: usize = 32;

/// A user, as stored (without its token hash). Plain data: whichever thread
/// runs the query owns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserRow {
    pub id: String,
    pub team_id: String,
    /// Unique within the team.
    pub name: String,
    pub real_name: String,
    pub is_bot: bool,
    pub deleted: bool,
    /// IANA zone name (`Europe/Paris`), or empty.
    pub tz: String,
    /// Microseconds since the epoch.
    pub created: i64,
    /// Slack's `profile` object, kept as given.
    pub profile: serde_json::Value,
}

const COLUMNS: &str = "id, team_id, name, real_name, is_bot, deleted, tz, created, profile";

fn read(r: &Row<'_>) -> Result<UserRow, StoreError> {
    let profile: String = r.get(8)?;
    let id: String = r.get(0)?;
    let profile = serde_json::from_str(&profile)
        .map_err(|e| StoreError::Corrupt(format!("user {id}: profile is not JSON: {e}")))?;
    Ok(UserRow {
        id,
        team_id: r.get(1)?,
        name: r.get(2)?,
        real_name: r.get(3)?,
        is_bot: r.get(4)?,
        deleted: r.get(5)?,
        tz: r.get(6)?,
        created: r.get(7)?,
        profile,
    })
}

fn one(
    conn: &Connection,
    sql: &str,
    param: &dyn rusqlite::ToSql,
) -> Result<Option<UserRow>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query([param])?;
    match rows.next()? {
        Some(r) => Ok(Some(read(r)?)),
        None => Ok(None),
    }
}

/// Adds a user. `Conflict` if the id, the name within the team, or the
/// token hash is taken.
pub fn insert(
    conn: &Connection,
    user: &UserRow,
    token_hash: Option<&[u8; TOKEN_HASH_LEN]>,
) -> Result<(), StoreError> {
    let profile = serde_json::to_string(&user.profile)
        .map_err(|e| StoreError::Corrupt(format!("profile: {e}")))?;
    conn.prepare_cached(
        "INSERT INTO users (id, team_id, name, real_name, is_bot, deleted, tz, created, profile, token_hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        user.id,
        user.team_id,
        user.name,
        user.real_name,
        user.is_bot,
        user.deleted,
        user.tz,
        user.created,
        profile,
        token_hash.map(|h| &h[..]),
    ])
    .map_err(StoreError::conflict_or_sqlite)?;
    Ok(())
}

pub fn get(conn: &Connection, id: &str) -> Result<Option<UserRow>, StoreError> {
    one(
        conn,
        &format!("SELECT {COLUMNS} FROM users WHERE id = ?1"),
        &id,
    )
}

pub fn by_name(
    conn: &Connection,
    team_id: &str,
    name: &str,
) -> Result<Option<UserRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM users WHERE team_id = ?1 AND name = ?2"
    ))?;
    let mut rows = stmt.query([team_id, name])?;
    match rows.next()? {
        Some(r) => Ok(Some(read(r)?)),
        None => Ok(None),
    }
}

/// The user whose token hashes to `hash` (authenticating a request).
pub fn by_token_hash(
    conn: &Connection,
    hash: &[u8; TOKEN_HASH_LEN],
) -> Result<Option<UserRow>, StoreError> {
    one(
        conn,
        &format!("SELECT {COLUMNS} FROM users WHERE token_hash = ?1"),
        &&hash[..],
    )
}

/// Users ordered by id, after `cursor` (the last id of the previous page).
pub fn list(
    conn: &Connection,
    cursor: Option<&str>,
    limit: usize,
) -> Result<(Vec<UserRow>, bool), StoreError> {
    // `id > ''` for the first page keeps one plan that walks the primary
    // key from the cursor: page N costs a page, not N pages.
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM users WHERE id > ?1 ORDER BY id LIMIT ?2"
    ))?;
    let mut rows = stmt.query(params![cursor.unwrap_or(""), limit_plus_one(limit)])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(read(r)?);
    }
    Ok(page(out, limit))
}

/// The user's token hash: `None` if the user does not exist or has no
/// token.
pub fn token_hash_of(
    conn: &Connection,
    id: &str,
) -> Result<Option<[u8; TOKEN_HASH_LEN]>, StoreError> {
    let blob: Option<Option<Vec<u8>>> = conn
        .prepare_cached("SELECT token_hash FROM users WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    match blob.flatten() {
        None => Ok(None),
        Some(b) => <[u8; TOKEN_HASH_LEN]>::try_from(b.as_slice())
            .map(Some)
            .map_err(|_| {
                StoreError::Corrupt(format!("user {id}: token hash is {} bytes", b.len()))
            }),
    }
}

/// Replaces (or, with `None`, revokes) a user's token. `NotFound` if no such
/// user; `Conflict` if another user has that hash.
pub fn set_token_hash(
    conn: &Connection,
    id: &str,
    hash: Option<&[u8; TOKEN_HASH_LEN]>,
) -> Result<(), StoreError> {
    let n = conn
        .prepare_cached("UPDATE users SET token_hash = ?2 WHERE id = ?1")?
        .execute(params![id, hash.map(|h| &h[..])])
        .map_err(StoreError::conflict_or_sqlite)?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Every user with its token hash, for the directory caches at start.
pub fn all(
    conn: &Connection,
    mut f: impl FnMut(UserRow, Option<[u8; TOKEN_HASH_LEN]>),
) -> Result<u64, StoreError> {
    let mut stmt = conn.prepare(&format!("SELECT {COLUMNS}, token_hash FROM users"))?;
    let mut rows = stmt.query([])?;
    let mut n = 0;
    while let Some(r) = rows.next()? {
        let hash: Option<Vec<u8>> = r.get(9)?;
        let hash = hash.and_then(|h| <[u8; TOKEN_HASH_LEN]>::try_from(h.as_slice()).ok());
        f(read(r)?, hash);
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{mem, user};
    use super::super::DEFAULT_TEAM_ID;
    use super::*;

    #[test]
    fn insert_get_by_name_and_conflicts() {
        let conn = mem();
        let alice = user("U1", "alice");
        insert(&conn, &alice, Some(&[1; 32])).unwrap();
        assert_eq!(get(&conn, "U1").unwrap(), Some(alice.clone()));
        assert_eq!(get(&conn, "U9").unwrap(), None);
        assert_eq!(
            by_name(&conn, DEFAULT_TEAM_ID, "alice").unwrap(),
            Some(alice.clone())
        );
        assert_eq!(by_name(&conn, "T9", "alice").unwrap(), None);
        // Same name, same id, same token: each refused.
        assert!(matches!(
            insert(&conn, &user("U2", "alice"), None),
            Err(StoreError::Conflict)
        ));
        assert!(matches!(
            insert(&conn, &user("U1", "bob"), None),
            Err(StoreError::Conflict)
        ));
        assert!(matches!(
            insert(&conn, &user("U3", "carol"), Some(&[1; 32])),
            Err(StoreError::Conflict)
        ));
        // The same name in another team is fine.
        let mut other = user("U4", "alice");
        other.team_id = "T2".into();
        insert(&conn, &other, None).unwrap();
        let mut bot = user("U5", "robot");
        bot.is_bot = true;
        bot.deleted = true;
        insert(&conn, &bot, None).unwrap();
        assert_eq!(get(&conn, "U5").unwrap(), Some(bot));
    }

    #[test]
    fn tokens() {
        let conn = mem();
        insert(&conn, &user("U1", "alice"), Some(&[7; 32])).unwrap();
        insert(&conn, &user("U2", "bob"), None).unwrap();
        assert_eq!(token_hash_of(&conn, "U1").unwrap(), Some([7; 32]));
        assert_eq!(token_hash_of(&conn, "U2").unwrap(), None);
        assert_eq!(token_hash_of(&conn, "U9").unwrap(), None);
        assert_eq!(by_token_hash(&conn, &[7; 32]).unwrap().unwrap().id, "U1");
        assert_eq!(by_token_hash(&conn, &[8; 32]).unwrap(), None);

        set_token_hash(&conn, "U2", Some(&[8; 32])).unwrap();
        assert_eq!(by_token_hash(&conn, &[8; 32]).unwrap().unwrap().id, "U2");
        assert!(matches!(
            set_token_hash(&conn, "U2", Some(&[7; 32])),
            Err(StoreError::Conflict)
        ));
        set_token_hash(&conn, "U1", None).unwrap();
        assert_eq!(by_token_hash(&conn, &[7; 32]).unwrap(), None);
        assert!(matches!(
            set_token_hash(&conn, "U9", None),
            Err(StoreError::NotFound)
        ));

        conn.execute("UPDATE users SET token_hash = x'0102' WHERE id = 'U2'", [])
            .unwrap();
        assert!(matches!(
            token_hash_of(&conn, "U2"),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn list_walks_every_user_once_in_id_order() {
        let conn = mem();
        for i in (0..250).rev() {
            insert(&conn, &user(&format!("U{i:04}"), &format!("user{i}")), None).unwrap();
        }
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let (rows, more) = list(&conn, cursor.as_deref(), 100).unwrap();
            pages += 1;
            seen.extend(rows.iter().map(|u| u.id.clone()));
            if !more {
                break;
            }
            cursor = Some(rows.last().unwrap().id.clone());
        }
        assert_eq!(pages, 3);
        let want: Vec<String> = (0..250).map(|i| format!("U{i:04}")).collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn a_profile_that_is_not_json_is_reported() {
        let conn = mem();
        insert(&conn, &user("U1", "alice"), None).unwrap();
        conn.execute("UPDATE users SET profile = '{' WHERE id = 'U1'", [])
            .unwrap();
        assert!(matches!(get(&conn, "U1"), Err(StoreError::Corrupt(_))));
    }
}
