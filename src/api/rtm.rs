//! rtm.connect: a single-use websocket URL ([`ops::ticket_url`]) and who
//! the caller is.
//!
//! - `batch_presence_aware` (true) is passed on as `batch_presence_aware=1`
//!   on the URL: the gateway then sends `presence_change` in the batch form
//!   (`"users":[…]`), as docs/PROTOCOL.md says. Any value that is not true
//!   is false (never an error: the SDKs pass their start options through).
//! - `presence_sub` is accepted and ignored: the gateway honours
//!   `presence_sub` frames whatever it says.
//! - Our extension: `since` (an `event_ts`) is passed on as `since=` on the
//!   URL, to resume (`invalid_since` if it is not a ts).
//! - While this node's region drains (a cluster), the URL is on the gateway
//!   of the target region's node the user goes to ([`ops::ticket_url`]),
//!   so an SDK that reconnects after the drain's goodbye lands there.

use serde_json::{json, Value};

use super::context::Ctx;
use super::error::ApiError;
use crate::ops;
use crate::ts::Ts;

pub async fn connect(ctx: &Ctx) -> Result<Value, ApiError> {
    let since = match ctx.params.opt("since") {
        None => None,
        Some(s) => Some(Ts::parse(s.trim()).ok_or_else(|| ApiError::new("invalid_since"))?),
    };
    let team = ctx.team_info().await?;
    let batch = ctx.params.flag("batch_presence_aware").unwrap_or(false);
    let mut url = ops::ticket_url(&ctx.shard, ctx.user.id).await?;
    if batch {
        url = with_param(&url, "batch_presence_aware", "1");
    }
    if let Some(since) = since {
        url = with_param(&url, "since", &since.to_string());
    }
    Ok(json!({
        "url": url,
        "self": {"id": ctx.me(), "name": ctx.user.name},
        "team": {"id": team.id, "name": team.name, "domain": team.domain},
    }))
}

/// `url` with `key=value` appended to its query (both URL-safe as given).
fn with_param(url: &str, key: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{key}={value}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_appended() {
        let t = Ts(1_700_000_000_000_100).to_string();
        assert_eq!(
            with_param("ws://h:1/websocket/abc", "since", &t),
            "ws://h:1/websocket/abc?since=1700000000.000100"
        );
        assert_eq!(
            with_param("ws://h:1/w?x=1", "since", &t),
            "ws://h:1/w?x=1&since=1700000000.000100"
        );
    }
}
