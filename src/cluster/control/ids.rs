//! Node ids: small integers, stable across restarts (docs/CLUSTER.md "etcd
//! keys"). The data dir remembers its node's id (`node-id`); a node without
//! one is given the id of its name (`ids/<name>`), created once from the
//! `next-id` counter in one transaction, so two nodes starting at once
//! never get the same id.

use std::path::Path;

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};

use crate::cluster::keys::Keys;
use crate::limits;
use crate::placement::NodeId;

/// The file in the data dir that keeps the node's id.
pub const NODE_ID_FILE: &str = "node-id";

/// Ids start at 1: 0 is a node outside any cluster.
const FIRST_ID: NodeId = 1;

/// The id kept in `path`, if the file exists.
pub fn read_file(path: &Path) -> Result<Option<NodeId>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    match text.trim().parse::<NodeId>() {
        Ok(id) if id >= FIRST_ID => Ok(Some(id)),
        _ => Err(format!(
            "{} does not hold a node id (1 to {}): {:?}; remove it to have one assigned",
            path.display(),
            NodeId::MAX,
            text.trim()
        )),
    }
}

/// Writes `id` to `path` (a new file renamed over, so a crash never leaves
/// half an id).
pub fn write_file(path: &Path, id: NodeId) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{id}\n"))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// A name for a node started without `--node-name`: the host's name and a
/// hash of the data dir's path, so that two nodes on one host differ and a
/// node restarted on the same data dir keeps its name.
pub fn default_node_name(data_dir: &Path) -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into `buf`.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let host = if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "node".to_string()
    };
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(limits::CLUSTER_NAME_CHARS_MAX - 9)
        .collect();
    let dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let hash = crate::ring::hash_bytes(dir.as_os_str().as_encoded_bytes());
    format!("{host}-{:08x}", hash as u32)
}

/// The id of node `name`: the one etcd has for it, or a new one (`wanted`
/// when the data dir already holds one, else the next free).
pub async fn claim(
    client: &mut Client,
    keys: &Keys,
    name: &str,
    wanted: Option<NodeId>,
) -> Result<NodeId, String> {
    let etcd = |e: etcd_client::Error| format!("etcd: {e}");
    for _ in 0..limits::CLUSTER_ID_CLAIM_ATTEMPTS_MAX {
        let mine = client.get(keys.id_of(name), None).await.map_err(etcd)?;
        if let Some(kv) = mine.kvs().first() {
            let id = parse_id(kv.value())
                .ok_or_else(|| format!("etcd key {} does not hold a node id", keys.id_of(name)))?;
            return match wanted {
                Some(w) if w != id => Err(format!(
                    "the data dir says this is node {w}, but etcd gives node name {name:?} id {id}: \
                     start with the data dir's own --node-name, or remove its {NODE_ID_FILE}"
                )),
                _ => Ok(id),
            };
        }
        let counter = client.get(keys.next_id(), None).await.map_err(etcd)?;
        let (next, revision) = match counter.kvs().first() {
            Some(kv) => (
                parse_id(kv.value()).ok_or("etcd's next-id is not a node id")?,
                kv.mod_revision(),
            ),
            None => (FIRST_ID, 0),
        };
        let id = wanted.unwrap_or(next);
        let after = id.checked_add(1).ok_or("no node ids left")?.max(next);
        let txn = Txn::new()
            .when([
                Compare::version(keys.id_of(name), CompareOp::Equal, 0),
                Compare::mod_revision(keys.next_id(), CompareOp::Equal, revision),
            ])
            .and_then([
                TxnOp::put(keys.id_of(name), id.to_string(), None),
                TxnOp::put(keys.next_id(), after.to_string(), None),
            ]);
        if client.txn(txn).await.map_err(etcd)?.succeeded() {
            return Ok(id);
        }
        // Another node took an id (or this name) meanwhile: look again.
    }
    Err("could not claim a node id: too much contention on etcd".into())
}

fn parse_id(bytes: &[u8]) -> Option<NodeId> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_file_round_trips_and_refuses_garbage() {
        let dir = std::env::temp_dir().join(format!("tp-node-id-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(NODE_ID_FILE);
        let _ = std::fs::remove_file(&path);
        assert_eq!(read_file(&path), Ok(None));
        write_file(&path, 42).unwrap();
        assert_eq!(read_file(&path), Ok(Some(42)));
        for bad in ["", "0", "x", "70000", "-1"] {
            std::fs::write(&path, bad).unwrap();
            assert!(read_file(&path).unwrap_err().contains("remove it"), "{bad}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn default_names_are_valid_and_stable_per_data_dir() {
        let a = default_node_name(Path::new("/tmp/a"));
        assert_eq!(a, default_node_name(Path::new("/tmp/a")));
        assert_ne!(a, default_node_name(Path::new("/tmp/b")));
        crate::cluster::record::check_name("node name", &a).unwrap();
    }
}
