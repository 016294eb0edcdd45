//! The shard's budget of bytes for work nobody has authenticated yet.
//!
//! Before a request is authenticated, its bytes are an attacker's to choose.
//! Every listener of a shard charges what such work may hold to one
//! per-shard budget ([`crate::limits::UNAUTHENTICATED_BYTES_MAX_DEFAULT`],
//! `--max-unauthenticated-bytes`):
//!
//! - an HTTP connection (admin API, Web API) from its accept until one of
//!   its requests authenticates: its head buffer
//!   ([`crate::limits::HTTP_UNAUTHENTICATED_CONNECTION_BYTES`]);
//! - a Web API body read to find its token (no `Authorization` header):
//!   its declared length, at most [`crate::limits::API_TOKENLESS_BODY_BYTES_MAX`];
//! - a websocket upgrade request being read (the gateway's handshake buffer).
//!
//! No one source address may hold more than a share of it
//! ([`crate::limits::UNAUTHENTICATED_SOURCE_SHARE_DIVISOR`]): one client
//! opening connection after connection spends its own share, and everyone
//! else still gets in.
//!
//! Work the budget cannot cover is refused before it is read: 503,
//! `Retry-After`, `{"ok":false,"error":"server_busy"}`, connection closed.
//! Established connections that have authenticated charge nothing, so they
//! keep being served while the budget is spent.
//!
//! The budget is a thread-local: each shard is one executor on one thread,
//! so this is the shard's own counter, a `Cell` that is never shared and
//! never locked.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::marker::PhantomData;
use std::net::IpAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONNECTION, RETRY_AFTER};
use hyper::{Response, StatusCode};

use crate::limits;

/// The error code of a refusal.
pub const BUSY_CODE: &str = "server_busy";

/// Owned by its shard (one per executor thread); never crosses cores.
struct Budget {
    capacity_bytes: Cell<usize>,
    held_bytes: Cell<usize>,
    /// Bytes held per source address; an entry only while it holds some,
    /// so at most one per reservation.
    by_source: RefCell<HashMap<IpAddr, usize>>,
}

thread_local! {
    static BUDGET: Budget = Budget {
        capacity_bytes: Cell::new(limits::UNAUTHENTICATED_BYTES_MAX_DEFAULT),
        held_bytes: Cell::new(0),
        by_source: RefCell::new(HashMap::new()),
    };
}

/// Sets this shard's budget (at shard start, from the configuration).
pub fn set_capacity(bytes: usize) {
    BUDGET.with(|b| b.capacity_bytes.set(bytes));
}

/// Bytes this shard's unauthenticated work holds now.
pub fn held_bytes() -> usize {
    BUDGET.with(|b| b.held_bytes.get())
}

/// Charges `bytes` to this shard's budget, and to the share of `source`
/// (the peer's address, when the work has one), or `None` if they do not
/// fit.
pub fn try_reserve(source: Option<IpAddr>, bytes: usize) -> Option<Reservation> {
    // `then`, not `then_some`: a refused reservation must never exist, or
    // its drop would give back bytes it never took.
    take(source, bytes).then(|| Reservation {
        bytes,
        source,
        _shard: PhantomData,
    })
}

fn take(source: Option<IpAddr>, bytes: usize) -> bool {
    BUDGET.with(|b| {
        let capacity = b.capacity_bytes.get();
        let Some(total) = b.held_bytes.get().checked_add(bytes) else {
            return false;
        };
        if total > capacity {
            return false;
        }
        if let Some(source) = source {
            let share = capacity / limits::UNAUTHENTICATED_SOURCE_SHARE_DIVISOR;
            let mut by_source = b.by_source.borrow_mut();
            let held = by_source.entry(source).or_insert(0);
            match held.checked_add(bytes) {
                Some(mine) if mine <= share => *held = mine,
                _ => {
                    if *held == 0 {
                        by_source.remove(&source);
                    }
                    return false;
                }
            }
        }
        b.held_bytes.set(total);
        true
    })
}

fn give_back(b: &Budget, source: Option<IpAddr>, bytes: usize) {
    b.held_bytes.set(b.held_bytes.get() - bytes);
    if let Some(source) = source {
        let mut by_source = b.by_source.borrow_mut();
        let held = by_source
            .get_mut(&source)
            .expect("a source holds its reservation");
        *held -= bytes;
        if *held == 0 {
            by_source.remove(&source);
        }
    }
}

/// Bytes charged to the shard's budget, given back when dropped.
///
/// Owned by its shard; never crosses cores (it is `!Send`: it names this
/// thread's budget).
#[derive(Debug)]
pub struct Reservation {
    bytes: usize,
    source: Option<IpAddr>,
    _shard: PhantomData<*const ()>,
}

impl Reservation {
    /// Bytes charged.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Charges `extra` more bytes; `false` (nothing charged) if they do not
    /// fit.
    pub fn grow(&mut self, extra: usize) -> bool {
        let ok = take(self.source, extra);
        if ok {
            self.bytes += extra;
        }
        ok
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // `try_with`: a reservation dropped while the thread exits, after
        // the budget itself, has nothing left to give back to.
        let _ = BUDGET.try_with(|b| give_back(b, self.source, self.bytes));
    }
}

/// Marks a response to an authenticated request. The HTTP server stops
/// charging the connection's head buffer to the budget once it has sent
/// one: the client behind it holds a token.
#[derive(Clone, Copy, Debug)]
pub struct Authenticated;

/// `resp`, marked [`Authenticated`].
pub fn authenticated<B>(mut resp: Response<B>) -> Response<B> {
    resp.extensions_mut().insert(Authenticated);
    resp
}

/// Whether `resp` answers an authenticated request.
pub fn is_authenticated<B>(resp: &Response<B>) -> bool {
    resp.extensions().get::<Authenticated>().is_some()
}

fn busy_body() -> String {
    format!(r#"{{"ok":false,"error":"{BUSY_CODE}"}}"#)
}

/// The refusal as a hyper response (for a request whose head was read):
/// 503, `Retry-After`, and `Connection: close` (its body is never read).
pub fn busy_response() -> Response<Full<Bytes>> {
    let mut resp = super::json::error(StatusCode::SERVICE_UNAVAILABLE, BUSY_CODE);
    let headers = resp.headers_mut();
    headers.insert(
        RETRY_AFTER,
        HeaderValue::from(limits::UNAUTHENTICATED_RETRY_AFTER_SECS),
    );
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// The same refusal as raw HTTP/1.1 bytes, for connections refused before
/// anything was read (HTTP accept, websocket upgrade).
pub fn busy_bytes() -> Vec<u8> {
    let body = busy_body();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\n\
         Content-Type: {}\r\n\
         Content-Length: {}\r\n\
         Retry-After: {}\r\n\
         Connection: close\r\n\
         \r\n\
         {body}",
        super::json::JSON_UTF8,
        body.len(),
        limits::UNAUTHENTICATED_RETRY_AFTER_SECS,
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_bounded_and_given_back() {
        // A fresh thread: a budget of its own.
        std::thread::spawn(|| {
            set_capacity(100);
            let a = try_reserve(None, 60).expect("fits");
            assert!(try_reserve(None, 41).is_none(), "over the budget");
            let mut b = try_reserve(None, 40).expect("exactly fills it");
            assert_eq!(held_bytes(), 100);
            assert!(!b.grow(1), "nothing left");
            assert_eq!(b.bytes(), 40, "a refused growth charges nothing");
            drop(a);
            assert!(b.grow(10));
            assert_eq!((b.bytes(), held_bytes()), (50, 50));
            drop(b);
            assert_eq!(held_bytes(), 0);
            assert!(try_reserve(None, usize::MAX).is_none(), "no overflow");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn one_source_holds_at_most_its_share() {
        std::thread::spawn(|| {
            let divisor = limits::UNAUTHENTICATED_SOURCE_SHARE_DIVISOR;
            set_capacity(100 * divisor);
            let (greedy, other): (IpAddr, IpAddr) =
                ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
            let mut mine = try_reserve(Some(greedy), 100).expect("its share");
            assert!(try_reserve(Some(greedy), 1).is_none(), "past its share");
            assert!(!mine.grow(1), "growing past it too");
            let theirs = try_reserve(Some(other), 100).expect("another source still gets in");
            drop(mine);
            assert!(try_reserve(Some(greedy), 100).is_some(), "given back");
            drop(theirs);
            assert_eq!(held_bytes(), 0);
            BUDGET.with(|b| assert!(b.by_source.borrow().is_empty(), "no entry left"));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn the_refusal_is_well_formed() {
        let raw = String::from_utf8(busy_bytes()).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        let retry = limits::UNAUTHENTICATED_RETRY_AFTER_SECS;
        assert!(head.contains(&format!("Retry-After: {retry}")));
        assert_eq!(body, r#"{"ok":false,"error":"server_busy"}"#);
        let resp = busy_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[RETRY_AFTER], retry.to_string().as_str());
        assert_eq!(resp.headers()[CONNECTION], "close");
        assert!(!is_authenticated(&resp));
        assert!(is_authenticated(&authenticated(resp)));
    }
}
