//! The protocols the load generator speaks: Transponder's Slack RTM over
//! websocket, NATS over websocket, Redis RESP over TCP, and HTTP/1.1 to
//! Transponder's admin publish route and Slack Web API. Each turns the bytes a server sends into
//! [`Unit`]s and knows how to encode a publish; sockets and websocket framing
//! live in `loadgen::conn`.

pub mod http;
pub mod nats;
pub mod resp;
pub mod slack;
pub mod webapi;
pub mod ws;

use crate::loadgen::mark::Mark;

/// What a server's bytes meant, owned so the caller can act on other
/// connections while holding it.
#[derive(Debug, PartialEq, Eq)]
pub enum Unit {
    /// The connection is set up: Slack's `hello`, NATS's first PONG after
    /// the subscriptions, Redis's last subscribe confirmation or PONG, or an
    /// HTTP connection that is open.
    Ready,
    /// A load-generator event arrived.
    Delivery(Mark),
    /// Slack `user_typing` from this user (packed id).
    Typing { user: u64 },
    /// Slack `presence_change` about this many users (batch form: several).
    Presence { users: u64 },
    /// `rtm.connect` answered with this websocket URL.
    Ticket(String),
    /// A publish was accepted.
    Ack,
    /// A publish was refused.
    Nack(String),
    /// Protocol bytes to send back (NATS PONG, the CONNECT after INFO).
    Send(Vec<u8>),
    /// The server ended the session (error or goodbye).
    Closed(String),
}

/// Per-connection parser state, one variant per protocol.
pub enum Codec {
    Slack,
    Nats(nats::Session),
    Redis(resp::Session),
    Http,
    WebApi,
}

impl Codec {
    /// True when the protocol rides inside websocket frames.
    pub fn over_websocket(&self) -> bool {
        matches!(self, Codec::Slack | Codec::Nats(_))
    }

    /// Consumes a prefix of `buf` (a byte stream: TCP for Redis and HTTP, the
    /// concatenated websocket payloads for NATS; one whole websocket message
    /// for Slack) and returns how many bytes it used.
    pub fn parse(&mut self, buf: &[u8], out: &mut Vec<Unit>) -> Result<usize, String> {
        match self {
            Codec::Slack => {
                slack::parse_message(buf, out);
                Ok(buf.len())
            }
            Codec::Nats(s) => s.parse(buf, out),
            Codec::Redis(s) => s.parse(buf, out),
            Codec::Http => http::parse(buf, out),
            Codec::WebApi => webapi::parse(buf, out),
        }
    }
}
