//! Scheduled messages (chat.scheduleMessage, admin `POST /v1/schedule`):
//! one row per message waiting for its time.
//!
//! A row is written when the message is scheduled and deleted in the very
//! transaction that stores the message it becomes (`channel::persist`,
//! `Persist::Scheduled`), or when it is cancelled. So a row exists exactly
//! while its message is pending: a crash can neither fire it twice (the
//! firing transaction either committed both the message and the delete, or
//! neither) nor lose it (the row is still there at the next start).
//!
//! Ids come from the backend's own never-reused sequence (SQLite
//! `AUTOINCREMENT`, PostgreSQL `BIGSERIAL`): a cancelled id is never handed
//! out again, so a stale timer entry can never fire someone else's row.
//! They are shown to clients as [`external_id`] (`Q` and ten digits, like
//! Slack's `Q1298393284`).

/// A message to schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewScheduled {
    pub channel: String,
    /// When it fires, Unix seconds.
    pub post_at: i64,
    /// When it was scheduled, Unix seconds.
    pub created: i64,
    /// Who posts it (a Web API caller); `None` for a backend's event.
    pub user: Option<String>,
    pub text: String,
    /// JSON array text.
    pub blocks: Option<String>,
    /// The thread it replies to (message ts, microseconds).
    pub thread_ts: Option<i64>,
    /// A backend's event object (JSON text) published as is; `None` for a
    /// user's message.
    pub event: Option<String>,
}

/// A pending scheduled message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledRow {
    pub id: i64,
    pub row: NewScheduled,
}

/// Where a pending message's row is: SQLite keeps the rows in this order
/// (the messages due the same second together, channel by channel, the
/// order a firing round takes them), so the firing path names a row by its
/// key, and only clients' requests go through the id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledKey {
    pub post_at: i64,
    pub channel: String,
    pub id: i64,
}

/// Which pending messages a listing shows.
#[derive(Debug, Clone, Default)]
pub struct ScheduledFilter {
    pub channel: Option<String>,
    /// Only this user's messages (the Web API lists the caller's own).
    pub user: Option<String>,
    /// Only messages whose `post_at` is at or after this (seconds).
    pub oldest: Option<i64>,
    /// Only messages whose `post_at` is at or before this (seconds).
    pub latest: Option<i64>,
    /// Only messages after this `(post_at, id)` (the previous page's last).
    pub after: Option<(i64, i64)>,
}

/// Digits after the `Q` of an external id.
const EXTERNAL_DIGITS: usize = 10;

/// The id clients see: `Q` and the row id in ten digits.
pub fn external_id(id: i64) -> String {
    format!("Q{id:0width$}", width = EXTERNAL_DIGITS)
}

/// The row id of an external id; `None` for anything we never handed out.
pub fn parse_external_id(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('Q')?;
    if digits.len() < EXTERNAL_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<i64>().ok().filter(|&id| id > 0)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::temp_stores;
    use super::super::Durability;
    use super::*;

    fn new(channel: &str, post_at: i64, user: Option<&str>) -> NewScheduled {
        NewScheduled {
            channel: channel.into(),
            post_at,
            created: 1,
            user: user.map(str::to_string),
            text: format!("at {post_at}"),
            blocks: Some("[{\"type\":\"divider\"}]".into()),
            thread_ts: Some(7),
            event: None,
        }
    }

    #[test]
    fn external_ids_round_trip_and_refuse_the_rest() {
        assert_eq!(external_id(42), "Q0000000042");
        assert_eq!(parse_external_id("Q0000000042"), Some(42));
        assert_eq!(parse_external_id("Q12345678901"), Some(12345678901));
        for bad in [
            "",
            "Q",
            "Q42",
            "X0000000042",
            "Q00000000-1",
            "Q0000000000",
            "q0000000042",
        ] {
            assert_eq!(parse_external_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn rows_insert_list_count_and_delete_once() {
        for (temp, store) in temp_stores(Durability::Normal) {
            eprintln!("{}", temp.name());
            let ids: Vec<i64> = store
                .write_blocking(|tx| {
                    let mut ids = Vec::new();
                    for (c, at, u) in [
                        ("C1", 30, Some("U1")),
                        ("C1", 10, Some("U1")),
                        ("C2", 10, None),
                        ("C1", 10, Some("U2")),
                    ] {
                        ids.push(tx.insert_scheduled(&new(c, at, u))?);
                    }
                    Ok(ids)
                })
                .unwrap();
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids grow: {ids:?}");
            let (id0, id1, id3) = (ids[0], ids[1], ids[3]);
            let got = store
                .read_blocking(move |tx| tx.scheduled(id1))
                .unwrap()
                .unwrap();
            assert_eq!(got.row, new("C1", 10, Some("U1")));

            let list = |f: ScheduledFilter, limit| {
                store
                    .read_blocking(move |tx| tx.scheduled_list(&f, limit))
                    .unwrap()
            };
            // Ordered by (post_at, id); a page says whether more follow.
            let (rows, more) = list(ScheduledFilter::default(), 2);
            assert_eq!(
                rows.iter().map(|r| r.id).collect::<Vec<_>>(),
                [ids[1], ids[2]]
            );
            assert!(more);
            let after = Some((rows[1].row.post_at, rows[1].id));
            let (rows, more) = list(
                ScheduledFilter {
                    after,
                    ..Default::default()
                },
                2,
            );
            assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), [id3, id0]);
            assert!(!more);
            let mine = ScheduledFilter {
                channel: Some("C1".into()),
                user: Some("U1".into()),
                latest: Some(20),
                ..Default::default()
            };
            assert_eq!(
                list(mine, 10).0.iter().map(|r| r.id).collect::<Vec<_>>(),
                [ids[1]]
            );
            let oldest = ScheduledFilter {
                oldest: Some(11),
                ..Default::default()
            };
            assert_eq!(list(oldest, 10).0.len(), 1);

            let near = store
                .read_blocking(|tx| tx.scheduled_count_between("C1", 0, 20))
                .unwrap();
            assert_eq!(near, 2);
            let pending = store
                .read_blocking(|tx| {
                    let mut v = Vec::new();
                    tx.each_scheduled(&mut |id, c, at| v.push((id, c.to_string(), at)))?;
                    Ok(v)
                })
                .unwrap();
            assert_eq!(pending.len(), 4);
            assert!(pending.contains(&(ids[2], "C2".to_string(), 10)));

            let first = store
                .write_blocking(move |tx| tx.delete_scheduled(id1))
                .unwrap();
            let again = store
                .write_blocking(move |tx| tx.delete_scheduled(id1))
                .unwrap();
            assert!(first && !again, "a row is deleted once");
            assert!(store
                .read_blocking(move |tx| tx.scheduled(id1))
                .unwrap()
                .is_none());
            // Never reused, even for the newest id once deleted.
            let last = id3;
            store
                .write_blocking(move |tx| tx.delete_scheduled(last))
                .unwrap();
            let next = store
                .write_blocking(|tx| tx.insert_scheduled(&new("C1", 5, None)))
                .unwrap();
            assert!(next > last, "{next} reuses an id");
        }
    }

    #[test]
    fn a_firing_retires_its_row_by_key_once() {
        for (temp, store) in temp_stores(Durability::Normal) {
            eprintln!("{}", temp.name());
            let id = store
                .write_blocking(|tx| tx.insert_scheduled(&new("C1", 10, Some("U1"))))
                .unwrap();
            let key = ScheduledKey {
                post_at: 10,
                channel: "C1".into(),
                id,
            };
            let got = store
                .read_blocking(move |tx| tx.scheduled_run(10, "C1", &[id - 1, id, id + 1]))
                .unwrap();
            assert_eq!(got.iter().map(|r| r.id).collect::<Vec<_>>(), [id]);
            // Any other key names no row, even with the right id.
            for wrong in [
                ScheduledKey {
                    post_at: 11,
                    ..key.clone()
                },
                ScheduledKey {
                    channel: "C2".into(),
                    ..key.clone()
                },
            ] {
                let w = wrong.clone();
                assert!(store
                    .read_blocking(move |tx| tx.scheduled_run(w.post_at, &w.channel, &[w.id]))
                    .unwrap()
                    .is_empty());
                assert!(!store
                    .write_blocking(move |tx| tx.retire_scheduled(&wrong))
                    .unwrap());
            }
            let k = key.clone();
            assert!(store
                .write_blocking(move |tx| tx.retire_scheduled(&k))
                .unwrap());
            let k = key.clone();
            assert!(!store
                .write_blocking(move |tx| tx.retire_scheduled(&k))
                .unwrap());
            // Gone for clients too, before and after the idle writer's sweep.
            assert!(store
                .read_blocking(move |tx| tx.scheduled(id))
                .unwrap()
                .is_none());
            assert!(!store
                .write_blocking(move |tx| tx.delete_scheduled(id))
                .unwrap());
        }
    }
}
