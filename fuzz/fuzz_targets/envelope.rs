//! The Web API envelope (`api::envelope::Params::from_request`): the query
//! string and a form, multipart or JSON body, and the typed accessors the
//! methods read parameters with.
//!
//! Input: a byte with the query's length, a byte with the Content-Type's
//! length (0: none), the query, the Content-Type, then the body.
//!
//! Invariants, beyond "never panics":
//! - parsing is deterministic, and a blank body is the same as no body;
//! - an error is one of the envelope's documented codes;
//! - every parameter reads without a panic through every accessor, text
//!   is never empty, list items are trimmed and never empty.

#![no_main]

use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::http::request::Parts;
use hyper::{Request, Uri};
use libfuzzer_sys::fuzz_target;
use transponder::api::envelope::Params;

const ERROR_CODES: [&str; 6] = [
    "missing_post_type",
    "invalid_post_type",
    "invalid_charset",
    "invalid_json",
    "json_not_object",
    "invalid_form_data",
];

/// Names the methods read, beside the ones the input itself has.
const KNOWN_NAMES: [&str; 8] = [
    "channel",
    "text",
    "blocks",
    "users",
    "limit",
    "ts",
    "inclusive",
    "token",
];

fuzz_target!(|input: &[u8]| {
    let [query_len, ct_len, rest @ ..] = input else {
        return;
    };
    let (query_len, ct_len) = (usize::from(*query_len), usize::from(*ct_len));
    if rest.len() < query_len + ct_len {
        return;
    }
    let (query, rest) = rest.split_at(query_len);
    let (content_type, body) = rest.split_at(ct_len);
    let parts = parts(query, content_type);

    let params = Params::from_request(&parts, body);
    assert_eq!(
        Params::from_request(&parts, body),
        params,
        "not deterministic"
    );
    if body.iter().all(u8::is_ascii_whitespace) {
        assert_eq!(Params::from_request(&parts, b""), params, "blank body");
    }
    let params = match params {
        Ok(p) => p,
        Err(e) => {
            assert!(ERROR_CODES.contains(&e.code()), "{e:?}");
            return;
        }
    };
    let names: Vec<String> = params
        .echo()
        .keys()
        .cloned()
        .chain(KNOWN_NAMES.iter().map(|s| s.to_string()))
        .collect();
    for name in &names {
        read_every_way(&params, name);
    }
});

/// A request with this query (if it makes a valid URI) and Content-Type (if
/// it makes a valid header value).
fn parts(query: &[u8], content_type: &[u8]) -> Parts {
    let mut uri = b"/api/api.test?".to_vec();
    uri.extend_from_slice(query);
    let uri = Uri::try_from(uri).unwrap_or_else(|_| Uri::from_static("/api/api.test"));
    let mut parts = Request::post(uri).body(()).unwrap().into_parts().0;
    if !content_type.is_empty() {
        if let Ok(v) = HeaderValue::from_bytes(content_type) {
            parts.headers.insert(CONTENT_TYPE, v);
        }
    }
    parts
}

fn read_every_way(params: &Params, name: &str) {
    if let Some(text) = params.opt(name) {
        assert!(!text.is_empty(), "{name}: empty text is absent");
        assert_eq!(params.req(name).ok(), Some(text));
    } else {
        assert!(params.req(name).is_err());
    }
    let _ = params.flag(name);
    if let Ok(Some(items)) = params.list(name) {
        assert!(!items.is_empty());
        for item in items {
            assert!(!item.is_empty() && item.trim() == item, "{name}: {item:?}");
        }
    }
    let _ = params.json(name, "invalid_blocks");
    let _ = params.count(name);
    let _ = params.ts(name, "invalid_ts");
}
