//! HTTP/1.1 keep-alive to Transponder's admin `POST /v1/publish`, the way a
//! backend publishes events. Requests are pipelined; each response is an
//! acknowledgement (`{"ok":true…}`) or a refusal.

use super::Unit;

/// One publish request. `event_text` is the mark, placed in the event's
/// `text`; `transient` events skip the store.
pub fn publish(
    out: &mut Vec<u8>,
    host: &str,
    token: &str,
    channel: &str,
    event_text: &[u8],
    transient: bool,
) {
    let mut body = Vec::with_capacity(event_text.len() + 96);
    body.extend_from_slice(b"{\"channel\":\"");
    body.extend_from_slice(channel.as_bytes());
    body.extend_from_slice(b"\",\"event\":{\"type\":\"message\",\"text\":\"");
    body.extend_from_slice(event_text);
    body.extend_from_slice(b"\"},\"transient\":");
    body.extend_from_slice(if transient { b"true}" } else { b"false}" });
    out.extend_from_slice(
        format!(
            "POST /v1/publish HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(&body);
}

/// One whole response found at the start of a buffer.
pub struct Response {
    pub code: u16,
    /// The body's place in the buffer.
    pub body: std::ops::Range<usize>,
    /// Bytes the whole response takes.
    pub len: usize,
}

/// The response at the start of `buf` (Content-Length bodies only):
/// `Ok(None)` when more bytes are needed.
pub fn next_response(buf: &[u8]) -> Result<Option<Response>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 24];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > 64 * 1024 => {
            return Err("oversize HTTP response head".into())
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("bad HTTP response: {e}")),
    };
    let len = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        })
        .ok_or("HTTP response without Content-Length")?;
    if buf.len() < head + len {
        return Ok(None);
    }
    Ok(Some(Response {
        code: resp.code.unwrap_or(0),
        body: head..head + len,
        len: head + len,
    }))
}

/// Parses whole responses at the start of `buf`.
pub fn parse(buf: &[u8], out: &mut Vec<Unit>) -> Result<usize, String> {
    let mut used = 0;
    while let Some(r) = next_response(&buf[used..])? {
        let body = &buf[used + r.body.start..used + r.body.end];
        if r.code == 200 && body.starts_with(b"{\"ok\":true") {
            out.push(Unit::Ack);
        } else {
            out.push(Unit::Nack(format!(
                "{} {}",
                r.code,
                String::from_utf8_lossy(body)
            )));
        }
        used += r.len;
    }
    Ok(used)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelined_responses() {
        let r = b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{\"ok\":true}HTTP/1.1 404 Not Found\r\ncontent-length: 40\r\n\r\n{\"ok\":false,\"error\":\"channel_not_found\"}HTTP/1.1 200";
        let mut out = Vec::new();
        let used = parse(r, &mut out).unwrap();
        assert_eq!(&r[used..], b"HTTP/1.1 200");
        assert_eq!(out[0], Unit::Ack);
        assert!(matches!(&out[1], Unit::Nack(e) if e.contains("channel_not_found")));
    }

    #[test]
    fn request_is_valid_json() {
        let mut out = Vec::new();
        publish(&mut out, "h", "t", "C1", b"lg:1:2:3:4:", true);
        let s = String::from_utf8(out).unwrap();
        let body = s.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["event"]["text"], "lg:1:2:3:4:");
        assert_eq!(v["transient"], true);
        assert!(s.contains(&format!("Content-Length: {}\r\n", body.len())));
    }
}
