#!/usr/bin/env bash
# Op-level selective recompute (torchtitan's policy) measured on one H100, under both allocator
# settings: expandable segments (torchtitan's launcher) and the default caching allocator. Uses the
# calibration recorded by scripts/h100_truth.sh. Results: $OUT (default benchmarks/results/h100-selective-op).
set -uo pipefail
OUT=${OUT:-benchmarks/results/h100-selective-op}
CAL=benchmarks/results/h100-single-gpu/h100-calibration.json
mkdir -p "$OUT/expandable" "$OUT/default"
source scripts/wheels.sh
export PYTHONUNBUFFERED=1
PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True python3 benchmarks/real_training.py --calibration "$CAL" \
    --out "$OUT/expandable" --only selective-op 2>&1 | tail -12
python3 benchmarks/real_training.py --calibration "$CAL" --out "$OUT/default" --only selective-op 2>&1 | tail -12
