//! Routes each mesh message to the role that handles it: the node gives
//! this function to every shard's runtime ([`crate::shard::Handlers`]).
//! Reading this match is the quickest way to see which role owns which
//! journey.

use std::rc::Rc;

use crate::cluster::relay;
use crate::ids::Id;
use crate::placement::Addr;
use crate::shard::message::{Msg, Pong, ShardStats};
use crate::shard::{Handlers, Shard};
use crate::{channel, directory, gateway, presence};

/// The handlers every shard of a single node runs.
pub const HANDLERS: Handlers = Handlers {
    dispatch,
    after_batch: gateway::request_flush,
    send_remote: no_other_nodes,
};

/// The handlers every shard of a clustered node runs: other nodes are
/// reached over node links.
pub const CLUSTER_HANDLERS: Handlers = Handlers {
    send_remote: crate::cluster::link::send,
    ..HANDLERS
};

/// A single node has no other node to send to: a placement naming one is a
/// bug.
fn no_other_nodes(_: &Shard, to: Addr, msg: Msg) {
    tracing::error!(
        ?to,
        ?msg,
        "a message for another node on a single node: dropped"
    );
}

/// Handles one message from shard `from` (of this node or another). Never
/// waits.
pub fn dispatch(shard: &Rc<Shard>, from: Addr, msg: Msg) {
    // Alone, a node has no placement to wait for, no relays and no other
    // owners: what every event makes (a publish, then a delivery per
    // gateway shard) goes straight to its handler, not moved (184 bytes)
    // into and out of each of the steps below, which would all hand it
    // back unchanged.
    if !shard.clustered() && matches!(msg, Msg::Publish { .. } | Msg::Deliver { .. }) {
        return serve(shard, from, msg);
    }
    // In a cluster, nothing that depends on the placement is acted on with
    // an older one than the node has heard of.
    let Some((from, msg)) = channel::ownership::park_if_behind(shard, from, msg) else {
        return;
    };
    let Some(msg) = regroup_subscription(shard, from, msg) else {
        return;
    };
    // A relay's business first: what a local gateway asks of a channel
    // owned elsewhere, and what the owner sends back.
    let msg = match relay_route(shard, from, msg) {
        Some(msg) => msg,
        None => return,
    };
    // In a cluster, what an owner serves waits until it is ready here (its
    // ownership claimed, its state loaded), or goes on to its new owner.
    let Some((from, msg)) = channel::ownership::gate(shard, from, msg) else {
        return;
    };
    serve(shard, from, msg);
}

/// A local gateway's subscription whose channels have several owners as
/// this shard sees them: the gateway grouped them by owner on the placement
/// it had, and took a new placement later than this shard did (a client
/// that reconnects during a failover). Each owner's part goes on to the
/// shard of this node that serves it (this one included), as if the
/// gateway had sent it so: the gateway counts the answers per channel, so
/// the split is exact. Everything else is handed back.
fn regroup_subscription(shard: &Rc<Shard>, from: Addr, msg: Msg) -> Option<Msg> {
    let groups = match &msg {
        Msg::Subscribe {
            channels,
            relay_tag: None,
            resync: false,
            ..
        } if from.node == shard.node_id => shard.group_by_owner_addr(channels.iter().copied()),
        _ => return Some(msg),
    };
    if groups.len() < 2 {
        return Some(msg);
    }
    let Msg::Subscribe {
        user,
        conns,
        since,
        notify,
        ..
    } = msg
    else {
        unreachable!("matched above");
    };
    // Several channels: a connection's first subscription, never a live
    // join's (one channel, and the only kind with `notify`).
    debug_assert!(notify.is_none(), "a live join spans owners");
    for (_, channels) in groups {
        let target = shard.owner(channels[0]);
        let part = Msg::Subscribe {
            user,
            conns: conns.clone(),
            channels,
            since,
            notify: None,
            relay_tag: None,
            resync: false,
        };
        if target == shard.id {
            dispatch(shard, from, part);
        } else {
            shard.send(
                target,
                Msg::PassedOn {
                    from,
                    msg: Box::new(part),
                },
            );
        }
    }
    None
}

/// Routes what concerns a relay (on a node that does not own the channel)
/// and hands back everything else.
fn relay_route(shard: &Rc<Shard>, from: Addr, msg: Msg) -> Option<Msg> {
    let local = from.node == shard.node_id;
    match msg {
        Msg::Subscribe {
            user,
            conns,
            channels,
            since,
            notify,
            relay_tag: None,
            resync: false,
        } if local && relayed_from(shard, from, &channels).is_some() => {
            let owner = relayed_from(shard, from, &channels).expect("checked");
            relay::on_subscribe(
                shard, from.core, owner, user, conns, channels, since, notify,
            );
            None
        }
        Msg::Unsubscribe { channels } if local => {
            let (owned, relayed): (Vec<Id>, Vec<Id>) = channels
                .into_iter()
                .partition(|&c| shard.owner_addr(c) == shard.here(shard.id));
            if !relayed.is_empty() {
                relay::on_unsubscribe(shard, from.core, relayed);
            }
            (!owned.is_empty()).then_some(Msg::Unsubscribe { channels: owned })
        }
        // What a channel server of another node sends to its relay here.
        Msg::Deliver {
            channel,
            frame,
            exclude,
            ts,
        } if !local => {
            relay::on_deliver(shard, channel, frame, exclude, ts);
            None
        }
        Msg::SubscribeAck {
            channels,
            heads,
            refused,
            replay,
            resync,
            relay_tag,
            ..
        } if !local => {
            relay::on_subscribe_ack(
                shard, from, channels, heads, refused, replay, resync, relay_tag,
            );
            None
        }
        Msg::Unwatch { channel, user } if !local => {
            relay::on_unwatch(shard, channel, user);
            None
        }
        Msg::LinkChanged { node } if local => {
            crate::cluster::on_link_changed(shard, node);
            None
        }
        // Local gateways handed over by a shard that served them before a
        // new placement: to whoever serves the channel here now.
        Msg::Adopt {
            channel,
            gateways,
            since,
        } => {
            let target = shard.owner(channel);
            if target != shard.id {
                shard.send(
                    target,
                    Msg::Adopt {
                        channel,
                        gateways,
                        since,
                    },
                );
                None
            } else if shard.owner_addr(channel) != shard.here(shard.id) {
                relay::on_adopt(shard, channel, gateways, since);
                None
            } else {
                Some(Msg::Adopt {
                    channel,
                    gateways,
                    since,
                })
            }
        }
        other => Some(other),
    }
}

/// Handles a message whose owner (or gateway) is this shard, ready now.
fn serve(shard: &Rc<Shard>, from: Addr, msg: Msg) {
    match msg {
        // The runtime completes answers and unwraps messages passed on
        // itself (`shard::receive`).
        Msg::Reply { req, .. } => {
            tracing::error!(req, ?from, "an answer reached the role dispatcher");
        }
        Msg::PassedOn { from: inner, .. } => {
            tracing::error!(
                ?from,
                ?inner,
                "a wrapped message reached the role dispatcher"
            );
        }
        Msg::LinkChanged { node } => {
            tracing::error!(?from, node, "a link change from another node");
        }

        // user's home shard
        Msg::ConnOpen {
            reply,
            user,
            nonce,
            expires_unix_secs,
        } => presence::on_conn_open(shard, from, reply, user, nonce, expires_unix_secs),
        Msg::ConnClosed { user } => presence::on_conn_closed(shard, from, user),
        Msg::ReportConns { user, conns } => presence::on_report_conns(shard, from, user, conns),
        Msg::WatchPresence {
            users,
            watch,
            snapshot,
        } => presence::on_watch(shard, from, users, watch, snapshot),
        Msg::QueryPresence { reply, users } => presence::on_query(shard, reply, users),
        Msg::PresenceDetail { reply, user } => presence::on_detail(shard, reply, user),
        Msg::SetAway { reply, user, away } => {
            presence::set_manual_away(shard, user, away);
            shard.reply(reply, Ok(()));
        }
        Msg::Authenticate {
            reply,
            user,
            secret_hash,
        } => directory::on_authenticate(shard, reply, user, secret_hash),
        Msg::CreateUser { reply, user } => directory::on_create_user(shard, reply, user),
        Msg::LookupUser { reply, user } => directory::on_lookup_user(shard, reply, user),
        Msg::SetUserChannel {
            reply,
            user,
            channel,
            member,
        } => directory::on_set_user_channel(shard, reply, user, channel, member),

        // channel server
        Msg::Subscribe {
            user,
            conns,
            channels,
            since,
            notify,
            relay_tag,
            resync,
        } => channel::on_subscribe(
            shard, from, user, conns, channels, since, notify, relay_tag, resync,
        ),
        Msg::Unsubscribe { channels } => channel::on_unsubscribe(shard, from, channels),
        Msg::Publish {
            reply,
            channel,
            body,
            persist,
            sender,
            exclude,
        } => channel::on_publish(shard, from, reply, channel, body, persist, sender, exclude),
        Msg::CreateChannel { reply, channel } => channel::on_create(shard, reply, channel),
        Msg::ChangeMember {
            reply,
            channel,
            user,
            join,
        } => channel::membership::on_change(shard, reply, channel, user, join),
        Msg::Adopt {
            channel,
            gateways,
            since,
        } => channel::on_adopt(shard, channel, gateways, since),
        Msg::Schedule {
            channel,
            post_at_secs,
            id,
        } => crate::schedule::on_schedule(channel, post_at_secs, id),

        // gateway
        Msg::Deliver {
            channel,
            frame,
            exclude,
            ts: _,
        } => gateway::on_deliver(shard, channel, frame, exclude),
        Msg::SubscribeAck {
            conns,
            channels,
            heads: _,
            refused,
            replay,
            resync,
            notify,
            relay_tag: _,
        } => gateway::on_subscribe_ack(
            shard, from.core, conns, channels, refused, replay, resync, notify,
        ),
        Msg::Unwatch { channel, user } => gateway::on_unwatch(shard, from.core, channel, user),
        Msg::LiveJoin {
            reply,
            user,
            channel,
        } => gateway::on_live_join(shard, reply, user, channel),
        Msg::PresenceChanged {
            users,
            active,
            only,
        } => gateway::on_presence_changed(shard, users, active, only),
        Msg::Drain { close_code } => gateway::on_drain(shard, close_code),

        // control
        Msg::Stats { reply } => shard.reply(reply, Box::new(stats(shard))),
        Msg::Ping { reply } => shard.reply(reply, Pong),
    }
}

/// The owner of `channels` when a local gateway shard asks this shard to
/// relay them from another node (`None`: this shard owns them). A gateway
/// groups a subscription by owner, so the first channel speaks for all.
fn relayed_from(shard: &Shard, from: Addr, channels: &[Id]) -> Option<Addr> {
    let first = *channels.first()?;
    let owner = shard.owner_addr(first);
    debug_assert!(
        channels.iter().all(|&c| shard.owner_addr(c) == owner),
        "a subscription spans owners"
    );
    (from.node == shard.node_id && owner.node != shard.node_id).then_some(owner)
}

/// This shard's counters.
pub fn stats(shard: &Shard) -> ShardStats {
    let gw = gateway::this_shard().borrow();
    let cs = channel::this_shard().borrow();
    let ps = presence::this_shard().borrow();
    ShardStats {
        shard: shard.id,
        connections: gw.connections() as u64,
        channels: cs.len() as u64,
        subscriptions: cs.subscriptions() as u64,
        queue_bytes: gw.queued_bytes() as u64,
        events_in: shard.counters.events_in.get(),
        events_out: shard.counters.events_out.get(),
        deliveries: shard.counters.deliveries.get(),
        slow_consumers: shard.counters.slow_consumers.get(),
        users: directory::this_shard().borrow().users() as u64,
        online_users: ps.online() as u64,
        presence_users: ps.tracked() as u64,
        mesh_sent: shard.mesh.sent(),
        mesh_received: shard.mesh.received(),
        outbox_len: shard.mesh.outbox_len() as u64,
        scheduled_pending: crate::schedule::this_shard().borrow().len() as u64,
        links: crate::cluster::link::stats(),
    }
}
