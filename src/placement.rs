//! Placement: which shard of which node owns a channel (or is a user's
//! home), as one versioned, immutable value that a node swaps whole when the
//! cluster changes (docs/CLUSTER.md "Placement").
//!
//! A channel id hashes onto the [`Ring`] as on one node, but the ring's
//! members are *logical* numbers; the assignment maps each to a physical
//! [`Addr`] `(node, core)`. Growing the cluster adds logical members (the
//! ring moves about 1/(n+1) of the channels); replacing a failed node
//! reassigns its logical members to a spare (the ring does not change, so
//! only the failed node's channels move, all to the spare). On one node the
//! logical members are the shards `0..n`, each assigned to itself.
//!
//! The version is the cluster's *epoch*: every change bumps it, and messages
//! between nodes and writes to a shared store carry it, so an owner that
//! missed a change cannot act on its old view.

use std::collections::BTreeSet;
use std::fmt;

use crate::ring::{Ring, DEFAULT_VNODES};

/// A node's number in its cluster (stable across its restarts). A single
/// node is node 0.
pub type NodeId = u16;

/// Where a logical member runs: a node, and a shard (core) of it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Addr {
    pub node: NodeId,
    pub core: u32,
}

/// Why a placement could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlacementError {
    /// A ring member with no assignment: its channels would have no owner.
    Unassigned(u32),
    /// An assignment of a member the ring does not have.
    NotInRing(u32),
    /// The same member assigned twice.
    Duplicate(u32),
}

impl fmt::Display for PlacementError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlacementError::Unassigned(m) => write!(f, "ring member {m} has no assignment"),
            PlacementError::NotInRing(m) => write!(f, "member {m} is assigned but not in the ring"),
            PlacementError::Duplicate(m) => write!(f, "member {m} is assigned twice"),
        }
    }
}

/// A ring, the assignment of its members, and the version (epoch) of both.
/// Immutable: a change is a new `Placement`.
#[derive(Clone)]
pub struct Placement {
    ring: Ring,
    /// `assignment[m]` for logical member `m`; `None` for numbers not in the
    /// ring (members are small numbers CHARM hands out densely).
    assignment: Vec<Option<Addr>>,
    version: u64,
}

impl fmt::Debug for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Placement")
            .field("version", &self.version)
            .field("members", &self.ring.members().len())
            .finish()
    }
}

impl Placement {
    /// `ring` with `assignment` (member, where it runs), at `version`. Every
    /// ring member must be assigned exactly once, and nothing else.
    pub fn new(
        ring: Ring,
        assignment: &[(u32, Addr)],
        version: u64,
    ) -> Result<Placement, PlacementError> {
        let top = ring.members().iter().copied().max().unwrap_or(0) as usize;
        let mut table: Vec<Option<Addr>> = vec![None; top + 1];
        for &(m, addr) in assignment {
            if ring.members().binary_search(&m).is_err() {
                return Err(PlacementError::NotInRing(m));
            }
            let slot = &mut table[m as usize];
            if slot.is_some() {
                return Err(PlacementError::Duplicate(m));
            }
            *slot = Some(addr);
        }
        if let Some(&m) = ring
            .members()
            .iter()
            .find(|&&m| table[m as usize].is_none())
        {
            return Err(PlacementError::Unassigned(m));
        }
        Ok(Placement {
            ring,
            assignment: table,
            version,
        })
    }

    /// One node's placement: logical member `m` is shard `m` of `node`,
    /// version 1.
    pub fn single_node(node: NodeId, shards: u32) -> Placement {
        let members: Vec<u32> = (0..shards).collect();
        let assignment: Vec<(u32, Addr)> = members
            .iter()
            .map(|&m| (m, Addr { node, core: m }))
            .collect();
        Placement::new(Ring::new(&members, DEFAULT_VNODES), &assignment, 1)
            .expect("every member assigned once")
    }

    /// Where `key` (a packed id) is owned.
    #[inline]
    pub fn owner(&self, key: u64) -> Addr {
        let m = self.ring.owner(key);
        // Checked at construction: every ring member has an assignment.
        self.assignment[m as usize].expect("every ring member is assigned")
    }

    /// The epoch.
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Every (logical member, where it runs), by member.
    pub fn assignment(&self) -> impl Iterator<Item = (u32, Addr)> + '_ {
        self.assignment
            .iter()
            .enumerate()
            .filter_map(|(m, a)| a.map(|a| (m as u32, a)))
    }

    /// The nodes that run at least one member: the nodes in use.
    pub fn nodes(&self) -> BTreeSet<NodeId> {
        self.assignment().map(|(_, a)| a.node).collect()
    }

    /// The nodes `older` had in use and this placement does not: they
    /// failed (or were cut off and placed out), so what they said before
    /// no longer holds.
    pub fn nodes_gone_since(&self, older: &Placement) -> BTreeSet<NodeId> {
        let now = self.nodes();
        older
            .nodes()
            .into_iter()
            .filter(|n| !now.contains(n))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(node: NodeId, core: u32) -> Addr {
        Addr { node, core }
    }

    #[test]
    fn one_node_places_like_its_ring() {
        let p = Placement::single_node(0, 4);
        let ring = Ring::single_node(4);
        for key in 0..10_000u64 {
            assert_eq!(p.owner(key), addr(0, ring.owner(key)));
        }
        assert_eq!(p.version(), 1);
    }

    #[test]
    fn nodes_gone_are_those_no_member_runs_on_any_more() {
        let ring = Ring::new(&[0, 1, 2, 3], 8);
        let three = [
            (0, addr(1, 0)),
            (1, addr(1, 1)),
            (2, addr(2, 0)),
            (3, addr(3, 0)),
        ];
        let before = Placement::new(ring.clone(), &three, 1).unwrap();
        assert_eq!(before.nodes(), BTreeSet::from([1, 2, 3]));
        // Node 2 replaced by spare 4: node 2 is gone, the spare came.
        let replaced = [three[0], three[1], (2, addr(4, 0)), three[3]];
        let after = Placement::new(ring, &replaced, 2).unwrap();
        assert_eq!(after.nodes_gone_since(&before), BTreeSet::from([2]));
        assert!(before.nodes_gone_since(&before).is_empty());
    }

    #[test]
    fn every_member_is_assigned_once() {
        let ring = Ring::new(&[0, 1, 2], 8);
        let ok = [(0, addr(1, 0)), (1, addr(1, 1)), (2, addr(2, 0))];
        assert!(Placement::new(ring.clone(), &ok, 5).is_ok());
        assert_eq!(
            Placement::new(ring.clone(), &ok[..2], 5).unwrap_err(),
            PlacementError::Unassigned(2)
        );
        let extra = [ok[0], ok[1], ok[2], (7, addr(3, 0))];
        assert_eq!(
            Placement::new(ring.clone(), &extra, 5).unwrap_err(),
            PlacementError::NotInRing(7)
        );
        let twice = [ok[0], ok[1], ok[2], (1, addr(3, 0))];
        assert_eq!(
            Placement::new(ring, &twice, 5).unwrap_err(),
            PlacementError::Duplicate(1)
        );
    }

    #[test]
    fn replacing_a_node_moves_only_its_channels_all_to_the_spare() {
        // Nodes 1 and 2, two cores each; node 2 fails, spare node 3 takes
        // its logical members core for core.
        let ring = Ring::new(&[0, 1, 2, 3], DEFAULT_VNODES);
        let before = Placement::new(
            ring.clone(),
            &[
                (0, addr(1, 0)),
                (1, addr(1, 1)),
                (2, addr(2, 0)),
                (3, addr(2, 1)),
            ],
            7,
        )
        .unwrap();
        let after = Placement::new(
            ring,
            &[
                (0, addr(1, 0)),
                (1, addr(1, 1)),
                (2, addr(3, 0)),
                (3, addr(3, 1)),
            ],
            8,
        )
        .unwrap();
        for key in 0..20_000u64 {
            let (b, a) = (before.owner(key), after.owner(key));
            if b.node == 2 {
                assert_eq!(a, addr(3, b.core), "replaced core for core");
            } else {
                assert_eq!(a, b, "a survivor's channel never moves");
            }
        }
    }
}
