//! A node's record in the cluster registry: what it publishes about itself
//! under its lease (`nodes/<id>`, docs/CLUSTER.md "etcd keys"), and what
//! CHARM and the node links read.

use serde::{Deserialize, Serialize};

use crate::limits::CLUSTER_NAME_CHARS_MAX as NAME_CHARS_MAX;
use crate::placement::NodeId;

/// What a node is for, as it says itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Serving: CHARM gives a new active node logical members of its own.
    Active,
    /// Its region is being drained: its gateways send clients elsewhere.
    /// It keeps the channels it owns (a drain is about gateways).
    Draining,
    /// Waiting to replace a failed node: no members until one fails. Once
    /// CHARM gives it a failed node's members, it says `active`.
    Spare,
}

impl NodeState {
    /// The state as records and labels spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Active => "active",
            NodeState::Draining => "draining",
            NodeState::Spare => "spare",
        }
    }
}

/// One node, as registered. Read from etcd: [`NodeRecord::parse`] checks
/// it, so a bad record is refused with a reason and never panics anyone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: NodeId,
    /// The operator's name for it (`--node-name`); ids are allocated per name.
    pub name: String,
    /// Where the node-to-node link listens (`host:port`), when it has one.
    #[serde(default)]
    pub link: Option<String>,
    /// Base URLs of its websocket gateway, Web API and admin API.
    pub gateway: String,
    pub api: String,
    pub admin: String,
    /// Shards (cores) it runs: one logical member each when it joins.
    pub cores: u32,
    pub region: String,
    pub state: NodeState,
}

impl NodeRecord {
    /// A record from its JSON, checked.
    pub fn parse(bytes: &[u8]) -> Result<NodeRecord, String> {
        let record: NodeRecord =
            serde_json::from_slice(bytes).map_err(|e| format!("not a node record: {e}"))?;
        record.check()?;
        Ok(record)
    }

    /// What every record must hold for CHARM to place on it.
    pub fn check(&self) -> Result<(), String> {
        check_name("node name", &self.name)?;
        check_name("region", &self.region)?;
        if !(1..=crate::limits::SHARDS_MAX as u32).contains(&self.cores) {
            return Err(format!(
                "node {} has {} cores (1 to {})",
                self.id,
                self.cores,
                crate::limits::SHARDS_MAX
            ));
        }
        Ok(())
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a record serializes")
    }
}

/// A node name or region: a key segment, so no `/`, and printable ASCII so
/// that it reads the same in etcdctl, logs and URLs.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > NAME_CHARS_MAX {
        return Err(format!("{what} must have 1 to {NAME_CHARS_MAX} characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(format!(
            "{what} {name:?} may hold only ASCII letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn record(id: NodeId) -> NodeRecord {
        NodeRecord {
            id,
            name: format!("n{id}"),
            link: None,
            gateway: "ws://127.0.0.1:1/".into(),
            api: "http://127.0.0.1:2/api/".into(),
            admin: "http://127.0.0.1:3/".into(),
            cores: 2,
            region: "default".into(),
            state: NodeState::Active,
        }
    }

    #[test]
    fn round_trips_through_json_with_lowercase_states() {
        let mut r = record(3);
        r.state = NodeState::Spare;
        let json = r.to_json();
        assert!(json.contains(r#""state":"spare""#), "{json}");
        assert_eq!(NodeRecord::parse(json.as_bytes()).unwrap(), r);
    }

    #[test]
    fn states_are_spelled_as_serde_spells_them() {
        for state in [NodeState::Active, NodeState::Draining, NodeState::Spare] {
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                serde_json::json!(state.as_str())
            );
        }
    }

    #[test]
    fn bad_records_are_refused_with_a_reason() {
        assert!(NodeRecord::parse(b"{").is_err());
        assert!(NodeRecord::parse(b"null").is_err());
        let mut r = record(1);
        r.cores = 0;
        assert!(NodeRecord::parse(r.to_json().as_bytes())
            .unwrap_err()
            .contains("cores"));
        let mut r = record(1);
        r.name = "a/b".into();
        assert!(NodeRecord::parse(r.to_json().as_bytes()).is_err());
        let json = record(1).to_json().replace("active", "sleeping");
        assert!(NodeRecord::parse(json.as_bytes()).is_err());
    }
}
