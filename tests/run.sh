#!/usr/bin/env bash
# Runs every test of Transponder, installing what the tests need first.
# This is the README's test command; .ci/run runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# ---- what the tests need beyond the Rust toolchain ----
apt_install() {
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@"
}
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
# The official Slack SDKs: Python (venv) and Node (npm ci with the lockfile).
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || apt_install python3 python3-venv
command -v npm >/dev/null 2>&1 || apt_install nodejs npm
# Peers the load generator is tested against (tests/loadgen.rs).
command -v nats-server >/dev/null 2>&1 || apt_install nats-server
command -v redis-server >/dev/null 2>&1 || apt_install redis-server
# The cluster tests (tests/cluster_*.rs): a real etcd, and protoc,
# which the optional etcd client (feature `cluster`) needs to build.
command -v etcd >/dev/null 2>&1 || [ -x /usr/bin/etcd ] || apt_install etcd-server
command -v protoc >/dev/null 2>&1 || apt_install protobuf-compiler
# The blackhole scenario runs a node in a network namespace of its own
# (tests/common/netns.rs: `ip netns`, veth, routes; needs root).
command -v ip >/dev/null 2>&1 || apt_install iproute2
# The README's "Trying it" block (tests/readme.rs runs it): curl, jq, and
# Python's websockets, pinned, in a venv of its own.
command -v curl >/dev/null 2>&1 || apt_install curl
command -v jq >/dev/null 2>&1 || apt_install jq
# PostgreSQL's server for the store's second backend: tests/with_pg.sh starts
# a private, throw-away instance around `cargo test` (as the package's
# `postgres` user when run as root) and stops it at the end.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_install postgresql
python3 -m venv tests/readme/.venv
tests/readme/.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/readme/requirements.txt

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo clippy --all-features (the cluster control plane included)"
cargo clippy --all-targets --all-features --quiet -- -D warnings
echo "== cargo test (unit and integration: the real binary over real sockets; store tests on SQLite and PostgreSQL)"
tests/with_pg.sh cargo test --quiet
echo "== cargo test --features cluster (the control plane against a real etcd; failover with etcd, PostgreSQL and three nodes)"
cargo test --quiet --features cluster --lib cluster::
tests/with_pg.sh cargo test --quiet --features cluster --test cluster_control --test cluster_flags \
  --test cluster_failover --test cluster_drain --test cluster_presence --test cluster_scheduled

echo "== fuzz: every target for a short bounded time (README \"Fuzzing\")"
# cargo-fuzz passes -Z flags to cargo and rustc; RUSTC_BOOTSTRAP=1 makes
# the stable toolchain accept them. A dev build without a sanitizer keeps
# the build short; the long runs in the README use AddressSanitizer.
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
fuzz_secs=${FUZZ_SECS:-15}
fuzz_flags=(--dev --debug-assertions --sanitizer none)
fuzz_work=$(mktemp -d)
(
  cd fuzz
  export RUSTC_BOOTSTRAP=1
  cargo fuzz build "${fuzz_flags[@]}"
  for target in $(cargo fuzz list); do
    mkdir -p "$fuzz_work/$target"
    # New inputs go to the scratch directory; the seed corpus stays as committed.
    if ! cargo fuzz run "${fuzz_flags[@]}" "$target" "$fuzz_work/$target" "corpus/$target" -- \
        -max_total_time="$fuzz_secs" -print_final_stats=1 >"$fuzz_work/$target.log" 2>&1; then
      tail -n 60 "$fuzz_work/$target.log"
      echo "fuzz target $target failed; the input is under fuzz/artifacts/$target/"
      exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$fuzz_work/$target.log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$fuzz_work/$target.log")
    cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$fuzz_work/$target.log" | tail -n 1 || true)
    echo "fuzz $target: $runs runs in ${fuzz_secs}s ($rate/s), $cov, no crash"
  done
)
rm -rf "$fuzz_work"

echo "== Slack SDK conformance: install (Python venv, npm ci)"
cargo build --quiet # the SDK suites drive target/debug/transponder
python3 -m venv tests/sdk/python/.venv
tests/sdk/python/.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/sdk/python/requirements.txt
(cd tests/sdk/node && npm ci --no-audit --no-fund --loglevel=error)
sdk_status=0
echo "== Slack SDK conformance: Python (slack_sdk WebClient, rtm_v2.RTMClient)"
(cd tests/sdk/python && .venv/bin/python -m pytest -q) || sdk_status=1
echo "== Slack SDK conformance: Node (@slack/web-api, @slack/rtm-api)"
(cd tests/sdk/node && node --test) || sdk_status=1
[ "$sdk_status" -eq 0 ]
