//! What a method handler gets: the shard, the parameters, the caller, and
//! store reads that fold the store's errors into the answer.

use std::rc::Rc;

use super::envelope::Params;
use super::error::ApiError;
use crate::ops::auth::AuthUser;
use crate::shard::Shard;
use crate::store::{StoreError, Tx};

/// One authenticated Web API call.
pub struct Ctx {
    pub shard: Rc<Shard>,
    pub params: Params,
    pub user: AuthUser,
    /// The request's `Host` header, for auth.test's `url`.
    pub host: Option<String>,
}

/// What a store job for a handler returns: the store's own failure
/// (`internal_error`) outside, the answer to the client inside.
pub type Job<T> = Result<Result<T, ApiError>, StoreError>;

/// A workspace's name and domain.
pub struct TeamInfo {
    pub id: String,
    pub name: String,
    pub domain: String,
}

impl Ctx {
    /// The caller's team id, as the store spells ids.
    pub fn team(&self) -> String {
        self.user.team.to_string()
    }

    /// The caller's user id, as the store spells ids.
    pub fn me(&self) -> String {
        self.user.id.to_string()
    }

    /// Runs `f` on a store reader thread (one consistent snapshot).
    pub async fn read<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Tx) -> Job<T> + Send + 'static,
    {
        match self.shard.node.store.read(f).await {
            Ok(answer) => answer,
            Err(e) => Err(ApiError::internal("store read", e)),
        }
    }

    /// The caller's workspace (the store's row; the node's name if the row
    /// is missing).
    pub async fn team_info(&self) -> Result<TeamInfo, ApiError> {
        let id = self.team();
        let fallback_name = self.shard.node.team_name.clone();
        self.read(move |c| {
            Ok(Ok(match c.team(&id)? {
                Some(t) => TeamInfo {
                    id: t.id,
                    name: t.name,
                    domain: t.domain,
                },
                None => TeamInfo {
                    domain: fallback_name.to_ascii_lowercase(),
                    name: fallback_name,
                    id,
                },
            }))
        })
        .await
    }
}
