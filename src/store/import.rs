//! Bulk insertion of conversations and their members, for the offline
//! `transponder channel import`: millions of rows in one store job (one
//! transaction), into the same tables and indexes every other write uses,
//! so a server loads the result at start like channels created any other
//! way. A job gets an [`Importer`] from [`super::Tx::importer`]; each
//! backend makes it fast its own way (SQLite: cached statements and a big
//! page cache; PostgreSQL: prepared statements on the job's transaction).
//!
//! The caller hands ids in ascending order, so the channels' id index and
//! the members' primary key (channel, user) are appended to at their right
//! edge instead of written at random pages.

/// Why one conversation was not inserted. The job's other rows are
/// unaffected; the caller decides whether to go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The id exists already (ids are random: pick another one).
    IdTaken,
    /// The team has a conversation of that name.
    NameTaken,
    /// No user has this id.
    UnknownUser(String),
}

/// Inserts conversations inside one store job.
pub trait Importer {
    /// Inserts one conversation and its members (a member named twice is
    /// inserted once). Checks the members and the name first, so a refusal
    /// writes nothing.
    fn insert(
        &mut self,
        id: &str,
        name: &str,
        private: bool,
        members: &[&str],
    ) -> Result<Result<(), Refused>, super::StoreError>;

    /// (conversations, memberships) inserted so far.
    fn counts(&self) -> (u64, u64);
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{channel, each_backend, user};
    use super::super::DEFAULT_TEAM_ID;
    use super::*;

    #[test]
    fn inserts_rows_the_rest_of_the_store_reads() {
        each_backend(|tx| {
            tx.insert_user(&user("U1", "alice"), None).unwrap();
            tx.insert_user(&user("U2", "bob"), None).unwrap();
            let counts = {
                let mut imp = tx.importer(DEFAULT_TEAM_ID, 7_000_000).unwrap();
                assert_eq!(
                    imp.insert("C1", "one", false, &["U1", "U2", "U1"]).unwrap(),
                    Ok(())
                );
                assert_eq!(imp.insert("G2", "two", true, &[]).unwrap(), Ok(()));
                imp.counts()
            };
            assert_eq!(counts, (2, 2));
            let one = tx.channel("C1").unwrap().unwrap();
            assert_eq!(
                (
                    one.name.as_str(),
                    one.is_private,
                    one.created,
                    one.team_id.as_str()
                ),
                ("one", false, 7_000_000, DEFAULT_TEAM_ID)
            );
            assert!(tx.channel("G2").unwrap().unwrap().is_private);
            assert_eq!(tx.members("C1", None, 10).unwrap().0, ["U1", "U2"]);
            assert_eq!(tx.channels_of("U1").unwrap(), ["C1"]);
        });
    }

    #[test]
    fn refusals_write_nothing() {
        each_backend(|tx| {
            tx.insert_user(&user("U1", "alice"), None).unwrap();
            tx.insert_channel(&channel("C1", "taken", false)).unwrap();
            {
                let mut imp = tx.importer(DEFAULT_TEAM_ID, 1).unwrap();
                assert_eq!(
                    imp.insert("C1", "fresh", false, &["U1"]).unwrap(),
                    Err(Refused::IdTaken)
                );
                assert_eq!(
                    imp.insert("C2", "taken", false, &["U1"]).unwrap(),
                    Err(Refused::NameTaken)
                );
                assert_eq!(
                    imp.insert("C3", "other", false, &["U1", "U9"]).unwrap(),
                    Err(Refused::UnknownUser("U9".into()))
                );
                assert_eq!(imp.counts(), (0, 0));
            }
            assert_eq!(tx.channel("C2").unwrap(), None);
            assert_eq!(tx.channel("C3").unwrap(), None);
            assert_eq!(tx.channel("C1").unwrap().unwrap().name, "taken");
            assert!(tx.channels_of("U1").unwrap().is_empty());
        });
    }
}
