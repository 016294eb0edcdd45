//! Teams (workspaces). A server starts with one, [`DEFAULT_TEAM_ID`]; the
//! table exists so a second team is a row, not a migration.

use serde::{Deserialize, Serialize};

/// The team every server has from its first start.
pub const DEFAULT_TEAM_ID: &str = "T0000000001";
pub(crate) const DEFAULT_TEAM_NAME: &str = "Transponder";
pub(crate) const DEFAULT_TEAM_DOMAIN: &str = "transponder";

/// A team, as stored. Plain data: whichever thread runs the query owns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamRow {
    pub id: String,
    pub name: String,
    pub domain: String,
    /// Microseconds since the epoch.
    pub created: i64,
}

#[cfg(test)]
mod tests {
    use super::super::testutil::each_backend;
    use super::super::StoreError;
    use super::*;

    #[test]
    fn insert_and_get() {
        each_backend(|tx| {
            assert_eq!(tx.team("T2").unwrap(), None);
            let other = TeamRow {
                id: "T2".into(),
                name: "Other".into(),
                domain: "other".into(),
                created: 7,
            };
            tx.insert_team(&other).unwrap();
            assert_eq!(tx.team("T2").unwrap(), Some(other.clone()));
            assert!(matches!(tx.insert_team(&other), Err(StoreError::Conflict)));
        });
    }
}
