#!/usr/bin/env bash
# Runs Wattprint's real NVML path on a GPU host and checks it against an independent reading of
# the energy counter. Usage: scripts/gpu/nvml_check.sh [path/to/wattprint] (from the repo root).
# Needs: an NVIDIA GPU with its driver, python3 with torch (for the workload). Prints figures
# and leaves them in $OUT (default /tmp/wp-nvml).
set -euo pipefail
BIN=${1:-target/release/wattprint}
OUT=${OUT:-/tmp/wp-nvml}
IDLE_S=${IDLE_S:-15}
LOAD_S=${LOAD_S:-100}
rm -rf "$OUT/run"; mkdir -p "$OUT/run"
UUID=$(nvidia-smi --query-gpu=uuid --format=csv,noheader | head -1)
MODEL=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
LIMIT=$(nvidia-smi --query-gpu=power.limit --format=csv,noheader,nounits | head -1 | cut -d. -f1)
cat > "$OUT/run/gpus.toml" <<TOML
[[gpu]]
uuid = "$UUID"
instance = "gpu-check-vm"
TOML
cat > "$OUT/run/wattprint.toml" <<TOML
data_dir = "$OUT/run/data"
data_root = "$PWD/data"
[gateway]
listen = "127.0.0.1:50071"
[query_api]
listen = "127.0.0.1:8071"
[agent]
sensor = "nvml"
host_id = "gpu-check-host"
mapping_file = "$OUT/run/gpus.toml"
energy_interval_ms = 1000
[[instances]]
tenant = "gpu-check"
id = "gpu-check-vm"
region = "CAISO_NORTH"
gpus = [{ uuid = "$UUID", model = "$MODEL", power_limit_w = $LIMIT }]
TOML
python3 scripts/gpu/counter_log.py "$OUT/counter.csv" & LOG=$!
"$BIN" --config "$OUT/run/wattprint.toml" gateway > "$OUT/gateway.log" 2>&1 & GW=$!
sleep 2
"$BIN" --config "$OUT/run/wattprint.toml" agent > "$OUT/agent.log" 2>&1 & AG=$!
sleep "$IDLE_S"
CPU0=$(awk '{print $14+$15}' /proc/$AG/stat); T0=$(date +%s.%N)
python3 scripts/gpu/load.py "$LOAD_S"
sleep "$IDLE_S"
CPU1=$(awk '{print $14+$15}' /proc/$AG/stat); T1=$(date +%s.%N)
RSS=$(grep VmHWM /proc/$AG/status)
kill -INT $AG; wait $AG || true
sleep 1
kill -INT $GW; wait $GW || true
kill -TERM $LOG; wait $LOG || true
{
  echo "gpu=$MODEL uuid=$UUID limit_w=$LIMIT driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)"
  python3 scripts/gpu/compare.py "$OUT/run/data/wattprint.db" "$OUT/counter.csv"
  python3 -c "print(f'agent_cpu_pct_of_one_core={($CPU1-$CPU0)/$(getconf CLK_TCK)/($T1-$T0)*100:.3f} over {$T1-$T0:.0f}s')"
  echo "agent_$RSS"
  grep -h 'agent stopped' "$OUT/agent.log" | sed 's/\x1b\[[0-9;]*m//g' | tail -1
} | tee "$OUT/result.txt"
