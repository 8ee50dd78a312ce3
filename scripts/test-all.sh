#!/usr/bin/env bash
# Runs every check and test Wattprint has, on a fresh machine: formatting, clippy (warnings are
# errors), and the whole workspace's tests, unit, integration and end-to-end. It installs and
# starts the real servers the tests use (ClickHouse, the tansu Kafka-protocol broker; see
# scripts/servers.sh) and stops them afterwards. Integration tests refuse to skip here.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> rustfmt"
cargo fmt --all -- --check
echo "==> clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> servers"
export WPTEST_SERVERS_DIR=${WPTEST_SERVERS_DIR:-$(mktemp -d /tmp/wattprint-servers.XXXXXX)}
# shellcheck source=scripts/servers.sh
source scripts/servers.sh start
trap 'scripts/servers.sh stop' EXIT
export WPTEST_REQUIRE_SERVERS=1
echo "==> tests"
cargo test --workspace --locked
