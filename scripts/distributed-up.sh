#!/usr/bin/env bash
# Brings the distributed deployment up locally as separate processes: ClickHouse and a
# Kafka-protocol broker (scripts/servers.sh), then `wattprint gateway`, `wattprint enricher`,
# `wattprint query-api` and a replay `wattprint agent`, all on deploy/wattprint.distributed.toml.
# Ctrl-C stops the processes cleanly (the servers keep running: scripts/servers.sh stop).
#   scripts/distributed-up.sh [extra enrichers, default 0]
set -euo pipefail
cd "$(dirname "$0")/.."
export WPTEST_SERVERS_DIR=${WPTEST_SERVERS_DIR:-/tmp/wattprint-servers}
# shellcheck source=scripts/servers.sh
source scripts/servers.sh start
export WATTPRINT_CONFIG=${WATTPRINT_CONFIG:-deploy/wattprint.distributed.toml}
export WATTPRINT_STORE__URL=$WPTEST_CLICKHOUSE_URL WATTPRINT_BUS__BROKERS=$WPTEST_KAFKA_BROKERS
cargo build --release --locked -q -p wattprint
BIN=target/release/wattprint
LOGS=$(mktemp -d /tmp/wattprint-distributed.XXXXXX)
pids=()
start() { # role, log name
  "$BIN" "$1" > "$LOGS/$2.out" 2> "$LOGS/$2.log" & pids+=($!)
  for _ in $(seq 1 300); do
    grep -q '^ready' "$LOGS/$2.out" 2>/dev/null && return 0
    kill -0 "${pids[-1]}" 2>/dev/null || { echo "$2 failed:"; tail -20 "$LOGS/$2.log"; exit 1; }
    sleep 0.2
  done
  echo "$2 not ready after 60 s; see $LOGS/$2.log"; exit 1
}
stop() {
  echo "stopping…"
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  wait || true
}
trap stop INT TERM
start gateway gateway
start enricher enricher
for i in $(seq 1 "${1:-0}"); do start enricher "enricher-$i"; done
start query-api query-api
"$BIN" agent > "$LOGS/agent.out" 2> "$LOGS/agent.log" & pids+=($!)
echo "wattprint (distributed) is up; logs in $LOGS"
echo "  query API  http://127.0.0.1:8080   gateway grpc://127.0.0.1:50051"
echo "  ClickHouse $WPTEST_CLICKHOUSE_URL   Kafka $WPTEST_KAFKA_BROKERS"
for t in acme globex; do
  echo "  token for $t: $("$BIN" token --tenant "$t" 2>/dev/null)"
done
echo "  try: curl -H \"Authorization: Bearer <token>\" http://127.0.0.1:8080/v1/instances"
echo "Ctrl-C stops."
wait
