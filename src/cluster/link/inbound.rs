//! A link another node opened to this one: the challenge, the hello that
//! answers it (or the link ends: `frame`'s module notes), then every frame
//! until the link ends. A message goes to the shard it names: handled here
//! when that is this shard, otherwise passed over the mesh as
//! `Msg::PassedOn`, so per (sending shard, receiving shard) the order the
//! sender sent in is the order handled. Silence longer than
//! [`LINK_SILENCE_TIMEOUT`] (heartbeats stopped: the node is paused, or the
//! network lost it) ends the link like a close does.

use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::frame::{self, Frame, FrameReader, HELLO_BYTES_MAX};
use super::outbound::LINK_SILENCE_TIMEOUT;
use crate::placement::{Addr, NodeId};
use crate::shard::message::Msg;
use crate::shard::{receive, Shard};

/// Bytes read per call.
const READ_BYTES: usize = 64 * 1024;

/// Serves one accepted link until it ends; returns the node it came from,
/// if it said hello.
pub async fn serve(shard: &Rc<Shard>, mut stream: TcpStream) -> Option<NodeId> {
    let _ = stream.set_read_timeout(Some(LINK_SILENCE_TIMEOUT));
    let _ = stream.set_write_timeout(Some(LINK_SILENCE_TIMEOUT));
    let _ = stream.set_nodelay(true);
    // The challenge the hello must answer (`frame`'s module notes).
    let nonce: [u8; 16] = rand::random();
    let mut challenge = Vec::with_capacity(HELLO_BYTES_MAX);
    frame::encode_challenge(&mut challenge, &nonce);
    if stream.write_all(&challenge).await.is_err() {
        return None;
    }
    let mut reader = FrameReader::default();
    let mut frames = Vec::new();
    let mut buf = vec![0u8; READ_BYTES];
    let mut peer: Option<NodeId> = None;
    // What this link delivers counts toward its node's figures from the
    // hello on; the guard takes the link off the open count however the
    // loop ends.
    let mut counted: Option<OpenLink> = None;
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) => return peer,
            Ok(n) => n,
            Err(e) => {
                tracing::info!(?peer, "link read ended: {e}");
                return peer;
            }
        };
        if let Some(open) = &counted {
            open.read(n);
        }
        let fed = reader.feed(&buf[..n], &mut frames);
        for frame in frames.drain(..) {
            match (frame, peer) {
                (Frame::Hello { node, epoch, mac }, None) => {
                    if !shard
                        .node
                        .ticket_key
                        .verify_link_hello(&nonce, node, epoch, &mac)
                    {
                        tracing::warn!(
                            node,
                            "a link hello that does not verify (not a node of this cluster, \
                             or one with another admin token): closing"
                        );
                        return None;
                    }
                    if node == shard.node_id {
                        tracing::error!(node, "a link from a node with our own id: closing");
                        return None;
                    }
                    note_epoch(shard, node, epoch);
                    peer = Some(node);
                    let open = OpenLink::new(super::inbound_of(node));
                    open.read(n);
                    counted = Some(open);
                    (super::this_shard().borrow().report)(node, true);
                    crate::cluster::on_link(shard, node, true);
                }
                (Frame::Beat { epoch }, Some(node)) => note_epoch(shard, node, epoch),
                (
                    Frame::Message {
                        epoch,
                        from_core,
                        to_core,
                        msg,
                    },
                    Some(node),
                ) => {
                    note_epoch(shard, node, epoch);
                    if let Some(open) = &counted {
                        open.0.messages.set(open.0.messages.get() + 1);
                    }
                    route(shard, node, from_core, to_core, msg);
                }
                (frame, peer) => {
                    tracing::warn!(?peer, ?frame, "link protocol violation: closing");
                    return peer;
                }
            }
        }
        // What those messages queued for connections here goes out now, as
        // after a batch from the mesh.
        (shard.handlers.after_batch)();
        if let Err(e) = fed {
            tracing::warn!(?peer, "bad link input ({e}): closing");
            return peer;
        }
        if peer.is_none() && reader.buffered() > HELLO_BYTES_MAX {
            tracing::warn!("a link that sends more than a hello before its hello: closing");
            return None;
        }
        // Backpressure at the edge: while this shard's outboxes are
        // congested, stop reading (the peer's buffer fills, then its link
        // resets rather than this shard growing).
        while shard.mesh.congested() {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// One open link in its node's counters ([`super::Inbound`]): counted open
/// while it lives.
struct OpenLink(Rc<super::Inbound>);

impl OpenLink {
    fn new(counters: Rc<super::Inbound>) -> OpenLink {
        counters.open.set(counters.open.get() + 1);
        OpenLink(counters)
    }

    /// `n` bytes were read from the link just now.
    fn read(&self, n: usize) {
        self.0.bytes.set(self.0.bytes.get() + n as u64);
        self.0.last_heard.set(Some(std::time::Instant::now()));
    }
}

impl Drop for OpenLink {
    fn drop(&mut self) {
        self.0.open.set(self.0.open.get() - 1);
    }
}

/// Hands a message from shard `from_core` of `node` to local shard
/// `to_core`.
fn route(shard: &Rc<Shard>, node: NodeId, from_core: u32, to_core: u32, msg: Msg) {
    let from = Addr {
        node,
        core: from_core,
    };
    if to_core as usize >= shard.shards() {
        tracing::error!(?from, to_core, "a link message for a shard this node lacks");
        return;
    }
    if to_core == shard.id {
        receive::passed_on(shard, from, msg);
    } else {
        shard.send(
            to_core,
            Msg::PassedOn {
                from,
                msg: Box::new(msg),
            },
        );
    }
}

/// A peer on a newer epoch knows a placement this node has not seen yet:
/// the node's shards hold what depends on the placement until it arrives.
fn note_epoch(shard: &Shard, node: NodeId, epoch: u64) {
    if epoch > shard.epoch() {
        tracing::debug!(
            node,
            epoch,
            ours = shard.epoch(),
            "a peer is ahead of our epoch"
        );
        shard.heard_epoch(epoch);
    }
}
