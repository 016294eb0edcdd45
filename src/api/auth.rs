//! Who is calling: the token of an `Authorization: Bearer` header, else of
//! a `token` parameter (query string, form or JSON body), checked by
//! [`ops::auth::authenticate`]. No token: `not_authed`; a malformed,
//! unknown or wrong one: `invalid_auth`. And `auth.test`, which says who.

use std::rc::Rc;

use hyper::http::request::Parts;
use serde_json::{json, Value};

use super::context::Ctx;
use super::envelope::Params;
use super::error::ApiError;
use super::render;
use crate::http::json;
use crate::ops::{self, auth::AuthUser, OpError};
use crate::shard::Shard;

/// Longest token we pass on (ours are ~60 characters).
const TOKEN_MAX: usize = 256;

/// The request's token: the Bearer header first, then the `token`
/// parameter.
pub fn token(parts: &Parts, params: Option<&Params>) -> Option<String> {
    if let Some(t) = json::bearer_token(parts) {
        return Some(t.to_string());
    }
    params
        .and_then(|p| p.opt("token"))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// The caller behind `token`.
pub async fn authenticate(shard: &Rc<Shard>, token: Option<&str>) -> Result<AuthUser, ApiError> {
    let Some(token) = token else {
        return Err(ApiError::new("not_authed"));
    };
    if token.len() > TOKEN_MAX || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::new("invalid_auth"));
    }
    match ops::auth::authenticate(shard, token).await {
        Ok(user) => Ok(user),
        Err(OpError::NotAuthed) => Err(ApiError::new("not_authed")),
        Err(OpError::Busy) => Err(OpError::Busy.into()),
        Err(_) => Err(ApiError::new("invalid_auth")),
    }
}

/// auth.test: `url, team, user, team_id, user_id`, and `bot_id` for bot
/// tokens.
pub async fn test(ctx: &Ctx) -> Result<Value, ApiError> {
    let team = ctx.team_info().await?;
    let host = ctx.host.as_deref().unwrap_or("localhost");
    let mut v = json!({
        "url": format!("http://{host}/"),
        "team": team.name,
        "user": ctx.user.name,
        "team_id": team.id,
        "user_id": ctx.me(),
        "is_enterprise_install": false,
    });
    if ctx.user.is_bot {
        v["bot_id"] = render::bot_id(&ctx.me()).into();
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::AUTHORIZATION;
    use hyper::Request;

    fn parts(auth: Option<&str>) -> Parts {
        let mut b = Request::builder().uri("/api/auth.test");
        if let Some(a) = auth {
            b = b.header(AUTHORIZATION, a);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn bearer_first_then_the_token_parameter() {
        let mut p = Params::default();
        p.insert(
            "token",
            super::super::envelope::Param::Text("xoxp-param".into()),
        );
        assert_eq!(
            token(&parts(Some("Bearer xoxp-header")), Some(&p)).as_deref(),
            Some("xoxp-header")
        );
        assert_eq!(token(&parts(None), Some(&p)).as_deref(), Some("xoxp-param"));
        assert_eq!(
            token(&parts(Some("Basic x")), Some(&p)).as_deref(),
            Some("xoxp-param")
        );
        assert_eq!(token(&parts(None), None), None);
        assert_eq!(token(&parts(None), Some(&Params::default())), None);
    }
}
