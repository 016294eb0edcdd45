//! Helpers every HTTP handler uses: bounded body reading, JSON and text
//! answers in the `{"ok":…}` envelope, bearer tokens, query strings.

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONNECTION, CONTENT_TYPE};
use hyper::http::request::Parts;
use hyper::{Request, Response, StatusCode, Uri};
use serde::Serialize;

pub const JSON_UTF8: &str = "application/json; charset=utf-8";

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body is (or declares itself) longer than the limit. Nothing past
    /// the limit was buffered.
    #[error("request body exceeds {limit} bytes")]
    TooLarge { limit: usize },
    /// The connection failed or the client sent a malformed body.
    #[error("reading request body: {0}")]
    Io(#[from] hyper::Error),
}

impl BodyError {
    /// The status to answer with: 413 for an oversized body, 400 otherwise
    /// (a broken body is the client's doing, and the connection is usually
    /// gone anyway).
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Io(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// A ready answer: `{"ok":false,"error":"request_too_large"}` (413) or
    /// `{"ok":false,"error":"invalid_body"}` (400).
    pub fn response(&self) -> Response<Full<Bytes>> {
        let code = match self {
            BodyError::TooLarge { .. } => "request_too_large",
            BodyError::Io(_) => "invalid_body",
        };
        error(self.status(), code)
    }
}

/// Reads the whole body, refusing more than `max` bytes.
///
/// A declared `Content-Length` over the limit is refused before any of the
/// body is read; a chunked body is refused as soon as the running total
/// passes the limit. A body that arrives as one chunk is returned without
/// copying.
pub async fn read_body(req: Request<Incoming>, max: usize) -> Result<(Parts, Bytes), BodyError> {
    let (parts, mut body) = req.into_parts();
    let too_large = BodyError::TooLarge { limit: max };
    // hyper sets the lower bound from Content-Length.
    if body.size_hint().lower() > max as u64 {
        return Err(too_large);
    }
    let mut first: Option<Bytes> = None;
    let mut rest = BytesMut::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue; // trailers carry nothing we use
        };
        total = total.saturating_add(data.len());
        if total > max {
            return Err(too_large);
        }
        if data.is_empty() {
            continue;
        }
        match first.take() {
            None if rest.is_empty() => first = Some(data),
            prev => {
                if let Some(prev) = prev {
                    rest.reserve(total);
                    rest.extend_from_slice(&prev);
                }
                rest.extend_from_slice(&data);
            }
        }
    }
    Ok((parts, first.unwrap_or_else(|| rest.freeze())))
}

/// `value` as a JSON answer with the given status.
///
/// Serialisation only fails for values JSON cannot express (maps with
/// non-string keys): a bug, answered 500 `internal_error` and logged.
pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec(value) {
        Ok(body) => with_type(
            status,
            Bytes::from(body),
            HeaderValue::from_static(JSON_UTF8),
        ),
        Err(err) => {
            tracing::error!(%err, "response does not serialise to JSON");
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
        }
    }
}

/// 200 with `value` plus `"ok":true` (overriding any `ok` already there).
///
/// `value` must be a JSON object; anything else is a handler bug, answered
/// 500 `internal_error` and logged, rather than silently reshaped.
pub fn ok_json(mut value: serde_json::Value) -> Response<Full<Bytes>> {
    match value.as_object_mut() {
        Some(map) => {
            map.insert("ok".to_owned(), serde_json::Value::Bool(true));
            json(StatusCode::OK, &value)
        }
        None => {
            tracing::error!(%value, "ok_json given a non-object");
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
        }
    }
}

/// `{"ok":false,"error":code}` with the given status. (The Slack Web API
/// answers application errors with 200; the admin API with a 4xx. The caller
/// chooses.)
pub fn error(status: StatusCode, code: &str) -> Response<Full<Bytes>> {
    #[derive(Serialize)]
    struct Envelope<'a> {
        ok: bool,
        error: &'a str,
    }
    let body = serde_json::to_vec(&Envelope {
        ok: false,
        error: code,
    })
    .expect("a bool and a str always serialise");
    with_type(
        status,
        Bytes::from(body),
        HeaderValue::from_static(JSON_UTF8),
    )
}

/// A non-JSON answer, e.g. Prometheus text
/// (`text/plain; version=0.0.4; charset=utf-8`).
pub fn text(status: StatusCode, body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    with_type(
        status,
        Bytes::from(body),
        HeaderValue::from_static(content_type),
    )
}

fn with_type(status: StatusCode, body: Bytes, content_type: HeaderValue) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, content_type);
    resp
}

/// `resp` with `Connection: close`. For answers given before the request's
/// body was read (a refused token, an oversized body): hyper then closes
/// the connection after the answer instead of keeping it for a body nobody
/// will read (hyper 1.x drains at most what one read returns, then closes).
pub fn closing(mut resp: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    resp.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// [`closing`] if `body` has bytes still to come, else `resp` as it is: a
/// request without a body leaves nothing unread and keeps its connection.
pub fn closing_if_unread(resp: Response<Full<Bytes>>, body: &Incoming) -> Response<Full<Bytes>> {
    if body.is_end_stream() {
        resp
    } else {
        closing(resp)
    }
}

/// The token of an `Authorization: Bearer <token>` header. The scheme is
/// matched case-insensitively (RFC 9110 §11.1); surrounding blanks are
/// ignored; an empty token is no token.
pub fn bearer_token(parts: &Parts) -> Option<&str> {
    bearer_token_in(&parts.headers)
}

/// [`bearer_token`] from the headers alone, before the body is read.
pub fn bearer_token_in(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

/// The decoded `key=value` pairs of the URI's query string, in order,
/// duplicates kept. See [`form_pairs`].
pub fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    uri.query()
        .map(|q| form_pairs(q.as_bytes()))
        .unwrap_or_default()
}

/// Decodes `application/x-www-form-urlencoded` data (a query string or a
/// form body): pairs split on `&`, key and value on the first `=` (a missing
/// `=` gives an empty value), `+` is a space, `%XX` a byte. Malformed escapes
/// are kept literally and invalid UTF-8 becomes U+FFFD, as browsers and the
/// WHATWG URL standard do, so odd input degrades instead of failing.
pub fn form_pairs(input: &[u8]) -> Vec<(String, String)> {
    input
        .split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &[][..]),
            };
            (decode_component(key), decode_component(value))
        })
        .collect()
}

/// Percent- and plus-decodes one form component.
pub fn decode_component(input: &[u8]) -> String {
    // Fast path: nothing to decode, no copy beyond the String itself.
    if !input.iter().any(|&b| b == b'%' || b == b'+') {
        return String::from_utf8_lossy(input).into_owned();
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' => match (hex(input.get(i + 1)), hex(input.get(i + 2))) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

fn hex(b: Option<&u8>) -> Option<u8> {
    match *b? {
        b @ b'0'..=b'9' => Some(b - b'0'),
        b @ b'a'..=b'f' => Some(b - b'a' + 10),
        b @ b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &str) -> Vec<(String, String)> {
        query_pairs(&q.parse::<Uri>().unwrap())
    }

    fn kv(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn query_pairs_decodes() {
        assert_eq!(pairs("/v1/presence"), kv(&[]));
        assert_eq!(pairs("/x?"), kv(&[]));
        assert_eq!(
            pairs("/x?users=U1%2CU2&text=hello+world&empty=&bare&&a=b=c"),
            kv(&[
                ("users", "U1,U2"),
                ("text", "hello world"),
                ("empty", ""),
                ("bare", ""),
                ("a", "b=c"),
            ])
        );
        // Escaped plus stays a plus; escaped UTF-8 decodes; upper/lower hex.
        assert_eq!(
            pairs("/x?t=1%2B1&e=%C3%a9t%C3%A9&k%3D=v"),
            kv(&[("t", "1+1"), ("e", "été"), ("k=", "v")])
        );
        // Duplicates kept in order.
        assert_eq!(pairs("/x?a=1&a=2"), kv(&[("a", "1"), ("a", "2")]));
    }

    #[test]
    fn malformed_escapes_degrade() {
        assert_eq!(decode_component(b"100%"), "100%");
        assert_eq!(decode_component(b"%4"), "%4");
        assert_eq!(decode_component(b"%zz%41"), "%zzA");
        assert_eq!(decode_component(b"%FF"), "\u{FFFD}");
        assert_eq!(decode_component(b"plain"), "plain");
        assert_eq!(
            form_pairs(b"channel=C1&text=a%26b"),
            kv(&[("channel", "C1"), ("text", "a&b")])
        );
    }

    fn parts_with_auth(value: Option<&str>) -> Parts {
        let mut b = Request::builder().uri("/");
        if let Some(v) = value {
            b = b.header(AUTHORIZATION, v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn bearer_token_parses() {
        let tok = |v| bearer_token(&parts_with_auth(v)).map(str::to_owned);
        assert_eq!(tok(Some("Bearer xoxb-1")), Some("xoxb-1".into()));
        assert_eq!(tok(Some("bearer xoxp-2")), Some("xoxp-2".into()));
        assert_eq!(tok(Some("BEARER   abc  ")), Some("abc".into()));
        assert_eq!(tok(Some("Bearer ")), None);
        assert_eq!(tok(Some("Bearer")), None);
        assert_eq!(tok(Some("Basic dXNlcjpwYXNz")), None);
        assert_eq!(tok(Some("Bearerxyz")), None);
        assert_eq!(tok(None), None);
    }

    fn body_string(resp: Response<Full<Bytes>>) -> String {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};
        let mut collect = std::pin::pin!(resp.into_body().collect());
        let mut cx = Context::from_waker(Waker::noop());
        match collect.as_mut().poll(&mut cx) {
            Poll::Ready(Ok(c)) => String::from_utf8(c.to_bytes().to_vec()).unwrap(),
            _ => unreachable!("Full is ready at once"),
        }
    }

    #[test]
    fn envelopes() {
        let r = ok_json(serde_json::json!({"ts": "1.000001", "ok": false}));
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[CONTENT_TYPE], JSON_UTF8);
        let v: serde_json::Value = serde_json::from_str(&body_string(r)).unwrap();
        assert_eq!(v, serde_json::json!({"ok": true, "ts": "1.000001"}));

        let r = error(StatusCode::NOT_FOUND, "channel_not_found");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            body_string(r),
            r#"{"ok":false,"error":"channel_not_found"}"#
        );

        let r = ok_json(serde_json::json!([1]));
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);

        let r = text(StatusCode::OK, "up 1\n".into(), "text/plain; version=0.0.4");
        assert_eq!(r.headers()[CONTENT_TYPE], "text/plain; version=0.0.4");
        assert_eq!(body_string(r), "up 1\n");
    }
}
