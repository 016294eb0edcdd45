//! The test PostgreSQL server (`TRANSPONDER_TEST_PG`, started by
//! `tests/with_pg.sh`) for tests that run the binary with `--store
//! postgres://…`: a schema of its own per test, and a restart of the server.

use std::process::Command;

/// A schema of its own on the test server, and the `--store` URL that uses
/// it. Dropped (with everything in it) on drop.
pub struct Schema {
    base: String,
    name: String,
    /// `--store` for a server working in this schema.
    pub url: String,
}

impl Schema {
    /// Fails (never skips) when `TRANSPONDER_TEST_PG` is not set.
    pub fn new() -> Schema {
        let base = std::env::var("TRANSPONDER_TEST_PG").unwrap_or_default();
        assert!(
            !base.is_empty(),
            "TRANSPONDER_TEST_PG is not set: run this test under tests/with_pg.sh \
             (e.g. `tests/with_pg.sh cargo test --test store_pg`), which starts a \
             private PostgreSQL, or set it to a postgres:// URL"
        );
        let name = format!("it_{}", super::unique().replace('-', "_"));
        batch(&base, &format!("CREATE SCHEMA {name}"));
        let sep = if base.contains('?') { '&' } else { '?' };
        // Named after the schema too: a cluster node's sessions are labelled
        // "<application_name> node <id>", and a node fences out a deposed
        // node's sessions by that label — only this test's.
        let url = format!("{base}{sep}options=-c%20search_path%3D{name}&application_name={name}");
        Schema { base, name, url }
    }

    /// How many rows `table` of this schema holds.
    pub fn count(&self, table: &str) -> i64 {
        let mut c = postgres::Client::connect(&self.url, postgres::NoTls).unwrap();
        c.query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .unwrap()
            .get(0)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        batch(
            &self.base,
            &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name),
        );
    }
}

/// Runs `sql` on the server at `url`.
pub fn batch(url: &str, sql: &str) {
    let mut c = postgres::Client::connect(url, postgres::NoTls)
        .unwrap_or_else(|e| panic!("cannot connect to TRANSPONDER_TEST_PG {url}: {e}"));
    c.batch_execute(sql).unwrap();
}

/// Restarts the test server (fast shutdown: every session is cut) and
/// returns once it accepts connections again.
pub fn restart_server() {
    let cmd = std::env::var("TRANSPONDER_TEST_PG_RESTART").unwrap_or_default();
    assert!(
        !cmd.is_empty(),
        "TRANSPONDER_TEST_PG_RESTART is not set: run this test under tests/with_pg.sh"
    );
    let status = Command::new("sh").args(["-c", &cmd]).status().unwrap();
    assert!(status.success(), "{cmd}: {status}");
}
