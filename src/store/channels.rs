//! Channels (conversations): public `C…` and private `G…`.

use serde::{Deserialize, Serialize};

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

#[cfg(test)]
mod tests {
    use super::super::testutil::{channel, each_backend};
    use super::super::{StoreError, Tx, DEFAULT_TEAM_ID};
    use super::*;

    fn ids(rows: &[ChannelRow]) -> Vec<String> {
        rows.iter().map(|c| c.id.clone()).collect()
    }

    #[test]
    fn insert_get_by_name_and_conflicts() {
        each_backend(|tx| {
            let mut general = channel("C1", "general", false);
            general.is_general = true;
            general.topic = "all hands".into();
            general.purpose = "everyone".into();
            tx.insert_channel(&general).unwrap();
            assert_eq!(tx.channel("C1").unwrap(), Some(general.clone()));
            assert_eq!(tx.channel("C9").unwrap(), None);
            assert_eq!(
                tx.channel_by_name(DEFAULT_TEAM_ID, "general").unwrap(),
                Some(general)
            );
            assert_eq!(tx.channel_by_name(DEFAULT_TEAM_ID, "random").unwrap(), None);
            assert!(matches!(
                tx.insert_channel(&channel("C2", "general", true)),
                Err(StoreError::Conflict)
            ));
            assert!(matches!(
                tx.insert_channel(&channel("C1", "other", false)),
                Err(StoreError::Conflict)
            ));
        });
    }

    #[test]
    fn archiving() {
        each_backend(|tx| {
            tx.insert_channel(&channel("C1", "old", false)).unwrap();
            tx.set_archived("C1", true).unwrap();
            assert!(tx.channel("C1").unwrap().unwrap().is_archived);
            tx.set_archived("C1", false).unwrap();
            assert!(!tx.channel("C1").unwrap().unwrap().is_archived);
            assert!(matches!(
                tx.set_archived("C9", true),
                Err(StoreError::NotFound)
            ));
        });
    }

    #[test]
    fn list_filters_types_archived_and_private_visibility() {
        each_backend(|tx| {
            tx.insert_channel(&channel("C1", "general", false)).unwrap();
            tx.insert_channel(&channel("C2", "old", false)).unwrap();
            tx.set_archived("C2", true).unwrap();
            tx.insert_channel(&channel("G1", "secret", true)).unwrap();
            tx.insert_channel(&channel("G2", "hidden", true)).unwrap();
            tx.add_member("G1", "U1", 1).unwrap();

            let mut l = |types, exclude, member: Option<&str>| {
                ids(&tx.channels(types, exclude, member, None, 100).unwrap().0)
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
        });
    }

    #[test]
    fn list_pages_by_id() {
        each_backend(|tx| {
            for i in 0..250 {
                tx.insert_channel(&channel(&format!("C{i:04}"), &format!("c{i}"), i % 2 == 1))
                    .unwrap();
            }
            let mut seen = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let (rows, more) = tx
                    .channels(ChannelTypes::ALL, false, None, cursor.as_deref(), 100)
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
            let (rows, more) = tx
                .channels(ChannelTypes::PUBLIC, false, None, None, 100)
                .unwrap();
            assert_eq!(rows.len(), 100);
            assert!(more);
            assert_eq!(rows[99].id, "C0198");
        });
    }

    #[test]
    fn each_channel_id_visits_every_channel() {
        each_backend(|tx: &mut dyn Tx| {
            tx.insert_channel(&channel("C1", "a", false)).unwrap();
            tx.insert_channel(&channel("G1", "b", true)).unwrap();
            let mut seen = Vec::new();
            let n = tx
                .each_channel_id(&mut |id, private| seen.push((id.to_string(), private)))
                .unwrap();
            seen.sort();
            assert_eq!(n, 2);
            assert_eq!(seen, [("C1".to_string(), false), ("G1".to_string(), true)]);
        });
    }
}
