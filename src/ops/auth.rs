//! Who a Web API token belongs to. Tokens are `xoxp-<user>-<secret>`
//! (`xoxb-` for bots): the user id names the home shard, whose directory
//! holds the SHA-256 of the secret; the comparison is constant-time.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::OpError;
use crate::ids::Id;
use crate::shard::message::Msg;
use crate::shard::Shard;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: Id,
    pub team: Id,
    pub name: String,
    pub is_bot: bool,
}

/// The `B…` id Slack gives a bot user's bot: the user id with its kind
/// letter replaced. auth.test answers it for bot tokens and a bot's
/// messages carry it; RTM clients drop events whose `bot_id` is their own,
/// so every place must derive it the same way.
pub fn bot_id(user: &str) -> String {
    let tail = user.get(1..).unwrap_or("");
    format!("B{tail}")
}

/// A new token for `user` and the hash the store keeps of it.
pub fn new_token(user: Id, is_bot: bool) -> (String, [u8; 32]) {
    let secret: [u8; 20] = rand::random();
    let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let hash: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
    let prefix = if is_bot { "xoxb" } else { "xoxp" };
    (format!("{prefix}-{user}-{secret}"), hash)
}

/// The stored row of a new user.
pub fn user_row(id: Id, team: Id, name: &str, is_bot: bool) -> crate::store::users::UserRow {
    crate::store::users::UserRow {
        id: id.to_string(),
        team_id: team.to_string(),
        name: name.to_string(),
        real_name: name.to_string(),
        is_bot,
        deleted: false,
        tz: String::new(),
        created: crate::store::now_micros(),
        profile: serde_json::json!({}),
    }
}

/// Splits `xoxp-<user>-<secret>` into the user and the secret's hash.
pub fn parse_token(token: &str) -> Option<(Id, [u8; 32])> {
    let rest = token
        .strip_prefix("xoxp-")
        .or_else(|| token.strip_prefix("xoxb-"))?;
    let (user, secret) = rest.split_once('-')?;
    let user = Id::parse(user).filter(|u| u.is_user())?;
    if secret.is_empty() || secret.len() > 128 {
        return None;
    }
    Some((user, Sha256::digest(secret.as_bytes()).into()))
}

/// How long a shard trusts a token it has checked with the user's home
/// shard. Tokens are never revoked today; when they can be, revocation
/// must reach these caches or wait this long.
const AUTH_CACHE_TTL: Duration = Duration::from_secs(60);
/// Tokens one shard remembers; the cache is emptied when full.
const AUTH_CACHE_ENTRIES_MAX: usize = 16 * 1024;

type AuthCache = HashMap<(Id, [u8; 32]), (AuthUser, Instant)>;

thread_local! {
    /// Tokens this shard checked recently, keyed by user and secret hash,
    /// so a keep-alive client does not cost a cross-shard round trip per
    /// request. Owned by its shard (thread-local); never crosses cores.
    static AUTH_CACHE: RefCell<AuthCache> = RefCell::new(HashMap::new());
}

/// `OpError::InvalidAuth` for a malformed, unknown or wrong token.
pub async fn authenticate(shard: &Rc<Shard>, token: &str) -> Result<AuthUser, OpError> {
    let (user, secret_hash) = parse_token(token).ok_or(OpError::InvalidAuth)?;
    let cached = AUTH_CACHE.with(|c| {
        c.borrow()
            .get(&(user, secret_hash))
            .filter(|(_, at)| at.elapsed() < AUTH_CACHE_TTL)
            .map(|(u, _)| u.clone())
    });
    if let Some(u) = cached {
        return Ok(u);
    }
    let found = match shard
        .call_owner(user, |reply| Msg::Authenticate {
            reply,
            user,
            secret_hash,
        })
        .await?
    {
        Some(u) => AuthUser {
            id: u.id,
            team: u.team,
            name: u.name,
            is_bot: u.is_bot,
        },
        None => return Err(OpError::InvalidAuth),
    };
    AUTH_CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= AUTH_CACHE_ENTRIES_MAX {
            c.clear();
        }
        c.insert((user, secret_hash), (found.clone(), Instant::now()));
    });
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tokens() {
        let (u, h) = parse_token("xoxp-U123-abc").unwrap();
        assert_eq!(u.to_string(), "U123");
        assert_eq!(h, <[u8; 32]>::from(Sha256::digest(b"abc")));
        assert!(parse_token("xoxb-U123-abc").is_some());
        let id = Id::parse("U9").unwrap();
        let (t, h) = new_token(id, true);
        assert_eq!(parse_token(&t), Some((id, h)));
        for bad in [
            "",
            "xoxp-",
            "xoxp-U123",
            "xoxp-U123-",
            "xoxa-U123-abc",
            "xoxp-C123-abc",
            "xoxp-u1-abc",
        ] {
            assert!(parse_token(bad).is_none(), "{bad}");
        }
    }
}
