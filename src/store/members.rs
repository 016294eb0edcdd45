//! Channel memberships: who may read and post where, and which channels a
//! connecting user is subscribed to.

use rusqlite::{params, Connection};

use super::error::StoreError;
use super::{limit_plus_one, page};

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
pub fn all(conn: &Connection, mut f: impl FnMut(&str, &str)) -> Result<u64, StoreError> {
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

#[cfg(test)]
mod tests {
    use super::super::testutil::mem;
    use super::*;

    #[test]
    fn add_remove_is_member_count() {
        let conn = mem();
        assert!(add(&conn, "C1", "U1", 10).unwrap());
        assert!(!add(&conn, "C1", "U1", 11).unwrap(), "already a member");
        assert!(add(&conn, "C1", "U2", 12).unwrap());
        assert!(is_member(&conn, "C1", "U1").unwrap());
        assert!(!is_member(&conn, "C1", "U3").unwrap());
        assert!(!is_member(&conn, "C2", "U1").unwrap());
        assert_eq!(count(&conn, "C1").unwrap(), 2);
        assert_eq!(count(&conn, "C2").unwrap(), 0);
        assert!(remove(&conn, "C1", "U1").unwrap());
        assert!(!remove(&conn, "C1", "U1").unwrap(), "not a member any more");
        assert!(!is_member(&conn, "C1", "U1").unwrap());
        assert_eq!(count(&conn, "C1").unwrap(), 1);
        let joined: i64 = conn
            .query_row(
                "SELECT joined FROM members WHERE channel_id = 'C1' AND user_id = 'U2'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(joined, 12);
    }

    #[test]
    fn list_members_pages_and_channels_of() {
        let conn = mem();
        for i in (0..250).rev() {
            add(&conn, "C1", &format!("U{i:04}"), 0).unwrap();
        }
        add(&conn, "C2", "U0003", 0).unwrap();
        add(&conn, "G1", "U0003", 0).unwrap();
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let (rows, more) = list_members(&conn, "C1", cursor.as_deref(), 100).unwrap();
            assert!(rows.len() <= 100);
            seen.extend(rows.iter().cloned());
            if !more {
                break;
            }
            cursor = rows.last().cloned();
        }
        assert_eq!(
            seen,
            (0..250).map(|i| format!("U{i:04}")).collect::<Vec<_>>()
        );
        assert_eq!(channels_of(&conn, "U0003").unwrap(), ["C1", "C2", "G1"]);
        assert_eq!(channels_of(&conn, "U0004").unwrap(), ["C1"]);
        assert!(channels_of(&conn, "U9").unwrap().is_empty());
        assert_eq!(
            list_members(&conn, "C9", None, 10).unwrap(),
            (vec![], false)
        );
    }

    #[test]
    fn all_visits_every_membership() {
        let conn = mem();
        add(&conn, "C2", "U1", 0).unwrap();
        add(&conn, "C1", "U2", 0).unwrap();
        add(&conn, "C1", "U1", 0).unwrap();
        let mut seen = Vec::new();
        let n = all(&conn, |c, u| seen.push(format!("{c}/{u}"))).unwrap();
        assert_eq!(n, 3);
        assert_eq!(seen, ["C1/U1", "C1/U2", "C2/U1"]);
    }
}
