#!/usr/bin/env bash
# Runs every test of Transponder, installing what the tests need first.
# This is the README's test command; .ci/run runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# What the tests need beyond the Rust toolchain: nothing yet beyond rustfmt
# and clippy (the official Slack SDK conformance suites arrive with the Web API).
if ! cargo fmt --version >/dev/null 2>&1; then rustup component add rustfmt; fi
if ! cargo clippy --version >/dev/null 2>&1; then rustup component add clippy; fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo test (unit and integration: the real binary over real sockets)"
cargo test --quiet
