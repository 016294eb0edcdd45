//! SQLite: users and their token hashes.

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::store::error::StoreError;
use crate::store::users::{parse_profile, parse_token_hash, profile_text, UserRow, TOKEN_HASH_LEN};
use crate::store::{limit_plus_one, page};

const COLUMNS: &str = "id, team_id, name, real_name, is_bot, deleted, tz, created, profile";

fn read(r: &Row<'_>) -> Result<UserRow, StoreError> {
    let id: String = r.get(0)?;
    let profile = parse_profile(&id, r.get_ref(8)?.as_str()?)?;
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
    let profile = profile_text(user)?;
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
    blob.flatten().map(|b| parse_token_hash(id, &b)).transpose()
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
    f: &mut dyn FnMut(UserRow, Option<[u8; TOKEN_HASH_LEN]>),
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
