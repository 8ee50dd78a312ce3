#!/usr/bin/env bash
# Agent overhead on a GPU host: CPU (% of one core) and RSS of the real agent reading every GPU
# through NVML, streaming to a sink gateway (a child process), with the durable spool on.
# Usage (from the repo root): scripts/gpu/agent_overhead.sh [path/to/wattprint-agent-overhead]
# Env: SECONDS_MEASURED (default 60), WARMUP (default 5), OUT (default /tmp/wp-overhead).
# Runs three cases: NVML with power at 10 Hz and energy at 1 Hz (the agent's defaults), NVML
# with everything at 1 Hz, and, for comparison on the same machine, the replayed H100 trace as
# 8 GPUs at 10 Hz power / 1 Hz energy.
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
"$BIN" --sensor nvml --energy-ms 1000 --gauge-ms 100 --seconds "$S" --warmup-seconds "$W" | tee "$OUT/nvml_power10hz_energy1hz.txt"
"$BIN" --sensor nvml --energy-ms 1000 --gauge-ms 0 --seconds "$S" --warmup-seconds "$W" | tee "$OUT/nvml_1hz.txt"
"$BIN" --sensor replay --gpus 8 --energy-ms 1000 --gauge-ms 100 --seconds "$S" --warmup-seconds "$W" | tee "$OUT/replay8_power10hz_energy1hz.txt"
grep -h '^{' "$OUT"/*.txt > "$OUT/summary.jsonl"
echo "figures in $OUT/summary.jsonl"
