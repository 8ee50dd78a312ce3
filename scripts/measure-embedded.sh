#!/bin/bash
# Embedded `wattprint up` with N replayed GPUs: CPU, RSS and stored samples/s over a window.
# Usage: cargo build --release -p wattprint && scripts/measure-embedded.sh 10000 (WARM, WINDOW: s)
N=${1:-10000}; INST=$((N / 4)); BIN=${BIN:-target/release/wattprint}; D=/tmp/wp-embedded-$N
rm -rf $D; mkdir -p $D
cd "$(dirname "$0")/.."
$BIN up --data-dir $D --gpus $N --instances $INST --backfill-days 0 --api-listen 127.0.0.1:18580 --gateway-listen 127.0.0.1:15551 > $D/up.log 2>&1 &
PID=$!
cpu() { awk '{print $14+$15}' /proc/$PID/stat; }
acked() { curl -s http://127.0.0.1:18580/metrics | awk '/^wattprint_agent_samples_acked_total/ {s+=$2} END {print s+0}'; }
metric() { curl -s http://127.0.0.1:18580/metrics | awk -v m="^$1" '$0 ~ m {s+=$2} END {print s+0}'; }
rows() { curl -s http://127.0.0.1:18580/metrics | awk '/^wattprint_store_rows_written_total\{table="samples"\}/ {print $2}'; }
sleep ${WARM:-40}
c1=$(cpu); a1=$(acked); r1=$(rows); s1=$(metric wattprint_agent_samples_read_total); t1=$(date +%s.%N)
sleep ${WINDOW:-60}
c2=$(cpu); a2=$(acked); r2=$(rows); s2=$(metric wattprint_agent_samples_read_total); t2=$(date +%s.%N)
spool=$(metric wattprint_agent_spool_bytes); age=$(metric wattprint_agent_spool_oldest_unacked_age_seconds)
rss=$(awk '/VmRSS/ {print $2}' /proc/$PID/status); hwm=$(awk '/VmHWM/ {print $2}' /proc/$PID/status)
dt=$(echo "$t2 - $t1" | bc)
echo "embedded up, $N GPUs ($INST instances), ${dt%.*} s window: $(echo "scale=3; ($c2 - $c1) / 100 / $dt" | bc) cores, acked $(echo "scale=1; ($a2 - $a1) / $dt" | bc) samples/s, stored $(echo "scale=1; ($r2 - $r1) / $dt" | bc) samples/s, RSS $((rss / 1024)) MB (peak $((hwm / 1024)) MB)"
# Whether the pipeline keeps up: samples the agent read against those stored, and the backlog
# left at the window's end (spooled bytes and the oldest unacknowledged sample's age).
echo "agent read $(echo "scale=1; ($s2 - $s1) / $dt" | bc) samples/s; at the end: $spool bytes spooled, oldest unacked sample ${age} s old"
kill -INT $PID; wait $PID
du -sh $D/*.db* 2>/dev/null | head -3
echo "warnings and errors logged: $(grep -ci "warn\|error" $D/up.log)"
