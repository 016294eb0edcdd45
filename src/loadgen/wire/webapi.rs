//! HTTP/1.1 keep-alive to Transponder's Slack Web API, as a Slack client
//! uses it: `chat.postMessage` (the mark in `text`; answered once the message
//! is stored) and `rtm.connect` (a fresh single-use websocket URL). Requests
//! are pipelined; HTTP/1.1 answers them in order.

use serde_json::Value;

use super::http::next_response;
use super::Unit;

/// One `chat.postMessage` as `token`'s user, `text` carrying the mark.
pub fn post_message(out: &mut Vec<u8>, host: &str, token: &str, channel: &str, text: &[u8]) {
    let mut body = Vec::with_capacity(text.len() + 48);
    body.extend_from_slice(b"{\"channel\":\"");
    body.extend_from_slice(channel.as_bytes());
    body.extend_from_slice(b"\",\"text\":\"");
    body.extend_from_slice(text);
    body.extend_from_slice(b"\"}");
    request(
        out,
        host,
        token,
        "chat.postMessage",
        "application/json",
        &body,
    );
}

/// One `rtm.connect` as `token`'s user; `batch` asks for the batch form of
/// presence_change on the socket it opens.
pub fn rtm_connect(out: &mut Vec<u8>, host: &str, token: &str, batch: bool) {
    let body: &[u8] = if batch {
        b"batch_presence_aware=1"
    } else {
        b""
    };
    request(
        out,
        host,
        token,
        "rtm.connect",
        "application/x-www-form-urlencoded",
        body,
    );
}

fn request(out: &mut Vec<u8>, host: &str, token: &str, method: &str, ty: &str, body: &[u8]) {
    out.extend_from_slice(
        format!(
            "POST /api/{method} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: {ty}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(body);
}

/// Parses whole answers at the start of `buf`: an `rtm.connect` answer is
/// a [`Unit::Ticket`], any other `"ok":true` an [`Unit::Ack`], anything
/// else (`"ok":false`, a 429) a [`Unit::Nack`].
pub fn parse(buf: &[u8], out: &mut Vec<Unit>) -> Result<usize, String> {
    let mut used = 0;
    while let Some(r) = next_response(&buf[used..])? {
        let body = &buf[used + r.body.start..used + r.body.end];
        // Keys come sorted, so `ok` is not first in every answer: parse.
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        out.push(match (r.code, v["ok"].as_bool(), v["url"].as_str()) {
            (200, Some(true), Some(url)) => Unit::Ticket(url.to_string()),
            (200, Some(true), None) => Unit::Ack,
            (code, _, _) => Unit::Nack(format!(
                "{code} {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )),
        });
        used += r.len;
    }
    Ok(used)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(code: u16, body: &str) -> String {
        format!(
            "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    #[test]
    fn answers_in_order() {
        let mut r = answer(
            200,
            r#"{"channel":"C1","message":{"text":"lg:1:2:3:4:"},"ok":true,"ts":"1.2"}"#,
        );
        r += &answer(
            200,
            r#"{"ok":true,"self":{},"url":"ws://127.0.0.1:1/websocket/t"}"#,
        );
        r += &answer(200, r#"{"error":"not_in_channel","ok":false}"#);
        r += &answer(429, r#"{"error":"ratelimited","ok":false}"#);
        r += "HTTP/1.1 200";
        let mut out = Vec::new();
        let used = parse(r.as_bytes(), &mut out).unwrap();
        assert_eq!(&r[used..], "HTTP/1.1 200");
        assert_eq!(out[0], Unit::Ack);
        assert_eq!(out[1], Unit::Ticket("ws://127.0.0.1:1/websocket/t".into()));
        assert!(matches!(&out[2], Unit::Nack(e) if e.contains("not_in_channel")));
        assert!(matches!(&out[3], Unit::Nack(e) if e.starts_with("429")));
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn requests_carry_token_and_length() {
        let mut out = Vec::new();
        post_message(&mut out, "h:1", "xoxp-1", "C1", b"lg:1:2:3:4:");
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("POST /api/chat.postMessage HTTP/1.1\r\n"));
        assert!(s.contains("Authorization: Bearer xoxp-1\r\n"));
        let body = s.split("\r\n\r\n").nth(1).unwrap();
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["text"], "lg:1:2:3:4:");
        assert!(s.contains(&format!("Content-Length: {}\r\n", body.len())));
        let mut out = Vec::new();
        rtm_connect(&mut out, "h:1", "xoxp-1", true);
        let s = String::from_utf8(out).unwrap();
        assert!(s.ends_with("Content-Length: 22\r\n\r\nbatch_presence_aware=1"));
    }
}
