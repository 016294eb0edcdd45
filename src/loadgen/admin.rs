//! Transponder's admin API as the load generator uses it: create users and
//! channels, add members, mint websocket tickets. Calls run on a few threads
//! with keep-alive connections, so provisioning 10,000 users takes seconds.

use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{json, Value};

/// Admin calls in flight at once.
const THREADS: usize = 8;

#[derive(Clone)]
pub struct Admin {
    base: String,
    token: String,
    agent: ureq::Agent,
}

/// A created user.
#[derive(Clone, Debug)]
pub struct User {
    pub id: String,
    /// Its Web API token.
    pub token: String,
}

impl Admin {
    pub fn new(base: &str, token: &str) -> Admin {
        Admin {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(30))
                .max_idle_connections_per_host(THREADS * 2)
                .build(),
        }
    }

    /// Host and port of the admin API (for the HTTP publishers).
    pub fn addr(&self) -> Result<SocketAddrV4, String> {
        http_addr("--admin", &self.base)
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    fn post(&self, path: &str, body: Value) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let r = self
            .agent
            .post(&url)
            .set("Authorization", &format!("Bearer {}", self.token))
            .send_json(body);
        match r {
            Ok(resp) => resp.into_json().map_err(|e| format!("POST {path}: {e}")),
            Err(ureq::Error::Status(code, resp)) => Err(format!(
                "POST {path}: {code} {}",
                resp.into_string().unwrap_or_default()
            )),
            Err(e) => Err(format!("POST {path}: {e}")),
        }
    }

    pub fn create_user(&self, name: &str) -> Result<User, String> {
        let v = self.post("/v1/users", json!({ "name": name }))?;
        let id = v["user"]["id"].as_str().ok_or("no user id")?.to_string();
        let token = v["token"].as_str().ok_or("no user token")?.to_string();
        Ok(User { id, token })
    }

    pub fn create_channel(&self, name: &str) -> Result<String, String> {
        let v = self.post("/v1/channels", json!({ "name": name }))?;
        Ok(v["channel"]["id"]
            .as_str()
            .ok_or("no channel id")?
            .to_string())
    }

    pub fn add_member(&self, channel: &str, user: &str) -> Result<(), String> {
        self.post(
            &format!("/v1/channels/{channel}/members"),
            json!({ "user": user }),
        )
        .map(|_| ())
    }

    /// A single-use websocket URL for `user`, split into address and path.
    pub fn ticket(&self, user: &str) -> Result<(SocketAddrV4, String), String> {
        let v = self.post("/v1/tickets", json!({ "user": user }))?;
        let url = v["url"].as_str().ok_or("no ticket url")?;
        split_ws_url(url)
    }

    pub fn stats(&self) -> Result<Value, String> {
        let url = format!("{}/v1/stats", self.base);
        self.agent
            .get(&url)
            .set("Authorization", &format!("Bearer {}", self.token))
            .call()
            .map_err(|e| format!("GET /v1/stats: {e}"))?
            .into_json()
            .map_err(|e| format!("GET /v1/stats: {e}"))
    }
}

/// `http://host:port[/…]` (the value of `flag`) → the address.
pub fn http_addr(flag: &str, url: &str) -> Result<SocketAddrV4, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{flag} must be http://host:port"))?;
    rest.split('/')
        .next()
        .unwrap_or_default()
        .parse()
        .map_err(|e| format!("{flag} {url}: {e} (an IPv4 address and port)"))
}

/// `ws://host:port/path?query` → (address, "/path?query").
pub fn split_ws_url(url: &str) -> Result<(SocketAddrV4, String), String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("{url}: only ws:// URLs (loopback) are supported"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = host
        .parse()
        .map_err(|e| format!("{url}: {e} (an IPv4 address and port)"))?;
    Ok((addr, path.to_string()))
}

/// Runs `f` over `items` on [`THREADS`] threads, keeping their order; the
/// first error stops the rest.
pub fn par_map<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> Result<R, String> + Sync,
) -> Result<Vec<R>, String> {
    let next = AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let parts: Vec<Result<Vec<(usize, R)>, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS.min(items.len()).max(1))
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= items.len() || failed.load(Ordering::Relaxed) {
                            return Ok(done);
                        }
                        match f(&items[i]) {
                            Ok(r) => done.push((i, r)),
                            Err(e) => {
                                failed.store(true, Ordering::Relaxed);
                                return Err(e);
                            }
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("admin thread panicked"))
            .collect()
    });
    let mut all = Vec::with_capacity(items.len());
    for p in parts {
        all.extend(p?);
    }
    all.sort_unstable_by_key(|(i, _)| *i);
    assert_eq!(all.len(), items.len(), "every item ran");
    Ok(all.into_iter().map(|(_, r)| r).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_urls() {
        let (a, p) = split_ws_url("ws://127.0.0.1:7770/?ticket=abc").unwrap();
        assert_eq!(a.to_string(), "127.0.0.1:7770");
        assert_eq!(p, "/?ticket=abc");
        assert_eq!(split_ws_url("ws://127.0.0.1:1").unwrap().1, "/");
        assert!(split_ws_url("wss://x/").is_err());
        let a = http_addr("--api", "http://127.0.0.1:7771/api/").unwrap();
        assert_eq!(a.to_string(), "127.0.0.1:7771");
        assert!(http_addr("--api", "https://127.0.0.1:1").is_err());
    }

    #[test]
    fn par_map_keeps_order_and_reports_errors() {
        let v: Vec<u32> = (0..100).collect();
        assert_eq!(par_map(&v, |x| Ok(x * 2)).unwrap()[99], 198);
        assert!(par_map(&v, |x| if *x == 50 { Err("no".into()) } else { Ok(()) }).is_err());
    }
}
