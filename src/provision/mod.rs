//! Offline provisioning from the command line: `transponder user add` and
//! `transponder channel add` write the store directly (SQLite in
//! `--data-dir`, or PostgreSQL with `--store postgres://…`) and print only
//! the token or the id, for scripts; `transponder channel import` writes
//! conversations in bulk ([`import`]). A running server loads what they
//! wrote at its next start; while it runs, use the admin API instead.
//!
//! `user add` and `channel add` take no data-dir lock, so they keep working
//! beside a running server; `channel import` takes it (`store::DataDirLock`)
//! and refuses to run beside one.

pub mod import;

use crate::ids::Id;
use crate::ops::{auth, valid_channel_name, valid_user_name};
use crate::store::{self, Backend, Durability, Store, StoreError};

fn open(backend: &Backend) -> Result<Store, String> {
    Store::open_backend(backend, Durability::Full).map_err(|e| match backend {
        Backend::Sqlite(dir) => format!("cannot open the store in {}: {e}", dir.display()),
        Backend::Postgres(_) => format!("cannot open the store {backend}: {e}"),
    })
}

fn team() -> Id {
    Id::parse(store::teams::DEFAULT_TEAM_ID).expect("valid team id")
}

/// Creates a user; returns its token.
pub fn add_user(backend: &Backend, name: &str, is_bot: bool) -> Result<String, String> {
    if !valid_user_name(name) {
        return Err(format!("invalid user name {name:?}"));
    }
    let store = open(backend)?;
    let id = Id::generate('U', &mut rand::rng());
    let (token, hash) = auth::new_token(id, is_bot);
    let row = auth::user_row(id, team(), name, is_bot);
    let result = store.write_blocking(move |tx| tx.insert_user(&row, Some(&hash)));
    store.close();
    match result {
        Ok(()) => Ok(token),
        Err(StoreError::Conflict) => Err(format!("name_taken: a user named {name:?} exists")),
        Err(e) => Err(e.to_string()),
    }
}

/// Creates a public conversation; returns its id.
pub fn add_channel(backend: &Backend, name: &str, private: bool) -> Result<Id, String> {
    if !valid_channel_name(name) {
        return Err(format!(
            "invalid_name: {name:?} (lowercase letters, digits, - and _, at most 80)"
        ));
    }
    let store = open(backend)?;
    let id = Id::generate('C', &mut rand::rng());
    let row = store::channels::ChannelRow {
        id: id.to_string(),
        team_id: team().to_string(),
        name: name.to_string(),
        is_private: private,
        is_archived: false,
        is_general: false,
        created: store::now_micros(),
        creator: String::new(),
        topic: String::new(),
        purpose: String::new(),
    };
    let result = store.write_blocking(move |tx| tx.insert_channel(&row));
    store.close();
    match result {
        Ok(()) => Ok(id),
        Err(StoreError::Conflict) => Err(format!("name_taken: a channel named {name:?} exists")),
        Err(e) => Err(e.to_string()),
    }
}
