//! Emoji reactions on messages.
//!
//! One row per (message, emoji name, user). Slack shows them aggregated per
//! name — `{name, users, count}` — with names in the order they were first
//! used and users in the order they reacted; the table's rowid is that
//! order (see migration 1), so aggregation is one ordered scan.

use std::collections::HashMap;

use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};

use super::error::StoreError;
use super::messages;

/// One emoji's reactions on a message, as Slack shows them. Plain data:
/// whichever thread runs the query owns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReactionRow {
    /// Emoji name without colons (`thumbsup`).
    pub name: String,
    /// Who reacted, in the order they did.
    pub users: Vec<String>,
    pub count: usize,
}

/// reactions.add. `NotFound` if there is no live message at (channel, ts)
/// (`message_not_found`); `Conflict` if `user` already reacted with `name`
/// (`already_reacted`).
pub fn add(
    conn: &Connection,
    channel: &str,
    ts: i64,
    name: &str,
    user: &str,
    created: i64,
) -> Result<(), StoreError> {
    if !messages::exists(conn, channel, ts)? {
        return Err(StoreError::NotFound);
    }
    conn.prepare_cached(
        "INSERT INTO reactions (channel_id, ts, name, user_id, created) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![channel, ts, name, user, created])
    .map_err(StoreError::conflict_or_sqlite)?;
    Ok(())
}

/// reactions.remove. `false` if `user` had not reacted with `name`
/// (`no_reaction`); `NotFound` if there is no live message at (channel, ts).
pub fn remove(
    conn: &Connection,
    channel: &str,
    ts: i64,
    name: &str,
    user: &str,
) -> Result<bool, StoreError> {
    if !messages::exists(conn, channel, ts)? {
        return Err(StoreError::NotFound);
    }
    let n = conn
        .prepare_cached("DELETE FROM reactions WHERE channel_id = ?1 AND ts = ?2 AND name = ?3 AND user_id = ?4")?
        .execute(params![channel, ts, name, user])?;
    Ok(n == 1)
}

/// The reactions on one message, aggregated.
pub fn of_message(
    conn: &Connection,
    channel: &str,
    ts: i64,
) -> Result<Vec<ReactionRow>, StoreError> {
    Ok(in_range(conn, channel, ts, ts)?
        .remove(&ts)
        .unwrap_or_default())
}

/// Aggregated reactions of every message of `channel` with `lo <= ts <=
/// hi` (a history page's span), keyed by message ts.
pub(crate) fn in_range(
    conn: &Connection,
    channel: &str,
    lo: i64,
    hi: i64,
) -> Result<HashMap<i64, Vec<ReactionRow>>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT ts, name, user_id FROM reactions
         WHERE channel_id = ?1 AND ts >= ?2 AND ts <= ?3
         ORDER BY rowid",
    )?;
    let mut rows = stmt.query(params![channel, lo, hi])?;
    let mut out: HashMap<i64, Vec<ReactionRow>> = HashMap::new();
    while let Some(r) = rows.next()? {
        let ts: i64 = r.get(0)?;
        let name = r.get_ref(1)?.as_str()?;
        let user: String = r.get(2)?;
        let list = out.entry(ts).or_default();
        match list.iter_mut().find(|x| x.name == name) {
            Some(x) => {
                x.users.push(user);
                x.count += 1;
            }
            None => list.push(ReactionRow {
                name: name.to_string(),
                users: vec![user],
                count: 1,
            }),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{mem, message};
    use super::*;

    fn summary(rows: &[ReactionRow]) -> Vec<(String, Vec<String>, usize)> {
        rows.iter()
            .map(|r| (r.name.clone(), r.users.clone(), r.count))
            .collect()
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn aggregated_per_name_with_users_in_order() {
        let conn = mem();
        messages::insert(&conn, &message("C1", 1, "U1", "x")).unwrap();
        messages::insert(&conn, &message("C1", 2, "U1", "y")).unwrap();
        add(&conn, "C1", 1, "thumbsup", "U3", 10).unwrap();
        add(&conn, "C1", 1, "tada", "U2", 11).unwrap();
        add(&conn, "C1", 1, "thumbsup", "U1", 12).unwrap();
        add(&conn, "C1", 1, "thumbsup", "U2", 13).unwrap();
        add(&conn, "C1", 2, "eyes", "U1", 14).unwrap();
        assert_eq!(
            summary(&of_message(&conn, "C1", 1).unwrap()),
            [
                ("thumbsup".into(), s(&["U3", "U1", "U2"]), 3),
                ("tada".into(), s(&["U2"]), 1),
            ]
        );
        assert_eq!(
            summary(&of_message(&conn, "C1", 2).unwrap()),
            [("eyes".into(), s(&["U1"]), 1)]
        );
    }

    #[test]
    fn add_twice_conflicts_and_remove_reports_absence() {
        let conn = mem();
        messages::insert(&conn, &message("C1", 1, "U1", "x")).unwrap();
        add(&conn, "C1", 1, "tada", "U1", 10).unwrap();
        assert!(matches!(
            add(&conn, "C1", 1, "tada", "U1", 11),
            Err(StoreError::Conflict)
        ));
        add(&conn, "C1", 1, "eyes", "U1", 12).unwrap();
        assert!(remove(&conn, "C1", 1, "tada", "U1").unwrap());
        assert!(
            !remove(&conn, "C1", 1, "tada", "U1").unwrap(),
            "no_reaction"
        );
        assert!(!remove(&conn, "C1", 1, "tada", "U2").unwrap());
        // The emptied name is gone; re-adding puts it last.
        assert_eq!(
            summary(&of_message(&conn, "C1", 1).unwrap()),
            [("eyes".into(), s(&["U1"]), 1)]
        );
        add(&conn, "C1", 1, "tada", "U1", 13).unwrap();
        let names: Vec<String> = of_message(&conn, "C1", 1)
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, ["eyes", "tada"]);
    }

    #[test]
    fn reactions_need_a_live_message() {
        let conn = mem();
        assert!(matches!(
            add(&conn, "C1", 1, "tada", "U1", 1),
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            remove(&conn, "C1", 1, "tada", "U1"),
            Err(StoreError::NotFound)
        ));
        messages::insert(&conn, &message("C1", 1, "U1", "x")).unwrap();
        messages::mark_deleted(&conn, "C1", 1).unwrap();
        assert!(matches!(
            add(&conn, "C1", 1, "tada", "U1", 1),
            Err(StoreError::NotFound)
        ));
        assert!(of_message(&conn, "C1", 1).unwrap().is_empty());
    }
}
