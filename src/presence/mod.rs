//! The presence role: for the users homed on this shard, how many
//! connections each has on which gateway shard, manual away, and which
//! gateway shards watch them. A user is `active` while it has a connection
//! and has not set itself away. Changes go only to the gateway shards that
//! watch the user, which pass them only to the connections that asked.
//!
//! The home shard also enforces single use of websocket tickets: it
//! remembers every ticket nonce it admitted until the ticket would expire.
//!
//! In a cluster the home is the owner of the user's id in the placement
//! (any node), and the counts are kept per reporting gateway shard, so that
//! what one node reported can be forgotten alone: when a node leaves the
//! placement (it died), its connections are gone with it, and users that
//! were connected only there become away (`on_placement`). When a home
//! itself moves, the gateways report to the new one (`gateway::on_placement`).

use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

use crate::ids::{Id, IdMap};
use crate::placement::{Addr, NodeId, Placement};
use crate::shard::message::{Msg, Opened, PresenceDetail, Refusal, ReplyTo, Snapshot};
use crate::shard::set::ShardSet;
use crate::shard::Shard;
use crate::ticket::unix_secs_now;

/// One user's presence on its home shard.
/// Owned by its shard; never crosses cores.
#[derive(Default)]
struct UserPresence {
    /// Live connections per gateway shard, of any node (few entries: a user
    /// has few connections).
    conns: Vec<(Addr, u32)>,
    manual_away: bool,
    /// Gateway shards (of any node) that watch the user's presence.
    watchers: ShardSet,
}

impl UserPresence {
    fn connections(&self) -> u32 {
        self.conns.iter().map(|(_, n)| n).sum()
    }

    fn active(&self) -> bool {
        self.connections() > 0 && !self.manual_away
    }

    /// Nothing worth keeping: no connection, no manual away, no watcher.
    fn is_idle(&self) -> bool {
        self.connections() == 0 && !self.manual_away && self.watchers.is_empty()
    }
}

crate::shard::local::shard_local!(PresenceServer);

/// Owned by its shard; never crosses cores.
#[derive(Default)]
pub struct PresenceServer {
    users: IdMap<UserPresence>,
    /// Admitted ticket nonces and when they expire (unix seconds).
    used_tickets: HashMap<u64, u64>,
}

impl PresenceServer {
    pub fn online(&self) -> usize {
        self.users.values().filter(|u| u.active()).count()
    }

    /// Users with an entry: connected, manually away, or watched.
    pub fn tracked(&self) -> usize {
        self.users.len()
    }

    pub fn is_active(&self, user: Id) -> bool {
        self.users.get(&user).is_some_and(UserPresence::active)
    }

    pub fn connections(&self, user: Id) -> u32 {
        self.users.get(&user).map_or(0, UserPresence::connections)
    }

    /// Gateway shards (of any node) holding live connections of `user`.
    pub fn gateways_of(&self, user: Id) -> Vec<Addr> {
        self.users
            .get(&user)
            .map(|u| {
                u.conns
                    .iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(s, _)| *s)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Forgets what the gateway shards of `gone` nodes reported: their
    /// connections and their watches. Returns the users this made away,
    /// with the watchers left to tell (forgetting connections never makes
    /// anyone active).
    fn forget_nodes(&mut self, me: NodeId, gone: &BTreeSet<NodeId>) -> Vec<(Id, ShardSet)> {
        let mut now_away = Vec::new();
        self.users.retain(|&user, p| {
            let before = p.active();
            p.conns.retain(|(g, _)| !gone.contains(&g.node));
            let dead: Vec<Addr> = p
                .watchers
                .iter(me)
                .filter(|w| gone.contains(&w.node))
                .collect();
            for w in dead {
                p.watchers.remove(me, w);
            }
            if before && !p.active() {
                now_away.push((user, p.watchers.clone()));
            }
            !p.is_idle()
        });
        now_away
    }

    /// Claims a ticket nonce; false if it was used already.
    fn claim_ticket(&mut self, nonce: u64, expires_unix_secs: u64) -> bool {
        self.used_tickets.insert(nonce, expires_unix_secs).is_none()
    }

    /// Forgets the nonces of expired tickets: a replay of an expired ticket
    /// fails on its expiry, so only live ones need remembering. Called
    /// every [`TICKET_PRUNE_INTERVAL`] by [`prune_tickets_forever`].
    pub fn prune_tickets(&mut self, now_unix_secs: u64) {
        self.used_tickets.retain(|_, exp| *exp >= now_unix_secs);
        if self.used_tickets.capacity() > 4 * self.used_tickets.len().max(1024) {
            self.used_tickets.shrink_to_fit();
        }
    }
}

/// A new placement: forget the users homed elsewhere now (their gateways
/// report to the new home), and what the nodes that left the placement
/// reported. A node leaves when it failed (killed, paused, cut off): its
/// connections are gone, and kept counts would leave a user connected only
/// there active for ever; its watchers are gone too, and changes sent to
/// them would wait on a link that never comes back. Users that became away
/// are announced to the watchers left. (A node that was placed out but
/// lives on reports all of its connections again: `gateway::on_placement`.)
pub fn on_placement(shard: &Shard, old: &Placement) {
    let here = shard.here(shard.id);
    let gone = shard.placement().nodes_gone_since(old);
    let mut ps = this_shard().borrow_mut();
    ps.users.retain(|&u, _| shard.owner_addr(u) == here);
    if gone.is_empty() {
        return;
    }
    let now_away = ps.forget_nodes(shard.node_id, &gone);
    drop(ps);
    tracing::info!(
        shard = shard.id,
        ?gone,
        away = now_away.len(),
        "forgot the connections of nodes that left"
    );
    // One message per watching gateway shard, not one per user.
    let mut by_watcher: HashMap<Addr, Vec<Id>> = HashMap::new();
    for (user, watchers) in now_away {
        for g in watchers.iter(shard.node_id) {
            by_watcher.entry(g).or_default().push(user);
        }
    }
    for (g, users) in by_watcher {
        shard.send_to(
            g,
            Msg::PresenceChanged {
                users,
                active: false,
                only: None,
            },
        );
    }
}

/// How often a shard forgets expired ticket nonces.
pub const TICKET_PRUNE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// The shard's ticket-nonce janitor; runs until the shard stops.
pub async fn prune_tickets_forever() {
    loop {
        glommio::timer::sleep(TICKET_PRUNE_INTERVAL).await;
        this_shard().borrow_mut().prune_tickets(unix_secs_now());
    }
}

/// Tells the watching gateways of `user` that it became active or away.
fn announce(shard: &Shard, user: Id, active: bool, watchers: ShardSet) {
    for g in watchers.iter(shard.node_id) {
        shard.send_to(
            g,
            Msg::PresenceChanged {
                users: vec![user],
                active,
                only: None,
            },
        );
    }
}

/// Changes `user`'s record with `f` and announces a change of state.
fn update(shard: &Shard, user: Id, f: impl FnOnce(&mut UserPresence)) {
    let mut ps = this_shard().borrow_mut();
    let p = ps.users.entry(user).or_default();
    let before = p.active();
    f(p);
    let after = p.active();
    let watchers = p.watchers.clone();
    if p.is_idle() {
        ps.users.remove(&user);
    }
    drop(ps);
    if before != after {
        announce(shard, user, after, watchers);
    }
}

pub fn on_conn_open(
    shard: &Rc<Shard>,
    from: Addr,
    reply: ReplyTo<Result<Opened, Refusal>>,
    user: Id,
    nonce: u64,
    expires: u64,
) {
    let dir = crate::directory::this_shard().borrow();
    let result = match dir.user(user) {
        None => Err(Refusal::UserNotFound),
        Some(_) if !this_shard().borrow_mut().claim_ticket(nonce, expires) => {
            Err(Refusal::TicketReused)
        }
        Some(u) => Ok(Opened {
            team: u.team,
            is_bot: u.is_bot,
            channels: u.channels.clone(),
        }),
    };
    drop(dir);
    if result.is_ok() {
        update(shard, user, |p| {
            match p.conns.iter_mut().find(|(s, _)| *s == from) {
                Some((_, n)) => *n += 1,
                None => p.conns.push((from, 1)),
            }
        });
    }
    shard.reply(reply, result);
}

/// A gateway says how many live connections of `user` it holds (this
/// shard became the user's home with a new placement).
pub fn on_report_conns(shard: &Rc<Shard>, from: Addr, user: Id, conns: u32) {
    update(shard, user, |p| {
        p.conns.retain(|(g, _)| *g != from);
        if conns > 0 {
            p.conns.push((from, conns));
        }
    });
}

pub fn on_conn_closed(shard: &Rc<Shard>, from: Addr, user: Id) {
    update(shard, user, |p| {
        if let Some(i) = p.conns.iter().position(|(s, _)| *s == from) {
            assert!(p.conns[i].1 > 0, "connection count underflow for {user}");
            p.conns[i].1 -= 1;
            if p.conns[i].1 == 0 {
                p.conns.swap_remove(i);
            }
        } else {
            // Also after this home forgot a node that left the placement
            // but lives on (paused, then woken): it reports again.
            tracing::warn!(%user, ?from, "close of a connection that is not counted");
        }
    });
}

/// Sets or clears manual away (users.setPresence).
pub fn set_manual_away(shard: &Rc<Shard>, user: Id, away: bool) {
    update(shard, user, |p| p.manual_away = away);
}

pub fn on_watch(shard: &Rc<Shard>, from: Addr, users: Vec<Id>, watch: bool, snapshot: Snapshot) {
    let mut active = Vec::new();
    let mut away = Vec::new();
    for &user in &users {
        // Watching an id that names no user keeps no state: it is away.
        if crate::directory::this_shard().borrow().user(user).is_none() {
            away.push(user);
            continue;
        }
        update(shard, user, |p| {
            if watch {
                p.watchers.insert(shard.node_id, from);
            } else {
                p.watchers.remove(shard.node_id, from);
            }
        });
        if this_shard().borrow().is_active(user) {
            active.push(user);
        } else {
            away.push(user);
        }
    }
    let only = match snapshot {
        Snapshot::Nobody => return,
        Snapshot::Conn(conn) => Some(conn),
        Snapshot::Watchers => None,
    };
    for (users, state) in [(active, true), (away, false)] {
        if !users.is_empty() {
            shard.send_to(
                from,
                Msg::PresenceChanged {
                    users,
                    active: state,
                    only,
                },
            );
        }
    }
}

pub fn on_detail(shard: &Rc<Shard>, reply: ReplyTo<PresenceDetail>, user: Id) {
    let ps = this_shard().borrow();
    let detail = match ps.users.get(&user) {
        Some(p) => PresenceDetail {
            active: p.active(),
            manual_away: p.manual_away,
            connections: p.connections(),
        },
        None => PresenceDetail {
            active: false,
            manual_away: false,
            connections: 0,
        },
    };
    drop(ps);
    shard.reply(reply, detail);
}

pub fn on_query(shard: &Rc<Shard>, reply: ReplyTo<Vec<(Id, bool)>>, users: Vec<Id>) {
    let ps = this_shard().borrow();
    let states = users.into_iter().map(|u| (u, ps.is_active(u))).collect();
    drop(ps);
    shard.reply(reply, states);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_are_single_use_until_they_expire() {
        let mut ps = PresenceServer::default();
        assert!(ps.claim_ticket(7, 100));
        assert!(!ps.claim_ticket(7, 100), "a second use is refused");
        ps.prune_tickets(100);
        assert!(
            !ps.claim_ticket(7, 100),
            "still remembered until it expires"
        );
        ps.prune_tickets(101);
        assert_eq!(ps.used_tickets.len(), 0);
    }

    #[test]
    fn a_gone_node_takes_its_connections_and_watchers_with_it() {
        let at = |node, core| Addr { node, core };
        let user = |n: u64| Id::parse(&format!("U{n:08}")).unwrap();
        let me = 1;
        let mut ps = PresenceServer::default();
        // A: connected on nodes 1 and 2. B: only on node 2, watched from
        // nodes 1 and 2. C: only watched, from node 2.
        let (a, b, c) = (user(1), user(2), user(3));
        ps.users.entry(a).or_default().conns = vec![(at(1, 0), 1), (at(2, 1), 2)];
        let pb = ps.users.entry(b).or_default();
        pb.conns = vec![(at(2, 0), 1)];
        pb.watchers.insert(me, at(1, 1));
        pb.watchers.insert(me, at(2, 0));
        ps.users.entry(c).or_default().watchers.insert(me, at(2, 1));

        let away = ps.forget_nodes(me, &BTreeSet::from([2]));

        assert_eq!(away.len(), 1, "only B went away");
        let (who, watchers) = &away[0];
        assert_eq!(*who, b);
        assert_eq!(watchers.iter(me).collect::<Vec<_>>(), vec![at(1, 1)]);
        assert!(ps.is_active(a), "A still has its node-1 connection");
        assert_eq!(ps.connections(a), 1);
        assert!(!ps.is_active(b));
        assert!(!ps.users.contains_key(&c), "nothing left of C");
        assert_eq!(ps.gateways_of(a), vec![at(1, 0)]);
    }
}
