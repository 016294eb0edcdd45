//! The etcd key layout of a cluster, in one place (docs/CLUSTER.md "etcd
//! keys"). Every key lives under the cluster prefix (`--cluster-prefix`,
//! default `/transponder/`), so several clusters can share one etcd.

use crate::placement::NodeId;

/// The keys of one cluster.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix`; a missing trailing `/` is added.
    pub fn new(prefix: &str) -> Keys {
        let mut prefix = prefix.to_string();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Keys { prefix }
    }

    /// Everything of this cluster (the leader and the followers watch it).
    pub fn all(&self) -> &str {
        &self.prefix
    }

    /// `ids/<name>`: the node id of the node named `name`, created once.
    pub fn id_of(&self, name: &str) -> String {
        format!("{}ids/{name}", self.prefix)
    }

    /// `next-id`: the next id to hand out. Not under `ids/`, so that no
    /// node name can collide with it.
    pub fn next_id(&self) -> String {
        format!("{}next-id", self.prefix)
    }

    /// `nodes/`: the registry, one key per live node, each under its lease.
    pub fn nodes(&self) -> String {
        format!("{}nodes/", self.prefix)
    }

    pub fn node(&self, id: NodeId) -> String {
        format!("{}nodes/{id}", self.prefix)
    }

    /// `suspect/`: failure reports, one key per (suspect, reporter), each
    /// under the reporter's lease.
    pub fn suspects(&self) -> String {
        format!("{}suspect/", self.prefix)
    }

    pub fn suspect(&self, suspect: NodeId, reporter: NodeId) -> String {
        format!("{}suspect/{suspect}/{reporter}", self.prefix)
    }

    /// The CHARM election's name (etcd's election API keeps its candidates'
    /// keys under it).
    pub fn election(&self) -> String {
        format!("{}charm/election", self.prefix)
    }

    /// `placement`: the published placement, written by the leader only.
    pub fn placement(&self) -> String {
        format!("{}placement", self.prefix)
    }

    /// `drain/`: drain requests, one per region.
    pub fn drains(&self) -> String {
        format!("{}drain/", self.prefix)
    }

    pub fn drain(&self, region: &str) -> String {
        format!("{}drain/{region}", self.prefix)
    }

    /// What a key of this cluster is.
    pub fn parse(&self, key: &[u8]) -> Key {
        let Some(rest) = std::str::from_utf8(key)
            .ok()
            .and_then(|k| k.strip_prefix(self.prefix.as_str()))
        else {
            return Key::Other;
        };
        if rest == "placement" {
            return Key::Placement;
        }
        if let Some(id) = rest.strip_prefix("nodes/") {
            return id.parse().map_or(Key::Other, Key::Node);
        }
        if let Some(pair) = rest.strip_prefix("suspect/") {
            if let Some((suspect, reporter)) = pair.split_once('/') {
                if let (Ok(suspect), Ok(reporter)) = (suspect.parse(), reporter.parse()) {
                    return Key::Suspect { suspect, reporter };
                }
            }
            return Key::Other;
        }
        if let Some(region) = rest.strip_prefix("drain/") {
            return Key::Drain(region.to_string());
        }
        Key::Other
    }
}

/// A key of the cluster, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Node(NodeId),
    Suspect {
        suspect: NodeId,
        reporter: NodeId,
    },
    Placement,
    Drain(String),
    /// Ids, the election, or anything this version does not know.
    Other,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back() {
        let k = Keys::new("/t");
        assert_eq!(k.all(), "/t/");
        assert_eq!(k.parse(k.node(7).as_bytes()), Key::Node(7));
        assert_eq!(
            k.parse(k.suspect(2, 9).as_bytes()),
            Key::Suspect {
                suspect: 2,
                reporter: 9
            }
        );
        assert_eq!(k.parse(k.placement().as_bytes()), Key::Placement);
        assert_eq!(k.parse(k.drain("eu").as_bytes()), Key::Drain("eu".into()));
        for other in [
            k.id_of("a"),
            k.next_id(),
            k.election() + "/694d",
            "/t/nodes/x".into(),
            "/t/nodes/70000".into(),
            "/other/placement".into(),
        ] {
            assert_eq!(k.parse(other.as_bytes()), Key::Other, "{other}");
        }
        assert_eq!(k.parse(&[0xff, 0xfe]), Key::Other);
    }
}
