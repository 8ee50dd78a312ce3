#!/usr/bin/env bash
# Agent overhead on a GPU host: CPU (% of one core) and RSS of the real agent reading every GPU
# through NVML, streaming to a sink gateway (a child process), with the durable spool on.
# Usage (from the repo root): scripts/gpu/agent_overhead.sh [path/to/wattprint-agent-overhead]
# Env: SECONDS_MEASURED (default 60), WARMUP (default 5), OUT (default /tmp/wp-overhead).
# Runs three cases: NVML at 10 Hz and at 1 Hz (power and energy are read together), and, for
# comparison on the same machine, the replayed H100 trace as 8 GPUs at 10 Hz.
set -euo pipefail
BIN=${1:-target/release/wattprint-agent-overhead}
S=${SECONDS_MEASURED:-60}
W=${WARMUP:-5}
OUT=${OUT:-/tmp/wp-overhead}
mkdir -p "$OUT"
if [ ! -x "$BIN" ]; then
  cargo build --release -p wattprint-agent --bin wattprint-agent-overhead
fi
nvidia-smi --query-gpu=name,uuid,driver_version --format=csv,noheader | tee "$OUT/gpus.txt"
"$BIN" --sensor nvml --interval-ms 100 --seconds "$S" --warmup-seconds "$W" | tee "$OUT/nvml_10hz.txt"
"$BIN" --sensor nvml --interval-ms 1000 --seconds "$S" --warmup-seconds "$W" | tee "$OUT/nvml_1hz.txt"
"$BIN" --sensor replay --gpus 8 --interval-ms 100 --seconds "$S" --warmup-seconds "$W" | tee "$OUT/replay8_10hz.txt"
grep -h '^{' "$OUT"/*.txt > "$OUT/summary.jsonl"
echo "figures in $OUT/summary.jsonl"
