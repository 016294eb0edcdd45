//! Who a Web API token belongs to. Tokens are `xoxp-<user>-<secret>`
//! (`xoxb-` for bots): the user id names the home shard, whose directory
//! holds the SHA-256 of the secret; the comparison is constant-time.

use std::rc::Rc;

use super::OpError;
use crate::ids::Id;
use crate::shard::Shard;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: Id,
    pub team: Id,
    pub name: String,
    pub is_bot: bool,
}

/// `OpError::InvalidAuth` for a malformed, unknown or wrong token.
pub async fn authenticate(shard: &Rc<Shard>, token: &str) -> Result<AuthUser, OpError> {
    let _ = (shard, token);
    unimplemented!("wired in the persistence change")
}

/// Whether `user` is a member of conversation `channel` (from the channel
/// server's cache). `channel_not_found` if it does not exist.
pub async fn is_member(shard: &Rc<Shard>, channel: Id, user: Id) -> Result<bool, OpError> {
    let _ = (shard, channel, user);
    unimplemented!("wired in the persistence change")
}
