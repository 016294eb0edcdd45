//! A real etcd for cluster tests: Debian's `etcd-server` (`/usr/bin/etcd`,
//! or `$ETCD_BIN`), one member on free 127.0.0.1 ports with a fresh data
//! dir, killed and removed on drop. No test skips without it: `start`
//! panics with how to install it.

use std::fs::{self, File};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_ports, fresh_dir, tail_of, try_http_request};

/// How long etcd may take to answer its health check.
pub const ETCD_READY_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Etcd {
    child: Option<Child>,
    dir: PathBuf,
    log: PathBuf,
    /// `http://127.0.0.1:P`, for `--etcd`.
    pub endpoint: String,
}

impl Etcd {
    /// Starts etcd and waits until it is healthy (it has elected itself).
    pub fn start() -> Etcd {
        let bin = std::env::var("ETCD_BIN").unwrap_or_else(|_| "/usr/bin/etcd".into());
        assert!(
            std::path::Path::new(&bin).exists(),
            "{bin} not found: cluster tests need etcd (apt-get install etcd-server; tests/run.sh does)"
        );
        let dir = fresh_dir();
        let log = dir.join("etcd.log");
        let ports = free_ports(2);
        let client = format!("http://127.0.0.1:{}", ports[0]);
        let peer = format!("http://127.0.0.1:{}", ports[1]);
        let child = Command::new(&bin)
            .args(["--name", "test"])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("test={peer}")])
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(File::create(&log).unwrap()))
            .stderr(Stdio::from(
                File::options().append(true).open(&log).unwrap(),
            ))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let mut etcd = Etcd {
            child: Some(child),
            dir,
            log,
            endpoint: client,
        };
        etcd.wait_healthy();
        etcd
    }

    fn wait_healthy(&mut self) {
        let addr = self.endpoint.trim_start_matches("http://").parse().unwrap();
        let started = Instant::now();
        loop {
            let answer = try_http_request(addr, "GET", "/health", &[], None);
            if let Ok(r) = answer {
                if r.status == 200 && r.text().contains("true") {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "etcd exited with {status}; log:\n{}",
                    tail_of(&self.log, 40)
                );
            }
            assert!(
                started.elapsed() < ETCD_READY_TIMEOUT,
                "etcd not healthy within {ETCD_READY_TIMEOUT:?}; log:\n{}",
                tail_of(&self.log, 40)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- etcd log (tail) ----\n{}", tail_of(&self.log, 30));
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
