//! SQLite: messages. Clustered on (channel, ts): a history page is one
//! range of the primary key.

use rusqlite::{params, Connection, Row};

use crate::store::error::StoreError;
use crate::store::messages::{
    blocks_text, parse_blocks, MessageRow, NewMessage, ReplierSummary, THREAD_BROADCAST,
};

const COLUMNS: &str =
    "channel_id, ts, user_id, text, blocks, thread_ts, subtype, client_msg_id, edited_ts, edited_user";

fn read(r: &Row<'_>) -> Result<MessageRow, StoreError> {
    let channel: String = r.get(0)?;
    let ts: i64 = r.get(1)?;
    let blocks = parse_blocks(&channel, ts, r.get_ref(4)?.as_str_or_null()?)?;
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

fn collect(mut rows: rusqlite::Rows<'_>) -> Result<Vec<MessageRow>, StoreError> {
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(read(r)?);
    }
    Ok(out)
}

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
        blocks_text(m.blocks.as_ref())?,
        m.thread_ts,
        m.subtype,
        m.client_msg_id,
    ])
    .map_err(StoreError::conflict_or_sqlite)?;
    Ok(())
}

pub fn row(conn: &Connection, channel: &str, ts: i64) -> Result<Option<MessageRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM messages WHERE channel_id = ?1 AND ts = ?2 AND deleted = 0"
    ))?;
    let mut rows = stmt.query(params![channel, ts])?;
    rows.next()?.map(read).transpose()
}

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

pub fn exists(conn: &Connection, channel: &str, ts: i64) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM messages WHERE channel_id = ?1 AND ts = ?2 AND deleted = 0")?
        .exists(params![channel, ts])?)
}

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
            blocks_text(blocks)?,
            editor,
            edited_ts
        ])?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

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

pub fn history_rows(
    conn: &Connection,
    channel: &str,
    lower: i64,
    upper: i64,
    n: i64,
) -> Result<Vec<MessageRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM messages
         WHERE channel_id = ?1 AND ts > ?2 AND ts < ?3 AND deleted = 0
           AND (thread_ts IS NULL OR thread_ts = ts OR subtype = '{THREAD_BROADCAST}')
         ORDER BY ts DESC
         LIMIT ?4"
    ))?;
    let rows = collect(stmt.query(params![channel, lower, upper, n])?)?;
    Ok(rows)
}

pub fn reply_rows(
    conn: &Connection,
    channel: &str,
    thread_ts: i64,
    lower: i64,
    upper: i64,
    n: i64,
) -> Result<Vec<MessageRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM messages
         WHERE channel_id = ?1 AND thread_ts = ?2 AND ts != thread_ts AND deleted = 0
           AND ts > ?3 AND ts < ?4
         ORDER BY ts ASC
         LIMIT ?5"
    ))?;
    let rows = collect(stmt.query(params![channel, thread_ts, lower, upper, n])?)?;
    Ok(rows)
}

pub fn reply_summaries(
    conn: &Connection,
    channel: &str,
    lo: i64,
    hi: i64,
) -> Result<Vec<ReplierSummary>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT thread_ts, user_id, count(*), min(ts), max(ts) FROM messages
         WHERE channel_id = ?1 AND thread_ts >= ?2 AND thread_ts <= ?3
           AND ts != thread_ts AND deleted = 0
         GROUP BY thread_ts, user_id",
    )?;
    let rows = stmt
        .query_map(params![channel, lo, hi], |r| {
            let n: i64 = r.get(2)?;
            Ok(ReplierSummary {
                thread_ts: r.get(0)?,
                user: r.get(1)?,
                count: n as usize,
                first: r.get(3)?,
                latest: r.get(4)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub fn max_ts(conn: &Connection, channel: &str) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT max(ts) FROM messages WHERE channel_id = ?1")?
        .query_row([channel], |r| r.get(0))?)
}

#[cfg(test)]
mod tests {
    use super::super::SqliteTx;

    #[test]
    fn queries_use_the_indexes() {
        let tx = SqliteTx::memory();
        let plan = |sql: &str| -> String {
            let mut s = tx
                .conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap();
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
