//! A Web API failure: a Slack error code, answered as HTTP 200
//! `{"ok":false,"error":code}` (docs/PROTOCOL.md: the Node SDK retries any
//! non-200 for half an hour, so only rate limiting answers otherwise).
//!
//! `invalid_arguments` carries Slack's `response_metadata.messages`
//! (`["[ERROR] missing required field: channel"]`), which the SDKs show in
//! their exception text.

use std::borrow::Cow;
use std::fmt;

use serde_json::{json, Value};

use super::Resp;
use crate::http::json;
use crate::ops::OpError;
use crate::shard::message::Refusal;
use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    code: Cow<'static, str>,
    message: Option<String>,
}

impl ApiError {
    pub fn new(code: &'static str) -> ApiError {
        ApiError {
            code: Cow::Borrowed(code),
            message: None,
        }
    }

    /// A code chosen by the caller at run time (api.test's `error`).
    pub fn owned(code: String) -> ApiError {
        ApiError {
            code: Cow::Owned(code),
            message: None,
        }
    }

    /// `invalid_arguments` for a required parameter that is absent or empty.
    pub fn missing(field: &str) -> ApiError {
        ApiError {
            code: Cow::Borrowed("invalid_arguments"),
            message: Some(format!("[ERROR] missing required field: {field}")),
        }
    }

    /// `invalid_arguments` for a parameter whose value cannot be used.
    pub fn invalid(field: &str, why: &str) -> ApiError {
        ApiError {
            code: Cow::Borrowed("invalid_arguments"),
            message: Some(format!("[ERROR] invalid value for field {field}: {why}")),
        }
    }

    /// `internal_error`, logged: the store or a shard failed us, not the
    /// client. Slack's wording fits a timed-out shard call exactly: "it's
    /// possible some aspect of the operation succeeded".
    pub fn internal(context: &str, err: impl fmt::Display) -> ApiError {
        tracing::error!(%err, context, "web API internal error");
        ApiError::new("internal_error")
    }

    /// The Slack error code (tests and the fuzz targets read it).
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The answer: HTTP 200 with `ok:false`.
    pub fn response(&self) -> Resp {
        json::json(hyper::StatusCode::OK, &self.body())
    }

    pub fn body(&self) -> Value {
        let mut v = json!({"ok": false, "error": self.code});
        if let Some(m) = &self.message {
            v["response_metadata"] = json!({ "messages": [m] });
        }
        v
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.code)
    }
}

impl From<OpError> for ApiError {
    fn from(e: OpError) -> ApiError {
        match e {
            // A shard did not answer in time: the operation may or may not
            // have happened. Answered 200 (not 5xx) on purpose: an SDK's
            // automatic retry could post a message twice.
            OpError::Busy => ApiError::internal("shard call", "a shard did not answer in time"),
            OpError::Refused(Refusal::StoreFailed) => {
                ApiError::internal("store write", "the store refused a write")
            }
            other => ApiError::new(other.code()),
        }
    }
}

impl From<StoreError> for ApiError {
    /// Store errors that reach a handler unmapped are ours, not the
    /// client's: `internal_error`.
    fn from(e: StoreError) -> ApiError {
        ApiError::internal("store read", e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        assert_eq!(
            ApiError::new("channel_not_found").body(),
            json!({"ok": false, "error": "channel_not_found"})
        );
        assert_eq!(
            ApiError::missing("channel").body(),
            json!({"ok": false, "error": "invalid_arguments",
                   "response_metadata": {"messages": ["[ERROR] missing required field: channel"]}})
        );
        assert_eq!(ApiError::owned("x_y".into()).code(), "x_y");
    }

    #[test]
    fn op_errors_map_to_slack_codes() {
        let code = |e| ApiError::from(e).code().to_string();
        assert_eq!(
            code(OpError::Refused(Refusal::NotInChannel)),
            "not_in_channel"
        );
        assert_eq!(code(OpError::InvalidAuth), "invalid_auth");
        assert_eq!(code(OpError::Busy), "internal_error");
        assert_eq!(
            code(OpError::Refused(Refusal::StoreFailed)),
            "internal_error"
        );
        assert_eq!(code(OpError::InvalidName), "invalid_name");
    }
}
