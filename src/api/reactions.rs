//! reactions.add / reactions.remove: `channel, timestamp, name` → `{}`.
//!
//! `name` is an emoji name without colons; surrounding colons are stripped
//! (`:thumbsup:` is `thumbsup`), a skin tone stays (`wave::skin-tone-3`).
//! Members only (`not_in_channel`); the rest (`message_not_found`,
//! `already_reacted`, `no_reaction`) is [`ops::chat::react`]'s.

use serde_json::{json, Value};

use super::access::ChannelRef;
use super::context::Ctx;
use super::error::ApiError;
use crate::ops::chat;

/// Longest emoji name we accept.
const NAME_MAX: usize = 100;

/// The emoji name of `raw`, or `invalid_name`: lowercase letters, digits,
/// `_ + - '`, optionally followed by `::skin-tone-2` … `::skin-tone-6`.
pub fn emoji_name(raw: &str) -> Result<String, ApiError> {
    let invalid = || ApiError::new("invalid_name");
    let name = raw.trim().trim_matches(':');
    if name.is_empty() || name.len() > NAME_MAX {
        return Err(invalid());
    }
    let (base, tone) = match name.split_once("::") {
        Some((b, t)) => (b, Some(t)),
        None => (name, None),
    };
    let base_ok = !base.is_empty()
        && base.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'+' | b'-' | b'\'')
        });
    let tone_ok = match tone {
        None => true,
        Some(t) => matches!(
            t,
            "skin-tone-2" | "skin-tone-3" | "skin-tone-4" | "skin-tone-5" | "skin-tone-6"
        ),
    };
    if base_ok && tone_ok {
        Ok(name.to_string())
    } else {
        Err(invalid())
    }
}

async fn react(ctx: &Ctx, add: bool) -> Result<Value, ApiError> {
    let p = &ctx.params;
    // Slack's code for an item not named at all.
    let (Some(channel), Some(ts)) = (p.opt("channel"), p.opt("timestamp")) else {
        return Err(ApiError::new("no_item_specified"));
    };
    let channel = ChannelRef::parse(&channel);
    let ts = crate::ts::Ts::parse(ts.trim()).ok_or_else(|| ApiError::new("message_not_found"))?;
    let name = emoji_name(&p.opt("name").unwrap_or_default())?;
    let access = ctx.channel(channel).await?;
    access.require_member()?;
    if add && access.row.is_archived {
        return Err(ApiError::new("is_archived"));
    }
    chat::react(&ctx.shard, &ctx.user, access.id()?, ts, &name, add).await?;
    Ok(json!({}))
}

pub async fn add(ctx: &Ctx) -> Result<Value, ApiError> {
    react(ctx, true).await
}

pub async fn remove(ctx: &Ctx) -> Result<Value, ApiError> {
    react(ctx, false).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for (raw, want) in [
            ("thumbsup", "thumbsup"),
            (":thumbsup:", "thumbsup"),
            ("::tada::", "tada"),
            ("+1", "+1"),
            ("flag-us", "flag-us"),
            ("man_s_shoe'", "man_s_shoe'"),
            (":wave::skin-tone-3:", "wave::skin-tone-3"),
        ] {
            assert_eq!(emoji_name(raw).unwrap(), want, "{raw:?}");
        }
        for bad in [
            "",
            ":",
            "::",
            "Thumbsup",
            "thumbs up",
            "a:b",
            "wave::skin-tone-9",
            "wave::x",
            "<script>",
            "é",
        ] {
            assert_eq!(
                emoji_name(bad).unwrap_err().code(),
                "invalid_name",
                "{bad:?}"
            );
        }
        assert!(emoji_name(&"a".repeat(101)).is_err());
    }
}
