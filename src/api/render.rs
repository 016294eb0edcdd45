//! Slack's JSON objects from store rows: messages, conversations, users.
//!
//! Times: a message `ts` is the string `"SSSSSSSSSS.UUUUUU"`
//! ([`crate::ts::Ts`]); a conversation's `created` and a user's `updated`
//! are whole seconds, as Slack sends them (the store keeps microseconds).
//! Optional fields are left out rather than sent as `null`, as Slack does.

use serde_json::{json, Map, Value};

use crate::store::{ChannelRow, MessageRow, UserRow};
use crate::ts::Ts;

/// A store ts (microseconds) as Slack's `ts` string.
pub fn ts(micros: i64) -> String {
    Ts(micros.max(0) as u64).to_string()
}

/// Microseconds to whole seconds.
pub fn secs(micros: i64) -> i64 {
    micros.div_euclid(1_000_000)
}

/// A message as `conversations.history` and `chat.postMessage` show it.
/// `team` is the workspace the message was posted in.
pub fn message(m: &MessageRow, team: &str) -> Value {
    crate::events::message_object(m, team)
}

/// A conversation object. `num_members` only when the caller asked for it
/// (conversations.info `include_num_members`).
pub fn channel(c: &ChannelRow, is_member: bool, num_members: Option<usize>) -> Value {
    let kind = c.id.chars().next().unwrap_or('C');
    let created = secs(c.created);
    let mut v = json!({
        "id": c.id,
        "name": c.name,
        "name_normalized": c.name,
        "is_channel": kind == 'C',
        "is_group": kind == 'G',
        "is_im": kind == 'D',
        "is_mpim": false,
        "is_private": c.is_private,
        "is_archived": c.is_archived,
        "is_general": c.is_general,
        "is_shared": false,
        "is_ext_shared": false,
        "is_org_shared": false,
        "is_pending_ext_shared": false,
        "unlinked": 0,
        "created": created,
        "creator": c.creator,
        "context_team_id": c.team_id,
        "is_member": is_member,
        "topic": {"value": c.topic, "creator": "", "last_set": 0},
        "purpose": {"value": c.purpose, "creator": "", "last_set": 0},
        "previous_names": [],
    });
    if let Some(n) = num_members {
        v["num_members"] = n.into();
    }
    v
}

pub use crate::ops::auth::bot_id;

/// A user object. The stored `profile` is kept as given; what Slack always
/// has is filled in where it is missing.
pub fn user(u: &UserRow) -> Value {
    let mut profile = match &u.profile {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    let display = profile
        .get("display_name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let defaults = [
        ("real_name", Value::from(u.real_name.clone())),
        ("real_name_normalized", Value::from(u.real_name.clone())),
        ("display_name", Value::from(display.clone())),
        ("display_name_normalized", Value::from(display)),
        ("team", Value::from(u.team_id.clone())),
    ];
    for (k, v) in defaults {
        profile.entry(k).or_insert(v);
    }
    if u.is_bot {
        profile
            .entry("bot_id")
            .or_insert_with(|| bot_id(&u.id).into());
        profile.entry("always_active").or_insert(false.into());
    }
    let tz = if u.tz.is_empty() { "UTC" } else { &u.tz };
    let mut v = json!({
        "id": u.id,
        "team_id": u.team_id,
        "name": u.name,
        "deleted": u.deleted,
        "real_name": u.real_name,
        "tz": tz,
        "is_admin": false,
        "is_owner": false,
        "is_primary_owner": false,
        "is_restricted": false,
        "is_ultra_restricted": false,
        "is_bot": u.is_bot,
        "is_app_user": false,
        "updated": secs(u.created),
        "profile": profile,
    });
    if tz == "UTC" {
        v["tz_label"] = "Coordinated Universal Time".into();
        v["tz_offset"] = 0.into();
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ReactionRow;

    fn row(ts: i64, text: &str) -> MessageRow {
        MessageRow {
            channel: "C1".into(),
            ts,
            user: "U1".into(),
            text: text.into(),
            blocks: None,
            thread_ts: None,
            subtype: None,
            client_msg_id: None,
            edited: None,
            reply_count: 0,
            reply_users: vec![],
            latest_reply: None,
            reactions: vec![],
        }
    }

    #[test]
    fn a_plain_message() {
        let v = message(&row(1_700_000_000_000_123, "hi"), "T1");
        assert_eq!(
            v,
            json!({"type": "message", "user": "U1", "text": "hi",
                   "ts": "1700000000.000123", "team": "T1"})
        );
    }

    #[test]
    fn a_parent_a_reply_and_the_extras() {
        let mut p = row(1_000_000, "parent");
        p.thread_ts = Some(1_000_000);
        p.reply_count = 3;
        p.reply_users = vec!["U2".into(), "U1".into()];
        p.latest_reply = Some(4_000_000);
        p.reactions = vec![ReactionRow {
            name: "tada".into(),
            users: vec!["U2".into()],
            count: 1,
        }];
        p.edited = Some((5_000_001, "U1".into()));
        p.blocks = Some(json!([{"type": "divider"}]));
        p.client_msg_id = Some("abc".into());
        let v = message(&p, "T1");
        assert_eq!(v["thread_ts"], "0000000001.000000");
        assert_eq!(v["reply_count"], 3);
        assert_eq!(v["reply_users_count"], 2);
        assert_eq!(v["reply_users"], json!(["U2", "U1"]));
        assert_eq!(v["latest_reply"], "0000000004.000000");
        assert_eq!(
            v["reactions"],
            json!([{"name": "tada", "users": ["U2"], "count": 1}])
        );
        assert_eq!(
            v["edited"],
            json!({"user": "U1", "ts": "0000000005.000001"})
        );
        assert_eq!(v["blocks"], json!([{"type": "divider"}]));
        assert_eq!(v["client_msg_id"], "abc");

        let mut r = row(2_000_000, "reply");
        r.thread_ts = Some(1_000_000);
        r.subtype = Some("thread_broadcast".into());
        let v = message(&r, "T1");
        assert_eq!(v["thread_ts"], "0000000001.000000");
        assert_eq!(v["subtype"], "thread_broadcast");
        assert!(v.get("reply_count").is_none());
        assert!(v.get("reactions").is_none());
        assert!(v.get("edited").is_none());
    }

    #[test]
    fn a_channel() {
        let c = ChannelRow {
            id: "C1".into(),
            team_id: "T1".into(),
            name: "general".into(),
            is_private: false,
            is_archived: false,
            is_general: true,
            created: 1_700_000_000_999_999,
            creator: "U1".into(),
            topic: "t".into(),
            purpose: "p".into(),
        };
        let v = channel(&c, true, None);
        for field in [
            "id",
            "name",
            "is_channel",
            "is_group",
            "is_im",
            "is_private",
            "is_archived",
            "is_general",
            "created",
            "creator",
            "is_member",
            "topic",
            "purpose",
        ] {
            assert!(v.get(field).is_some(), "{field}");
        }
        assert_eq!(v["created"], 1_700_000_000, "seconds");
        assert_eq!(v["is_channel"], true);
        assert_eq!(v["is_group"], false);
        assert_eq!(v["is_general"], true);
        assert_eq!(
            v["topic"],
            json!({"value": "t", "creator": "", "last_set": 0})
        );
        assert_eq!(v["purpose"]["value"], "p");
        assert!(v.get("num_members").is_none());
        let private = ChannelRow {
            id: "G1".into(),
            is_private: true,
            ..c
        };
        let v = channel(&private, false, Some(7));
        assert_eq!(v["is_private"], true);
        assert_eq!(v["is_group"], true);
        assert_eq!(v["is_channel"], false);
        assert_eq!(v["is_member"], false);
        assert_eq!(v["num_members"], 7);
    }

    #[test]
    fn a_user() {
        let mut u = UserRow {
            id: "U1".into(),
            team_id: "T1".into(),
            name: "alice".into(),
            real_name: "Alice A".into(),
            is_bot: false,
            deleted: false,
            tz: String::new(),
            created: 2_500_000,
            profile: json!({"display_name": "ali", "title": "boss"}),
        };
        let v = user(&u);
        assert_eq!(v["id"], "U1");
        assert_eq!(v["team_id"], "T1");
        assert_eq!(v["name"], "alice");
        assert_eq!(v["real_name"], "Alice A");
        assert_eq!(v["deleted"], false);
        assert_eq!(v["is_bot"], false);
        assert_eq!(v["tz"], "UTC");
        assert_eq!(v["tz_offset"], 0);
        assert_eq!(v["updated"], 2);
        assert_eq!(v["profile"]["real_name"], "Alice A");
        assert_eq!(v["profile"]["display_name"], "ali");
        assert_eq!(v["profile"]["display_name_normalized"], "ali");
        assert_eq!(v["profile"]["title"], "boss");
        assert!(v["profile"].get("bot_id").is_none());

        u.is_bot = true;
        u.tz = "Europe/Paris".into();
        u.profile = Value::Null;
        let v = user(&u);
        assert_eq!(v["is_bot"], true);
        assert_eq!(v["tz"], "Europe/Paris");
        assert!(v.get("tz_offset").is_none());
        assert_eq!(v["profile"]["bot_id"], "B1");
        assert_eq!(v["profile"]["display_name"], "");
    }

    #[test]
    fn bot_ids() {
        assert_eq!(bot_id("U0G9QF9C6"), "B0G9QF9C6");
        assert_eq!(bot_id(""), "B");
    }
}
