//! Messages: posting, editing, deleting, channel history and threads.
//!
//! A message is keyed by (channel, ts); the channel server makes `ts`
//! strictly increasing per channel, so ts order is posting order and a
//! history page is one range of the primary key.
//!
//! Threads are stored flat: a reply is a message whose `thread_ts` is its
//! parent's ts. What Slack shows on a parent (reply count, who replied, the
//! latest reply) is computed when read, never stored, so it cannot drift
//! from the replies themselves. A reply posted with `reply_broadcast` has
//! subtype `thread_broadcast` and also appears in the channel's history.
//!
//! Deleting marks the row (`deleted = 1`) instead of removing it: its ts
//! stays taken, so [`max_ts`] never goes backwards.

use std::collections::HashMap;

use rusqlite::{params, Connection, Row};
use serde::{Deserialize, Serialize};

use super::error::StoreError;
use super::reactions::{self, ReactionRow};
use super::{limit_plus_one, page};

/// The subtype of a thread reply that is also shown in the channel.
pub const THREAD_BROADCAST: &str = "thread_broadcast";

/// A message to insert: the stored fields only. Plain data, owned by the
/// thread that builds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewMessage {
    pub channel: String,
    pub ts: i64,
    pub user: String,
    pub text: String,
    pub blocks: Option<serde_json::Value>,
    /// The parent's ts for a thread reply.
    pub thread_ts: Option<i64>,
    /// `None` for a plain message; `thread_broadcast`, `bot_message`, …
    pub subtype: Option<String>,
    /// The client's idempotency id, echoed back in history.
    pub client_msg_id: Option<String>,
}

/// A message as read, with what is derived from other rows: its thread
/// summary if it is a parent, and its reactions. Plain data: whichever
/// thread runs the query owns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MessageRow {
    pub channel: String,
    pub ts: i64,
    pub user: String,
    pub text: String,
    pub blocks: Option<serde_json::Value>,
    /// A reply's parent; a parent's own ts once it has replies (Slack shows
    /// `thread_ts` on parents too).
    pub thread_ts: Option<i64>,
    pub subtype: Option<String>,
    pub client_msg_id: Option<String>,
    /// (edited ts, editor) after chat.update.
    pub edited: Option<(i64, String)>,
    /// Live replies (deleted ones do not count); 0 unless a parent.
    pub reply_count: usize,
    /// Distinct repliers, in the order of their first reply.
    pub reply_users: Vec<String>,
    /// ts of the newest live reply.
    pub latest_reply: Option<i64>,
    /// Reactions in the order they were first added.
    pub reactions: Vec<ReactionRow>,
}

impl From<&NewMessage> for MessageRow {
    /// The message as history will show it right after insertion.
    fn from(m: &NewMessage) -> MessageRow {
        MessageRow {
            channel: m.channel.clone(),
            ts: m.ts,
            user: m.user.clone(),
            text: m.text.clone(),
            blocks: m.blocks.clone(),
            thread_ts: m.thread_ts,
            subtype: m.subtype.clone(),
            client_msg_id: m.client_msg_id.clone(),
            edited: None,
            reply_count: 0,
            reply_users: Vec::new(),
            latest_reply: None,
            reactions: Vec::new(),
        }
    }
}

impl MessageRow {
    /// A reply (as opposed to a top-level message or a thread parent).
    pub fn is_reply(&self) -> bool {
        self.thread_ts.is_some_and(|t| t != self.ts)
    }
}

/// A ts range for history and replies, as the Web API's `latest`, `oldest`
/// and `inclusive` parameters (`None` = unbounded on that side).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    pub latest: Option<i64>,
    pub oldest: Option<i64>,
    /// Whether messages exactly at `latest` / `oldest` are included.
    pub inclusive: bool,
}

impl Window {
    /// (lower, upper), both exclusive: the window is `lower < ts < upper`.
    fn bounds(&self) -> (i64, i64) {
        let lower = match self.oldest {
            Some(o) if self.inclusive => o.saturating_sub(1),
            Some(o) => o,
            None => i64::MIN,
        };
        let upper = match self.latest {
            Some(l) if self.inclusive => l.saturating_add(1),
            Some(l) => l,
            None => i64::MAX,
        };
        (lower, upper)
    }
}

const COLUMNS: &str =
    "channel_id, ts, user_id, text, blocks, thread_ts, subtype, client_msg_id, edited_ts, edited_user";

fn read(r: &Row<'_>) -> Result<MessageRow, StoreError> {
    let channel: String = r.get(0)?;
    let ts: i64 = r.get(1)?;
    let blocks = match r.get_ref(4)?.as_str_or_null()? {
        None => None,
        Some(s) => Some(serde_json::from_str(s).map_err(|e| {
            StoreError::Corrupt(format!("message {channel}/{ts}: blocks are not JSON: {e}"))
        })?),
    };
    let edited_ts: Option<i64> = r.get(8)?;
    let edited_user: Option<String> = r.get(9)?;
    Ok(MessageRow {
        user: r.get(2)?,
        text: r.get(3)?,
        blocks,
        thread_ts: r.get(5)?,
        subtype: r.get(6)?,
        client_msg_id: r.get(7)?,
        edited: edited_ts.map(|t| (t, edited_user.unwrap_or_default())),
        channel,
        ts,
        reply_count: 0,
        reply_users: Vec::new(),
        latest_reply: None,
        reactions: Vec::new(),
    })
}

fn blocks_json(blocks: Option<&serde_json::Value>) -> Result<Option<String>, StoreError> {
    blocks
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("blocks: {e}")))
}

/// Stores a new message. `Conflict` if the channel already has a message at
/// that ts (deleted or not: a ts is never reused).
pub fn insert(conn: &Connection, m: &NewMessage) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO messages (channel_id, ts, user_id, text, blocks, thread_ts, subtype, client_msg_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        m.channel,
        m.ts,
        m.user,
        m.text,
        blocks_json(m.blocks.as_ref())?,
        m.thread_ts,
        m.subtype,
        m.client_msg_id,
    ])
    .map_err(StoreError::conflict_or_sqlite)?;
    Ok(())
}

/// A live (not deleted) message, with its thread summary and reactions.
pub fn get(conn: &Connection, channel: &str, ts: i64) -> Result<Option<MessageRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM messages WHERE channel_id = ?1 AND ts = ?2 AND deleted = 0"
    ))?;
    let mut rows = stmt.query(params![channel, ts])?;
    let Some(r) = rows.next()? else {
        return Ok(None);
    };
    let mut found = [read(r)?];
    decorate(conn, channel, &mut found)?;
    let [m] = found;
    Ok(Some(m))
}

/// The thread a new reply to `ts` belongs to: the ts of its parent, which
/// is `ts` itself unless `ts` is a reply (replies never nest); `None` when
/// no live message is at (channel, ts).
pub fn thread_of(conn: &Connection, channel: &str, ts: i64) -> Result<Option<i64>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT thread_ts FROM messages WHERE channel_id = ?1 AND ts = ?2 AND deleted = 0",
    )?;
    let mut rows = stmt.query(params![channel, ts])?;
    let Some(r) = rows.next()? else {
        return Ok(None);
    };
    let thread: Option<i64> = r.get(0)?;
    Ok(Some(thread.unwrap_or(ts)))
}

/// Whether a live message exists at (channel, ts).
pub fn exists(conn: &Connection, channel: &str, ts: i64) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM messages WHERE channel_id = ?1 AND ts = ?2 AND deleted = 0")?
        .exists(params![channel, ts])?)
}

/// chat.update: replaces text and blocks, records who edited and when.
/// `NotFound` if there is no live message at (channel, ts).
pub fn update_text(
    conn: &Connection,
    channel: &str,
    ts: i64,
    text: &str,
    blocks: Option<&serde_json::Value>,
    editor: &str,
    edited_ts: i64,
) -> Result<(), StoreError> {
    let n = conn
        .prepare_cached(
            "UPDATE messages SET text = ?3, blocks = ?4, edited_user = ?5, edited_ts = ?6
             WHERE channel_id = ?1 AND ts = ?2 AND deleted = 0",
        )?
        .execute(params![
            channel,
            ts,
            text,
            blocks_json(blocks)?,
            editor,
            edited_ts
        ])?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// chat.delete: the message disappears from history, replies and thread
/// summaries. `NotFound` if there is no live message at (channel, ts).
pub fn mark_deleted(conn: &Connection, channel: &str, ts: i64) -> Result<(), StoreError> {
    let n = conn
        .prepare_cached(
            "UPDATE messages SET deleted = 1 WHERE channel_id = ?1 AND ts = ?2 AND deleted = 0",
        )?
        .execute(params![channel, ts])?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// conversations.history: the channel's top-level messages and thread
/// broadcasts in `window`, newest first, at most `limit` (clamped to
/// 1..=[`MAX_PAGE`](super::MAX_PAGE)), strictly older than `cursor` (the
/// last ts of the previous page). Returns the page and whether older
/// messages remain in the window. Replies appear only in [`replies`];
/// parents carry their thread summary.
pub fn history(
    conn: &Connection,
    channel: &str,
    window: Window,
    cursor: Option<i64>,
    limit: usize,
) -> Result<(Vec<MessageRow>, bool), StoreError> {
    let (lower, mut upper) = window.bounds();
    if let Some(c) = cursor {
        upper = upper.min(c);
    }
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM messages
         WHERE channel_id = ?1 AND ts > ?2 AND ts < ?3 AND deleted = 0
           AND (thread_ts IS NULL OR thread_ts = ts OR subtype = '{THREAD_BROADCAST}')
         ORDER BY ts DESC
         LIMIT ?4"
    ))?;
    let mut rows = stmt.query(params![channel, lower, upper, limit_plus_one(limit)])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(read(r)?);
    }
    let (mut out, more) = page(out, limit);
    decorate(conn, channel, &mut out)?;
    Ok((out, more))
}

/// conversations.replies: the thread's parent first (on every page), then
/// its live replies in `window`, oldest first, at most `limit`, strictly
/// newer than `cursor` (the last reply ts of the previous page). `has_more`
/// is about replies. `NotFound` if there is no live message at
/// `thread_ts` (`thread_not_found`); for a message without replies the
/// answer is just that message.
pub fn replies(
    conn: &Connection,
    channel: &str,
    thread_ts: i64,
    window: Window,
    cursor: Option<i64>,
    limit: usize,
) -> Result<(Vec<MessageRow>, bool), StoreError> {
    let parent = get(conn, channel, thread_ts)?.ok_or(StoreError::NotFound)?;
    let (mut lower, upper) = window.bounds();
    if let Some(c) = cursor {
        lower = lower.max(c);
    }
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM messages
         WHERE channel_id = ?1 AND thread_ts = ?2 AND ts != thread_ts AND deleted = 0
           AND ts > ?3 AND ts < ?4
         ORDER BY ts ASC
         LIMIT ?5"
    ))?;
    let mut rows = stmt.query(params![
        channel,
        thread_ts,
        lower,
        upper,
        limit_plus_one(limit)
    ])?;
    let mut out = vec![parent];
    while let Some(r) = rows.next()? {
        out.push(read(r)?);
    }
    let more = out.len() - 1 > limit.clamp(1, super::MAX_PAGE);
    if more {
        out.pop();
    }
    decorate(conn, channel, &mut out[1..])?;
    Ok((out, more))
}

/// The newest ts ever stored in `channel`, deleted messages included: a
/// restarted channel server continues strictly after it.
pub fn max_ts(conn: &Connection, channel: &str) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT max(ts) FROM messages WHERE channel_id = ?1")?
        .query_row([channel], |r| r.get(0))?)
}

/// Fills in the derived fields of `rows` (all from `channel`): thread
/// summaries for parents, reactions for all. Two range queries over the
/// page's ts span, whatever the page size.
fn decorate(conn: &Connection, channel: &str, rows: &mut [MessageRow]) -> Result<(), StoreError> {
    let (Some(lo), Some(hi)) = (
        rows.iter().map(|m| m.ts).min(),
        rows.iter().map(|m| m.ts).max(),
    ) else {
        return Ok(());
    };
    let index: HashMap<i64, usize> = rows.iter().enumerate().map(|(i, m)| (m.ts, i)).collect();

    // Per (thread, replier): how many replies, the first and the newest.
    // Summed per thread, with repliers ordered by their first reply.
    let mut threads: HashMap<i64, Vec<(i64, String, usize, i64)>> = HashMap::new();
    {
        let mut stmt = conn.prepare_cached(
            "SELECT thread_ts, user_id, count(*), min(ts), max(ts) FROM messages
             WHERE channel_id = ?1 AND thread_ts >= ?2 AND thread_ts <= ?3
               AND ts != thread_ts AND deleted = 0
             GROUP BY thread_ts, user_id",
        )?;
        let mut q = stmt.query(params![channel, lo, hi])?;
        while let Some(r) = q.next()? {
            let parent: i64 = r.get(0)?;
            if index.contains_key(&parent) {
                let n: i64 = r.get(2)?;
                threads.entry(parent).or_default().push((
                    r.get(3)?,
                    r.get(1)?,
                    n as usize,
                    r.get(4)?,
                ));
            }
        }
    }
    for (parent, mut repliers) in threads {
        let m = &mut rows[index[&parent]];
        if m.is_reply() {
            continue;
        }
        repliers.sort_unstable_by_key(|(first, ..)| *first);
        m.reply_count = repliers.iter().map(|(_, _, n, _)| n).sum();
        m.latest_reply = repliers.iter().map(|(.., latest)| *latest).max();
        m.reply_users = repliers.into_iter().map(|(_, u, ..)| u).collect();
        m.thread_ts = Some(m.ts);
    }

    for (ts, reactions) in reactions::in_range(conn, channel, lo, hi)? {
        if let Some(&i) = index.get(&ts) {
            rows[i].reactions = reactions;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{mem, message, reply};
    use super::*;
    use serde_json::json;

    fn tss(rows: &[MessageRow]) -> Vec<i64> {
        rows.iter().map(|m| m.ts).collect()
    }

    #[test]
    fn insert_get_and_conflict() {
        let conn = mem();
        let m = NewMessage {
            blocks: Some(json!([{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}])),
            subtype: Some("bot_message".into()),
            client_msg_id: Some("c1d2".into()),
            ..message("C1", 1_700_000_000_000_123, "U1", "hi")
        };
        insert(&conn, &m).unwrap();
        let got = get(&conn, "C1", m.ts).unwrap().unwrap();
        assert_eq!(got, MessageRow::from(&m));
        assert_eq!(get(&conn, "C1", m.ts + 1).unwrap(), None);
        assert_eq!(get(&conn, "C2", m.ts).unwrap(), None);
        assert!(exists(&conn, "C1", m.ts).unwrap());
        assert!(!exists(&conn, "C1", 5).unwrap());
        assert!(matches!(insert(&conn, &m), Err(StoreError::Conflict)));
        // The same ts in another channel is another message.
        insert(&conn, &message("C2", m.ts, "U1", "hi")).unwrap();
    }

    #[test]
    fn update_text_records_the_edit() {
        let conn = mem();
        insert(&conn, &message("C1", 10, "U1", "helo")).unwrap();
        let blocks = json!([{"type": "divider"}]);
        update_text(&conn, "C1", 10, "hello", Some(&blocks), "U1", 20).unwrap();
        let m = get(&conn, "C1", 10).unwrap().unwrap();
        assert_eq!(m.text, "hello");
        assert_eq!(m.blocks, Some(blocks));
        assert_eq!(m.edited, Some((20, "U1".into())));
        update_text(&conn, "C1", 10, "hello!", None, "U2", 30).unwrap();
        let m = get(&conn, "C1", 10).unwrap().unwrap();
        assert_eq!((m.blocks, m.edited), (None, Some((30, "U2".into()))));
        assert!(matches!(
            update_text(&conn, "C1", 11, "x", None, "U1", 40),
            Err(StoreError::NotFound)
        ));
    }

    #[test]
    fn deleted_messages_disappear_but_keep_their_ts() {
        let conn = mem();
        for ts in 1..=3 {
            insert(&conn, &message("C1", ts, "U1", "x")).unwrap();
        }
        mark_deleted(&conn, "C1", 3).unwrap();
        mark_deleted(&conn, "C1", 2).unwrap();
        assert!(matches!(
            mark_deleted(&conn, "C1", 2),
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            mark_deleted(&conn, "C1", 9),
            Err(StoreError::NotFound)
        ));
        assert_eq!(get(&conn, "C1", 2).unwrap(), None);
        assert!(!exists(&conn, "C1", 2).unwrap());
        assert!(matches!(
            update_text(&conn, "C1", 2, "x", None, "U1", 5),
            Err(StoreError::NotFound)
        ));
        let (rows, more) = history(&conn, "C1", Window::default(), None, 100).unwrap();
        assert_eq!((tss(&rows), more), (vec![1], false));
        assert_eq!(max_ts(&conn, "C1").unwrap(), Some(3));
        assert!(matches!(
            insert(&conn, &message("C1", 3, "U1", "again")),
            Err(StoreError::Conflict)
        ));
    }

    #[test]
    fn max_ts_per_channel() {
        let conn = mem();
        assert_eq!(max_ts(&conn, "C1").unwrap(), None);
        insert(&conn, &message("C1", 5, "U1", "x")).unwrap();
        insert(&conn, &message("C1", 9, "U1", "x")).unwrap();
        insert(&conn, &message("C2", 100, "U1", "x")).unwrap();
        assert_eq!(max_ts(&conn, "C1").unwrap(), Some(9));
    }

    /// 250 messages at ts 1..=250, with thread replies interleaved that
    /// history must skip.
    fn channel_of_250(conn: &Connection) {
        for ts in 1..=250 {
            insert(conn, &message("C1", ts * 10, "U1", &format!("m{ts}"))).unwrap();
            if ts % 7 == 0 {
                insert(conn, &reply("C1", ts * 10 + 1, ts * 10, "U2")).unwrap();
            }
        }
        insert(conn, &message("C2", 55, "U1", "elsewhere")).unwrap();
    }

    fn walk_history(conn: &Connection, window: Window, limit: usize) -> (Vec<i64>, usize) {
        let mut seen = Vec::new();
        let mut cursor = None;
        let mut pages = 0;
        loop {
            let (rows, more) = history(conn, "C1", window, cursor, limit).unwrap();
            pages += 1;
            assert!(rows.len() <= limit);
            seen.extend(tss(&rows));
            if !more {
                break;
            }
            cursor = Some(rows.last().unwrap().ts);
        }
        (seen, pages)
    }

    #[test]
    fn history_pages_newest_first_without_gaps_or_repeats() {
        let conn = mem();
        channel_of_250(&conn);
        let (first, more) = history(&conn, "C1", Window::default(), None, 100).unwrap();
        assert!(more);
        assert_eq!(first.len(), 100);
        assert_eq!(first[0].text, "m250");
        let (seen, pages) = walk_history(&conn, Window::default(), 100);
        assert_eq!(pages, 3);
        let want: Vec<i64> = (1..=250).rev().map(|t| t * 10).collect();
        assert_eq!(seen, want);
        // A page size that divides the count exactly ends with has_more false
        // on the last full page.
        let (seen, pages) = walk_history(&conn, Window::default(), 125);
        assert_eq!((seen.len(), pages), (250, 2));
    }

    #[test]
    fn history_windows() {
        let conn = mem();
        channel_of_250(&conn);
        let w = |latest, oldest, inclusive| Window {
            latest: Some(latest),
            oldest: Some(oldest),
            inclusive,
        };
        // Exclusive: 1010..1990.
        let (seen, _) = walk_history(&conn, w(2000, 1000, false), 40);
        assert_eq!(seen, (101..=199).rev().map(|t| t * 10).collect::<Vec<_>>());
        // Inclusive: 1000..=2000, paged.
        let (seen, pages) = walk_history(&conn, w(2000, 1000, true), 40);
        assert_eq!(seen, (100..=200).rev().map(|t| t * 10).collect::<Vec<_>>());
        assert_eq!(pages, 3);
        // Bounds between messages: inclusive makes no difference.
        let (a, _) = walk_history(&conn, w(2005, 995, false), 1000);
        let (b, _) = walk_history(&conn, w(2005, 995, true), 1000);
        assert_eq!(a, b);
        // Only latest / only oldest.
        let only_latest = Window {
            latest: Some(30),
            ..Window::default()
        };
        assert_eq!(walk_history(&conn, only_latest, 100).0, vec![20, 10]);
        let only_oldest = Window {
            oldest: Some(2480),
            inclusive: true,
            ..Window::default()
        };
        assert_eq!(
            walk_history(&conn, only_oldest, 100).0,
            vec![2500, 2490, 2480]
        );
        // An empty window.
        assert_eq!(
            history(&conn, "C1", w(10, 10, false), None, 10).unwrap(),
            (vec![], false)
        );
        assert_eq!(
            history(&conn, "C9", Window::default(), None, 10).unwrap(),
            (vec![], false)
        );
    }

    #[test]
    fn threads() {
        let conn = mem();
        insert(&conn, &message("C1", 100, "U1", "parent")).unwrap();
        insert(&conn, &message("C1", 150, "U1", "unrelated")).unwrap();
        insert(&conn, &reply("C1", 200, 100, "U2")).unwrap();
        insert(&conn, &reply("C1", 300, 100, "U3")).unwrap();
        insert(&conn, &reply("C1", 400, 100, "U2")).unwrap();
        let broadcast = NewMessage {
            subtype: Some(THREAD_BROADCAST.into()),
            ..reply("C1", 500, 100, "U4")
        };
        insert(&conn, &broadcast).unwrap();
        insert(&conn, &message("C1", 600, "U1", "after")).unwrap();

        // History: parents stay, replies do not, broadcasts do.
        let (rows, more) = history(&conn, "C1", Window::default(), None, 100).unwrap();
        assert!(!more);
        assert_eq!(tss(&rows), vec![600, 500, 150, 100]);
        let parent = &rows[3];
        assert_eq!(parent.reply_count, 4);
        assert_eq!(parent.reply_users, ["U2", "U3", "U4"]);
        assert_eq!(parent.latest_reply, Some(500));
        assert_eq!(parent.thread_ts, Some(100));
        let b = &rows[1];
        assert_eq!((b.thread_ts, b.reply_count), (Some(100), 0));
        assert!(b.is_reply());
        let plain = &rows[2];
        assert_eq!(
            (plain.thread_ts, plain.reply_count, plain.latest_reply),
            (None, 0, None)
        );
        assert!(plain.reply_users.is_empty());

        // get carries the summary too.
        assert_eq!(get(&conn, "C1", 100).unwrap().unwrap().reply_count, 4);

        // Replies: parent first, then oldest first; paged.
        let (all, more) = replies(&conn, "C1", 100, Window::default(), None, 100).unwrap();
        assert_eq!((tss(&all), more), (vec![100, 200, 300, 400, 500], false));
        assert_eq!(all[0].reply_count, 4);
        let (p1, more) = replies(&conn, "C1", 100, Window::default(), None, 2).unwrap();
        assert_eq!((tss(&p1), more), (vec![100, 200, 300], true));
        let (p2, more) = replies(&conn, "C1", 100, Window::default(), Some(300), 2).unwrap();
        assert_eq!((tss(&p2), more), (vec![100, 400, 500], false));
        let win = Window {
            latest: Some(400),
            oldest: Some(200),
            inclusive: false,
        };
        assert_eq!(
            tss(&replies(&conn, "C1", 100, win, None, 10).unwrap().0),
            vec![100, 300]
        );
        let win = Window {
            inclusive: true,
            ..win
        };
        assert_eq!(
            tss(&replies(&conn, "C1", 100, win, None, 10).unwrap().0),
            vec![100, 200, 300, 400]
        );

        // A message without replies is its own one-message thread.
        assert_eq!(
            tss(&replies(&conn, "C1", 150, Window::default(), None, 10)
                .unwrap()
                .0),
            vec![150]
        );
        assert!(matches!(
            replies(&conn, "C1", 999, Window::default(), None, 10),
            Err(StoreError::NotFound)
        ));

        // Deleting a reply updates the summary; U3's only reply gone, U3 is
        // no longer a replier.
        mark_deleted(&conn, "C1", 300).unwrap();
        mark_deleted(&conn, "C1", 500).unwrap();
        let p = get(&conn, "C1", 100).unwrap().unwrap();
        assert_eq!(
            (p.reply_count, p.reply_users.clone(), p.latest_reply),
            (2, vec!["U2".into()], Some(400))
        );
        assert_eq!(
            tss(&replies(&conn, "C1", 100, Window::default(), None, 10)
                .unwrap()
                .0),
            vec![100, 200, 400]
        );
        // A deleted parent's thread is gone.
        mark_deleted(&conn, "C1", 100).unwrap();
        assert!(matches!(
            replies(&conn, "C1", 100, Window::default(), None, 10),
            Err(StoreError::NotFound)
        ));
    }

    #[test]
    fn a_page_cut_between_a_parent_and_its_replies_keeps_the_summary() {
        let conn = mem();
        insert(&conn, &message("C1", 10, "U1", "parent")).unwrap();
        for ts in 11..=20 {
            insert(&conn, &message("C1", ts * 10, "U1", "x")).unwrap();
        }
        insert(&conn, &reply("C1", 1000, 10, "U2")).unwrap();
        let (page2, _) = history(&conn, "C1", Window::default(), Some(110), 5).unwrap();
        assert_eq!(tss(&page2), vec![10]);
        assert_eq!(
            (page2[0].reply_count, page2[0].latest_reply),
            (1, Some(1000))
        );
    }

    #[test]
    fn history_carries_reactions() {
        let conn = mem();
        for ts in 1..=3 {
            insert(&conn, &message("C1", ts, "U1", "x")).unwrap();
        }
        reactions::add(&conn, "C1", 2, "tada", "U2", 100).unwrap();
        reactions::add(&conn, "C1", 2, "tada", "U1", 101).unwrap();
        reactions::add(&conn, "C1", 3, "eyes", "U1", 102).unwrap();
        let (rows, _) = history(&conn, "C1", Window::default(), None, 10).unwrap();
        assert_eq!(
            rows[1].reactions,
            [ReactionRow {
                name: "tada".into(),
                users: vec!["U2".into(), "U1".into()],
                count: 2
            }]
        );
        assert_eq!(rows[0].reactions[0].name, "eyes");
        assert!(rows[2].reactions.is_empty());
    }

    #[test]
    fn corrupt_blocks_are_reported() {
        let conn = mem();
        insert(&conn, &message("C1", 1, "U1", "x")).unwrap();
        conn.execute("UPDATE messages SET blocks = 'nope' WHERE ts = 1", [])
            .unwrap();
        assert!(matches!(get(&conn, "C1", 1), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn queries_use_the_indexes() {
        let conn = mem();
        let plan = |sql: &str| -> String {
            let mut s = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let rows: Vec<String> = s
                .query_map([], |r| r.get(3))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            rows.join("; ")
        };
        let h = plan(
            "SELECT ts FROM messages WHERE channel_id = 'C1' AND ts > 0 AND ts < 9 AND deleted = 0 ORDER BY ts DESC LIMIT 5",
        );
        assert!(
            h.contains("PRIMARY KEY") && !h.contains("TEMP B-TREE"),
            "{h}"
        );
        let r = plan(
            "SELECT thread_ts, user_id, count(*) FROM messages WHERE channel_id = 'C1' AND thread_ts >= 1 AND thread_ts <= 9 AND ts != thread_ts GROUP BY thread_ts, user_id",
        );
        assert!(r.contains("messages_thread"), "{r}");
        let t = plan("SELECT ts FROM messages WHERE channel_id = 'C1' AND thread_ts = 5 AND ts > 0 AND ts < 9 ORDER BY ts");
        assert!(
            t.contains("messages_thread") && !t.contains("TEMP B-TREE"),
            "{t}"
        );
    }
}
