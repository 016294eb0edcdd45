//! PostgreSQL: the bulk [`Importer`]. The same rows as SQLite's, through
//! the connection's prepared statements inside the import's one job; each
//! refusal is found by a query before anything is written, so none raises
//! an error (which would poison the transaction).

use super::PgTx;
use crate::store::error::StoreError;
use crate::store::import::{Importer, Refused};

/// Inserts conversations on the writer's connection, inside one job.
pub(crate) struct PgImporter<'a> {
    tx: &'a mut PgTx,
    team_id: String,
    created: i64,
    channels: u64,
    memberships: u64,
}

impl<'a> PgImporter<'a> {
    pub(crate) fn new(tx: &'a mut PgTx, team_id: &str, created: i64) -> PgImporter<'a> {
        PgImporter {
            tx,
            team_id: team_id.to_string(),
            created,
            channels: 0,
            memberships: 0,
        }
    }
}

impl Importer for PgImporter<'_> {
    fn insert(
        &mut self,
        id: &str,
        name: &str,
        private: bool,
        members: &[&str],
    ) -> Result<Result<(), Refused>, StoreError> {
        for &user in members {
            if self
                .tx
                .query_opt("SELECT 1 FROM users WHERE id = $1", &[&user])?
                .is_none()
            {
                return Ok(Err(Refused::UnknownUser(user.to_string())));
            }
        }
        if self
            .tx
            .query_opt(
                "SELECT 1 FROM channels WHERE team_id = $1 AND name = $2",
                &[&self.team_id, &name],
            )?
            .is_some()
        {
            return Ok(Err(Refused::NameTaken));
        }
        let inserted = self.tx.execute(
            "INSERT INTO channels (id, team_id, name, is_private, is_archived, is_general, created, creator, topic, purpose)
             VALUES ($1, $2, $3, $4, FALSE, FALSE, $5, '', '', '')
             ON CONFLICT DO NOTHING",
            &[&id, &self.team_id, &name, &private, &self.created],
        )?;
        if inserted == 0 {
            return Ok(Err(Refused::IdTaken));
        }
        for &user in members {
            self.memberships += self.tx.execute(
                "INSERT INTO members (channel_id, user_id, joined) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
                &[&id, &user, &self.created],
            )?;
        }
        self.channels += 1;
        Ok(Ok(()))
    }

    fn counts(&self) -> (u64, u64) {
        (self.channels, self.memberships)
    }
}
