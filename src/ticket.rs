//! Websocket tickets: what `rtm.connect` and `POST /v1/tickets` hand out in
//! the websocket URL.
//!
//! A ticket is `base64url(user ‖ team ‖ expires ‖ nonce ‖ tag)` where the
//! first four are big-endian `u64`s and `tag` is the first 16 bytes of
//! HMAC-SHA256 over them with the node's ticket key. Any shard verifies it
//! locally (no store round trip); single use is enforced by the user's home
//! shard, which remembers each nonce until the ticket would have expired.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::ids::Id;

const BODY_BYTES: usize = 32;
const TAG_BYTES: usize = 16;
const TICKET_BYTES: usize = BODY_BYTES + TAG_BYTES;

/// A verified ticket's contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    pub user: Id,
    pub team: Id,
    pub expires_unix_secs: u64,
    pub nonce: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("malformed ticket")]
    Malformed,
    #[error("bad ticket signature")]
    BadSignature,
    #[error("ticket expired")]
    Expired,
}

/// The node's ticket signing key. Shared read-only by every shard.
#[derive(Clone)]
pub struct TicketKey([u8; 32]);

impl TicketKey {
    pub fn random() -> TicketKey {
        TicketKey(rand::random())
    }

    /// The key every node of a cluster derives from a secret they share (the
    /// admin token), so a ticket from one node opens a websocket on any.
    pub fn derived_from(secret: &str) -> TicketKey {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"transponder websocket tickets\0");
        h.update(secret.as_bytes());
        TicketKey::from_bytes(h.finalize().into())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> TicketKey {
        TicketKey(bytes)
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length")
    }

    /// The MAC of a node link's hello (`cluster/link/frame.rs`): proves
    /// the connecting node holds the cluster's shared secret, over the
    /// accepting node's fresh challenge, so a recorded hello cannot be
    /// replayed. Domain-separated from tickets.
    pub fn link_hello_mac(&self, nonce: &[u8; 16], node: u16, epoch: u64) -> [u8; 32] {
        self.link_hello(nonce, node, epoch)
            .finalize()
            .into_bytes()
            .into()
    }

    /// Checks a link hello's MAC, in constant time.
    pub fn verify_link_hello(
        &self,
        nonce: &[u8; 16],
        node: u16,
        epoch: u64,
        tag: &[u8; 32],
    ) -> bool {
        self.link_hello(nonce, node, epoch)
            .verify_slice(tag)
            .is_ok()
    }

    fn link_hello(&self, nonce: &[u8; 16], node: u16, epoch: u64) -> Hmac<Sha256> {
        let mut mac = self.mac();
        mac.update(b"transponder node link hello\0");
        mac.update(nonce);
        mac.update(&node.to_be_bytes());
        mac.update(&epoch.to_be_bytes());
        mac
    }

    pub fn sign(&self, t: &Ticket) -> String {
        let mut raw = [0u8; TICKET_BYTES];
        raw[0..8].copy_from_slice(&t.user.raw().to_be_bytes());
        raw[8..16].copy_from_slice(&t.team.raw().to_be_bytes());
        raw[16..24].copy_from_slice(&t.expires_unix_secs.to_be_bytes());
        raw[24..32].copy_from_slice(&t.nonce.to_be_bytes());
        let mut mac = self.mac();
        mac.update(&raw[..BODY_BYTES]);
        let tag = mac.finalize().into_bytes();
        raw[BODY_BYTES..].copy_from_slice(&tag[..TAG_BYTES]);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// A fresh single-use websocket URL for `user` of `team` on the gateway
    /// at `base` (`ws://host:port`, a trailing `/` allowed): what
    /// rtm.connect hands out, valid for [`crate::limits::TICKET_TTL_SECS`].
    /// Every node of a cluster shares the key, so any of them may mint a
    /// URL for any other's gateway.
    pub fn websocket_url(&self, base: &str, user: Id, team: Id) -> String {
        let ticket = Ticket {
            user,
            team,
            expires_unix_secs: unix_secs_now() + crate::limits::TICKET_TTL_SECS,
            nonce: rand::random(),
        };
        format!(
            "{}/websocket/{}",
            base.trim_end_matches('/'),
            self.sign(&ticket)
        )
    }

    /// Checks the signature (in constant time) and the expiry. Single use is
    /// checked by the caller with the user's home shard.
    pub fn verify(&self, s: &str, now_unix_secs: u64) -> Result<Ticket, TicketError> {
        if s.len() > 2 * TICKET_BYTES {
            return Err(TicketError::Malformed);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| TicketError::Malformed)?;
        if raw.len() != TICKET_BYTES {
            return Err(TicketError::Malformed);
        }
        let mut mac = self.mac();
        mac.update(&raw[..BODY_BYTES]);
        mac.verify_truncated_left(&raw[BODY_BYTES..])
            .map_err(|_| TicketError::BadSignature)?;
        let word = |i: usize| u64::from_be_bytes(raw[i * 8..i * 8 + 8].try_into().unwrap());
        let user = Id::from_raw(word(0)).ok_or(TicketError::Malformed)?;
        let team = Id::from_raw(word(1)).ok_or(TicketError::Malformed)?;
        let t = Ticket {
            user,
            team,
            expires_unix_secs: word(2),
            nonce: word(3),
        };
        if t.expires_unix_secs < now_unix_secs {
            return Err(TicketError::Expired);
        }
        Ok(t)
    }
}

pub fn unix_secs_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOLDEN: &str = "TKPeQP_MQcRKJET6xv0B3wAAAAAAAAPoAAAAAAAAACqrp1hpdyXcGVDDsTutKrf7";

    fn ticket() -> Ticket {
        Ticket {
            user: Id::parse("U0G9QF9C6").unwrap(),
            team: Id::parse("T0001").unwrap(),
            expires_unix_secs: 1_000,
            nonce: 42,
        }
    }

    #[test]
    fn round_trip() {
        let k = TicketKey::from_bytes([7; 32]);
        let s = k.sign(&ticket());
        assert_eq!(k.verify(&s, 999), Ok(ticket()));
        assert_eq!(k.verify(&s, 1_000), Ok(ticket()));
    }

    #[test]
    fn golden_encoding() {
        // Pins the wire format: a change here breaks tickets issued by other
        // nodes (and by this one before a restart).
        let k = TicketKey::from_bytes([7; 32]);
        assert_eq!(k.sign(&ticket()), GOLDEN);
    }

    #[test]
    fn expired() {
        let k = TicketKey::from_bytes([7; 32]);
        assert_eq!(
            k.verify(&k.sign(&ticket()), 1_001),
            Err(TicketError::Expired)
        );
    }

    #[test]
    fn tampered_or_foreign() {
        let k = TicketKey::from_bytes([7; 32]);
        let s = k.sign(&ticket());
        let other = TicketKey::from_bytes([8; 32]);
        assert_eq!(other.verify(&s, 0), Err(TicketError::BadSignature));
        let mut raw = URL_SAFE_NO_PAD.decode(&s).unwrap();
        raw[3] ^= 1;
        assert_eq!(
            k.verify(&URL_SAFE_NO_PAD.encode(&raw), 0),
            Err(TicketError::BadSignature)
        );
        assert_eq!(k.verify("abc", 0), Err(TicketError::Malformed));
        assert_eq!(k.verify("!!!!", 0), Err(TicketError::Malformed));
        assert_eq!(k.verify(&"A".repeat(500), 0), Err(TicketError::Malformed));
    }
}
