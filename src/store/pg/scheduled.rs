//! PostgreSQL: scheduled messages (`store::scheduled`).

use postgres::Row;

use super::PgTx;
use crate::store::error::StoreError;
use crate::store::scheduled::{NewScheduled, ScheduledFilter, ScheduledKey, ScheduledRow};
use crate::store::{limit_plus_one, page};

fn row(r: &Row) -> Result<ScheduledRow, StoreError> {
    Ok(ScheduledRow {
        id: r.try_get(0)?,
        row: NewScheduled {
            channel: r.try_get(1)?,
            post_at: r.try_get(2)?,
            created: r.try_get(3)?,
            user: r.try_get(4)?,
            text: r.try_get(5)?,
            blocks: r.try_get(6)?,
            thread_ts: r.try_get(7)?,
            event: r.try_get(8)?,
        },
    })
}

pub fn insert(tx: &mut PgTx, s: &NewScheduled) -> Result<i64, StoreError> {
    let r = tx
        .query_opt(
            "INSERT INTO scheduled (channel_id, post_at, created, user_id, text, blocks, thread_ts, event)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            &[
                &s.channel,
                &s.post_at,
                &s.created,
                &s.user,
                &s.text,
                &s.blocks,
                &s.thread_ts,
                &s.event,
            ],
        )?
        .ok_or(StoreError::NotFound)?;
    Ok(r.try_get(0)?)
}

pub fn get(tx: &mut PgTx, id: i64) -> Result<Option<ScheduledRow>, StoreError> {
    tx.query_opt(
        "SELECT id, channel_id, post_at, created, user_id, text, blocks, thread_ts, event
         FROM scheduled WHERE id = $1",
        &[&id],
    )?
    .as_ref()
    .map(row)
    .transpose()
}

pub fn between(
    tx: &mut PgTx,
    post_at: i64,
    channel: &str,
    lo: i64,
    hi: i64,
) -> Result<Vec<ScheduledRow>, StoreError> {
    tx.query(
        "SELECT id, channel_id, post_at, created, user_id, text, blocks, thread_ts, event
         FROM scheduled
         WHERE post_at = $1 AND channel_id = $2 AND id BETWEEN $3 AND $4 ORDER BY id",
        &[&post_at, &channel, &lo, &hi],
    )?
    .iter()
    .map(row)
    .collect()
}

pub fn delete(tx: &mut PgTx, id: i64) -> Result<bool, StoreError> {
    Ok(tx.execute("DELETE FROM scheduled WHERE id = $1", &[&id])? > 0)
}

pub fn retire(tx: &mut PgTx, key: &ScheduledKey) -> Result<bool, StoreError> {
    Ok(tx.execute(
        "DELETE FROM scheduled WHERE id = $1 AND post_at = $2 AND channel_id = $3",
        &[&key.id, &key.post_at, &key.channel],
    )? > 0)
}

pub fn list(
    tx: &mut PgTx,
    f: &ScheduledFilter,
    limit: usize,
) -> Result<(Vec<ScheduledRow>, bool), StoreError> {
    let (after_at, after_id) = f.after.unzip();
    let rows = tx.query(
        "SELECT id, channel_id, post_at, created, user_id, text, blocks, thread_ts, event
         FROM scheduled
         WHERE ($1::TEXT IS NULL OR channel_id = $1) AND ($2::TEXT IS NULL OR user_id = $2)
           AND ($3::BIGINT IS NULL OR post_at >= $3) AND ($4::BIGINT IS NULL OR post_at <= $4)
           AND ($5::BIGINT IS NULL OR post_at > $5 OR (post_at = $5 AND id > $6::BIGINT))
         ORDER BY post_at, id LIMIT $7",
        &[
            &f.channel,
            &f.user,
            &f.oldest,
            &f.latest,
            &after_at,
            &after_id,
            &limit_plus_one(limit),
        ],
    )?;
    let rows = rows.iter().map(row).collect::<Result<Vec<_>, _>>()?;
    Ok(page(rows, limit))
}

pub fn count_between(tx: &mut PgTx, channel: &str, lo: i64, hi: i64) -> Result<i64, StoreError> {
    let r = tx
        .query_opt(
            "SELECT count(*) FROM scheduled WHERE channel_id = $1 AND post_at BETWEEN $2 AND $3",
            &[&channel, &lo, &hi],
        )?
        .ok_or(StoreError::NotFound)?;
    Ok(r.try_get(0)?)
}

pub fn each(tx: &mut PgTx, f: &mut dyn FnMut(i64, &str, i64)) -> Result<u64, StoreError> {
    let mut n = 0;
    tx.each_row(
        "SELECT id, channel_id, post_at FROM scheduled ORDER BY post_at, id",
        |r| {
            f(r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
            n += 1;
            Ok(())
        },
    )?;
    Ok(n)
}
