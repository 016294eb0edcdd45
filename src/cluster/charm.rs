//! CHARM's placement rule, pure: from the placement in force and the
//! healthy nodes, the next placement, or `None` when nothing changes. No
//! etcd here (the leader in [`super::control`] feeds it and publishes what
//! it returns), so every rule is tested below, and every leader computes
//! the same answer from the same inputs.
//!
//! # The rules (docs/CLUSTER.md "Placement")
//!
//! 1. **First placement**: one logical member per core of each active node,
//!    numbered densely from 0 in (node id, core) order; version 1.
//! 2. **Keep**: a member whose node is healthy stays where it is. A node
//!    that came back with fewer cores keeps its members, core `c` moving to
//!    `c mod cores`.
//! 3. **Replace** (Slack's): the members of a node that is gone go to one
//!    spare, core for core (`c mod spare.cores`). The ring does not change,
//!    so only the failed node's channels move, all to the spare. Spares are
//!    taken in id order, one per failed node, failed nodes in id order.
//! 4. **Shrink**: with no spare left, a failed node's members leave the
//!    ring; its channels spread over the others.
//! 5. **Grow**: an active node that holds no member gets one new member per
//!    core, the lowest free numbers first; consistent hashing moves about
//!    1/(n+1) of the channels to it.
//! 6. **Drain** keeps members: draining is about gateways (clients go
//!    elsewhere), and moving channels off a draining node would double the
//!    disruption. A draining node that holds nothing is not given any.
//!
//! A node "holds" members when the placement in force assigns it some,
//! whatever its record says: a spare that took over is in use even before
//! its record says `active`.
//!
//! Every change bumps the version by one; no change gives `None`, so
//! re-running CHARM on the same inputs never publishes.

use std::collections::{BTreeMap, BTreeSet};

use super::record::{NodeRecord, NodeState};
use crate::placement::{Addr, NodeId, Placement};
use crate::ring::{Ring, DEFAULT_VNODES};

/// The next placement after `prev` for the healthy `nodes` (a node absent
/// from `nodes` is gone: its lease lapsed or the others reported it), or
/// `None` when it would be `prev` again or no node can hold a member.
pub fn next(prev: Option<&Placement>, nodes: &[NodeRecord]) -> Option<Placement> {
    let healthy: BTreeMap<NodeId, &NodeRecord> = nodes.iter().map(|n| (n.id, n)).collect();
    let mut table: BTreeMap<u32, Addr> = BTreeMap::new();
    if let Some(prev) = prev {
        let orphans = keep(prev, &healthy, &mut table);
        replace_or_shrink(orphans, &healthy, &mut table);
    }
    grow(&healthy, &mut table);
    if table.is_empty() {
        return None;
    }
    if let Some(prev) = prev {
        if prev.assignment().eq(table.iter().map(|(&m, &a)| (m, a))) {
            return None;
        }
    }
    let version = prev.map_or(1, |p| p.version() + 1);
    let vnodes = prev.map_or(DEFAULT_VNODES, |p| p.ring().vnodes());
    let members: Vec<u32> = table.keys().copied().collect();
    let assignment: Vec<(u32, Addr)> = table.into_iter().collect();
    let ring = Ring::new(&members, vnodes).with_version(version);
    let placement = Placement::new(ring, &assignment, version);
    debug_assert!(placement.is_ok(), "CHARM built an invalid placement");
    placement.ok()
}

/// Rule 2: keeps the members of healthy nodes in `table`; returns the
/// others by the node they were on, as (member, core).
fn keep(
    prev: &Placement,
    healthy: &BTreeMap<NodeId, &NodeRecord>,
    table: &mut BTreeMap<u32, Addr>,
) -> BTreeMap<NodeId, Vec<(u32, u32)>> {
    let mut orphans: BTreeMap<NodeId, Vec<(u32, u32)>> = BTreeMap::new();
    for (m, addr) in prev.assignment() {
        match healthy.get(&addr.node) {
            Some(node) => {
                let core = addr.core % node.cores.max(1);
                table.insert(m, Addr { core, ..addr });
            }
            None => orphans.entry(addr.node).or_default().push((m, addr.core)),
        }
    }
    orphans
}

/// Rules 3 and 4.
fn replace_or_shrink(
    orphans: BTreeMap<NodeId, Vec<(u32, u32)>>,
    healthy: &BTreeMap<NodeId, &NodeRecord>,
    table: &mut BTreeMap<u32, Addr>,
) {
    let holders = holders(table);
    let mut spares = healthy
        .values()
        .filter(|n| n.state == NodeState::Spare && !holders.contains(&n.id));
    for (_failed, members) in orphans {
        // Members of a failed node with no spare left are not put back:
        // they leave the ring.
        if let Some(spare) = spares.next() {
            for (m, core) in members {
                let core = core % spare.cores.max(1);
                table.insert(
                    m,
                    Addr {
                        node: spare.id,
                        core,
                    },
                );
            }
        }
    }
}

/// Rule 5.
fn grow(healthy: &BTreeMap<NodeId, &NodeRecord>, table: &mut BTreeMap<u32, Addr>) {
    let holders = holders(table);
    let mut free = FreeMembers::new(table.keys().copied().collect());
    for node in healthy.values() {
        if node.state != NodeState::Active || holders.contains(&node.id) {
            continue;
        }
        for core in 0..node.cores {
            table.insert(
                free.take(),
                Addr {
                    node: node.id,
                    core,
                },
            );
        }
    }
}

fn holders(table: &BTreeMap<u32, Addr>) -> BTreeSet<NodeId> {
    table.values().map(|a| a.node).collect()
}

/// Logical member numbers not in use, lowest first: numbers stay small and
/// dense (the placement's assignment table is indexed by them), and a node
/// that replaces one gone without a spare takes the same numbers, hence the
/// same arcs of the ring.
struct FreeMembers {
    used: BTreeSet<u32>,
    next: u32,
}

impl FreeMembers {
    fn new(used: BTreeSet<u32>) -> FreeMembers {
        FreeMembers { used, next: 0 }
    }

    fn take(&mut self) -> u32 {
        while self.used.contains(&self.next) {
            self.next += 1;
        }
        self.used.insert(self.next);
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: NodeId, cores: u32, state: NodeState) -> NodeRecord {
        NodeRecord {
            id,
            name: format!("n{id}"),
            link: None,
            gateway: String::new(),
            api: String::new(),
            admin: String::new(),
            cores,
            region: "default".into(),
            state,
        }
    }

    fn active(id: NodeId, cores: u32) -> NodeRecord {
        node(id, cores, NodeState::Active)
    }

    fn spare(id: NodeId, cores: u32) -> NodeRecord {
        node(id, cores, NodeState::Spare)
    }

    fn assignment(p: &Placement) -> Vec<(u32, NodeId, u32)> {
        p.assignment().map(|(m, a)| (m, a.node, a.core)).collect()
    }

    /// The keys a test places: splitmix64's stream, like real packed ids
    /// (which the ring hashes again anyway).
    fn keys(n: usize) -> impl Iterator<Item = u64> {
        let mut state = 0x5EED_u64;
        (0..n).map(move |_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            crate::ring::hash_key(state)
        })
    }

    #[test]
    fn the_first_placement_numbers_active_cores_densely_from_zero() {
        let nodes = [active(5, 2), spare(1, 4), active(2, 3)];
        let p = next(None, &nodes).unwrap();
        assert_eq!(p.version(), 1);
        assert_eq!(p.ring().vnodes(), DEFAULT_VNODES);
        assert_eq!(
            assignment(&p),
            [(0, 2, 0), (1, 2, 1), (2, 2, 2), (3, 5, 0), (4, 5, 1)]
        );
        assert!(
            next(None, &[spare(1, 2)]).is_none(),
            "spares alone place nothing"
        );
        assert!(next(None, &[]).is_none());
    }

    #[test]
    fn the_same_inputs_give_the_same_placement_and_no_change_gives_none() {
        let nodes = [active(1, 2), active(2, 2), spare(3, 2)];
        let a = next(None, &nodes).unwrap();
        let mut shuffled = nodes.clone();
        shuffled.reverse();
        let b = next(None, &shuffled).unwrap();
        assert_eq!(assignment(&a), assignment(&b));
        assert_eq!(a.version(), b.version());
        assert!(next(Some(&a), &nodes).is_none());
        assert!(next(Some(&a), &shuffled).is_none());
        // A spare's or a draining node's record changing is no change either.
        let mut draining = nodes.clone();
        draining[1].state = NodeState::Draining;
        assert!(next(Some(&a), &draining).is_none());
    }

    #[test]
    fn growing_from_n_to_n_plus_one_nodes_moves_about_one_in_n_plus_one() {
        const KEYS: usize = 100_000;
        for n in 2..=5u16 {
            let nodes: Vec<NodeRecord> = (1..=n).map(|id| active(id, 2)).collect();
            let before = next(None, &nodes).unwrap();
            let mut grown = nodes.clone();
            grown.push(active(n + 1, 2));
            let after = next(Some(&before), &grown).unwrap();
            assert_eq!(after.version(), before.version() + 1);
            let mut moved = 0;
            for key in keys(KEYS) {
                let (b, a) = (before.owner(key), after.owner(key));
                if a != b {
                    assert_eq!(a.node, n + 1, "a channel moved between old nodes");
                    moved += 1;
                }
            }
            let share = moved as f64 / KEYS as f64;
            let expected = 1.0 / f64::from(n + 1);
            println!(
                "{n} -> {} nodes: {share:.4} of {KEYS} keys moved (1/(n+1) = {expected:.4})",
                n + 1
            );
            assert!(
                (share - expected).abs() < 0.15 * expected,
                "{n} -> {}: moved {share:.4}, expected ~{expected:.4}",
                n + 1
            );
        }
    }

    #[test]
    fn a_spare_takes_over_a_failed_nodes_whole_share_core_for_core() {
        let nodes = [active(1, 2), active(2, 4), spare(3, 2), spare(4, 8)];
        let before = next(None, &nodes).unwrap();
        // Node 2 fails: the first spare by id (3, two cores) takes its four
        // members, core c on c mod 2.
        let after = next(Some(&before), &[active(1, 2), spare(3, 2), spare(4, 8)]).unwrap();
        assert_eq!(
            after.ring().members(),
            before.ring().members(),
            "the ring is unchanged"
        );
        assert_eq!(
            assignment(&after),
            [
                (0, 1, 0),
                (1, 1, 1),
                (2, 3, 0),
                (3, 3, 1),
                (4, 3, 0),
                (5, 3, 1)
            ]
        );
        let mut moved = 0;
        for key in keys(100_000) {
            let (b, a) = (before.owner(key), after.owner(key));
            if b.node == 2 {
                assert_eq!(
                    a.node, 3,
                    "all of the failed node's channels go to the spare"
                );
                moved += 1;
            } else {
                assert_eq!(a, b, "a survivor's channel never moves");
            }
        }
        assert!(moved > 0);
        // The spare now holds members: it is in use even while its record
        // still says spare, and its members stay put.
        assert!(next(Some(&after), &[active(1, 2), spare(3, 2), spare(4, 8)]).is_none());
    }

    #[test]
    fn with_no_spare_a_failed_nodes_members_leave_the_ring() {
        let nodes = [active(1, 1), active(2, 1), active(3, 1)];
        let before = next(None, &nodes).unwrap();
        let after = next(Some(&before), &[active(1, 1), active(3, 1)]).unwrap();
        assert_eq!(after.ring().members(), &[0, 2]);
        for key in keys(20_000) {
            let (b, a) = (before.owner(key), after.owner(key));
            if b.node != 2 {
                assert_eq!(a, b, "only the failed node's channels move");
            }
            assert_ne!(a.node, 2);
        }
        // A node joining later takes the lowest free numbers: the same arcs.
        let regrown = next(Some(&after), &[active(1, 1), active(3, 1), active(4, 1)]).unwrap();
        assert_eq!(assignment(&regrown), [(0, 1, 0), (1, 4, 0), (2, 3, 0)]);
        for key in keys(20_000) {
            let (b, a) = (before.owner(key), regrown.owner(key));
            assert_eq!(a.node == 4, b.node == 2);
        }
    }

    #[test]
    fn failed_nodes_take_spares_in_id_order_and_the_rest_shrink() {
        let nodes = [active(1, 1), active(2, 1), active(3, 1), spare(9, 1)];
        let before = next(None, &nodes).unwrap();
        let after = next(Some(&before), &[active(1, 1), spare(9, 1)]).unwrap();
        assert_eq!(assignment(&after), [(0, 1, 0), (1, 9, 0)]);
    }

    #[test]
    fn every_node_gone_publishes_nothing() {
        let before = next(None, &[active(1, 2)]).unwrap();
        assert!(next(Some(&before), &[]).is_none());
        assert!(
            next(Some(&before), &[spare(7, 2)]).is_some(),
            "a spare replaces even the last node"
        );
    }

    #[test]
    fn draining_nodes_keep_their_members_and_new_ones_get_none() {
        let before = next(None, &[active(1, 2), active(2, 2)]).unwrap();
        let nodes = [
            active(1, 2),
            node(2, 2, NodeState::Draining),
            node(3, 2, NodeState::Draining),
        ];
        assert!(next(Some(&before), &nodes).is_none());
    }

    #[test]
    fn a_node_back_with_fewer_cores_keeps_its_members_on_the_cores_it_has() {
        let before = next(None, &[active(1, 4)]).unwrap();
        let after = next(Some(&before), &[active(1, 2)]).unwrap();
        assert_eq!(
            assignment(&after),
            [(0, 1, 0), (1, 1, 1), (2, 1, 0), (3, 1, 1)]
        );
        assert_eq!(after.ring().members(), before.ring().members());
    }

    #[test]
    fn versions_only_go_up_and_vnodes_carry_over() {
        let ring = Ring::new(&[0], 64);
        let prev = Placement::new(ring, &[(0, Addr { node: 1, core: 0 })], 41).unwrap();
        let p = next(Some(&prev), &[active(1, 1), active(2, 1)]).unwrap();
        assert_eq!((p.version(), p.ring().vnodes()), (42, 64));
    }
}
