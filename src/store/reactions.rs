//! Emoji reactions on messages.
//!
//! One row per (message, emoji name, user). Slack shows them aggregated per
//! name — `{name, users, count}` — with names in the order they were first
//! used and users in the order they reacted; each backend keeps the order
//! reactions were added (SQLite's rowid, PostgreSQL's `seq` column), so
//! aggregation is one ordered scan (`aggregate`).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

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

/// Aggregates `(ts, name, user)` rows, in the order they were added, per
/// message ts.
pub(crate) fn aggregate(rows: Vec<(i64, String, String)>) -> HashMap<i64, Vec<ReactionRow>> {
    let mut out: HashMap<i64, Vec<ReactionRow>> = HashMap::new();
    for (ts, name, user) in rows {
        let list = out.entry(ts).or_default();
        match list.iter_mut().find(|x| x.name == name) {
            Some(x) => {
                x.users.push(user);
                x.count += 1;
            }
            None => list.push(ReactionRow {
                name,
                users: vec![user],
                count: 1,
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{each_backend, message};
    use super::super::StoreError;
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
        each_backend(|tx| {
            tx.insert_message(&message("C1", 1, "U1", "x")).unwrap();
            tx.insert_message(&message("C1", 2, "U1", "y")).unwrap();
            tx.add_reaction("C1", 1, "thumbsup", "U3", 10).unwrap();
            tx.add_reaction("C1", 1, "tada", "U2", 11).unwrap();
            tx.add_reaction("C1", 1, "thumbsup", "U1", 12).unwrap();
            tx.add_reaction("C1", 1, "thumbsup", "U2", 13).unwrap();
            tx.add_reaction("C1", 2, "eyes", "U1", 14).unwrap();
            assert_eq!(
                summary(&tx.reactions_of("C1", 1).unwrap()),
                [
                    ("thumbsup".into(), s(&["U3", "U1", "U2"]), 3),
                    ("tada".into(), s(&["U2"]), 1),
                ]
            );
            assert_eq!(
                summary(&tx.reactions_of("C1", 2).unwrap()),
                [("eyes".into(), s(&["U1"]), 1)]
            );
        });
    }

    #[test]
    fn add_twice_conflicts_and_remove_reports_absence() {
        each_backend(|tx| {
            tx.insert_message(&message("C1", 1, "U1", "x")).unwrap();
            tx.add_reaction("C1", 1, "tada", "U1", 10).unwrap();
            assert!(matches!(
                tx.add_reaction("C1", 1, "tada", "U1", 11),
                Err(StoreError::Conflict)
            ));
            tx.add_reaction("C1", 1, "eyes", "U1", 12).unwrap();
            assert!(tx.remove_reaction("C1", 1, "tada", "U1").unwrap());
            assert!(
                !tx.remove_reaction("C1", 1, "tada", "U1").unwrap(),
                "no_reaction"
            );
            assert!(!tx.remove_reaction("C1", 1, "tada", "U2").unwrap());
            // The emptied name is gone; re-adding puts it last.
            assert_eq!(
                summary(&tx.reactions_of("C1", 1).unwrap()),
                [("eyes".into(), s(&["U1"]), 1)]
            );
            tx.add_reaction("C1", 1, "tada", "U1", 13).unwrap();
            let names: Vec<String> = tx
                .reactions_of("C1", 1)
                .unwrap()
                .into_iter()
                .map(|r| r.name)
                .collect();
            assert_eq!(names, ["eyes", "tada"]);
        });
    }

    #[test]
    fn reactions_need_a_live_message() {
        each_backend(|tx| {
            assert!(matches!(
                tx.add_reaction("C1", 1, "tada", "U1", 1),
                Err(StoreError::NotFound)
            ));
            assert!(matches!(
                tx.remove_reaction("C1", 1, "tada", "U1"),
                Err(StoreError::NotFound)
            ));
            tx.insert_message(&message("C1", 1, "U1", "x")).unwrap();
            tx.mark_deleted("C1", 1).unwrap();
            assert!(matches!(
                tx.add_reaction("C1", 1, "tada", "U1", 1),
                Err(StoreError::NotFound)
            ));
            assert!(tx.reactions_of("C1", 1).unwrap().is_empty());
        });
    }
}
