//! Rate limiting (docs/PROTOCOL.md: HTTP 429 with `Retry-After` in whole
//! seconds): a token bucket per (shard, token).
//!
//! Each shard keeps its own buckets (no cross-core traffic per request), so
//! a client spread over `n` shards by SO_REUSEPORT may get up to `n` times
//! the rate. The defaults are generous — SDKs and tests never reach them by
//! accident; they stop a runaway loop, not a busy client. Tokens are keyed
//! by a keyed hash (never stored in clear); requests without a token share
//! one bucket. The table is bounded: when full, buckets that have refilled
//! (idle clients) are dropped, and if none has, newcomers share an overflow
//! bucket.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::time::Instant;

use hyper::header::{HeaderValue, RETRY_AFTER};
use hyper::StatusCode;

use super::Resp;
use crate::http::json;

/// Requests per second one token may sustain on one shard.
pub const REQUESTS_PER_SEC: f64 = 100.0;
/// Requests one token may make at once after being idle.
pub const BURST: f64 = 200.0;
/// Buckets one shard keeps.
const MAX_BUCKETS: usize = 16 * 1024;
/// Shared by newcomers while the table is full of active buckets.
const OVERFLOW: u64 = 0;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// One shard's buckets. Owned by its shard; never crosses cores.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    max_buckets: usize,
    hasher: RandomState,
    buckets: HashMap<u64, Bucket>,
}

impl Default for RateLimiter {
    fn default() -> RateLimiter {
        RateLimiter::new(REQUESTS_PER_SEC, BURST)
    }
}

impl RateLimiter {
    pub fn new(rate: f64, burst: f64) -> RateLimiter {
        RateLimiter {
            rate: rate.max(f64::MIN_POSITIVE),
            burst: burst.max(1.0),
            max_buckets: MAX_BUCKETS,
            hasher: RandomState::new(),
            buckets: HashMap::new(),
        }
    }

    /// Takes one request from `key`'s bucket: `Ok`, or `Err(seconds)` to
    /// wait before the next one will pass (at least 1).
    pub fn check(&mut self, key: &str, now: Instant) -> Result<(), u64> {
        let mut k = self.hasher.hash_one(key);
        if k == OVERFLOW {
            k = 1;
        }
        if !self.buckets.contains_key(&k) && self.buckets.len() >= self.max_buckets {
            self.prune(now);
            if self.buckets.len() >= self.max_buckets {
                k = OVERFLOW;
            }
        }
        let (rate, burst) = (self.rate, self.burst);
        let b = self.buckets.entry(k).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - b.tokens) / rate).ceil();
            Err((wait as u64).max(1))
        }
    }

    /// Drops the buckets that are full again: forgetting them changes
    /// nothing.
    fn prune(&mut self, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        self.buckets.retain(|_, b| {
            b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
        });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.len()
    }
}

/// HTTP 429, `Retry-After: <seconds>`, `{"ok":false,"error":"ratelimited"}`.
pub fn response(retry_after_secs: u64) -> Resp {
    let mut resp = json::error(StatusCode::TOO_MANY_REQUESTS, "ratelimited");
    resp.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs.max(1)));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn triggers_after_the_burst_and_refills() {
        let mut rl = RateLimiter::new(10.0, 20.0);
        let t0 = Instant::now();
        for i in 0..20 {
            assert_eq!(rl.check("xoxp-a", t0), Ok(()), "request {i}");
        }
        assert_eq!(rl.check("xoxp-a", t0), Err(1));
        // Another token is not affected.
        assert_eq!(rl.check("xoxp-b", t0), Ok(()));
        // 100 ms refills one request at 10/s.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(rl.check("xoxp-a", t1), Ok(()));
        assert_eq!(rl.check("xoxp-a", t1), Err(1));
        // A long pause refills up to the burst, not beyond.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..20 {
            assert_eq!(rl.check("xoxp-a", t2), Ok(()));
        }
        assert!(rl.check("xoxp-a", t2).is_err());
    }

    #[test]
    fn retry_after_is_whole_seconds_and_at_least_one() {
        let mut rl = RateLimiter::new(0.25, 1.0);
        let t0 = Instant::now();
        assert_eq!(rl.check("k", t0), Ok(()));
        assert_eq!(rl.check("k", t0), Err(4), "one request per 4 s");
        let mut fast = RateLimiter::new(1000.0, 1.0);
        assert_eq!(fast.check("k", t0), Ok(()));
        assert_eq!(fast.check("k", t0), Err(1), "never 0");
    }

    #[test]
    fn the_table_is_bounded() {
        let mut rl = RateLimiter::new(1.0, 2.0);
        rl.max_buckets = 4;
        let t0 = Instant::now();
        for k in ["a", "b", "c", "d"] {
            rl.check(k, t0).unwrap();
        }
        assert_eq!(rl.len(), 4);
        // Full of recovering buckets: the newcomers share the overflow one.
        rl.check("e", t0).unwrap();
        rl.check("f", t0).unwrap();
        assert!(rl.check("g", t0).is_err(), "overflow bucket is shared");
        // Once the old buckets have refilled, they make room.
        let later = t0 + Duration::from_secs(10);
        rl.check("h", later).unwrap();
        assert!(rl.len() <= 2, "{}", rl.len());
    }

    #[test]
    fn the_answer() {
        let r = response(3);
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[RETRY_AFTER], "3");
        assert_eq!(response(0).headers()[RETRY_AFTER], "1");
    }
}
