//! rtm.connect: a single-use websocket URL ([`ops::ticket_url`]) and who
//! the caller is. `batch_presence_aware` and `presence_sub` are accepted and
//! ignored (the gateway speaks the batch presence form and honours
//! `presence_sub` frames whatever they say). Our extension: `since`
//! (an `event_ts`) is passed on as `?since=` on the URL, to resume.

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
    let mut url = ops::ticket_url(&ctx.shard, ctx.user.id).await?;
    if let Some(since) = since {
        url = with_since(&url, since);
    }
    Ok(json!({
        "url": url,
        "self": {"id": ctx.me(), "name": ctx.user.name},
        "team": {"id": team.id, "name": team.name, "domain": team.domain},
    }))
}

fn with_since(url: &str, since: Ts) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}since={since}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_appended() {
        let t = Ts(1_700_000_000_000_100);
        assert_eq!(
            with_since("ws://h:1/websocket/abc", t),
            "ws://h:1/websocket/abc?since=1700000000.000100"
        );
        assert_eq!(
            with_since("ws://h:1/w?x=1", t),
            "ws://h:1/w?x=1&since=1700000000.000100"
        );
    }
}
