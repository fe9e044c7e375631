#!/usr/bin/env bash
# Measured truth on one H100 (issue 8), one command: live topology, `shardplan calibrate`, then
# benchmarks/real_training.py with that calibration. Results go to $OUT (default
# benchmarks/results/h100-single-gpu/). Wheels in .whl/ (ortools, pydantic...) are installed when
# present (the lent device has no network); elsewhere install shardplan first (README).
set -uo pipefail
OUT=${OUT:-benchmarks/results/h100-single-gpu}
mkdir -p "$OUT"
source scripts/wheels.sh
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm --format=csv > "$OUT/nvidia-smi.txt"
python3 -m shardplan.cli topo live --json > "$OUT/topo-live.json" 2> "$OUT/topo-live.err"
/usr/bin/time -f "calibrate: %e s wall" python3 -m shardplan.cli calibrate -o "$OUT/h100-calibration.json" 2>&1 | tail -2
# expandable segments keep the caching allocator's reserve close to what is allocated (torchtitan's
# launcher sets the same)
PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True python3 benchmarks/real_training.py --calibration "$OUT/h100-calibration.json" --out "$OUT" --profile 2>&1 | tail -30
