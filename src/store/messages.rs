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
//! stays taken, so `max_ts` never goes backwards.
//!
//! The queries are [`super::Tx`]'s; this module holds the rows, the
//! thread summary both backends share, and the tests, run on every backend.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::error::StoreError;
use super::reactions::ReactionRow;

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
    pub(crate) fn bounds(&self) -> (i64, i64) {
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

/// One replier of one thread, as a backend's `reply_summaries` returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplierSummary {
    pub thread_ts: i64,
    pub user: String,
    /// Live replies by this user.
    pub count: usize,
    /// ts of the user's first and newest live reply.
    pub first: i64,
    pub latest: i64,
}

/// Sets the thread summary (reply count, repliers in the order of their
/// first reply, newest reply) on the parents among `rows`.
pub(crate) fn summarize_threads(rows: &mut [MessageRow], summaries: Vec<ReplierSummary>) {
    let index: HashMap<i64, usize> = rows.iter().enumerate().map(|(i, m)| (m.ts, i)).collect();
    let mut threads: HashMap<i64, Vec<ReplierSummary>> = HashMap::new();
    for s in summaries {
        if index.contains_key(&s.thread_ts) {
            threads.entry(s.thread_ts).or_default().push(s);
        }
    }
    for (parent, mut repliers) in threads {
        let m = &mut rows[index[&parent]];
        if m.is_reply() {
            continue;
        }
        repliers.sort_unstable_by_key(|r| r.first);
        m.reply_count = repliers.iter().map(|r| r.count).sum();
        m.latest_reply = repliers.iter().map(|r| r.latest).max();
        m.reply_users = repliers.into_iter().map(|r| r.user).collect();
        m.thread_ts = Some(m.ts);
    }
}

/// The blocks column's text (JSON), for either backend.
pub(crate) fn blocks_text(
    blocks: Option<&serde_json::Value>,
) -> Result<Option<String>, StoreError> {
    blocks
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("blocks: {e}")))
}

/// Parses a stored blocks column.
pub(crate) fn parse_blocks(
    channel: &str,
    ts: i64,
    text: Option<&str>,
) -> Result<Option<serde_json::Value>, StoreError> {
    text.map(|s| {
        serde_json::from_str(s).map_err(|e| {
            StoreError::Corrupt(format!("message {channel}/{ts}: blocks are not JSON: {e}"))
        })
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{each_backend, message, reply};
    use super::super::Tx;
    use super::*;
    use serde_json::json;

    fn tss(rows: &[MessageRow]) -> Vec<i64> {
        rows.iter().map(|m| m.ts).collect()
    }

    #[test]
    fn insert_get_and_conflict() {
        each_backend(|tx| {
            let m = NewMessage {
                blocks: Some(
                    json!([{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]),
                ),
                subtype: Some("bot_message".into()),
                client_msg_id: Some("c1d2".into()),
                ..message("C1", 1_700_000_000_000_123, "U1", "hi")
            };
            tx.insert_message(&m).unwrap();
            let got = tx.message("C1", m.ts).unwrap().unwrap();
            assert_eq!(got, MessageRow::from(&m));
            assert_eq!(tx.message("C1", m.ts + 1).unwrap(), None);
            assert_eq!(tx.message("C2", m.ts).unwrap(), None);
            assert!(tx.message_exists("C1", m.ts).unwrap());
            assert!(!tx.message_exists("C1", 5).unwrap());
            assert!(matches!(tx.insert_message(&m), Err(StoreError::Conflict)));
            // The same ts in another channel is another message.
            tx.insert_message(&message("C2", m.ts, "U1", "hi")).unwrap();
        });
    }

    #[test]
    fn update_text_records_the_edit() {
        each_backend(|tx| {
            tx.insert_message(&message("C1", 10, "U1", "helo")).unwrap();
            let blocks = json!([{"type": "divider"}]);
            tx.update_text("C1", 10, "hello", Some(&blocks), "U1", 20)
                .unwrap();
            let m = tx.message("C1", 10).unwrap().unwrap();
            assert_eq!(m.text, "hello");
            assert_eq!(m.blocks, Some(blocks));
            assert_eq!(m.edited, Some((20, "U1".into())));
            tx.update_text("C1", 10, "hello!", None, "U2", 30).unwrap();
            let m = tx.message("C1", 10).unwrap().unwrap();
            assert_eq!((m.blocks, m.edited), (None, Some((30, "U2".into()))));
            assert!(matches!(
                tx.update_text("C1", 11, "x", None, "U1", 40),
                Err(StoreError::NotFound)
            ));
        });
    }

    #[test]
    fn deleted_messages_disappear_but_keep_their_ts() {
        each_backend(|tx| {
            for ts in 1..=3 {
                tx.insert_message(&message("C1", ts, "U1", "x")).unwrap();
            }
            tx.mark_deleted("C1", 3).unwrap();
            tx.mark_deleted("C1", 2).unwrap();
            assert!(matches!(
                tx.mark_deleted("C1", 2),
                Err(StoreError::NotFound)
            ));
            assert!(matches!(
                tx.mark_deleted("C1", 9),
                Err(StoreError::NotFound)
            ));
            assert_eq!(tx.message("C1", 2).unwrap(), None);
            assert!(!tx.message_exists("C1", 2).unwrap());
            assert!(matches!(
                tx.update_text("C1", 2, "x", None, "U1", 5),
                Err(StoreError::NotFound)
            ));
            let (rows, more) = tx.history("C1", Window::default(), None, 100).unwrap();
            assert_eq!((tss(&rows), more), (vec![1], false));
            assert_eq!(tx.max_ts("C1").unwrap(), Some(3));
            assert!(matches!(
                tx.insert_message(&message("C1", 3, "U1", "again")),
                Err(StoreError::Conflict)
            ));
        });
    }

    #[test]
    fn max_ts_per_channel() {
        each_backend(|tx| {
            assert_eq!(tx.max_ts("C1").unwrap(), None);
            tx.insert_message(&message("C1", 5, "U1", "x")).unwrap();
            tx.insert_message(&message("C1", 9, "U1", "x")).unwrap();
            tx.insert_message(&message("C2", 100, "U1", "x")).unwrap();
            assert_eq!(tx.max_ts("C1").unwrap(), Some(9));
        });
    }

    /// 250 messages at ts 1..=250, with thread replies interleaved that
    /// history must skip.
    fn channel_of_250(tx: &mut dyn Tx) {
        for ts in 1..=250 {
            tx.insert_message(&message("C1", ts * 10, "U1", &format!("m{ts}")))
                .unwrap();
            if ts % 7 == 0 {
                tx.insert_message(&reply("C1", ts * 10 + 1, ts * 10, "U2"))
                    .unwrap();
            }
        }
        tx.insert_message(&message("C2", 55, "U1", "elsewhere"))
            .unwrap();
    }

    fn walk_history(tx: &mut dyn Tx, window: Window, limit: usize) -> (Vec<i64>, usize) {
        let mut seen = Vec::new();
        let mut cursor = None;
        let mut pages = 0;
        loop {
            let (rows, more) = tx.history("C1", window, cursor, limit).unwrap();
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
        each_backend(|tx| {
            channel_of_250(tx);
            let (first, more) = tx.history("C1", Window::default(), None, 100).unwrap();
            assert!(more);
            assert_eq!(first.len(), 100);
            assert_eq!(first[0].text, "m250");
            let (seen, pages) = walk_history(tx, Window::default(), 100);
            assert_eq!(pages, 3);
            let want: Vec<i64> = (1..=250).rev().map(|t| t * 10).collect();
            assert_eq!(seen, want);
            // A page size that divides the count exactly ends with has_more false
            // on the last full page.
            let (seen, pages) = walk_history(tx, Window::default(), 125);
            assert_eq!((seen.len(), pages), (250, 2));
        });
    }

    #[test]
    fn history_windows() {
        each_backend(|tx| {
            channel_of_250(tx);
            let w = |latest, oldest, inclusive| Window {
                latest: Some(latest),
                oldest: Some(oldest),
                inclusive,
            };
            // Exclusive: 1010..1990.
            let (seen, _) = walk_history(tx, w(2000, 1000, false), 40);
            assert_eq!(seen, (101..=199).rev().map(|t| t * 10).collect::<Vec<_>>());
            // Inclusive: 1000..=2000, paged.
            let (seen, pages) = walk_history(tx, w(2000, 1000, true), 40);
            assert_eq!(seen, (100..=200).rev().map(|t| t * 10).collect::<Vec<_>>());
            assert_eq!(pages, 3);
            // Bounds between messages: inclusive makes no difference.
            let (a, _) = walk_history(tx, w(2005, 995, false), 1000);
            let (b, _) = walk_history(tx, w(2005, 995, true), 1000);
            assert_eq!(a, b);
            // Only latest / only oldest.
            let only_latest = Window {
                latest: Some(30),
                ..Window::default()
            };
            assert_eq!(walk_history(tx, only_latest, 100).0, vec![20, 10]);
            let only_oldest = Window {
                oldest: Some(2480),
                inclusive: true,
                ..Window::default()
            };
            assert_eq!(walk_history(tx, only_oldest, 100).0, vec![2500, 2490, 2480]);
            // An empty window.
            assert_eq!(
                tx.history("C1", w(10, 10, false), None, 10).unwrap(),
                (vec![], false)
            );
            assert_eq!(
                tx.history("C9", Window::default(), None, 10).unwrap(),
                (vec![], false)
            );
        });
    }

    #[test]
    fn threads() {
        each_backend(|tx| {
            tx.insert_message(&message("C1", 100, "U1", "parent"))
                .unwrap();
            tx.insert_message(&message("C1", 150, "U1", "unrelated"))
                .unwrap();
            tx.insert_message(&reply("C1", 200, 100, "U2")).unwrap();
            tx.insert_message(&reply("C1", 300, 100, "U3")).unwrap();
            tx.insert_message(&reply("C1", 400, 100, "U2")).unwrap();
            let broadcast = NewMessage {
                subtype: Some(THREAD_BROADCAST.into()),
                ..reply("C1", 500, 100, "U4")
            };
            tx.insert_message(&broadcast).unwrap();
            tx.insert_message(&message("C1", 600, "U1", "after"))
                .unwrap();

            // History: parents stay, replies do not, broadcasts do.
            let (rows, more) = tx.history("C1", Window::default(), None, 100).unwrap();
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
            assert_eq!(tx.message("C1", 100).unwrap().unwrap().reply_count, 4);

            // Replies: parent first, then oldest first; paged.
            let (all, more) = tx.replies("C1", 100, Window::default(), None, 100).unwrap();
            assert_eq!((tss(&all), more), (vec![100, 200, 300, 400, 500], false));
            assert_eq!(all[0].reply_count, 4);
            let (p1, more) = tx.replies("C1", 100, Window::default(), None, 2).unwrap();
            assert_eq!((tss(&p1), more), (vec![100, 200, 300], true));
            let (p2, more) = tx
                .replies("C1", 100, Window::default(), Some(300), 2)
                .unwrap();
            assert_eq!((tss(&p2), more), (vec![100, 400, 500], false));
            let win = Window {
                latest: Some(400),
                oldest: Some(200),
                inclusive: false,
            };
            assert_eq!(
                tss(&tx.replies("C1", 100, win, None, 10).unwrap().0),
                vec![100, 300]
            );
            let win = Window {
                inclusive: true,
                ..win
            };
            assert_eq!(
                tss(&tx.replies("C1", 100, win, None, 10).unwrap().0),
                vec![100, 200, 300, 400]
            );

            // A message without replies is its own one-message thread.
            assert_eq!(
                tss(&tx
                    .replies("C1", 150, Window::default(), None, 10)
                    .unwrap()
                    .0),
                vec![150]
            );
            assert!(matches!(
                tx.replies("C1", 999, Window::default(), None, 10),
                Err(StoreError::NotFound)
            ));

            // Deleting a reply updates the summary; U3's only reply gone, U3 is
            // no longer a replier.
            tx.mark_deleted("C1", 300).unwrap();
            tx.mark_deleted("C1", 500).unwrap();
            let p = tx.message("C1", 100).unwrap().unwrap();
            assert_eq!(
                (p.reply_count, p.reply_users.clone(), p.latest_reply),
                (2, vec!["U2".into()], Some(400))
            );
            assert_eq!(
                tss(&tx
                    .replies("C1", 100, Window::default(), None, 10)
                    .unwrap()
                    .0),
                vec![100, 200, 400]
            );
            // A deleted parent's thread is gone.
            tx.mark_deleted("C1", 100).unwrap();
            assert!(matches!(
                tx.replies("C1", 100, Window::default(), None, 10),
                Err(StoreError::NotFound)
            ));
        });
    }

    #[test]
    fn a_page_cut_between_a_parent_and_its_replies_keeps_the_summary() {
        each_backend(|tx| {
            tx.insert_message(&message("C1", 10, "U1", "parent"))
                .unwrap();
            for ts in 11..=20 {
                tx.insert_message(&message("C1", ts * 10, "U1", "x"))
                    .unwrap();
            }
            tx.insert_message(&reply("C1", 1000, 10, "U2")).unwrap();
            let (page2, _) = tx.history("C1", Window::default(), Some(110), 5).unwrap();
            assert_eq!(tss(&page2), vec![10]);
            assert_eq!(
                (page2[0].reply_count, page2[0].latest_reply),
                (1, Some(1000))
            );
        });
    }

    #[test]
    fn history_carries_reactions() {
        each_backend(|tx| {
            for ts in 1..=3 {
                tx.insert_message(&message("C1", ts, "U1", "x")).unwrap();
            }
            tx.add_reaction("C1", 2, "tada", "U2", 100).unwrap();
            tx.add_reaction("C1", 2, "tada", "U1", 101).unwrap();
            tx.add_reaction("C1", 3, "eyes", "U1", 102).unwrap();
            let (rows, _) = tx.history("C1", Window::default(), None, 10).unwrap();
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
        });
    }

    #[test]
    fn corrupt_blocks_are_reported() {
        each_backend(|tx| {
            tx.insert_message(&message("C1", 1, "U1", "x")).unwrap();
            tx.exec("UPDATE messages SET blocks = 'nope' WHERE ts = 1")
                .unwrap();
            assert!(matches!(tx.message("C1", 1), Err(StoreError::Corrupt(_))));
        });
    }
}
