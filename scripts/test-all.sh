#!/usr/bin/env bash
# Runs every check and test Wattprint has, on a fresh machine: formatting, clippy (warnings are
# errors), and the whole workspace's tests, unit and end-to-end. It installs and starts whatever
# the tests need; the embedded path needs nothing beyond the Rust toolchain (SQLite is bundled).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> rustfmt"
cargo fmt --all -- --check
echo "==> clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> tests"
cargo test --workspace --locked
