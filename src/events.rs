//! The JSON shapes of Slack objects and events that more than one role
//! builds: the message object (history, Web API answers, `message_changed`)
//! and the events written by the channel server when it persists an edit,
//! a deletion or a reaction.

use serde_json::{json, Map, Value};

use crate::ids::Id;
use crate::store::messages::MessageRow;
use crate::ts::Ts;

fn ts_string(micros: i64) -> String {
    Ts(micros.max(0) as u64).to_string()
}

/// A message as Slack shows it in history, in Web API answers and in
/// `message` fields of events. Optional fields are left out rather than
/// sent as `null`, as Slack does.
pub fn message_object(m: &MessageRow, team: &str) -> Value {
    let mut o = Map::new();
    o.insert("type".into(), "message".into());
    if let Some(s) = &m.subtype {
        o.insert("subtype".into(), s.clone().into());
    }
    o.insert("user".into(), m.user.clone().into());
    o.insert("text".into(), m.text.clone().into());
    o.insert("ts".into(), ts_string(m.ts).into());
    o.insert("team".into(), team.into());
    if let Some(b) = &m.blocks {
        o.insert("blocks".into(), b.clone());
    }
    if let Some(c) = &m.client_msg_id {
        o.insert("client_msg_id".into(), c.clone().into());
    }
    if let Some(t) = m.thread_ts {
        o.insert("thread_ts".into(), ts_string(t).into());
    }
    if !m.is_reply() && m.reply_count > 0 {
        o.insert("reply_count".into(), m.reply_count.into());
        o.insert("reply_users_count".into(), m.reply_users.len().into());
        o.insert("reply_users".into(), m.reply_users.clone().into());
        if let Some(l) = m.latest_reply {
            o.insert("latest_reply".into(), ts_string(l).into());
        }
    }
    if let Some((ts, user)) = &m.edited {
        o.insert("edited".into(), json!({"user": user, "ts": ts_string(*ts)}));
    }
    if !m.reactions.is_empty() {
        let r: Vec<Value> = m
            .reactions
            .iter()
            .map(|r| json!({"name": r.name, "users": r.users, "count": r.count}))
            .collect();
        o.insert("reactions".into(), r.into());
    }
    Value::Object(o)
}

/// `message_changed` (the channel server adds `ts` and `event_ts`).
pub fn message_changed(channel: Id, before: &MessageRow, after: &MessageRow, team: Id) -> Value {
    json!({
        "type": "message",
        "subtype": "message_changed",
        "hidden": true,
        "channel": channel,
        "message": message_object(after, &team.to_string()),
        "previous_message": message_object(before, &team.to_string()),
    })
}

/// `message_deleted` (the channel server adds `ts` and `event_ts`).
pub fn message_deleted(channel: Id, before: &MessageRow, team: Id) -> Value {
    json!({
        "type": "message",
        "subtype": "message_deleted",
        "hidden": true,
        "channel": channel,
        "deleted_ts": ts_string(before.ts),
        "previous_message": message_object(before, &team.to_string()),
    })
}

/// `reaction_added` / `reaction_removed` (the channel server adds
/// `event_ts`).
pub fn reaction(channel: Id, user: Id, name: &str, item: &MessageRow, added: bool) -> Value {
    json!({
        "type": if added { "reaction_added" } else { "reaction_removed" },
        "user": user,
        "reaction": name,
        "item_user": item.user,
        "item": {"type": "message", "channel": channel, "ts": ts_string(item.ts)},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::reactions::ReactionRow;

    fn row() -> MessageRow {
        MessageRow {
            channel: "C1".into(),
            ts: 1_700_000_000_000_123,
            user: "U1".into(),
            text: "hi".into(),
            blocks: None,
            thread_ts: Some(1_700_000_000_000_123),
            subtype: None,
            client_msg_id: None,
            edited: Some((1_700_000_001_000_000, "U1".into())),
            reply_count: 2,
            reply_users: vec!["U2".into()],
            latest_reply: Some(1_700_000_002_000_000),
            reactions: vec![ReactionRow {
                name: "eyes".into(),
                users: vec!["U2".into()],
                count: 1,
            }],
        }
    }

    #[test]
    fn message_shape() {
        let v = message_object(&row(), "T1");
        assert_eq!(v["ts"], "1700000000.000123");
        assert_eq!(v["thread_ts"], "1700000000.000123");
        assert_eq!(v["reply_count"], 2);
        assert_eq!(v["latest_reply"], "1700000002.000000");
        assert_eq!(v["edited"]["ts"], "1700000001.000000");
        assert_eq!(v["reactions"][0]["name"], "eyes");
        assert_eq!(v["team"], "T1");
    }

    #[test]
    fn reaction_shape() {
        let c = Id::parse("C1").unwrap();
        let u = Id::parse("U2").unwrap();
        let v = reaction(c, u, "eyes", &row(), true);
        assert_eq!(v["type"], "reaction_added");
        assert_eq!(v["item"]["ts"], "1700000000.000123");
        assert_eq!(v["item_user"], "U1");
    }
}
