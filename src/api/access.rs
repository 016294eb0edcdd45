//! Which conversation a `channel` parameter names, and what the caller may
//! see of it.
//!
//! - `channel` is an id (`C…`, `G…`) or a name, with or without a leading
//!   `#` (names resolve within the caller's team).
//! - A conversation of another team does not exist for the caller
//!   (`channel_not_found`), whatever its id.
//! - A private conversation does not exist for a non-member
//!   (`channel_not_found`): its existence is not revealed.
//! - Public conversations are visible to everyone in the team; what a
//!   non-member may do with one (post, read history, react: nothing) is the
//!   handler's rule, with `not_in_channel`.
//!
//! The checks run inside the caller's store job, so they see the same
//! snapshot as the query they guard.

use super::context::{Ctx, Job};
use super::error::ApiError;
use crate::ids::Id;
use crate::store::{ChannelRow, Tx};

/// A parsed `channel` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelRef {
    Id(String),
    Name(String),
}

impl ChannelRef {
    pub fn parse(s: &str) -> ChannelRef {
        let s = s.trim();
        let s = s.strip_prefix('#').unwrap_or(s);
        match Id::parse(s) {
            Some(id) if id.is_conversation() => ChannelRef::Id(s.to_string()),
            _ => ChannelRef::Name(s.to_lowercase()),
        }
    }
}

/// A conversation the caller can see.
#[derive(Debug, Clone, PartialEq)]
pub struct Access {
    pub row: ChannelRow,
    pub member: bool,
}

impl Access {
    /// The conversation's packed id (for [`crate::ops`]).
    pub fn id(&self) -> Result<Id, ApiError> {
        Id::parse(&self.row.id)
            .ok_or_else(|| ApiError::internal("channel id", format!("stored id {:?}", self.row.id)))
    }

    /// `not_in_channel` unless the caller is a member.
    pub fn require_member(&self) -> Result<(), ApiError> {
        if self.member {
            Ok(())
        } else {
            Err(ApiError::new("not_in_channel"))
        }
    }
}

fn not_found() -> ApiError {
    ApiError::new("channel_not_found")
}

/// Resolves `r` for `user` of `team` (see the module rules).
pub fn channel(c: &mut dyn Tx, team: &str, user: &str, r: &ChannelRef) -> Job<Access> {
    let row = match r {
        ChannelRef::Id(id) => c.channel(id)?,
        ChannelRef::Name(name) => c.channel_by_name(team, name)?,
    };
    let Some(row) = row.filter(|row| row.team_id == team) else {
        return Ok(Err(not_found()));
    };
    let member = c.is_member(&row.id, user)?;
    if row.is_private && !member {
        return Ok(Err(not_found()));
    }
    Ok(Ok(Access { row, member }))
}

/// [`channel`], for a caller who must be a member (`not_in_channel`).
pub fn member_channel(c: &mut dyn Tx, team: &str, user: &str, r: &ChannelRef) -> Job<Access> {
    Ok(channel(c, team, user, r)?.and_then(|a| a.require_member().map(|()| a)))
}

impl Ctx {
    /// The conversation `r` names, as the caller sees it.
    pub async fn channel(&self, r: ChannelRef) -> Result<Access, ApiError> {
        let (team, me) = (self.team(), self.me());
        self.read(move |c| channel(c, &team, &me, &r)).await
    }

    /// The conversation of the required parameter `key`.
    pub async fn channel_param(&self, key: &str) -> Result<Access, ApiError> {
        let r = ChannelRef::parse(&self.params.req(key)?);
        self.channel(r).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, team: &str, name: &str, private: bool) -> ChannelRow {
        ChannelRow {
            id: id.into(),
            team_id: team.into(),
            name: name.into(),
            is_private: private,
            is_archived: false,
            is_general: false,
            created: 0,
            creator: "U1".into(),
            topic: String::new(),
            purpose: String::new(),
        }
    }

    fn db() -> Box<dyn Tx> {
        let mut c = crate::store::memory_tx();
        c.insert_channel(&row("C1", "T1", "open", false)).unwrap();
        c.insert_channel(&row("C2", "T1", "secret", true)).unwrap();
        c.insert_channel(&row("C3", "T2", "theirs", false)).unwrap();
        c.add_member("C2", "UIN", 0).unwrap();
        c.add_member("C1", "UIN", 0).unwrap();
        c.add_member("C3", "UIN", 0).unwrap();
        c
    }

    fn see(c: &mut dyn Tx, user: &str, s: &str) -> Result<(String, bool), String> {
        match channel(c, "T1", user, &ChannelRef::parse(s)).unwrap() {
            Ok(a) => Ok((a.row.id, a.member)),
            Err(e) => Err(e.code().to_string()),
        }
    }

    #[test]
    fn parses_ids_and_names() {
        assert_eq!(
            ChannelRef::parse("C024BE91L"),
            ChannelRef::Id("C024BE91L".into())
        );
        assert_eq!(ChannelRef::parse("G1"), ChannelRef::Id("G1".into()));
        assert_eq!(
            ChannelRef::parse("#general"),
            ChannelRef::Name("general".into())
        );
        assert_eq!(
            ChannelRef::parse(" Random "),
            ChannelRef::Name("random".into())
        );
        // A user id is not a conversation.
        assert_eq!(ChannelRef::parse("U1"), ChannelRef::Name("u1".into()));
    }

    #[test]
    fn visibility() {
        let mut db = db();
        let c = &mut *db;
        let ok = |id: &str, m| Ok((id.to_string(), m));
        let nf = || Err("channel_not_found".to_string());
        assert_eq!(see(c, "UIN", "C1"), ok("C1", true));
        assert_eq!(see(c, "UOUT", "C1"), ok("C1", false));
        assert_eq!(see(c, "UOUT", "open"), ok("C1", false));
        assert_eq!(see(c, "UOUT", "#open"), ok("C1", false));
        // Private: members only; not even its existence leaks.
        assert_eq!(see(c, "UIN", "C2"), ok("C2", true));
        assert_eq!(see(c, "UIN", "#secret"), ok("C2", true));
        assert_eq!(see(c, "UOUT", "C2"), nf());
        assert_eq!(see(c, "UOUT", "secret"), nf());
        // Another team's channel is invisible, even to its members, by id
        // or by name.
        assert_eq!(see(c, "UIN", "C3"), nf());
        assert_eq!(see(c, "UIN", "theirs"), nf());
        assert_eq!(see(c, "UIN", "C9"), nf());
        assert_eq!(see(c, "UIN", "nope"), nf());
    }
}
