//! A network namespace for one process of a test, joined to the test's own
//! namespace by a veth pair, so that the test can cut it off — a network
//! blackhole — and heal it again, with nothing but loopback addresses:
//!
//! ```text
//!   test's namespace                         the isolated namespace
//!   127.0.0.0/8 on lo (etcd, the            127.0.9.N/32 on the veth (the
//!   other nodes, the test's clients)        isolated node binds it)
//!        │  local 127.0.9.N/32 via veth       │  127.0.0.0/8 via veth
//!        └──────────── veth pair ─────────────┘
//! ```
//!
//! Linux treats 127.0.0.0/8 on anything but `lo` as martian; the veth ends
//! set `route_localnet`, which is exactly the switch for this. A host route
//! in the `local` table (longer than lo's /8) sends 127.0.9.N over the veth.
//!
//! A cut replaces both routes with `blackhole` routes: every packet either
//! way is dropped in silence, no reset and no error reaches either side, and
//! established connections stay open, retransmitting — what a partitioned
//! network does. A heal puts the routes back and the retransmissions go
//! through. (The kernel here has no `netem` qdisc and no tc actions, so
//! routes are the tool; link down would not do: the test side would then
//! deliver 127.0.9.N locally and answer with resets.)
//!
//! What stays reachable: unix sockets (the filesystem is shared), so the
//! test PostgreSQL, which listens on one, is still reachable from an
//! isolated node — the hardest case for fencing: a zombie that can still
//! write.
//!
//! Needs root (`ip netns`, sysctl); tests/run.sh runs as root in CI and
//! installs iproute2. Everything is removed on drop (deleting the namespace
//! deletes the veth pair and with it the test side's route).

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// An isolated network namespace with one loopback address, `ip`.
pub struct Netns {
    /// The namespace's name (`ip netns exec <name> …`).
    pub name: String,
    /// The address inside it, e.g. `127.0.9.1`.
    pub ip: String,
    /// The test side's end of the veth pair, and the namespace's end.
    host_end: String,
    inner_end: String,
}

impl Netns {
    /// Creates the namespace and its veth pair; the address inside is
    /// unique among this process's namespaces.
    pub fn create() -> Netns {
        static NEXT: AtomicU32 = AtomicU32::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < 255, "more isolated namespaces than addresses");
        // Interface names are at most 15 bytes.
        let tag = format!("tp{}x{n}", std::process::id() % 100_000);
        let name = format!("{tag}-ns");
        let (host_end, inner_end) = (format!("{tag}h"), format!("{tag}n"));
        let ip = format!("127.0.9.{n}");
        let ns = Netns {
            name: name.clone(),
            ip: ip.clone(),
            host_end: host_end.clone(),
            inner_end: inner_end.clone(),
        };
        ip_cmd(&["netns", "add", &name]);
        ip_cmd(&[
            "link", "add", &host_end, "type", "veth", "peer", "name", &inner_end,
        ]);
        ip_cmd(&["link", "set", &inner_end, "netns", &name]);
        sysctl(None, &format!("net.ipv4.conf.{host_end}.route_localnet=1"));
        ip_cmd(&["link", "set", &host_end, "up"]);
        // Inside: lo up (the kernel gives it 127.0.0.1/8, which would make
        // every 127.x local here: take it away), the address on the veth,
        // and the rest of 127/8 through it.
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns.exec(&["ip", "addr", "del", "127.0.0.1/8", "dev", "lo"]);
        ns.exec(&["ip", "addr", "add", &format!("{ip}/32"), "dev", &inner_end]);
        sysctl(
            Some(&name),
            &format!("net.ipv4.conf.{inner_end}.route_localnet=1"),
        );
        ns.exec(&["ip", "link", "set", &inner_end, "up"]);
        ns.heal();
        ns
    }

    /// Drops every packet between the namespace and the test's, both ways,
    /// in silence. The way out of the namespace goes first: from then on
    /// nothing it answers gets out, so nothing sent to it while the cut is
    /// being made is acknowledged.
    pub fn cut(&self) {
        self.exec(&["ip", "route", "replace", "blackhole", "127.0.0.0/8"]);
        ip_cmd(&[
            "route",
            "replace",
            "blackhole",
            &format!("{}/32", self.ip),
            "table",
            "local",
        ]);
    }

    /// Undoes [`Netns::cut`] (and sets the routes up in the first place).
    pub fn heal(&self) {
        ip_cmd(&[
            "route",
            "replace",
            &format!("{}/32", self.ip),
            "dev",
            &self.host_end,
            "src",
            "127.0.0.1",
            "table",
            "local",
        ]);
        self.exec(&[
            "ip",
            "route",
            "replace",
            "127.0.0.0/8",
            "dev",
            &self.inner_end,
            "src",
            &self.ip,
        ]);
    }

    /// The prefix that runs a program inside the namespace
    /// (`ip netns exec <name>`; it execs the program, so the pid is the
    /// program's).
    pub fn prefix(&self) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.name.clone(),
        ]
    }

    /// Runs `args` inside the namespace; panics if it fails.
    fn exec(&self, args: &[&str]) {
        let mut all: Vec<&str> = vec!["netns", "exec", &self.name];
        all.extend_from_slice(args);
        ip_cmd(&all);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // The blackhole route (if cut) is not tied to the veth: remove it.
        let _ = Command::new("ip")
            .args(["route", "del", &format!("{}/32", self.ip), "table", "local"])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// `ip <args>`; panics with its stderr if it fails.
#[track_caller]
fn ip_cmd(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip (iproute2; tests/run.sh installs it): {e}"));
    assert!(
        out.status.success(),
        "ip {}: {} (isolating a node needs root)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// `sysctl -w <setting>`, inside namespace `ns` if given.
#[track_caller]
fn sysctl(ns: Option<&str>, setting: &str) {
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "sysctl", "-qw", setting]);
            c
        }
        None => {
            let mut c = Command::new("sysctl");
            c.args(["-qw", setting]);
            c
        }
    };
    let out = cmd.output().expect("sysctl");
    assert!(
        out.status.success(),
        "sysctl {setting}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}
