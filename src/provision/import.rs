//! `transponder channel import`: conversations in bulk, offline, for an
//! operator moving a workspace in (or a benchmark provisioning millions).
//! One store job writes them all through [`crate::store::import`]: the same
//! schema, migrations and rows as conversations created through the APIs,
//! so a server loads them at its next start like any others.
//!
//! # Input
//!
//! One conversation per line, either a JSON object
//!
//! ```text
//! {"name":"design","private":false,"members":["U0G9QF9C6","U0G9QF9C7"]}
//! ```
//!
//! or CSV: the name, `private` (`true`/`false`/`1`/`0`, empty for false),
//! then the member ids, separated by spaces within a field or by further
//! commas; fields may be double-quoted:
//!
//! ```text
//! design,false,U0G9QF9C6 U0G9QF9C7
//! ```
//!
//! `private` and the members may be left out. Blank lines and lines
//! starting with `#` are skipped. Members must be existing users.
//!
//! # All or nothing
//!
//! The import is one transaction: a bad line (an invalid name, a name an
//! existing conversation or an earlier line has, an unknown user) stops it
//! with that line's number, and nothing is written. Ids are generated
//! (`C…`, in increasing order, see [`AscendingIds`]); `--ids FILE` writes
//! `id<TAB>name` lines to FILE once the import has committed.
//!
//! Run it with the server stopped: the transaction holds the store's write
//! lock throughout, and a running server would not see the new
//! conversations before its next start anyway. It takes the data dir's lock
//! (`store::DataDirLock`), so it refuses to run beside a server, and a
//! server refuses to start during an import.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Deserialize;

use crate::ids::{AscendingIds, Id};
use crate::ops::valid_channel_name;
use crate::store::{self, Backend, Importer, Refused, StoreError};

/// Conversations between two progress lines on stderr.
const PROGRESS_EVERY: u64 = 1_000_000;

/// What an import wrote.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Imported {
    pub channels: u64,
    pub memberships: u64,
    pub secs: f64,
}

/// Imports every conversation `input` lists into the store.
/// With `ids_out`, writes `id<TAB>name` per conversation there once the
/// import has committed (through `<ids_out>.partial`, removed on failure).
pub fn import_channels(
    backend: &Backend,
    input: Box<dyn BufRead + Send>,
    ids_out: Option<&Path>,
) -> Result<Imported, String> {
    let partial = ids_out.map(|p| {
        let mut name = p.as_os_str().to_owned();
        name.push(".partial");
        PathBuf::from(name)
    });
    // With the server stopped (README): a running server would not see the
    // new conversations before its next start, and the import's transaction
    // would hold the store's write lock under it throughout. Held until the
    // import returns. (A shared PostgreSQL store has no data dir to lock:
    // stop the nodes that use it.)
    let _lock = match backend {
        Backend::Sqlite(data_dir) => Some(
            store::DataDirLock::acquire(data_dir)
                .map_err(|e| format!("{e}: run `channel import` with the server stopped"))?,
        ),
        Backend::Postgres(_) => None,
    };
    // The store first: a data dir it refuses leaves no ids file behind.
    let store = super::open(backend)?;
    let ids_file = match &partial {
        Some(p) => {
            Some(BufWriter::new(File::create(p).map_err(|e| {
                format!("cannot create {}: {e}", p.display())
            })?))
        }
        None => None,
    };
    let team = super::team().to_string();
    let started = Instant::now();
    let result = store.write_blocking(move |tx| {
        let mut importer = tx.importer(&team, store::now_micros())?;
        read_all(&mut *importer, input, ids_file)
    });
    // The last connection to close checkpoints the WAL into the database
    // and removes it: the import's gigabytes of WAL do not linger.
    store.close();
    match (result, ids_out, &partial) {
        (Ok((channels, memberships)), out, partial) => {
            if let (Some(out), Some(partial)) = (out, partial) {
                std::fs::rename(partial, out)
                    .map_err(|e| format!("cannot rename {}: {e}", partial.display()))?;
            }
            Ok(Imported {
                channels,
                memberships,
                secs: started.elapsed().as_secs_f64(),
            })
        }
        (Err(e), _, partial) => {
            if let Some(p) = partial {
                let _ = std::fs::remove_file(p);
            }
            Err(match e {
                StoreError::Rejected(why) => format!("{why}; nothing was imported"),
                e => format!("{e}; nothing was imported"),
            })
        }
    }
}

/// Reads and inserts every line; (conversations, memberships).
fn read_all(
    importer: &mut dyn Importer,
    mut input: Box<dyn BufRead + Send>,
    mut ids_file: Option<BufWriter<File>>,
) -> Result<(u64, u64), StoreError> {
    let mut rng = rand::rng();
    let mut ids = AscendingIds::new('C', &mut rng);
    let mut line = String::new();
    let mut number = 0u64;
    loop {
        line.clear();
        number += 1;
        let read = input.read_line(&mut line).map_err(|e| {
            StoreError::Rejected(format!("line {number}: cannot read the input: {e}"))
        })?;
        if read == 0 {
            break;
        }
        let text = line.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let rejected = |why: String| StoreError::Rejected(format!("line {number}: {why}"));
        let conversation = parse_line(text).map_err(rejected)?;
        let members: Vec<&str> = conversation.members.iter().map(|m| m.as_ref()).collect();
        let id = loop {
            let id = ids.next(&mut rng).ok_or_else(|| {
                rejected("too many conversations for one import; split the input".into())
            })?;
            let text_id = id.to_string();
            match importer.insert(&text_id, &conversation.name, conversation.private, &members)? {
                Ok(()) => break text_id,
                // A conversation created earlier has this random id.
                Err(Refused::IdTaken) => continue,
                Err(Refused::NameTaken) => {
                    return Err(rejected(format!(
                        "name_taken: a conversation named {:?} exists",
                        conversation.name
                    )))
                }
                Err(Refused::UnknownUser(u)) => {
                    return Err(rejected(format!("user_not_found: no user {u}")))
                }
            }
        };
        if let Some(w) = ids_file.as_mut() {
            writeln!(w, "{id}\t{}", conversation.name)?;
        }
        let (channels, _) = importer.counts();
        if channels % PROGRESS_EVERY == 0 {
            tracing::info!(channels, "importing");
        }
    }
    if let Some(mut w) = ids_file {
        w.flush()?;
    }
    Ok(importer.counts())
}

/// One line of input.
#[derive(Debug, PartialEq)]
struct Conversation<'a> {
    name: Cow<'a, str>,
    private: bool,
    members: Vec<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonLine<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(default)]
    private: bool,
    #[serde(default, borrow)]
    members: Vec<Cow<'a, str>>,
}

/// Parses and checks one non-blank line (JSON if it starts with `{`, else
/// CSV).
fn parse_line(text: &str) -> Result<Conversation<'_>, String> {
    let c = if text.starts_with('{') {
        let j: JsonLine<'_> =
            serde_json::from_str(text).map_err(|e| format!("invalid_json: {e}"))?;
        Conversation {
            name: j.name,
            private: j.private,
            members: j.members,
        }
    } else {
        let mut fields = text.split(',').map(|f| {
            let f = f.trim();
            f.strip_prefix('"')
                .and_then(|f| f.strip_suffix('"'))
                .unwrap_or(f)
        });
        let name = fields.next().unwrap_or("");
        let private = match fields.next().unwrap_or("").to_ascii_lowercase().as_str() {
            "" | "0" | "false" => false,
            "1" | "true" => true,
            other => return Err(format!("invalid_private: {other:?} (true, false, 1 or 0)")),
        };
        Conversation {
            name: Cow::Borrowed(name),
            private,
            members: fields
                .flat_map(str::split_whitespace)
                .map(Cow::Borrowed)
                .collect(),
        }
    };
    if !valid_channel_name(&c.name) {
        return Err(format!(
            "invalid_name: {:?} (lowercase letters, digits, - and _, at most 80)",
            c.name
        ));
    }
    if let Some(bad) = c
        .members
        .iter()
        .find(|m| !Id::parse(m).is_some_and(Id::is_user))
    {
        return Err(format!("invalid_user: {bad:?} is not a user id"));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> (String, bool, Vec<String>) {
        let c = parse_line(text).unwrap();
        (
            c.name.into_owned(),
            c.private,
            c.members.into_iter().map(Cow::into_owned).collect(),
        )
    }

    #[test]
    fn json_and_csv_lines() {
        let both = ("design".to_string(), true, vec!["U1".into(), "U2".into()]);
        assert_eq!(
            parsed(r#"{"name":"design","private":true,"members":["U1","U2"]}"#),
            both
        );
        assert_eq!(parsed("design,true,U1 U2"), both);
        assert_eq!(parsed("design , 1 , U1 , U2"), both);
        assert_eq!(parsed(r#""design","TRUE","U1 U2""#), both);
        let bare = ("general".to_string(), false, vec![]);
        assert_eq!(parsed(r#"{"name":"general"}"#), bare);
        assert_eq!(parsed("general"), bare);
        assert_eq!(parsed("general,,"), bare);
    }

    #[test]
    fn bad_lines_say_why() {
        for (line, why) in [
            ("Design,false", "invalid_name"),
            (",false", "invalid_name"),
            ("design,maybe", "invalid_private"),
            ("design,false,C123", "invalid_user"),
            ("design,false,u1", "invalid_user"),
            (r#"{"name":"design","member":["U1"]}"#, "invalid_json"),
            (r#"{"name":"design""#, "invalid_json"),
        ] {
            let e = parse_line(line).unwrap_err();
            assert!(e.starts_with(why), "{line:?}: {e}");
        }
    }
}
