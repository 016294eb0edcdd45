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

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo test (unit and integration: the real binary over real sockets)"
cargo test --quiet

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
