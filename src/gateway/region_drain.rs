//! The gateway's side of a region drain (docs/CLUSTER.md "Regions and
//! drains"): while this node's region drains, every client is sent to the
//! node of the target region that `cluster::region` picks for its user,
//! with a `goodbye` that names a fresh websocket URL there, then close 4001
//! (drain):
//!
//! - a websocket that arrives is answered so at once ([`refuse`]);
//! - the connections already here are sent away by a pacer per shard
//!   ([`start`]) at most at this shard's share of the drain's rate, so that
//!   the region as a whole never closes more than `rate` per second and the
//!   target region is not hit by every client at once.
//!
//! Nothing queued for a client is dropped: its goodbye queues behind it.
//! A client that reconnects with `since` (the `event_ts` of the last event
//! it saw) is replayed what it missed.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::net::TcpStream;

use super::connection::{write_and_close, Conn};
use super::{codes, frame, handshake};
use crate::cluster::region;
use crate::ids::Id;
use crate::limits;
use crate::shard::Shard;
use crate::ticket::Ticket;
use crate::ts::Ts;

/// Starts this shard's pacer for the drain of `generation`: it stops by
/// itself once that drain ends or another replaces it.
pub fn start(shard: &Rc<Shard>, generation: u64) {
    glommio::spawn_local(pace(shard.clone(), generation)).detach();
}

/// Sends this shard's connections away, oldest slots first, never faster
/// than its share of the rate: after `t` seconds of work, at most
/// `floor(t × share) + 1` goodbyes. While it has nobody to send away, no
/// allowance builds up for later.
async fn pace(shard: Rc<Shard>, generation: u64) {
    let mut started = Instant::now();
    let mut sent: u64 = 0;
    let mut cursor = 0usize;
    loop {
        let share = {
            let view = region::this_shard().borrow();
            let Some(drain) = view.pacing(generation) else {
                tracing::debug!(shard = shard.id, generation, "drain pacer stops");
                return;
            };
            region::rate_per_shard(drain.rate, view.nodes_in(&drain.region), shard.shards())
        };
        let allowed = (started.elapsed().as_secs_f64() * share) as u64 + 1;
        let due = allowed.saturating_sub(sent) as usize;
        let conns = match due {
            0 => Vec::new(),
            n => super::this_shard().borrow().next_open(&mut cursor, n),
        };
        if due > 0 && conns.is_empty() {
            started = Instant::now();
            sent = 0;
            glommio::timer::sleep(limits::DRAIN_IDLE_POLL).await;
            continue;
        }
        for conn in &conns {
            send_away(&shard, conn);
            sent += 1;
        }
        let next = started + Duration::from_secs_f64(sent as f64 / share);
        let wait = next.saturating_duration_since(Instant::now());
        glommio::timer::sleep(wait.max(limits::DRAIN_TICK)).await;
    }
}

/// `goodbye` naming where to go, then close 4001.
fn send_away(shard: &Shard, conn: &Rc<Conn>) {
    let goodbye = goodbye(shard, conn.user, conn.team, None);
    conn.say_goodbye_with(codes::CLOSE_DRAIN, frame::encode_text(&goodbye));
}

/// A websocket that arrived while the region drains: the upgrade is
/// completed only to say goodbye (with where to go, resuming from the
/// `since` it asked for) and close 4001.
pub async fn refuse(
    shard: &Rc<Shard>,
    mut stream: TcpStream,
    key: &str,
    ticket: &Ticket,
    since: Option<Ts>,
) {
    let goodbye = goodbye(shard, ticket.user, ticket.team, since);
    let mut bytes = handshake::accept_response(key);
    bytes.extend_from_slice(&frame::encode_text(&goodbye));
    bytes.extend_from_slice(&frame::encode_close(codes::CLOSE_DRAIN, "region draining"));
    write_and_close(&mut stream, &bytes).await;
}

/// `{"type":"goodbye","reconnect_url":…,"region":…}`: a fresh websocket URL
/// for `user` on its target node (with `since=` when known), and that
/// node's region. A plain `goodbye` when no target node is registered (the
/// client calls rtm.connect again, as it would anyway).
fn goodbye(shard: &Shard, user: Id, team: Id, since: Option<Ts>) -> Bytes {
    let Some((gateway, to)) = region::redirect(user) else {
        return Bytes::from_static(br#"{"type":"goodbye"}"#);
    };
    let mut url = shard.node.ticket_key.websocket_url(&gateway, user, team);
    if let Some(since) = since {
        url = format!("{url}?since={since}");
    }
    let v = serde_json::json!({"type": "goodbye", "reconnect_url": url, "region": to});
    Bytes::from(serde_json::to_vec(&v).expect("json"))
}
