//! Which registered nodes CHARM treats as failed, pure (docs/CLUSTER.md
//! "Failure").
//!
//! A node is gone when its registration is gone: its lease lapsed (it
//! stopped answering etcd for the lease's TTL) or it left. That alone takes
//! the TTL (2 s) after a crash. Faster: when a node's links die (a killed
//! process's sockets are closed by its kernel at once), the peers report it
//! (`suspect/<node>/<reporter>`, under the reporter's lease), and a node
//! still registered is **failed when a majority of the other in-use nodes
//! suspect it** — of one other node, that one; of two, both. Only reports
//! about the node's current registration count (the report carries the
//! lease it saw), so a node that restarts is not held to its old
//! incarnation's reports.
//!
//! The trade-off: reports act in milliseconds, but they are about links,
//! not about the node. A node whose links to a majority break while it
//! still reaches etcd (a partition between nodes) is evicted though it
//! runs; it gets members again as a new node once the reports are
//! withdrawn (its links came back) or it restarts. Requiring a majority
//! means one flaky link, or one confused reporter, cannot evict anyone in
//! a cluster of three or more. Two guards keep symmetric reports (A
//! suspects B and B suspects A) from evicting both: the CHARM leader is
//! never evicted on reports (it is the one talking to etcd right now), and
//! a node evicted no longer counts as a reporter. Nodes are evicted one at
//! a time, most-suspected first, and the rule is re-checked after each.
//!
//! The leader's exemption would leave a killed leader in place until its
//! lease lapses, and nobody to publish meanwhile. So the other nodes judge
//! the leader by the same rule ([`leader_failed`]), unless the leader
//! reported the judge (then the broken link is the leader's to judge), and
//! end its leadership when it fails it (`control/succession.rs`).

use std::collections::{BTreeMap, BTreeSet};

use crate::placement::NodeId;

/// A registered node as the failure rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub id: NodeId,
    /// The lease its registration is under (its incarnation).
    pub lease: i64,
    /// Holds members, or is active or draining: its reports count. Spares'
    /// do not (they have no links to watch yet).
    pub in_use: bool,
}

/// One report: `reporter` lost its link to `suspect`, whose registration
/// was under `lease`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suspicion {
    pub suspect: NodeId,
    pub reporter: NodeId,
    pub lease: i64,
}

/// The registered nodes to treat as failed, given the reports and the
/// leader's id.
pub fn failed(members: &[Member], reports: &[Suspicion], leader: NodeId) -> BTreeSet<NodeId> {
    evict(members, reports, Some(leader))
}

/// Whether the CHARM leader `leader` is itself failed on reports, as node
/// `me` sees it: the rule above without the leader's exemption, and only
/// if the leader has not reported `me` (a link broken between the two of
/// them is the leader's to judge, as it is without this). A killed
/// leader's peers see this at once; without it they would wait for its
/// lease to lapse before anyone could lead (`control/succession.rs`).
pub fn leader_failed(
    members: &[Member],
    reports: &[Suspicion],
    leader: NodeId,
    me: NodeId,
) -> bool {
    let my_lease = members.iter().find(|m| m.id == me).map(|m| m.lease);
    let reported_me = reports
        .iter()
        .any(|r| r.reporter == leader && r.suspect == me && Some(r.lease) == my_lease);
    !reported_me && evict(members, reports, None).contains(&leader)
}

/// The failure rule, with `exempt` (the leader) never evicted.
fn evict(members: &[Member], reports: &[Suspicion], exempt: Option<NodeId>) -> BTreeSet<NodeId> {
    let by_id: BTreeMap<NodeId, &Member> = members.iter().map(|m| (m.id, m)).collect();
    let mut failed = BTreeSet::new();
    loop {
        let mut worst: Option<(usize, NodeId)> = None;
        for m in members {
            if Some(m.id) == exempt || failed.contains(&m.id) {
                continue;
            }
            let voters = members
                .iter()
                .filter(|v| v.in_use && v.id != m.id && !failed.contains(&v.id))
                .count();
            let reporters: BTreeSet<NodeId> = reports
                .iter()
                .filter(|r| r.suspect == m.id && r.lease == m.lease && r.reporter != m.id)
                .filter(|r| {
                    by_id
                        .get(&r.reporter)
                        .is_some_and(|v| v.in_use && !failed.contains(&v.id))
                })
                .map(|r| r.reporter)
                .collect();
            let votes = reporters.len();
            if voters > 0 && votes * 2 > voters && worst.is_none_or(|(w, _)| votes > w) {
                worst = Some((votes, m.id));
            }
        }
        match worst {
            Some((_, id)) => {
                failed.insert(id);
            }
            None => return failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: NodeId) -> Member {
        Member {
            id,
            lease: 100 + i64::from(id),
            in_use: true,
        }
    }

    fn report(suspect: NodeId, reporter: NodeId) -> Suspicion {
        Suspicion {
            suspect,
            reporter,
            lease: 100 + i64::from(suspect),
        }
    }

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn two_nodes_the_other_ones_report_is_enough_but_never_against_the_leader() {
        let members = [m(1), m(2)];
        assert_eq!(failed(&members, &[report(2, 1)], 1), set(&[2]));
        assert_eq!(failed(&members, &[report(1, 2)], 1), set(&[]));
        // Symmetric reports: the leader's side wins.
        assert_eq!(
            failed(&members, &[report(1, 2), report(2, 1)], 1),
            set(&[2])
        );
    }

    #[test]
    fn a_leader_reported_by_a_majority_is_failed_unless_it_reported_the_judge() {
        let members = [m(1), m(2), m(3)];
        // Killed leader 1: both others report it.
        assert!(leader_failed(&members, &[report(1, 2), report(1, 3)], 1, 2));
        // One report is not a majority of two.
        assert!(!leader_failed(&members, &[report(1, 2)], 1, 2));
        // The leader reported node 2 back: a link between them broke, and
        // the leader judges that (it evicts 2), not 2.
        assert!(!leader_failed(
            &members,
            &[report(1, 2), report(1, 3), report(2, 1)],
            1,
            2
        ));
        // Two nodes: the other one's report is a majority, if the leader
        // has not reported it.
        let pair = [m(1), m(2)];
        assert!(leader_failed(&pair, &[report(1, 2)], 1, 2));
        assert!(!leader_failed(&pair, &[report(1, 2), report(2, 1)], 1, 2));
    }

    #[test]
    fn three_nodes_need_two_reports() {
        let members = [m(1), m(2), m(3)];
        assert_eq!(failed(&members, &[report(3, 2)], 1), set(&[]));
        assert_eq!(
            failed(&members, &[report(3, 2), report(3, 1)], 1),
            set(&[3])
        );
    }

    #[test]
    fn a_partitioned_node_is_evicted_and_its_own_reports_then_count_for_nothing() {
        // 3 cannot reach 1 or 2 (nor they it): 3 reports both.
        let members = [m(1), m(2), m(3)];
        let reports = [report(3, 1), report(3, 2), report(1, 3), report(2, 3)];
        assert_eq!(failed(&members, &reports, 1), set(&[3]));
        assert_eq!(failed(&members, &reports, 2), set(&[3]));
    }

    #[test]
    fn reports_about_an_earlier_incarnation_or_from_spares_do_not_count() {
        let members = [m(1), m(2)];
        let stale = Suspicion {
            lease: 1,
            ..report(2, 1)
        };
        assert_eq!(failed(&members, &[stale], 1), set(&[]));
        let spare = Member {
            in_use: false,
            ..m(3)
        };
        let members = [m(1), m(2), spare];
        assert_eq!(failed(&members, &[report(2, 3)], 1), set(&[]));
        // A spare can be reported (it must not be picked to replace anyone).
        assert_eq!(
            failed(&members, &[report(3, 2), report(3, 1)], 1),
            set(&[3])
        );
        // Reports by unknown nodes and self-reports are ignored.
        assert_eq!(failed(&members, &[report(2, 9), report(2, 2)], 1), set(&[]));
    }
}
