#!/usr/bin/env bash
# Installs (if needed) and starts the real servers the integration tests use, on ports of their
# own, with state under $WPTEST_SERVERS_DIR (default /tmp/wattprint-servers):
#   ClickHouse: Debian's clickhouse-server 18.16, HTTP on 18123
#   ClickHouse 25.8 (the modern dialect: LowCardinality, codecs, TTL), HTTP on 18124: the server
#               program inside chDB's PyPI wheel (pinned by hash), run by clickhouse-modern.py
#   Kafka:      tansu (a Kafka-protocol broker from crates.io) on 19092, sqlite storage
# Source it to get the environment the tests read:
#   source scripts/servers.sh start   # exports WPTEST_CLICKHOUSE_URL, WPTEST_CLICKHOUSE_MODERN_URL,
#                                     # WPTEST_KAFKA_BROKERS
#   scripts/servers.sh stop
# tansu is built once (~10-15 min on 2 cores) into $WPTEST_CACHE (default ~/.cache/wattprint),
# outside the clone, so later runs on the same machine reuse it.
set -euo pipefail
DIR=${WPTEST_SERVERS_DIR:-/tmp/wattprint-servers}
CACHE=${WPTEST_CACHE:-$HOME/.cache/wattprint}
TANSU=$CACHE/tansu/bin/tansu
CH_HTTP=${WPTEST_CH_HTTP_PORT:-18123}
CH_MODERN_HTTP=${WPTEST_CH_MODERN_HTTP_PORT:-18124}
# chDB 3.7.2 links ClickHouse 25.8.2.1; the wheel is checked against PyPI's published sha256.
CHDB_WHEEL=chdb-3.7.2-cp38-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl
CHDB_URL=https://files.pythonhosted.org/packages/a7/05/8ee5fcbebd3ea6fba18265b688f028e6c758115af0be276b22144e34f9bd/$CHDB_WHEEL
CHDB_SHA256=c119f0830c12438a4e4b60b8370859ba50992e8b1b01a8c681e1c57eeb2dc82d
CH_MODERN=$CACHE/clickhouse-25.8
SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KAFKA_PORT=${WPTEST_KAFKA_PORT:-19092}

install_servers() {
  if ! command -v clickhouse-server >/dev/null; then
    echo "==> installing clickhouse-server (Debian)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clickhouse-server clickhouse-client >/dev/null
  fi
  if [ ! -f "$CH_MODERN/chdb/_chdb.abi3.so" ]; then
    echo "==> fetching ClickHouse 25.8 (chDB wheel) into $CH_MODERN (once per machine)"
    mkdir -p "$CH_MODERN"
    curl -sSfL -o "$CH_MODERN/$CHDB_WHEEL" "$CHDB_URL"
    echo "$CHDB_SHA256  $CH_MODERN/$CHDB_WHEEL" | sha256sum -c --quiet
    python3 -m zipfile -e "$CH_MODERN/$CHDB_WHEEL" "$CH_MODERN"
    rm "$CH_MODERN/$CHDB_WHEEL"
  fi
  if [ ! -x "$TANSU" ]; then
    echo "==> building tansu into $CACHE (once per machine)"
    cargo install tansu --locked --features dynostore,libsql --root "$CACHE/tansu" -q \
      || cargo install tansu --features dynostore,libsql --root "$CACHE/tansu" -q
  fi
}

wait_for() { # name, command
  for _ in $(seq 1 100); do
    if eval "$2" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "$1 did not come up; see $DIR" >&2
  return 1
}

start_clickhouse() {
  mkdir -p "$DIR/clickhouse"
  if ! curl -sf "http://127.0.0.1:$CH_HTTP/ping" >/dev/null 2>&1; then
    (cd "$DIR/clickhouse"; nohup /usr/sbin/clickhouse-server --config-file=/etc/clickhouse-server/config.xml -- \
      --http_port=$CH_HTTP --tcp_port=$((CH_HTTP + 1000)) --interserver_http_port=$((CH_HTTP + 2000)) \
      --path="$DIR/clickhouse/data/" --tmp_path="$DIR/clickhouse/tmp/" \
      --user_files_path="$DIR/clickhouse/user_files/" --format_schema_path="$DIR/clickhouse/schemas/" \
      --logger.log="$DIR/clickhouse/server.log" --logger.errorlog="$DIR/clickhouse/error.log" \
      > "$DIR/clickhouse/stdout.log" 2>&1 & echo $! > "$DIR/clickhouse/pid")
    wait_for clickhouse "curl -sf http://127.0.0.1:$CH_HTTP/ping"
  fi
  export WPTEST_CLICKHOUSE_URL="http://127.0.0.1:$CH_HTTP"
}

start_clickhouse_modern() {
  local dir="$DIR/clickhouse-modern"
  mkdir -p "$dir/data"
  if ! curl -sf "http://127.0.0.1:$CH_MODERN_HTTP/ping" >/dev/null 2>&1; then
    # No watchdog process: the pid file then holds the server itself, as stop expects.
    (cd "$dir"; CLICKHOUSE_WATCHDOG_ENABLE=0 nohup python3 "$SCRIPTS/clickhouse-modern.py" "$CH_MODERN/chdb/_chdb.abi3.so" -- \
      --listen_host=127.0.0.1 --http_port=$CH_MODERN_HTTP --tcp_port=$((CH_MODERN_HTTP + 1000)) \
      --mysql_port=$((CH_MODERN_HTTP + 3000)) --postgresql_port=$((CH_MODERN_HTTP + 4000)) \
      --path="$dir/data/" --logger.level=information --logger.console=0 \
      --logger.log="$dir/server.log" --logger.errorlog="$dir/error.log" \
      > "$dir/stdout.log" 2>&1 & echo $! > "$dir/pid")
    wait_for "clickhouse 25.8" "curl -sf http://127.0.0.1:$CH_MODERN_HTTP/ping"
  fi
  export WPTEST_CLICKHOUSE_MODERN_URL="http://127.0.0.1:$CH_MODERN_HTTP"
}

start_kafka() {
  mkdir -p "$DIR/tansu"
  if ! (exec 3<>/dev/tcp/127.0.0.1/$KAFKA_PORT) 2>/dev/null; then
    (cd "$DIR/tansu"; nohup "$TANSU" broker --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --storage-engine "sqlite://tansu.db" > "$DIR/tansu/broker.log" 2>&1 & echo $! > "$DIR/tansu/pid")
    wait_for tansu "(exec 3<>/dev/tcp/127.0.0.1/$KAFKA_PORT)"
  fi
  export WPTEST_KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
  export WPTEST_TANSU_BIN="$TANSU"
}

# The pid files hold the servers' own pids (`cd; nohup … &` backgrounds the server itself, not
# a subshell around it), so stop ends them and waits until they are gone: the next start then
# brings up fresh servers instead of silently reusing old ones with their old state.
stop_servers() {
  for p in "$DIR/clickhouse/pid" "$DIR/clickhouse-modern/pid" "$DIR/tansu/pid"; do
    if [ -f "$p" ]; then
      pid=$(cat "$p")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$p"
    fi
  done
}

case "${1:-start}" in
  start) install_servers; start_clickhouse; start_clickhouse_modern; start_kafka
         echo "servers up: WPTEST_CLICKHOUSE_URL=$WPTEST_CLICKHOUSE_URL" \
           "WPTEST_CLICKHOUSE_MODERN_URL=$WPTEST_CLICKHOUSE_MODERN_URL" \
           "WPTEST_KAFKA_BROKERS=$WPTEST_KAFKA_BROKERS" ;;
  stop) stop_servers ;;
  *) echo "usage: source scripts/servers.sh start|stop" >&2; return 2 2>/dev/null || exit 2 ;;
esac
