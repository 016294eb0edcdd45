//! Transponder's RTM frames as the load generator sees them: `hello`, our
//! events carrying a mark, `user_typing`, replies to client messages.

use serde_json::Value;

use super::Unit;
use crate::loadgen::mark;

/// One text message from the server.
pub fn parse_message(msg: &[u8], out: &mut Vec<Unit>) {
    // A reply to our own `message` repeats its text, mark included: an
    // acknowledgement, not a delivery.
    if msg.starts_with(b"{\"ok\":true") {
        out.push(Unit::Ack);
        return;
    }
    if msg.starts_with(b"{\"ok\":false") {
        out.push(Unit::Nack(String::from_utf8_lossy(msg).into_owned()));
        return;
    }
    if let Some(m) = mark::find(msg) {
        out.push(Unit::Delivery(m));
        return;
    }
    let Ok(v) = serde_json::from_slice::<Value>(msg) else {
        out.push(Unit::Closed(format!(
            "frame is not JSON: {}",
            String::from_utf8_lossy(&msg[..msg.len().min(200)])
        )));
        return;
    };
    match v["type"].as_str() {
        Some("hello") => out.push(Unit::Ready),
        Some("user_typing") => {
            let user = v["user"]
                .as_str()
                .and_then(crate::ids::Id::parse)
                .map_or(0, |id| id.raw());
            out.push(Unit::Typing { user });
        }
        Some("presence_change") => {
            let users = v["users"].as_array().map_or(1, |u| u.len() as u64);
            out.push(Unit::Presence { users });
        }
        Some("goodbye") => out.push(Unit::Closed("goodbye".into())),
        // A refused publish-stream frame (no id to reply to).
        Some("error") => out.push(Unit::Nack(String::from_utf8_lossy(msg).into_owned())),
        // member_joined_channel, reconnect_url: not measured.
        _ => {}
    }
}

/// An RTM `message` from the client, `text` carrying the mark.
pub fn message(out: &mut Vec<u8>, id: u64, channel: &str, text: &[u8]) {
    use std::io::Write;
    write!(
        out,
        "{{\"id\":{id},\"type\":\"message\",\"channel\":\"{channel}\",\"text\":\""
    )
    .expect("write to Vec");
    out.extend_from_slice(text);
    out.extend_from_slice(b"\"}");
}

/// An RTM `typing` from the client.
pub fn typing(out: &mut Vec<u8>, id: u64, channel: &str) {
    use std::io::Write;
    write!(
        out,
        "{{\"id\":{id},\"type\":\"typing\",\"channel\":\"{channel}\"}}"
    )
    .expect("write to Vec");
}

/// An RTM `presence_sub`: watch exactly these users.
pub fn presence_sub(out: &mut Vec<u8>, ids: &[String]) {
    serde_json::to_writer(
        out,
        &serde_json::json!({ "type": "presence_sub", "ids": ids }),
    )
    .expect("write to Vec");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::mark::Mark;

    #[test]
    fn sorts_frames() {
        let mut out = Vec::new();
        parse_message(br#"{"type":"hello","start":true}"#, &mut out);
        parse_message(
            br#"{"channel":"C1","text":"lg:1:2:3:4:xx","ts":"1.2","type":"message"}"#,
            &mut out,
        );
        parse_message(
            br#"{"ok":true,"reply_to":1,"text":"lg:1:2:3:4:"}"#,
            &mut out,
        );
        parse_message(br#"{"ok":false,"reply_to":2,"error":{"code":2}}"#, &mut out);
        parse_message(
            br#"{"type":"user_typing","channel":"C1","user":"U0000000001"}"#,
            &mut out,
        );
        parse_message(br#"{"type":"member_joined_channel"}"#, &mut out);
        parse_message(
            br#"{"type":"presence_change","user":"U1","presence":"away"}"#,
            &mut out,
        );
        parse_message(
            br#"{"type":"presence_change","users":["U1","U2"],"presence":"active"}"#,
            &mut out,
        );
        assert_eq!(out[0], Unit::Ready);
        assert_eq!(
            out[1],
            Unit::Delivery(Mark {
                publisher: 1,
                channel: 2,
                seq: 3,
                sent_ns: 4
            })
        );
        assert_eq!(out[2], Unit::Ack);
        assert!(matches!(out[3], Unit::Nack(_)));
        let user = crate::ids::Id::parse("U0000000001").unwrap().raw();
        assert_eq!(out[4], Unit::Typing { user });
        assert_eq!(out[5], Unit::Presence { users: 1 });
        assert_eq!(out[6], Unit::Presence { users: 2 });
        assert_eq!(out.len(), 7);
    }
}
