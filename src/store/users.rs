//! Users and their token hashes.
//!
//! A token is never stored: only the SHA-256 of its secret (32 bytes). A
//! stolen database then yields no usable token, and checking a token is
//! one hash plus one indexed lookup.

use serde::{Deserialize, Serialize};

use super::error::StoreError;

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

/// The profile column's text (JSON), for either backend.
pub(crate) fn profile_text(user: &UserRow) -> Result<String, StoreError> {
    serde_json::to_string(&user.profile).map_err(|e| StoreError::Corrupt(format!("profile: {e}")))
}

/// Parses a stored profile column.
pub(crate) fn parse_profile(id: &str, text: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("user {id}: profile is not JSON: {e}")))
}

/// A stored token hash column, checked for length.
pub(crate) fn parse_token_hash(id: &str, blob: &[u8]) -> Result<[u8; TOKEN_HASH_LEN], StoreError> {
    <[u8; TOKEN_HASH_LEN]>::try_from(blob)
        .map_err(|_| StoreError::Corrupt(format!("user {id}: token hash is {} bytes", blob.len())))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{each_backend, user};
    use super::super::DEFAULT_TEAM_ID;
    use super::*;

    #[test]
    fn insert_get_by_name_and_conflicts() {
        each_backend(|tx| {
            let alice = user("U1", "alice");
            tx.insert_user(&alice, Some(&[1; 32])).unwrap();
            assert_eq!(tx.user("U1").unwrap(), Some(alice.clone()));
            assert_eq!(tx.user("U9").unwrap(), None);
            assert_eq!(
                tx.user_by_name(DEFAULT_TEAM_ID, "alice").unwrap(),
                Some(alice.clone())
            );
            assert_eq!(tx.user_by_name("T9", "alice").unwrap(), None);
            // Same name, same id, same token: each refused.
            assert!(matches!(
                tx.insert_user(&user("U2", "alice"), None),
                Err(StoreError::Conflict)
            ));
            assert!(matches!(
                tx.insert_user(&user("U1", "bob"), None),
                Err(StoreError::Conflict)
            ));
            assert!(matches!(
                tx.insert_user(&user("U3", "carol"), Some(&[1; 32])),
                Err(StoreError::Conflict)
            ));
            // The same name in another team is fine.
            let mut other = user("U4", "alice");
            other.team_id = "T2".into();
            tx.insert_user(&other, None).unwrap();
            let mut bot = user("U5", "robot");
            bot.is_bot = true;
            bot.deleted = true;
            tx.insert_user(&bot, None).unwrap();
            assert_eq!(tx.user("U5").unwrap(), Some(bot));
        });
    }

    #[test]
    fn tokens() {
        each_backend(|tx| {
            tx.insert_user(&user("U1", "alice"), Some(&[7; 32]))
                .unwrap();
            tx.insert_user(&user("U2", "bob"), None).unwrap();
            assert_eq!(tx.token_hash_of("U1").unwrap(), Some([7; 32]));
            assert_eq!(tx.token_hash_of("U2").unwrap(), None);
            assert_eq!(tx.token_hash_of("U9").unwrap(), None);
            assert_eq!(tx.user_by_token_hash(&[7; 32]).unwrap().unwrap().id, "U1");
            assert_eq!(tx.user_by_token_hash(&[8; 32]).unwrap(), None);

            tx.set_token_hash("U2", Some(&[8; 32])).unwrap();
            assert_eq!(tx.user_by_token_hash(&[8; 32]).unwrap().unwrap().id, "U2");
            assert!(matches!(
                tx.set_token_hash("U2", Some(&[7; 32])),
                Err(StoreError::Conflict)
            ));
            tx.set_token_hash("U1", None).unwrap();
            assert_eq!(tx.user_by_token_hash(&[7; 32]).unwrap(), None);
            assert!(matches!(
                tx.set_token_hash("U9", None),
                Err(StoreError::NotFound)
            ));
            // A hash of the wrong length (written by hand) is reported.
            tx.set_token_hash("U2", None).unwrap();
            // (A blob literal: SQLite's spelling, else PostgreSQL's.)
            tx.exec("UPDATE users SET token_hash = x'0102' WHERE id = 'U2'")
                .unwrap_or_else(|_| {
                    tx.exec("UPDATE users SET token_hash = decode('0102', 'hex') WHERE id = 'U2'")
                        .unwrap()
                });
            assert!(matches!(
                tx.token_hash_of("U2"),
                Err(StoreError::Corrupt(_))
            ));
        });
    }

    #[test]
    fn list_walks_every_user_once_in_id_order() {
        each_backend(|tx| {
            for i in (0..250).rev() {
                tx.insert_user(&user(&format!("U{i:04}"), &format!("user{i}")), None)
                    .unwrap();
            }
            let mut seen = Vec::new();
            let mut cursor: Option<String> = None;
            let mut pages = 0;
            loop {
                let (rows, more) = tx.users(cursor.as_deref(), 100).unwrap();
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
        });
    }

    #[test]
    fn each_user_visits_every_user_with_its_hash() {
        each_backend(|tx| {
            tx.insert_user(&user("U1", "alice"), Some(&[3; 32]))
                .unwrap();
            tx.insert_user(&user("U2", "bob"), None).unwrap();
            let mut seen = Vec::new();
            let n = tx.each_user(&mut |u, h| seen.push((u.id, h))).unwrap();
            seen.sort();
            assert_eq!(n, 2);
            assert_eq!(
                seen,
                [("U1".to_string(), Some([3; 32])), ("U2".to_string(), None)]
            );
        });
    }

    #[test]
    fn a_profile_that_is_not_json_is_reported() {
        each_backend(|tx| {
            tx.insert_user(&user("U1", "alice"), None).unwrap();
            tx.exec("UPDATE users SET profile = '{' WHERE id = 'U1'")
                .unwrap();
            assert!(matches!(tx.user("U1"), Err(StoreError::Corrupt(_))));
        });
    }
}
