#!/usr/bin/env bash
# Runs every check and test Wattprint has, on a fresh machine: formatting, clippy (warnings are
# errors), and the whole workspace's tests, unit, integration and end-to-end. It installs and
# starts the real servers the tests use (ClickHouse, the tansu Kafka-protocol broker; see
# scripts/servers.sh) and stops them afterwards. Integration tests refuse to skip here.
set -euo pipefail
cd "$(dirname "$0")/.."
# A one-off build gains nothing from incremental caches, which would double target/'s size.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}

echo "==> rustfmt"
cargo fmt --all -- --check
echo "==> clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> deployment artefacts"
# Kubernetes overlays render and validate, Terraform parses and passes checkov, dashboards,
# alerts, Dockerfile, compose and systemd units lint (tools pinned under target/deploy-tools).
scripts/check-deploy.sh
echo "==> servers"
export WPTEST_SERVERS_DIR=${WPTEST_SERVERS_DIR:-$(mktemp -d /tmp/wattprint-servers.XXXXXX)}
# shellcheck source=scripts/servers.sh
source scripts/servers.sh start
trap 'scripts/servers.sh stop' EXIT
export WPTEST_REQUIRE_SERVERS=1
echo "==> poppler"
# The PDF statement test extracts its text with pdftotext and renders its first page with
# pdftoppm (poppler-utils).
command -v pdftotext >/dev/null && command -v pdftoppm >/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq poppler-utils >/dev/null
}
echo "==> browser"
# The portal's browser test (cli/tests/it/portal.rs) drives Debian's chromium with Playwright
# (playwright-core, pinned in tests/portal/package-lock.json; no browser download).
command -v chromium >/dev/null && command -v npm >/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium nodejs npm >/dev/null
}
(cd tests/portal && npm ci --no-audit --no-fund --silent)
echo "==> python sdk venv"
# The Python SDK's tests (tests/tests/it/python_sdk.rs) run in this venv; pip fetches httpx,
# pytest and mypy (and schemathesis, below) from PyPI.
python3 -m venv target/py-sdk || {
    # Debian's system python3 ships venv's ensurepip separately.
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv target/py-sdk
}
target/py-sdk/bin/pip install --quiet --disable-pip-version-check -e 'sdk/python[test]'
# tests/tests/it/api_fuzz.rs fuzzes the REST API from its OpenAPI document with schemathesis,
# pinned so that a new release's checks do not change what passes.
target/py-sdk/bin/pip install --quiet --disable-pip-version-check 'schemathesis==4.32.5'
export WPTEST_PYTHON="$PWD/target/py-sdk/bin/python"
echo "==> tests"
cargo test --workspace --locked
echo "==> query API tests on ClickHouse 25.8"
# The store's ClickHouse suite runs on both servers by itself (store/tests/it/main.rs); the
# query API's ClickHouse tests run once more here, against the modern server.
WPTEST_CLICKHOUSE_URL=$WPTEST_CLICKHOUSE_MODERN_URL cargo test -p wattprint-query-api --locked --test it
