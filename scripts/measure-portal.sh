#!/bin/bash
# The portal's LCP and 30-day chart time on a release `up` with 30 days × 8 instances.
# Usage: cargo build --release -p wattprint && scripts/measure-portal.sh (RUNS: default 3; needs
# Debian chromium and `npm ci` in tests/portal)
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/wattprint}; D=/tmp/wp-lcp
rm -rf $D; mkdir -p $D
$BIN up --data-dir $D --gpus 8 --instances 8 --backfill-days 29 --api-listen 127.0.0.1:18680 --gateway-listen 127.0.0.1:15651 > $D/up.log 2>&1 &
PID=$!
for i in $(seq 1 600); do grep -q "backfill done\|backfill failed" $D/up.log && break; sleep 1; done
grep "backfill done\|backfill failed" $D/up.log
sleep 5
URL=$(grep -m1 "portal: " $D/up.log | awk '{print $2}')
MEASURE_RUNS=${RUNS:-3} timeout 600 node tests/portal/measure.mjs "$URL"
kill -INT $PID; wait $PID
