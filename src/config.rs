//! Configuration of `transponder serve`: flags, then `TRANSPONDER_*`
//! environment variables, then an optional TOML file, then the defaults in
//! [`crate::limits`]. Flags win.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use crate::limits;

/// Flags and environment of `transponder serve`. Every field is optional so
/// that the TOML file can fill what neither flags nor environment set.
#[derive(Args, Debug, Default, Clone)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (snake_case keys).
    #[arg(long, env = "TRANSPONDER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address every listener binds (default 127.0.0.1).
    #[arg(long, env = "TRANSPONDER_HOST")]
    pub host: Option<IpAddr>,
    /// Websocket gateway port (0 = any free port; default 7770).
    #[arg(long, env = "TRANSPONDER_GATEWAY_PORT")]
    pub gateway_port: Option<u16>,
    /// Base of the websocket URLs handed to clients, e.g.
    /// `wss://rtm.example.com` behind a TLS proxy (default: ws://host:port).
    #[arg(long, env = "TRANSPONDER_PUBLIC_GATEWAY_URL")]
    pub public_gateway_url: Option<String>,
    /// Slack Web API port (0 = any free port; default 7771).
    #[arg(long, env = "TRANSPONDER_API_PORT")]
    pub api_port: Option<u16>,
    /// Admin API port (0 = any free port; default 7772).
    #[arg(long, env = "TRANSPONDER_ADMIN_PORT")]
    pub admin_port: Option<u16>,
    /// Number of shards (pinned cores), 1 to 64; default: every available
    /// core.
    #[arg(long, env = "TRANSPONDER_SHARDS", value_parser = parse_shards)]
    pub shards: Option<usize>,
    /// The store's folder (default ./transponder-data).
    #[arg(long, env = "TRANSPONDER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The store: `sqlite` (a file in --data-dir; the default) or a
    /// postgres://user@host:port/db URL (a database several nodes share).
    #[arg(long, env = "TRANSPONDER_STORE")]
    pub store: Option<String>,
    /// When a write is acknowledged: `full` (on disk, survives power loss;
    /// default) or `normal` (survives a process crash).
    #[arg(long, env = "TRANSPONDER_DURABILITY", value_parser = ["full", "normal"])]
    pub durability: Option<String>,
    /// Bearer token of the admin API (printable ASCII, no spaces);
    /// generated and printed when unset.
    #[arg(long, env = "TRANSPONDER_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Recent persisted events kept per channel for resume.
    #[arg(long, env = "TRANSPONDER_HISTORY_PER_CHANNEL")]
    pub history_per_channel: Option<usize>,
    /// Bound on one connection's queued outbound bytes (slow consumer limit).
    #[arg(long, env = "TRANSPONDER_MAX_QUEUE_BYTES")]
    pub max_queue_bytes: Option<usize>,
    /// Client messages per second per connection (token bucket rate).
    #[arg(long, env = "TRANSPONDER_CLIENT_MSGS_PER_SEC")]
    pub client_msgs_per_sec: Option<u32>,
    /// Client message burst per connection (token bucket size).
    #[arg(long, env = "TRANSPONDER_CLIENT_MSGS_BURST")]
    pub client_msgs_burst: Option<u32>,
    /// Bytes per shard that not yet authenticated work may hold (HTTP
    /// connections before their first authenticated request, tokenless Web
    /// API bodies, websocket handshakes); past it, new such work gets 503.
    #[arg(long, env = "TRANSPONDER_MAX_UNAUTHENTICATED_BYTES")]
    pub max_unauthenticated_bytes: Option<usize>,
    /// Microseconds a shard spins before parking.
    #[arg(long, env = "TRANSPONDER_SPIN_BEFORE_PARK_US")]
    pub spin_before_park_us: Option<u64>,
    /// Milliseconds a drain may take before the process exits anyway.
    #[arg(long, env = "TRANSPONDER_DRAIN_TIMEOUT_MS")]
    pub drain_timeout_ms: Option<u64>,
    /// Listen backlog of every listener.
    #[arg(long, env = "TRANSPONDER_LISTEN_BACKLOG")]
    pub listen_backlog: Option<u32>,
    /// Do not pin shards to cores (for machines shared with a load generator).
    #[arg(long, env = "TRANSPONDER_NO_PIN")]
    pub no_pin: bool,
    /// A fixed cluster: this node's id, the other nodes' link addresses and
    /// the placement, in a JSON file (docs/CLUSTER.md "A fixed cluster").
    #[arg(long, env = "TRANSPONDER_CLUSTER_FILE")]
    pub cluster_file: Option<PathBuf>,
    /// Port other nodes' links connect to (0: any). Only in a cluster.
    #[arg(long, env = "TRANSPONDER_LINK_PORT")]
    pub link_port: Option<u16>,
    /// Let the kernel back the heap with transparent huge pages. Off by
    /// default: the allocator asks for them, and with them every idle
    /// connection costs ~15% more resident memory (benches/idle_connections.rs).
    #[arg(long, env = "TRANSPONDER_HUGE_PAGES")]
    pub huge_pages: bool,
    /// Join a cluster coordinated through these etcd endpoints
    /// (comma-separated, `http://host:port` or `host:port`). Needs a build
    /// with `--features cluster`.
    #[arg(long, env = "TRANSPONDER_ETCD", value_delimiter = ',')]
    pub etcd: Option<Vec<String>>,
    /// This node's name in the cluster; node ids are allocated per name
    /// (default: the host name and a hash of the data dir's path).
    #[arg(long, env = "TRANSPONDER_NODE_NAME")]
    pub node_name: Option<String>,
    /// This node's region label (default "default").
    #[arg(long, env = "TRANSPONDER_REGION")]
    pub region: Option<String>,
    /// Join as a spare: no channels until CHARM has it replace a failed node.
    #[arg(long, env = "TRANSPONDER_SPARE")]
    pub spare: bool,
    /// Prefix of the cluster's keys in etcd (default /transponder/).
    #[arg(long, env = "TRANSPONDER_CLUSTER_PREFIX")]
    pub cluster_prefix: Option<String>,
    /// Time to live of the node's etcd lease, in seconds (default 2).
    #[arg(long, env = "TRANSPONDER_ETCD_LEASE_TTL_SECS")]
    pub etcd_lease_ttl_secs: Option<u64>,
}

/// The same settings as read from the TOML file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    host: Option<IpAddr>,
    gateway_port: Option<u16>,
    public_gateway_url: Option<String>,
    api_port: Option<u16>,
    admin_port: Option<u16>,
    shards: Option<usize>,
    data_dir: Option<PathBuf>,
    store: Option<String>,
    durability: Option<String>,
    admin_token: Option<String>,
    history_per_channel: Option<usize>,
    max_queue_bytes: Option<usize>,
    client_msgs_per_sec: Option<u32>,
    client_msgs_burst: Option<u32>,
    max_unauthenticated_bytes: Option<usize>,
    spin_before_park_us: Option<u64>,
    drain_timeout_ms: Option<u64>,
    listen_backlog: Option<u32>,
    no_pin: Option<bool>,
    huge_pages: Option<bool>,
    cluster_file: Option<PathBuf>,
    link_port: Option<u16>,
    etcd: Option<Vec<String>>,
    node_name: Option<String>,
    region: Option<String>,
    spare: Option<bool>,
    cluster_prefix: Option<String>,
    etcd_lease_ttl_secs: Option<u64>,
}

/// The resolved configuration every shard reads (read-only, cloned once per
/// shard at start).
#[derive(Debug, Clone)]
pub struct Config {
    pub host: IpAddr,
    pub gateway_port: u16,
    pub public_gateway_url: Option<String>,
    pub api_port: u16,
    pub admin_port: u16,
    pub shards: usize,
    pub data_dir: PathBuf,
    /// Where the store lives (`--store`; SQLite in `data_dir` by default).
    pub store: crate::store::Backend,
    pub durability: crate::store::Durability,
    pub admin_token: Option<String>,
    pub history_per_channel: usize,
    pub max_queue_bytes: usize,
    pub client_msgs_per_sec: u32,
    pub client_msgs_burst: u32,
    pub max_unauthenticated_bytes: usize,
    pub spin_before_park: Duration,
    pub drain_timeout: Duration,
    pub listen_backlog: u32,
    pub pin: bool,
    pub huge_pages: bool,
    pub cluster_file: Option<PathBuf>,
    pub link_port: u16,
    /// Set when the node joins a cluster (`--etcd`).
    pub cluster: Option<ClusterConfig>,
}

/// How a node joins its cluster (docs/CLUSTER.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub etcd: Vec<String>,
    /// `None`: derived from the host name and the data dir at start.
    pub node_name: Option<String>,
    pub region: String,
    pub spare: bool,
    pub prefix: String,
    pub lease_ttl: Duration,
}

impl ServeArgs {
    pub fn resolve(self) -> Result<Config, String> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .map_err(|e| format!("bad config file {}: {e}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let shards = match self.shards.or(file.shards) {
            Some(n) => valid_shards(n).map_err(|e| format!("--shards {n}: {e}"))?,
            // More cores than a node runs shards: one shard per core, up to the most.
            None => cores.min(limits::SHARDS_MAX),
        };
        let data_dir = self
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("transponder-data"));
        let store = crate::store::Backend::parse(self.store.or(file.store).as_deref(), &data_dir)?;
        let history = self
            .history_per_channel
            .or(file.history_per_channel)
            .unwrap_or(limits::HISTORY_EVENTS_PER_CHANNEL_DEFAULT);
        let config = Config {
            host: self
                .host
                .or(file.host)
                .unwrap_or(IpAddr::from([127, 0, 0, 1])),
            gateway_port: self.gateway_port.or(file.gateway_port).unwrap_or(7770),
            public_gateway_url: self
                .public_gateway_url
                .or(file.public_gateway_url)
                .map(|u| u.trim_end_matches('/').to_string()),
            api_port: self.api_port.or(file.api_port).unwrap_or(7771),
            admin_port: self.admin_port.or(file.admin_port).unwrap_or(7772),
            shards,
            data_dir,
            store,
            durability: match self.durability.or(file.durability).as_deref() {
                None | Some("full") => crate::store::Durability::Full,
                Some("normal") => crate::store::Durability::Normal,
                Some(other) => {
                    return Err(format!("durability must be full or normal, not {other:?}"))
                }
            },
            admin_token: self.admin_token.or(file.admin_token),
            history_per_channel: history,
            max_queue_bytes: self
                .max_queue_bytes
                .or(file.max_queue_bytes)
                .unwrap_or(limits::OUTBOUND_QUEUE_BYTES_MAX_DEFAULT),
            client_msgs_per_sec: self
                .client_msgs_per_sec
                .or(file.client_msgs_per_sec)
                .unwrap_or(limits::CLIENT_MESSAGES_PER_SEC_DEFAULT),
            client_msgs_burst: self
                .client_msgs_burst
                .or(file.client_msgs_burst)
                .unwrap_or(limits::CLIENT_MESSAGES_BURST_DEFAULT),
            max_unauthenticated_bytes: self
                .max_unauthenticated_bytes
                .or(file.max_unauthenticated_bytes)
                .unwrap_or(limits::UNAUTHENTICATED_BYTES_MAX_DEFAULT),
            spin_before_park: self
                .spin_before_park_us
                .or(file.spin_before_park_us)
                .map(Duration::from_micros)
                .unwrap_or(limits::SPIN_BEFORE_PARK_DEFAULT),
            drain_timeout: self
                .drain_timeout_ms
                .or(file.drain_timeout_ms)
                .map(Duration::from_millis)
                .unwrap_or(limits::DRAIN_TIMEOUT_DEFAULT),
            listen_backlog: self.listen_backlog.or(file.listen_backlog).unwrap_or(4096),
            pin: !(self.no_pin || file.no_pin.unwrap_or(false)),
            huge_pages: self.huge_pages || file.huge_pages.unwrap_or(false),
            cluster_file: self.cluster_file.or(file.cluster_file),
            link_port: self.link_port.or(file.link_port).unwrap_or(7773),
            cluster: None,
        };
        let cluster = ClusterArgs {
            etcd: self.etcd.or(file.etcd),
            node_name: self.node_name.or(file.node_name),
            region: self.region.or(file.region),
            spare: self.spare || file.spare.unwrap_or(false),
            prefix: self.cluster_prefix.or(file.cluster_prefix),
            lease_ttl_secs: self.etcd_lease_ttl_secs.or(file.etcd_lease_ttl_secs),
        }
        .resolve()?;
        let config = Config { cluster, ..config };
        if let Some(token) = &config.admin_token {
            check_admin_token(token)?;
        }
        if (config.cluster.is_some() || config.cluster_file.is_some())
            && config.admin_token.is_none()
        {
            // Generated per node, the tokens would differ: the nodes' links
            // would refuse each other and tickets would not cross nodes.
            return Err(
                "a cluster node needs --admin-token: every node of a cluster takes the \
                        same one (it keys the node links and the websocket tickets)"
                    .into(),
            );
        }
        if let Some(u) = &config.public_gateway_url {
            if !(u.starts_with("ws://") || u.starts_with("wss://")) {
                return Err("--public-gateway-url must start with ws:// or wss://".into());
            }
        }
        if config.max_queue_bytes < 4096 {
            return Err("--max-queue-bytes must be at least 4096".into());
        }
        if config.client_msgs_per_sec == 0 || config.client_msgs_burst == 0 {
            return Err("client message rate and burst must be positive".into());
        }
        if config.max_unauthenticated_bytes < limits::UNAUTHENTICATED_BYTES_MIN {
            return Err(format!(
                "--max-unauthenticated-bytes must be at least {}",
                limits::UNAUTHENTICATED_BYTES_MIN
            ));
        }
        Ok(config)
    }
}

/// The cluster settings as given, before they are checked.
struct ClusterArgs {
    etcd: Option<Vec<String>>,
    node_name: Option<String>,
    region: Option<String>,
    spare: bool,
    prefix: Option<String>,
    lease_ttl_secs: Option<u64>,
}

impl ClusterArgs {
    /// `None` without `--etcd`; then the other cluster flags are refused,
    /// since they would silently do nothing.
    fn resolve(self) -> Result<Option<ClusterConfig>, String> {
        let Some(etcd) = self.etcd else {
            let stray = [
                ("--node-name", self.node_name.is_some()),
                ("--region", self.region.is_some()),
                ("--spare", self.spare),
                ("--cluster-prefix", self.prefix.is_some()),
                ("--etcd-lease-ttl-secs", self.lease_ttl_secs.is_some()),
            ];
            return match stray.iter().find(|(_, given)| *given) {
                Some((flag, _)) => Err(format!(
                    "{flag} needs --etcd (the cluster's etcd endpoints)"
                )),
                None => Ok(None),
            };
        };
        let etcd: Vec<String> = etcd
            .iter()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect();
        if etcd.is_empty() {
            return Err(
                "--etcd needs at least one endpoint (host:port or http://host:port)".into(),
            );
        }
        if let Some(bad) = etcd.iter().find(|e| e.starts_with("https://")) {
            return Err(format!(
                "--etcd {bad}: TLS to etcd is not supported; use http://"
            ));
        }
        if let Some(name) = &self.node_name {
            crate::cluster::record::check_name("--node-name", name)?;
        }
        let region = self.region.unwrap_or_else(|| "default".to_string());
        crate::cluster::record::check_name("--region", &region)?;
        let prefix = self.prefix.unwrap_or_else(|| "/transponder/".to_string());
        if prefix.trim().is_empty() {
            return Err("--cluster-prefix must not be empty".into());
        }
        let ttl = self
            .lease_ttl_secs
            .unwrap_or(limits::CLUSTER_LEASE_TTL_SECS_DEFAULT);
        if !(limits::CLUSTER_LEASE_TTL_SECS_MIN..=limits::CLUSTER_LEASE_TTL_SECS_MAX).contains(&ttl)
        {
            return Err(format!(
                "--etcd-lease-ttl-secs must be between {} and {}",
                limits::CLUSTER_LEASE_TTL_SECS_MIN,
                limits::CLUSTER_LEASE_TTL_SECS_MAX
            ));
        }
        Ok(Some(ClusterConfig {
            etcd,
            node_name: self.node_name,
            region,
            spare: self.spare,
            prefix,
            lease_ttl: Duration::from_secs(ttl),
        }))
    }
}

/// `--shards` as clap reads it from the command line or the environment.
fn parse_shards(text: &str) -> Result<usize, String> {
    let n = text
        .parse::<usize>()
        .map_err(|_| format!("not a number of shards: {text:?}"))?;
    valid_shards(n)
}

fn valid_shards(n: usize) -> Result<usize, String> {
    if (1..=limits::SHARDS_MAX).contains(&n) {
        Ok(n)
    } else {
        Err(format!(
            "shards must be between 1 and {max} (one per core; a node runs at most {max})",
            max = limits::SHARDS_MAX
        ))
    }
}

/// The admin token guards publishing to any channel and creating users,
/// so an empty one is refused (with it, `Authorization: Bearer ` alone would
/// be the password). It travels in an HTTP header, which drops surrounding
/// whitespace and does not portably carry anything beyond ASCII, so it is
/// printable ASCII without spaces. No minimum length is enforced, because
/// short tokens are in use in scripts and benches; a short one is warned
/// about.
fn check_admin_token(token: &str) -> Result<(), String> {
    if token.trim().is_empty() {
        return Err(
            "the admin token is empty: give a secret with --admin-token or \
                    TRANSPONDER_ADMIN_TOKEN, or set neither to have one generated"
                .into(),
        );
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "the admin token must be printable ASCII without spaces or control \
                    characters (it travels in an `Authorization: Bearer` header)"
                .into(),
        );
    }
    if token.len() < limits::ADMIN_TOKEN_CHARS_ADVISED_MIN {
        tracing::warn!(
            chars = token.len(),
            "the admin token is short: anyone who reaches the admin port may guess it; \
             use {} characters or more, or let one be generated",
            limits::ADMIN_TOKEN_CHARS_ADVISED_MIN
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_file() {
        let dir = std::env::temp_dir().join(format!("tp-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.toml");
        std::fs::write(&path, "gateway_port = 9001\napi_port = 9002\nshards = 3\n").unwrap();
        let args = ServeArgs {
            config: Some(path),
            gateway_port: Some(1234),
            ..Default::default()
        };
        let c = args.resolve().unwrap();
        assert_eq!(c.gateway_port, 1234);
        assert_eq!(c.api_port, 9002);
        assert_eq!(c.shards, 3);
        assert_eq!(c.admin_port, 7772);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_store_is_sqlite_in_the_data_dir_unless_a_postgres_url_is_given() {
        let c = ServeArgs {
            data_dir: Some("d".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(c.store, crate::store::Backend::Sqlite("d".into()));
        let url = "postgres://tp@127.0.0.1:5432/tp";
        let with = |store: &str| ServeArgs {
            store: Some(store.into()),
            ..Default::default()
        };
        assert_eq!(
            with(url).resolve().unwrap().store,
            crate::store::Backend::Postgres(url.into())
        );
        let e = with("mysql://x").resolve().unwrap_err();
        assert!(e.contains("--store"), "{e}");
        // From the TOML file too.
        let dir = std::env::temp_dir().join(format!("tp-config3-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.toml");
        std::fs::write(&path, format!("store = \"{url}\"\n")).unwrap();
        let c = ServeArgs {
            config: Some(path),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(c.store, crate::store::Backend::Postgres(url.into()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unauthenticated_budget_has_a_default_and_a_floor() {
        let c = ServeArgs::default().resolve().unwrap();
        assert_eq!(
            c.max_unauthenticated_bytes,
            limits::UNAUTHENTICATED_BYTES_MAX_DEFAULT
        );
        let with = |bytes| ServeArgs {
            max_unauthenticated_bytes: Some(bytes),
            ..Default::default()
        };
        let floor = limits::UNAUTHENTICATED_BYTES_MIN;
        assert!(with(floor - 1).resolve().is_err());
        assert_eq!(
            with(floor).resolve().unwrap().max_unauthenticated_bytes,
            floor
        );
    }

    #[test]
    fn rejects_unknown_keys_and_zero_shards() {
        let dir = std::env::temp_dir().join(format!("tp-config2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.toml");
        std::fs::write(&path, "gateway_prot = 9001\n").unwrap();
        assert!(ServeArgs {
            config: Some(path),
            ..Default::default()
        }
        .resolve()
        .is_err());
        let _ = std::fs::remove_dir_all(&dir);
        assert!(ServeArgs {
            shards: Some(0),
            ..Default::default()
        }
        .resolve()
        .is_err());
    }

    #[test]
    fn refuses_empty_and_unsendable_admin_tokens() {
        let with = |token: &str| ServeArgs {
            admin_token: Some(token.to_string()),
            ..Default::default()
        };
        for bad in [
            "",
            " ",
            "\t\n",
            " secret",
            "two words",
            "caf\u{e9}-token-1234567",
        ] {
            assert!(with(bad).resolve().is_err(), "{bad:?} accepted");
        }
        let err = with("").resolve().unwrap_err();
        assert!(err.contains("admin token is empty"), "{err}");
        assert!(with("s3cret").resolve().is_ok());
        assert!(with("0123456789abcdef0123456789abcdef").resolve().is_ok());
    }

    #[test]
    fn a_cluster_node_needs_an_admin_token() {
        let err = ServeArgs {
            etcd: Some(vec!["127.0.0.1:2379".into()]),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(err.contains("needs --admin-token"), "{err}");
        let ok = ServeArgs {
            etcd: Some(vec!["127.0.0.1:2379".into()]),
            admin_token: Some("a-shared-cluster-token".into()),
            ..Default::default()
        };
        assert!(ok.resolve().is_ok());
    }

    #[test]
    fn cluster_flags_resolve_with_defaults_and_refuse_nonsense() {
        assert_eq!(ServeArgs::default().resolve().unwrap().cluster, None);
        let c = ServeArgs {
            etcd: Some(vec!["127.0.0.1:2379".into(), " ".into()]),
            admin_token: Some("a-shared-cluster-token".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap()
        .cluster
        .unwrap();
        assert_eq!(c.etcd, ["127.0.0.1:2379"]);
        assert_eq!(
            (c.region.as_str(), c.prefix.as_str()),
            ("default", "/transponder/")
        );
        assert_eq!(c.lease_ttl, Duration::from_secs(2));
        assert!(!c.spare && c.node_name.is_none());
        let with = |f: fn(&mut ServeArgs)| {
            let mut a = ServeArgs {
                etcd: Some(vec!["127.0.0.1:2379".into()]),
                admin_token: Some("a-shared-cluster-token".into()),
                ..Default::default()
            };
            f(&mut a);
            a.resolve()
        };
        assert!(with(|a| a.node_name = Some("a/b".into())).is_err());
        assert!(with(|a| a.region = Some(String::new())).is_err());
        assert!(with(|a| a.etcd_lease_ttl_secs = Some(0)).is_err());
        assert!(with(|a| a.etcd = Some(vec![])).is_err());
        assert!(with(|a| a.etcd = Some(vec!["https://e:2379".into()])).is_err());
        assert!(with(|a| a.cluster_prefix = Some(" ".into())).is_err());
        assert!(with(|a| a.spare = true).unwrap().cluster.unwrap().spare);
        let err = ServeArgs {
            spare: true,
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(err.contains("--spare needs --etcd"), "{err}");
    }

    #[test]
    fn shards_outside_1_to_64_are_refused_with_the_range() {
        assert_eq!(parse_shards("64"), Ok(64));
        for bad in ["0", "65", "200"] {
            let err = parse_shards(bad).unwrap_err();
            assert!(err.contains("between 1 and 64"), "{err}");
        }
        assert!(parse_shards("many").is_err());
    }
}
