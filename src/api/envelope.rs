//! A request's parameters, wherever they came from (docs/PROTOCOL.md "Web
//! API", "Envelope"):
//!
//! - the query string (GET, and POST too, as Slack does);
//! - a body: `application/x-www-form-urlencoded` (and `text/plain`, which
//!   Slack reads the same way), `multipart/form-data` (fields only; file
//!   parts are skipped), or `application/json` (an object);
//! - **an empty body is no parameters, whatever its Content-Type** (Python
//!   sends auth.test and rtm.connect as an empty body labelled JSON).
//!
//! Body parameters override query parameters of the same name. Typed
//! accessors read each the way the SDKs write it: booleans `1`/`0`/`true`/
//! `false` (or JSON booleans), lists comma-joined (or JSON arrays), objects
//! such as `blocks` JSON-encoded in a form field (or JSON values in a JSON
//! body). An empty string is the same as an absent parameter.
//!
//! Malformed envelopes get Slack's codes: `missing_post_type` (a body without
//! Content-Type), `invalid_post_type`, `invalid_charset`, `invalid_json`,
//! `json_not_object`, `invalid_form_data`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use hyper::header::CONTENT_TYPE;
use hyper::http::request::Parts;
use serde_json::Value;

use super::error::ApiError;
use crate::ts::Ts;

/// One parameter's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// From a query string or a form.
    Text(String),
    /// From a JSON body (never `null`: a null is an absent parameter).
    Json(Value),
}

/// Every parameter of a request, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params {
    map: BTreeMap<String, Param>,
}

/// How a form's bytes become text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Charset {
    Utf8,
    Latin1,
}

impl Params {
    /// The parameters of a request whose body has been read.
    pub fn from_request(parts: &Parts, body: &[u8]) -> Result<Params, ApiError> {
        let mut params = Params::default();
        if let Some(q) = parts.uri.query() {
            params.extend_text(decode_form(q.as_bytes(), Charset::Utf8)?);
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(params);
        }
        let Some(ct) = parts.headers.get(CONTENT_TYPE) else {
            return Err(ApiError::new("missing_post_type"));
        };
        let ct = ct
            .to_str()
            .map_err(|_| ApiError::new("invalid_post_type"))?;
        let (mime, attrs) = parse_content_type(ct);
        let charset = match attrs.iter().find(|(k, _)| k == "charset") {
            None => Charset::Utf8,
            Some((_, v)) => match v.to_ascii_lowercase().as_str() {
                "utf-8" | "utf8" | "us-ascii" | "ascii" => Charset::Utf8,
                "iso-8859-1" | "latin1" | "latin-1" => Charset::Latin1,
                _ => return Err(ApiError::new("invalid_charset")),
            },
        };
        match mime.as_str() {
            "application/x-www-form-urlencoded" | "text/plain" => {
                params.extend_text(decode_form(body, charset)?);
            }
            "multipart/form-data" => {
                let boundary = attrs
                    .iter()
                    .find(|(k, _)| k == "boundary")
                    .map(|(_, v)| v.as_str())
                    .filter(|b| !b.is_empty() && b.len() <= 200)
                    .ok_or_else(|| ApiError::new("invalid_form_data"))?;
                params.extend_text(decode_multipart(body, boundary, charset)?);
            }
            "application/json" => {
                let value: Value =
                    serde_json::from_slice(body).map_err(|_| ApiError::new("invalid_json"))?;
                let Value::Object(object) = value else {
                    return Err(ApiError::new("json_not_object"));
                };
                for (k, v) in object {
                    if v.is_null() {
                        params.map.remove(&k);
                    } else {
                        params.map.insert(k, Param::Json(v));
                    }
                }
            }
            _ => return Err(ApiError::new("invalid_post_type")),
        }
        Ok(params)
    }

    fn extend_text(&mut self, pairs: Vec<(String, String)>) {
        for (k, v) in pairs {
            self.map.insert(k, Param::Text(v));
        }
    }

    #[cfg(test)]
    pub fn insert(&mut self, key: &str, value: Param) {
        self.map.insert(key.to_string(), value);
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The parameter as text: strings as they are, JSON numbers and
    /// booleans written out. `None` when absent or empty, or when it is a
    /// JSON array or object.
    pub fn opt(&self, key: &str) -> Option<Cow<'_, str>> {
        let s = match self.map.get(key)? {
            Param::Text(s) => Cow::Borrowed(s.as_str()),
            Param::Json(Value::String(s)) => Cow::Borrowed(s.as_str()),
            Param::Json(Value::Number(n)) => Cow::Owned(n.to_string()),
            Param::Json(Value::Bool(b)) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Param::Json(_) => return None,
        };
        (!s.is_empty()).then_some(s)
    }

    /// [`Params::opt`], or `invalid_arguments` naming the field.
    pub fn req(&self, key: &str) -> Result<Cow<'_, str>, ApiError> {
        self.opt(key).ok_or_else(|| ApiError::missing(key))
    }

    /// A boolean: `1`/`0`, `true`/`false` (any case), a JSON boolean or
    /// 0/1. Absent or empty is false.
    pub fn flag(&self, key: &str) -> Result<bool, ApiError> {
        match self.map.get(key) {
            None => Ok(false),
            Some(Param::Json(Value::Bool(b))) => Ok(*b),
            Some(_) => match self.opt(key) {
                None => Ok(false),
                Some(s) => parse_bool(&s).ok_or_else(|| ApiError::invalid(key, "not a boolean")),
            },
        }
    }

    /// A list: comma-joined text (blanks around items trimmed, empty items
    /// dropped) or a JSON array of strings. `None` when absent or empty.
    pub fn list(&self, key: &str) -> Result<Option<Vec<String>>, ApiError> {
        let items: Vec<String> = match self.map.get(key) {
            None => return Ok(None),
            Some(Param::Json(Value::Array(a))) => a
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.trim().to_string()),
                    _ => Err(ApiError::invalid(key, "not a list of strings")),
                })
                .collect::<Result<_, _>>()?,
            Some(Param::Json(Value::Object(_))) => {
                return Err(ApiError::invalid(key, "not a list"))
            }
            Some(_) => match self.opt(key) {
                None => return Ok(None),
                Some(s) => s.split(',').map(|x| x.trim().to_string()).collect(),
            },
        };
        let items: Vec<String> = items.into_iter().filter(|s| !s.is_empty()).collect();
        Ok((!items.is_empty()).then_some(items))
    }

    /// A JSON value: JSON-encoded text in a form field (or a JSON string),
    /// or any JSON value in a JSON body. `Err(bad)` when text does not parse.
    pub fn json(&self, key: &str, bad: &'static str) -> Result<Option<Value>, ApiError> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Param::Json(Value::String(s))) | Some(Param::Text(s)) => {
                if s.trim().is_empty() {
                    return Ok(None);
                }
                serde_json::from_str(s)
                    .map(Some)
                    .map_err(|_| ApiError::new(bad))
            }
            Some(Param::Json(v)) => Ok(Some(v.clone())),
        }
    }

    /// A non-negative count (`limit`): decimal text or a JSON integer.
    pub fn count(&self, key: &str) -> Result<Option<usize>, ApiError> {
        match self.opt(key) {
            None => Ok(None),
            Some(s) => s
                .trim()
                .parse::<u64>()
                .map(|n| Some(usize::try_from(n).unwrap_or(usize::MAX)))
                .map_err(|_| ApiError::invalid(key, "not a non-negative integer")),
        }
    }

    /// A message timestamp (`"1700000000.000123"`); `Err(bad)` when it is
    /// not one.
    pub fn ts(&self, key: &str, bad: &'static str) -> Result<Option<Ts>, ApiError> {
        match self.opt(key) {
            None => Ok(None),
            Some(s) => Ts::parse(s.trim())
                .map(Some)
                .ok_or_else(|| ApiError::new(bad)),
        }
    }

    /// Every parameter but `token`, as a JSON object (api.test's `args`).
    pub fn echo(&self) -> serde_json::Map<String, Value> {
        self.map
            .iter()
            .filter(|(k, _)| k.as_str() != "token")
            .map(|(k, v)| {
                let v = match v {
                    Param::Text(s) => Value::String(s.clone()),
                    Param::Json(v) => v.clone(),
                };
                (k.clone(), v)
            })
            .collect()
    }
}

/// `1`/`0`/`true`/`false`, any case.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim() {
        "1" => Some(true),
        "0" => Some(false),
        t if t.eq_ignore_ascii_case("true") => Some(true),
        t if t.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// `text/plain; charset=UTF-8; boundary="x"` → (`text/plain`, [(charset,
/// UTF-8), (boundary, x)]): the type lowercased, attribute names
/// lowercased, values unquoted.
fn parse_content_type(ct: &str) -> (String, Vec<(String, String)>) {
    let mut parts = ct.split(';');
    let mime = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let attrs = parts
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            Some((k.trim().to_ascii_lowercase(), v.to_string()))
        })
        .collect();
    (mime, attrs)
}

fn bad_form() -> ApiError {
    ApiError::new("invalid_form_data")
}

/// Strict `application/x-www-form-urlencoded` decoding: a `%` must start a
/// two-digit hex escape, and the decoded bytes must be valid in `charset`.
/// A pair without `=` has an empty value; a pair with an empty name is
/// skipped.
fn decode_form(input: &[u8], charset: Charset) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = Vec::new();
    for pair in input.split(|&b| b == b'&') {
        let pair = pair.trim_ascii();
        if pair.is_empty() {
            continue;
        }
        let (key, value) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        let key = decode_component(key, charset)?;
        if key.is_empty() {
            continue;
        }
        out.push((key, decode_component(value, charset)?));
    }
    Ok(out)
}

fn decode_component(input: &[u8], charset: Charset) -> Result<String, ApiError> {
    let mut bytes = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => bytes.push(b' '),
            b'%' => {
                let hi = input.get(i + 1).and_then(|&b| (b as char).to_digit(16));
                let lo = input.get(i + 2).and_then(|&b| (b as char).to_digit(16));
                match (hi, lo) {
                    (Some(hi), Some(lo)) => bytes.push((hi * 16 + lo) as u8),
                    _ => return Err(bad_form()),
                }
                i += 2;
            }
            b => bytes.push(b),
        }
        i += 1;
    }
    text(bytes, charset)
}

fn text(bytes: Vec<u8>, charset: Charset) -> Result<String, ApiError> {
    match charset {
        Charset::Utf8 => String::from_utf8(bytes).map_err(|_| bad_form()),
        Charset::Latin1 => Ok(bytes.into_iter().map(char::from).collect()),
    }
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > haystack.len() {
        return None;
    }
    let first = needle[0];
    let mut i = from;
    while i + needle.len() <= haystack.len() {
        match haystack[i..].iter().position(|&b| b == first) {
            None => return None,
            Some(p) => i += p,
        }
        if haystack[i..].starts_with(needle) {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// `multipart/form-data` (RFC 7578): the text fields, in order. Parts with
/// a `filename` (files) are skipped; anything structurally wrong (no
/// opening or closing delimiter, a part without headers or without a
/// `name`) is `invalid_form_data`.
fn decode_multipart(
    body: &[u8],
    boundary: &str,
    charset: Charset,
) -> Result<Vec<(String, String)>, ApiError> {
    let delim = format!("--{boundary}");
    let next_delim = format!("\r\n--{boundary}");
    let mut pos = find(body, delim.as_bytes(), 0).ok_or_else(bad_form)? + delim.len();
    let mut out = Vec::new();
    loop {
        let rest = &body[pos..];
        if rest.starts_with(b"--") {
            return Ok(out); // the closing delimiter
        }
        let line_end = if rest.starts_with(b"\r\n") {
            2
        } else {
            return Err(bad_form());
        };
        let head_start = pos + line_end;
        let head_end = find(body, b"\r\n\r\n", head_start).ok_or_else(bad_form)?;
        let head = std::str::from_utf8(&body[head_start..head_end]).map_err(|_| bad_form())?;
        let data_start = head_end + 4;
        let data_end = find(body, next_delim.as_bytes(), data_start).ok_or_else(bad_form)?;
        let mut name = None;
        let mut file = false;
        for line in head.split("\r\n") {
            let Some((h, v)) = line.split_once(':') else {
                return Err(bad_form());
            };
            if !h.trim().eq_ignore_ascii_case("content-disposition") {
                continue;
            }
            for attr in v.split(';').skip(1) {
                let Some((k, val)) = attr.split_once('=') else {
                    continue;
                };
                let val = val.trim();
                let val = val
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(val);
                match k.trim().to_ascii_lowercase().as_str() {
                    "name" => name = Some(val.to_string()),
                    "filename" => file = true,
                    _ => {}
                }
            }
        }
        let name = name.filter(|n| !n.is_empty()).ok_or_else(bad_form)?;
        if !file {
            out.push((name, text(body[data_start..data_end].to_vec(), charset)?));
        }
        pos = data_end + next_delim.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::Request;
    use serde_json::json;

    fn parts(uri: &str, ct: Option<&str>) -> Parts {
        let mut b = Request::builder().method("POST").uri(uri);
        if let Some(ct) = ct {
            b = b.header(CONTENT_TYPE, ct);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn parse(uri: &str, ct: Option<&str>, body: &str) -> Result<Params, ApiError> {
        Params::from_request(&parts(uri, ct), body.as_bytes())
    }

    fn code(r: Result<Params, ApiError>) -> String {
        r.unwrap_err().code().to_string()
    }

    const FORM: Option<&str> = Some("application/x-www-form-urlencoded");
    const JSON: Option<&str> = Some("application/json; charset=utf-8");

    #[test]
    fn an_empty_body_is_no_parameters_whatever_its_type() {
        for ct in [
            JSON,
            FORM,
            None,
            Some("application/octet-stream"),
            Some("multipart/form-data"),
        ] {
            assert!(
                parse("/api/auth.test", ct, "").unwrap().is_empty(),
                "{ct:?}"
            );
            assert!(parse("/api/auth.test", ct, " \r\n").unwrap().is_empty());
        }
        // The query string still counts.
        let p = parse("/api/auth.test?token=t", JSON, "").unwrap();
        assert_eq!(p.opt("token").as_deref(), Some("t"));
    }

    #[test]
    fn query_form_and_json_merge_body_last() {
        let p = parse(
            "/api/x?channel=C1&text=q",
            FORM,
            "text=hello+world&a=%26&bare",
        )
        .unwrap();
        assert_eq!(p.opt("channel").as_deref(), Some("C1"));
        assert_eq!(p.opt("text").as_deref(), Some("hello world"));
        assert_eq!(p.opt("a").as_deref(), Some("&"));
        assert_eq!(p.opt("bare"), None, "empty is absent");
        assert!(p.req("bare").is_err());

        let p = parse(
            "/api/x?text=q&gone=1",
            JSON,
            r#"{"text":"é","n":5,"b":true,"gone":null,"o":{"k":1}}"#,
        )
        .unwrap();
        assert_eq!(p.opt("text").as_deref(), Some("é"));
        assert_eq!(p.opt("n").as_deref(), Some("5"));
        assert_eq!(p.opt("b").as_deref(), Some("true"));
        assert_eq!(p.opt("gone"), None, "null removes");
        assert_eq!(p.opt("o"), None, "objects are not text");
        assert_eq!(p.count("n").unwrap(), Some(5));
    }

    #[test]
    fn envelope_errors() {
        assert_eq!(code(parse("/", None, "a=1")), "missing_post_type");
        assert_eq!(
            code(parse("/", Some("application/xml"), "<a/>")),
            "invalid_post_type"
        );
        assert_eq!(
            code(parse("/", Some("text/plain; charset=koi8-r"), "a=1")),
            "invalid_charset"
        );
        assert_eq!(code(parse("/", JSON, "{")), "invalid_json");
        assert_eq!(code(parse("/", JSON, "[1,2]")), "json_not_object");
        assert_eq!(code(parse("/", JSON, "\"s\"")), "json_not_object");
        assert_eq!(code(parse("/", FORM, "a=%zz")), "invalid_form_data");
        assert_eq!(code(parse("/", FORM, "a=%4")), "invalid_form_data");
        assert_eq!(code(parse("/", FORM, "a=%FF")), "invalid_form_data");
        assert_eq!(code(parse("/?a=%", None, "")), "invalid_form_data");
    }

    #[test]
    fn text_plain_and_latin1_forms() {
        let p = parse("/", Some("text/plain"), "a=1").unwrap();
        assert_eq!(p.opt("a").as_deref(), Some("1"));
        let p = parse(
            "/",
            Some("application/x-www-form-urlencoded; charset=ISO-8859-1"),
            "t=%E9t%E9",
        )
        .unwrap();
        assert_eq!(p.opt("t").as_deref(), Some("été"));
    }

    #[test]
    fn booleans() {
        let p = parse("/", FORM, "a=1&b=0&c=true&d=FALSE&e=yes&f=True&g=").unwrap();
        assert!(p.flag("a").unwrap());
        assert!(!p.flag("b").unwrap());
        assert!(p.flag("c").unwrap());
        assert!(!p.flag("d").unwrap());
        assert_eq!(p.flag("e").unwrap_err().code(), "invalid_arguments");
        assert!(p.flag("f").unwrap());
        assert!(!p.flag("g").unwrap(), "empty is absent");
        assert!(!p.flag("absent").unwrap());
        let p = parse("/", JSON, r#"{"a":true,"b":false,"c":1,"d":"0","e":2}"#).unwrap();
        assert!(p.flag("a").unwrap());
        assert!(!p.flag("b").unwrap());
        assert!(p.flag("c").unwrap());
        assert!(!p.flag("d").unwrap());
        assert!(p.flag("e").is_err());
    }

    #[test]
    fn lists() {
        let p = parse("/", FORM, "users=U1%2C+U2,,U3&one=U9&none=,").unwrap();
        assert_eq!(p.list("users").unwrap().unwrap(), ["U1", "U2", "U3"]);
        assert_eq!(p.list("one").unwrap().unwrap(), ["U9"]);
        assert_eq!(p.list("none").unwrap(), None);
        assert_eq!(p.list("absent").unwrap(), None);
        let p = parse("/", JSON, r#"{"users":["U1","U2"],"s":"U1,U2","bad":[1]}"#).unwrap();
        assert_eq!(p.list("users").unwrap().unwrap(), ["U1", "U2"]);
        assert_eq!(p.list("s").unwrap().unwrap(), ["U1", "U2"]);
        assert!(p.list("bad").is_err());
    }

    #[test]
    fn blocks_in_a_form_field_or_a_json_body() {
        let blocks = json!([{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]);
        let form = format!(
            "blocks={}",
            blocks
                .to_string()
                .bytes()
                .map(|b| format!("%{b:02X}"))
                .collect::<String>()
        );
        let p = parse("/", FORM, &form).unwrap();
        assert_eq!(p.json("blocks", "bad").unwrap(), Some(blocks.clone()));
        let p = parse("/", JSON, &json!({ "blocks": blocks }).to_string()).unwrap();
        assert_eq!(p.json("blocks", "bad").unwrap(), Some(blocks.clone()));
        // A JSON body may also carry them JSON-encoded in a string.
        let p = parse(
            "/",
            JSON,
            &json!({ "blocks": blocks.to_string() }).to_string(),
        )
        .unwrap();
        assert_eq!(p.json("blocks", "bad").unwrap(), Some(blocks));
        let p = parse("/", FORM, "blocks=%5B&empty=").unwrap();
        assert_eq!(p.json("blocks", "bad").unwrap_err().code(), "bad");
        assert_eq!(p.json("empty", "bad").unwrap(), None);
    }

    #[test]
    fn counts() {
        let p = parse("/", FORM, "a=10&b=-1&c=x&d=99999999999999999999").unwrap();
        assert_eq!(p.count("a").unwrap(), Some(10));
        assert!(p.count("b").is_err());
        assert!(p.count("c").is_err());
        assert!(p.count("d").is_err());
        assert_eq!(p.count("e").unwrap(), None);
    }

    #[test]
    fn multipart_fields() {
        let body = "--XyZ\r\n\
            Content-Disposition: form-data; name=\"channel\"\r\n\r\n\
            C1\r\n\
            --XyZ\r\n\
            Content-Disposition: form-data; name=\"text\"\r\n\
            Content-Type: text/plain\r\n\r\n\
            two\r\nlines\r\n\
            --XyZ\r\n\
            Content-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\n\
            ignored\r\n\
            --XyZ--\r\n";
        let p = parse("/", Some("multipart/form-data; boundary=\"XyZ\""), body).unwrap();
        assert_eq!(p.opt("channel").as_deref(), Some("C1"));
        assert_eq!(p.opt("text").as_deref(), Some("two\r\nlines"));
        assert_eq!(p.opt("file"), None);
        for bad in [
            "no delimiter at all",
            "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nunterminated",
            "--XyZ\r\nContent-Disposition: form-data\r\n\r\nx\r\n--XyZ--",
            "--XyZ garbage",
        ] {
            assert_eq!(
                code(parse("/", Some("multipart/form-data; boundary=XyZ"), bad)),
                "invalid_form_data",
                "{bad:?}"
            );
        }
        assert_eq!(
            code(parse("/", Some("multipart/form-data"), body)),
            "invalid_form_data"
        );
    }

    #[test]
    fn timestamps() {
        let p = parse("/", FORM, "a=1700000000.000123&b=x&c=1.5").unwrap();
        assert_eq!(p.ts("a", "bad").unwrap(), Some(Ts(1_700_000_000_000_123)));
        assert_eq!(p.ts("b", "bad").unwrap_err().code(), "bad");
        assert_eq!(p.ts("c", "bad").unwrap(), Some(Ts(1_500_000)));
        assert_eq!(p.ts("d", "bad").unwrap(), None);
        // JSON numbers are written out (Python's float-looking ts).
        let p = parse("/", JSON, r#"{"a":1700000000.5}"#).unwrap();
        assert_eq!(p.ts("a", "bad").unwrap(), Some(Ts(1_700_000_000_500_000)));
    }

    #[test]
    fn echo_hides_the_token() {
        let p = parse("/?token=secret&a=1", JSON, r#"{"b":[1]}"#).unwrap();
        assert_eq!(Value::Object(p.echo()), json!({"a": "1", "b": [1]}));
    }
}
