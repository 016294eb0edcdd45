//! The placement as CHARM publishes it in etcd (`placement`):
//!
//! ```json
//! {"version":7,"vnodes":2048,"members":[0,1,2,3],"assignment":[[0,1,0],[1,1,1],[2,2,0],[3,2,1]]}
//! ```
//!
//! `assignment` lists `[member, node, core]`. Every node rebuilds the same
//! [`Placement`] from it (the ring is a pure function of members and vnodes,
//! src/ring.rs), and a value that does not make a valid placement is
//! refused with the reason, never half applied.

use serde::{Deserialize, Serialize};

use crate::limits::{PLACEMENT_MEMBERS_MAX as MEMBERS_MAX, PLACEMENT_VNODES_MAX as VNODES_MAX};
use crate::placement::{Addr, NodeId, Placement};
use crate::ring::Ring;

#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
struct Published {
    version: u64,
    vnodes: u32,
    members: Vec<u32>,
    assignment: Vec<(u32, NodeId, u32)>,
}

/// The JSON of `placement`.
pub fn to_json(placement: &Placement) -> String {
    let published = Published {
        version: placement.version(),
        vnodes: placement.ring().vnodes(),
        members: placement.ring().members().to_vec(),
        assignment: placement
            .assignment()
            .map(|(m, a)| (m, a.node, a.core))
            .collect(),
    };
    serde_json::to_string(&published).expect("a placement serializes")
}

/// A placement from the JSON of `placement`, checked whole.
pub fn from_json(bytes: &[u8]) -> Result<Placement, String> {
    let p: Published =
        serde_json::from_slice(bytes).map_err(|e| format!("not a placement: {e}"))?;
    if p.version == 0 {
        return Err("placement version 0 (published versions start at 1)".into());
    }
    if p.members.is_empty() || p.members.len() > MEMBERS_MAX {
        return Err(format!(
            "placement has {} members (1 to {MEMBERS_MAX})",
            p.members.len()
        ));
    }
    if !(1..=VNODES_MAX).contains(&p.vnodes) {
        return Err(format!("placement vnodes {} (1 to {VNODES_MAX})", p.vnodes));
    }
    let mut members = p.members.clone();
    members.sort_unstable();
    if members.windows(2).any(|w| w[0] == w[1]) {
        return Err("placement lists a member twice".into());
    }
    if members.last().is_some_and(|&m| m as usize >= MEMBERS_MAX) {
        return Err(format!(
            "placement member numbers must be below {MEMBERS_MAX}"
        ));
    }
    let ring = Ring::new(&members, p.vnodes).with_version(p.version);
    let assignment: Vec<(u32, Addr)> = p
        .assignment
        .iter()
        .map(|&(m, node, core)| (m, Addr { node, core }))
        .collect();
    Placement::new(ring, &assignment, p.version).map_err(|e| format!("bad placement: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let ring = Ring::new(&[0, 1, 5], 16);
        let a = |node, core| Addr { node, core };
        let p = Placement::new(ring, &[(0, a(1, 0)), (1, a(1, 1)), (5, a(3, 0))], 9).unwrap();
        let json = to_json(&p);
        assert_eq!(
            json,
            r#"{"version":9,"vnodes":16,"members":[0,1,5],"assignment":[[0,1,0],[1,1,1],[5,3,0]]}"#
        );
        let back = from_json(json.as_bytes()).unwrap();
        assert_eq!(back.version(), 9);
        assert_eq!(back.ring().members(), &[0, 1, 5]);
        for key in 0..5_000u64 {
            assert_eq!(back.owner(key), p.owner(key));
        }
    }

    #[test]
    fn bad_values_are_refused_not_panicked_on() {
        for bad in [
            "",
            "[]",
            r#"{"version":1}"#,
            r#"{"version":0,"vnodes":8,"members":[0],"assignment":[[0,1,0]]}"#,
            r#"{"version":1,"vnodes":0,"members":[0],"assignment":[[0,1,0]]}"#,
            r#"{"version":1,"vnodes":99999999,"members":[0],"assignment":[[0,1,0]]}"#,
            r#"{"version":1,"vnodes":8,"members":[],"assignment":[]}"#,
            r#"{"version":1,"vnodes":8,"members":[0,0],"assignment":[[0,1,0]]}"#,
            r#"{"version":1,"vnodes":8,"members":[4000000000],"assignment":[[4000000000,1,0]]}"#,
            r#"{"version":1,"vnodes":8,"members":[0,1],"assignment":[[0,1,0]]}"#,
            r#"{"version":1,"vnodes":8,"members":[0],"assignment":[[0,1,0],[3,1,1]]}"#,
            r#"{"version":1,"vnodes":8,"members":[0],"assignment":[[0,70000,0]]}"#,
        ] {
            assert!(from_json(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
