//! PostgreSQL: the queries of [`Tx`], one prepared statement each (cached
//! per connection). Inserts that may hit a unique key use `ON CONFLICT DO
//! NOTHING` and report `Conflict` from the row count, so a refusal never
//! poisons the job's transaction (see the module notes of `pg`).

use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::Row;

use super::import::PgImporter;
use super::{scheduled, PgTx};
use crate::limits;
use crate::store::channels::{ChannelRow, ChannelTypes};
use crate::store::error::StoreError;
use crate::store::import::Importer;
use crate::store::messages::{blocks_text, parse_blocks, MessageRow, NewMessage, ReplierSummary};
use crate::store::scheduled::{NewScheduled, ScheduledFilter, ScheduledKey, ScheduledRow};
use crate::store::teams::TeamRow;
use crate::store::tx::{TokenHash, Tx};
use crate::store::users::{parse_profile, parse_token_hash, profile_text, UserRow};
use crate::store::{limit_plus_one, page};

/// The `application_name` of a cluster node's store sessions
/// (`Tx::label_session`): how a successor finds them to fence them out.
fn session_label(base: &str, node: u16) -> String {
    format!("{base} node {node}")
}

macro_rules! user_columns {
    () => {
        "id, team_id, name, real_name, is_bot, deleted, tz, created, profile"
    };
}
macro_rules! channel_columns {
    () => {
        "c.id, c.team_id, c.name, c.is_private, c.is_archived, c.is_general, c.created, c.creator, c.topic, c.purpose"
    };
}
macro_rules! message_columns {
    () => {
        "channel_id, ts, user_id, text, blocks, thread_ts, subtype, client_msg_id, edited_ts, edited_user"
    };
}

fn user(r: &Row) -> Result<UserRow, StoreError> {
    let id: String = r.try_get(0)?;
    let profile = parse_profile(&id, r.try_get(8)?)?;
    Ok(UserRow {
        team_id: r.try_get(1)?,
        name: r.try_get(2)?,
        real_name: r.try_get(3)?,
        is_bot: r.try_get(4)?,
        deleted: r.try_get(5)?,
        tz: r.try_get(6)?,
        created: r.try_get(7)?,
        profile,
        id,
    })
}

fn channel(r: &Row) -> Result<ChannelRow, StoreError> {
    Ok(ChannelRow {
        id: r.try_get(0)?,
        team_id: r.try_get(1)?,
        name: r.try_get(2)?,
        is_private: r.try_get(3)?,
        is_archived: r.try_get(4)?,
        is_general: r.try_get(5)?,
        created: r.try_get(6)?,
        creator: r.try_get(7)?,
        topic: r.try_get(8)?,
        purpose: r.try_get(9)?,
    })
}

fn message(r: &Row) -> Result<MessageRow, StoreError> {
    let channel: String = r.try_get(0)?;
    let ts: i64 = r.try_get(1)?;
    let blocks = parse_blocks(&channel, ts, r.try_get(4)?)?;
    let edited_ts: Option<i64> = r.try_get(8)?;
    let edited_user: Option<String> = r.try_get(9)?;
    Ok(MessageRow {
        user: r.try_get(2)?,
        text: r.try_get(3)?,
        blocks,
        thread_ts: r.try_get(5)?,
        subtype: r.try_get(6)?,
        client_msg_id: r.try_get(7)?,
        edited: edited_ts.map(|t| (t, edited_user.unwrap_or_default())),
        channel,
        ts,
        reply_count: 0,
        reply_users: Vec::new(),
        latest_reply: None,
        reactions: Vec::new(),
    })
}

fn all<T>(rows: Vec<Row>, f: fn(&Row) -> Result<T, StoreError>) -> Result<Vec<T>, StoreError> {
    rows.iter().map(f).collect()
}

/// `Conflict` unless the insert wrote its row.
fn inserted(n: u64) -> Result<(), StoreError> {
    if n == 1 {
        Ok(())
    } else {
        Err(StoreError::Conflict)
    }
}

/// `NotFound` unless the update found its row.
fn updated(n: u64) -> Result<(), StoreError> {
    if n == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

impl Tx for PgTx {
    fn insert_team(&mut self, team: &TeamRow) -> Result<(), StoreError> {
        inserted(self.execute(
            "INSERT INTO teams (id, name, domain, created) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
            &[&team.id, &team.name, &team.domain, &team.created],
        )?)
    }

    fn team(&mut self, id: &str) -> Result<Option<TeamRow>, StoreError> {
        let row = self.query_opt(
            "SELECT id, name, domain, created FROM teams WHERE id = $1",
            &[&id],
        )?;
        row.map(|r| {
            Ok(TeamRow {
                id: r.try_get(0)?,
                name: r.try_get(1)?,
                domain: r.try_get(2)?,
                created: r.try_get(3)?,
            })
        })
        .transpose()
    }

    fn insert_user(&mut self, u: &UserRow, hash: Option<&TokenHash>) -> Result<(), StoreError> {
        let profile = profile_text(u)?;
        let hash = hash.map(|h| &h[..]);
        inserted(self.execute(
            "INSERT INTO users (id, team_id, name, real_name, is_bot, deleted, tz, created, profile, token_hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT DO NOTHING",
            &[
                &u.id,
                &u.team_id,
                &u.name,
                &u.real_name,
                &u.is_bot,
                &u.deleted,
                &u.tz,
                &u.created,
                &profile,
                &hash,
            ],
        )?)
    }

    fn user(&mut self, id: &str) -> Result<Option<UserRow>, StoreError> {
        let row = self.query_opt(
            concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1"),
            &[&id],
        )?;
        row.as_ref().map(user).transpose()
    }

    fn user_by_name(&mut self, team_id: &str, name: &str) -> Result<Option<UserRow>, StoreError> {
        let row = self.query_opt(
            concat!(
                "SELECT ",
                user_columns!(),
                " FROM users WHERE team_id = $1 AND name = $2"
            ),
            &[&team_id, &name],
        )?;
        row.as_ref().map(user).transpose()
    }

    fn user_by_token_hash(&mut self, hash: &TokenHash) -> Result<Option<UserRow>, StoreError> {
        let row = self.query_opt(
            concat!(
                "SELECT ",
                user_columns!(),
                " FROM users WHERE token_hash = $1"
            ),
            &[&&hash[..]],
        )?;
        row.as_ref().map(user).transpose()
    }

    fn users(
        &mut self,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<UserRow>, bool), StoreError> {
        let rows = self.query(
            concat!(
                "SELECT ",
                user_columns!(),
                " FROM users WHERE id > $1 ORDER BY id LIMIT $2"
            ),
            &[&cursor.unwrap_or(""), &limit_plus_one(limit)],
        )?;
        Ok(page(all(rows, user)?, limit))
    }

    fn token_hash_of(&mut self, id: &str) -> Result<Option<TokenHash>, StoreError> {
        let row = self.query_opt("SELECT token_hash FROM users WHERE id = $1", &[&id])?;
        let blob: Option<Vec<u8>> = match row {
            Some(r) => r.try_get(0)?,
            None => None,
        };
        blob.map(|b| parse_token_hash(id, &b)).transpose()
    }

    fn set_token_hash(&mut self, id: &str, hash: Option<&TokenHash>) -> Result<(), StoreError> {
        let hash = hash.map(|h| &h[..]);
        // Checked first: a unique violation would poison the transaction.
        if let Some(h) = hash {
            if self
                .query_opt(
                    "SELECT 1 FROM users WHERE token_hash = $1 AND id <> $2",
                    &[&h, &id],
                )?
                .is_some()
            {
                return Err(StoreError::Conflict);
            }
        }
        updated(self.execute(
            "UPDATE users SET token_hash = $2 WHERE id = $1",
            &[&id, &hash],
        )?)
    }

    fn each_user(
        &mut self,
        f: &mut dyn FnMut(UserRow, Option<TokenHash>),
    ) -> Result<u64, StoreError> {
        self.each_row(
            concat!("SELECT ", user_columns!(), ", token_hash FROM users"),
            |r| {
                let hash: Option<&[u8]> = r.try_get(9)?;
                let hash = hash.and_then(|h| TokenHash::try_from(h).ok());
                f(user(r)?, hash);
                Ok(())
            },
        )
    }

    fn insert_channel(&mut self, ch: &ChannelRow) -> Result<(), StoreError> {
        inserted(self.execute(
            "INSERT INTO channels (id, team_id, name, is_private, is_archived, is_general, created, creator, topic, purpose)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT DO NOTHING",
            &[
                &ch.id,
                &ch.team_id,
                &ch.name,
                &ch.is_private,
                &ch.is_archived,
                &ch.is_general,
                &ch.created,
                &ch.creator,
                &ch.topic,
                &ch.purpose,
            ],
        )?)
    }

    fn channel(&mut self, id: &str) -> Result<Option<ChannelRow>, StoreError> {
        let row = self.query_opt(
            concat!(
                "SELECT ",
                channel_columns!(),
                " FROM channels c WHERE c.id = $1"
            ),
            &[&id],
        )?;
        row.as_ref().map(channel).transpose()
    }

    fn channel_by_name(
        &mut self,
        team_id: &str,
        name: &str,
    ) -> Result<Option<ChannelRow>, StoreError> {
        let row = self.query_opt(
            concat!(
                "SELECT ",
                channel_columns!(),
                " FROM channels c WHERE c.team_id = $1 AND c.name = $2"
            ),
            &[&team_id, &name],
        )?;
        row.as_ref().map(channel).transpose()
    }

    fn channels(
        &mut self,
        types: ChannelTypes,
        exclude_archived: bool,
        member_of: Option<&str>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ChannelRow>, bool), StoreError> {
        let rows = self.query(
            concat!(
                "SELECT ",
                channel_columns!(),
                " FROM channels c
                 WHERE c.id > $1
                   AND (NOT $2 OR NOT c.is_archived)
                   AND (   (NOT c.is_private AND $3)
                        OR (c.is_private AND $4 AND ($5::text IS NULL OR EXISTS (
                                SELECT 1 FROM members m WHERE m.channel_id = c.id AND m.user_id = $5))))
                 ORDER BY c.id
                 LIMIT $6"
            ),
            &[
                &cursor.unwrap_or(""),
                &exclude_archived,
                &types.public,
                &types.private,
                &member_of,
                &limit_plus_one(limit),
            ],
        )?;
        Ok(page(all(rows, channel)?, limit))
    }

    fn set_archived(&mut self, id: &str, archived: bool) -> Result<(), StoreError> {
        updated(self.execute(
            "UPDATE channels SET is_archived = $2 WHERE id = $1",
            &[&id, &archived],
        )?)
    }

    fn each_channel_id(&mut self, f: &mut dyn FnMut(&str, bool)) -> Result<u64, StoreError> {
        self.each_row("SELECT id, is_private FROM channels", |r| {
            f(r.try_get(0)?, r.try_get(1)?);
            Ok(())
        })
    }

    fn add_member(&mut self, channel: &str, user: &str, joined: i64) -> Result<bool, StoreError> {
        Ok(self.execute(
            "INSERT INTO members (channel_id, user_id, joined) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            &[&channel, &user, &joined],
        )? == 1)
    }

    fn remove_member(&mut self, channel: &str, user: &str) -> Result<bool, StoreError> {
        Ok(self.execute(
            "DELETE FROM members WHERE channel_id = $1 AND user_id = $2",
            &[&channel, &user],
        )? == 1)
    }

    fn is_member(&mut self, channel: &str, user: &str) -> Result<bool, StoreError> {
        Ok(self
            .query_opt(
                "SELECT 1 FROM members WHERE channel_id = $1 AND user_id = $2",
                &[&channel, &user],
            )?
            .is_some())
    }

    fn members(
        &mut self,
        channel: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<String>, bool), StoreError> {
        let rows = self.query(
            "SELECT user_id FROM members WHERE channel_id = $1 AND user_id > $2
             ORDER BY user_id LIMIT $3",
            &[&channel, &cursor.unwrap_or(""), &limit_plus_one(limit)],
        )?;
        let ids = rows
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<Vec<String>, _>>()?;
        Ok(page(ids, limit))
    }

    fn channels_of(&mut self, user: &str) -> Result<Vec<String>, StoreError> {
        let rows = self.query(
            "SELECT channel_id FROM members WHERE user_id = $1 ORDER BY channel_id",
            &[&user],
        )?;
        Ok(rows
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<Vec<String>, _>>()?)
    }

    fn member_count(&mut self, channel: &str) -> Result<usize, StoreError> {
        let rows = self.query(
            "SELECT count(*) FROM members WHERE channel_id = $1",
            &[&channel],
        )?;
        let n: i64 = rows[0].try_get(0)?;
        Ok(n as usize)
    }

    fn each_member(&mut self, f: &mut dyn FnMut(&str, &str)) -> Result<u64, StoreError> {
        self.each_row(
            "SELECT channel_id, user_id FROM members ORDER BY channel_id, user_id",
            |r| {
                f(r.try_get(0)?, r.try_get(1)?);
                Ok(())
            },
        )
    }

    fn insert_message(&mut self, m: &NewMessage) -> Result<(), StoreError> {
        let blocks = blocks_text(m.blocks.as_ref())?;
        inserted(self.execute(
            "INSERT INTO messages (channel_id, ts, user_id, text, blocks, thread_ts, subtype, client_msg_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT DO NOTHING",
            &[
                &m.channel,
                &m.ts,
                &m.user,
                &m.text,
                &blocks,
                &m.thread_ts,
                &m.subtype,
                &m.client_msg_id,
            ],
        )?)
    }

    fn thread_of(&mut self, channel: &str, ts: i64) -> Result<Option<i64>, StoreError> {
        let row = self.query_opt(
            "SELECT thread_ts FROM messages WHERE channel_id = $1 AND ts = $2 AND NOT deleted",
            &[&channel, &ts],
        )?;
        match row {
            None => Ok(None),
            Some(r) => {
                let thread: Option<i64> = r.try_get(0)?;
                Ok(Some(thread.unwrap_or(ts)))
            }
        }
    }

    fn message_exists(&mut self, channel: &str, ts: i64) -> Result<bool, StoreError> {
        Ok(self
            .query_opt(
                "SELECT 1 FROM messages WHERE channel_id = $1 AND ts = $2 AND NOT deleted",
                &[&channel, &ts],
            )?
            .is_some())
    }

    fn update_text(
        &mut self,
        channel: &str,
        ts: i64,
        text: &str,
        blocks: Option<&serde_json::Value>,
        editor: &str,
        edited_ts: i64,
    ) -> Result<(), StoreError> {
        let blocks = blocks_text(blocks)?;
        updated(self.execute(
            "UPDATE messages SET text = $3, blocks = $4, edited_user = $5, edited_ts = $6
             WHERE channel_id = $1 AND ts = $2 AND NOT deleted",
            &[&channel, &ts, &text, &blocks, &editor, &edited_ts],
        )?)
    }

    fn mark_deleted(&mut self, channel: &str, ts: i64) -> Result<(), StoreError> {
        updated(self.execute(
            "UPDATE messages SET deleted = TRUE WHERE channel_id = $1 AND ts = $2 AND NOT deleted",
            &[&channel, &ts],
        )?)
    }

    fn max_ts(&mut self, channel: &str) -> Result<Option<i64>, StoreError> {
        let rows = self.query(
            "SELECT max(ts) FROM messages WHERE channel_id = $1",
            &[&channel],
        )?;
        Ok(rows[0].try_get(0)?)
    }

    fn message_row(&mut self, channel: &str, ts: i64) -> Result<Option<MessageRow>, StoreError> {
        let row = self.query_opt(
            concat!(
                "SELECT ",
                message_columns!(),
                " FROM messages WHERE channel_id = $1 AND ts = $2 AND NOT deleted"
            ),
            &[&channel, &ts],
        )?;
        row.as_ref().map(message).transpose()
    }

    fn history_rows(
        &mut self,
        channel: &str,
        lower: i64,
        upper: i64,
        n: i64,
    ) -> Result<Vec<MessageRow>, StoreError> {
        let rows = self.query(
            concat!(
                "SELECT ",
                message_columns!(),
                " FROM messages
                 WHERE channel_id = $1 AND ts > $2 AND ts < $3 AND NOT deleted
                   AND (thread_ts IS NULL OR thread_ts = ts OR subtype = 'thread_broadcast')
                 ORDER BY ts DESC
                 LIMIT $4"
            ),
            &[&channel, &lower, &upper, &n],
        )?;
        all(rows, message)
    }

    fn reply_rows(
        &mut self,
        channel: &str,
        thread_ts: i64,
        lower: i64,
        upper: i64,
        n: i64,
    ) -> Result<Vec<MessageRow>, StoreError> {
        let rows = self.query(
            concat!(
                "SELECT ",
                message_columns!(),
                " FROM messages
                 WHERE channel_id = $1 AND thread_ts = $2 AND ts <> thread_ts AND NOT deleted
                   AND ts > $3 AND ts < $4
                 ORDER BY ts ASC
                 LIMIT $5"
            ),
            &[&channel, &thread_ts, &lower, &upper, &n],
        )?;
        all(rows, message)
    }

    fn reply_summaries(
        &mut self,
        channel: &str,
        lo: i64,
        hi: i64,
    ) -> Result<Vec<ReplierSummary>, StoreError> {
        let rows = self.query(
            "SELECT thread_ts, user_id, count(*), min(ts), max(ts) FROM messages
             WHERE channel_id = $1 AND thread_ts >= $2 AND thread_ts <= $3
               AND ts <> thread_ts AND NOT deleted
             GROUP BY thread_ts, user_id",
            &[&channel, &lo, &hi],
        )?;
        all(rows, |r| {
            let n: i64 = r.try_get(2)?;
            Ok(ReplierSummary {
                thread_ts: r.try_get(0)?,
                user: r.try_get(1)?,
                count: n as usize,
                first: r.try_get(3)?,
                latest: r.try_get(4)?,
            })
        })
    }

    fn insert_reaction(
        &mut self,
        channel: &str,
        ts: i64,
        name: &str,
        user: &str,
        created: i64,
    ) -> Result<(), StoreError> {
        inserted(self.execute(
            "INSERT INTO reactions (channel_id, ts, name, user_id, created) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING",
            &[&channel, &ts, &name, &user, &created],
        )?)
    }

    fn delete_reaction(
        &mut self,
        channel: &str,
        ts: i64,
        name: &str,
        user: &str,
    ) -> Result<bool, StoreError> {
        Ok(self.execute(
            "DELETE FROM reactions WHERE channel_id = $1 AND ts = $2 AND name = $3 AND user_id = $4",
            &[&channel, &ts, &name, &user],
        )? == 1)
    }

    fn reaction_rows(
        &mut self,
        channel: &str,
        lo: i64,
        hi: i64,
    ) -> Result<Vec<(i64, String, String)>, StoreError> {
        let rows = self.query(
            "SELECT ts, name, user_id FROM reactions
             WHERE channel_id = $1 AND ts >= $2 AND ts <= $3
             ORDER BY seq",
            &[&channel, &lo, &hi],
        )?;
        all(rows, |r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
    }

    fn insert_event(&mut self, channel: &str, ts: i64, json: &str) -> Result<(), StoreError> {
        inserted(self.execute(
            "INSERT INTO events (channel_id, ts, json) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&channel, &ts, &json],
        )?)
    }

    fn events_after(
        &mut self,
        channel: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let rows = self.query(
            "SELECT ts, json FROM events WHERE channel_id = $1 AND ts > $2 ORDER BY ts LIMIT $3",
            &[&channel, &after, &(limit as i64)],
        )?;
        all(rows, |r| Ok((r.try_get(0)?, r.try_get(1)?)))
    }

    fn last_events(
        &mut self,
        channel: &str,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let rows = self.query(
            "SELECT ts, json FROM events WHERE channel_id = $1 ORDER BY ts DESC LIMIT $2",
            &[&channel, &(limit as i64)],
        )?;
        let mut out = all(rows, |r| Ok((r.try_get(0)?, r.try_get(1)?)))?;
        out.reverse();
        Ok(out)
    }

    fn channel_max_ts(&mut self, channel: &str) -> Result<Option<i64>, StoreError> {
        let rows = self.query(
            "SELECT max(ts) FROM (
                 SELECT ts FROM events WHERE channel_id = $1
                 UNION ALL SELECT ts FROM messages WHERE channel_id = $1
             ) AS t",
            &[&channel],
        )?;
        Ok(rows[0].try_get(0)?)
    }

    fn label_session(&mut self, node: u16) -> Result<(), StoreError> {
        let label = session_label(&self.label_base, node);
        // Reconnections keep it: they connect with this config.
        self.config.application_name(&label);
        self.query(
            "SELECT set_config('application_name', $1, false)",
            &[&label],
        )?;
        Ok(())
    }

    fn claim_member(
        &mut self,
        member: u32,
        epoch: u64,
        deposed: &[u16],
    ) -> Result<bool, StoreError> {
        // Waits for the writes of earlier claimers that hold the row (their
        // `member_epoch_holds` lock): once this commits, none of them can.
        const CLAIM: &str = "INSERT INTO member_epochs (member, epoch) VALUES ($1, $2)
             ON CONFLICT (member) DO UPDATE SET epoch = excluded.epoch
             WHERE member_epochs.epoch <= excluded.epoch";
        let (member_param, epoch_param) = (i64::from(member), epoch as i64);
        let params: [&(dyn ToSql + Sync); 2] = [&member_param, &epoch_param];
        if deposed.is_empty() {
            return Ok(self.execute(CLAIM, &params)? > 0);
        }
        // A deposed owner paused in the middle of a batch holds the row for
        // as long as it is paused, and this claim (and this node's writer
        // with it) would wait that long. So wait briefly, then end the
        // deposed nodes' sessions: their open transactions roll back, which
        // loses nothing acknowledged (acknowledgements follow COMMIT).
        let statement = self.prepared(CLAIM)?;
        self.control_in_job(&format!(
            "SAVEPOINT claim; SET LOCAL lock_timeout = {}",
            limits::CLAIM_WAIT_FOR_DEPOSED_MS
        ))?;
        match self.client.execute(&statement, &params) {
            Ok(n) => {
                self.control_in_job("RELEASE SAVEPOINT claim; SET LOCAL lock_timeout TO DEFAULT")?;
                return Ok(n > 0);
            }
            Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                // Undoes the SET LOCAL too.
                self.control_in_job("ROLLBACK TO SAVEPOINT claim; RELEASE SAVEPOINT claim")?;
            }
            Err(e) => return Err(self.failed(e)),
        }
        let labels: Vec<String> = deposed
            .iter()
            .map(|&n| session_label(&self.label_base, n))
            .collect();
        let ended: i64 = self
            .query(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE application_name = ANY($1) AND datname = current_database()
                   AND pid <> pg_backend_pid()",
                &[&labels],
            )?
            .first()
            .map_or(Ok(0), |r| r.try_get(0))?;
        tracing::warn!(
            member,
            epoch,
            ?deposed,
            ended,
            "a deposed owner held the member open: its sessions were ended"
        );
        Ok(self.execute(CLAIM, &params)? > 0)
    }

    fn member_epoch_holds(&mut self, member: u32, epoch: u64) -> Result<bool, StoreError> {
        // FOR SHARE: a successor's claim (an UPDATE of this row) waits until
        // this transaction ends, so a write checked here commits before any
        // later claim, or not at all.
        let rows = self.query(
            "SELECT epoch FROM member_epochs WHERE member = $1 FOR SHARE",
            &[&i64::from(member)],
        )?;
        Ok(match rows.first() {
            None => true,
            Some(r) => r.try_get::<_, i64>(0)? as u64 <= epoch,
        })
    }

    fn each_channel_max_ts(&mut self, f: &mut dyn FnMut(&str, i64)) -> Result<(), StoreError> {
        self.each_row(
            "SELECT channel_id, max(ts) FROM (
                 SELECT channel_id, ts FROM events
                 UNION ALL SELECT channel_id, ts FROM messages
             ) AS t GROUP BY channel_id",
            |r| {
                f(r.try_get(0)?, r.try_get(1)?);
                Ok(())
            },
        )?;
        Ok(())
    }

    fn insert_scheduled(&mut self, row: &NewScheduled) -> Result<i64, StoreError> {
        scheduled::insert(self, row)
    }
    fn scheduled(&mut self, id: i64) -> Result<Option<ScheduledRow>, StoreError> {
        scheduled::get(self, id)
    }
    fn scheduled_between(
        &mut self,
        post_at: i64,
        channel: &str,
        lo: i64,
        hi: i64,
    ) -> Result<Vec<ScheduledRow>, StoreError> {
        scheduled::between(self, post_at, channel, lo, hi)
    }
    fn delete_scheduled(&mut self, id: i64) -> Result<bool, StoreError> {
        scheduled::delete(self, id)
    }
    fn retire_scheduled(&mut self, key: &ScheduledKey) -> Result<bool, StoreError> {
        scheduled::retire(self, key)
    }
    fn scheduled_list(
        &mut self,
        filter: &ScheduledFilter,
        limit: usize,
    ) -> Result<(Vec<ScheduledRow>, bool), StoreError> {
        scheduled::list(self, filter, limit)
    }
    fn scheduled_count_between(
        &mut self,
        channel: &str,
        lo: i64,
        hi: i64,
    ) -> Result<i64, StoreError> {
        scheduled::count_between(self, channel, lo, hi)
    }
    fn each_scheduled(&mut self, f: &mut dyn FnMut(i64, &str, i64)) -> Result<u64, StoreError> {
        scheduled::each(self, f)
    }

    fn importer(
        &mut self,
        team_id: &str,
        created: i64,
    ) -> Result<Box<dyn Importer + '_>, StoreError> {
        Ok(Box::new(PgImporter::new(self, team_id, created)))
    }

    #[cfg(test)]
    fn scalar(&mut self, sql: &str) -> Result<i64, StoreError> {
        let row = self
            .client
            .query_one(sql, &[])
            .map_err(|e| self.failed(e))?;
        Ok(row.try_get(0)?)
    }

    #[cfg(test)]
    fn exec(&mut self, sql: &str) -> Result<(), StoreError> {
        self.client.batch_execute(sql).map_err(|e| self.failed(e))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::super::migrations::migrate;
    use super::PgTx;
    use crate::store::testutil::PgSchema;
    use crate::store::tx::Tx;

    /// A labelled session of node `node` on `schema`.
    fn node_session(schema: &PgSchema, node: u16) -> PgTx {
        let mut tx = PgTx::plain(schema.url());
        tx.label_session(node).unwrap();
        tx
    }

    #[test]
    fn a_claim_ends_the_sessions_of_a_deposed_owner_paused_in_a_transaction() {
        let schema = PgSchema::new("deposed");
        let mut zombie = node_session(&schema, 7);
        migrate(zombie.client_mut()).unwrap();
        let mut bystander = node_session(&schema, 8);
        // Node 7 owns member 3 at epoch 1, and is paused in the middle of a
        // batch that checked it: it holds the member's row for as long as it
        // is paused.
        assert!(zombie.claim_member(3, 1, &[]).unwrap());
        zombie.client_mut().batch_execute("BEGIN").unwrap();
        assert!(zombie.member_epoch_holds(3, 1).unwrap());

        // Its successor claims member 3, node 7 having left the placement.
        let mut successor = node_session(&schema, 9);
        let (done, claimed) = mpsc::channel();
        std::thread::spawn(move || {
            successor.client_mut().batch_execute("BEGIN").unwrap();
            let r = successor.claim_member(3, 2, &[7]);
            successor.client_mut().batch_execute("COMMIT").unwrap();
            let _ = done.send(r);
        });
        let r = claimed
            .recv_timeout(Duration::from_secs(60))
            .expect("the claim still waits for the paused deposed owner");
        assert!(r.unwrap(), "the claim took the member");

        // The zombie's transaction is gone: it cannot commit when it wakes.
        assert!(
            zombie.client_mut().batch_execute("COMMIT").is_err(),
            "the deposed owner's session survived"
        );
        // Node 8's session (not deposed) is untouched, and sees the claim.
        assert!(!bystander.member_epoch_holds(3, 1).unwrap());
        assert!(bystander.member_epoch_holds(3, 2).unwrap());
    }
}
