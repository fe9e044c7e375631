#!/usr/bin/env bash
# The rates shardplan ships against real training on the GPU at hand, one command: the live NVML tests, the bf16
# and FP8 cases of benchmarks/real_training.py estimated with the shipped rates (an H100's measured calibration;
# for a GPU without one, such as an H200, the H100's scaled by the datasheets), then `shardplan calibrate` on the
# same GPU and the same cases re-estimated with it (own-calibration/); the bf16 cases' kernels by kind beside the
# estimate's (kernel-split.md, scripts/kernel_split.py). Results: $OUT (default
# benchmarks/results/gpu-check). Wheels in .whl/ are installed when present (scripts/wheels.sh).
set -uo pipefail
OUT=${OUT:-benchmarks/results/gpu-check}
mkdir -p "$OUT/own-calibration"
source scripts/wheels.sh
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm --format=csv > "$OUT/nvidia-smi.txt"
python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_live_gpu.py > "$OUT/gpu-tests.txt" 2>&1
# the allocators of the recorded H100 runs: expandable segments for bf16, the default for FP8
PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True python3 benchmarks/real_training.py --profile --out "$OUT" 2>&1 | tail -4
python3 benchmarks/real_training.py --cases fp8 --out "$OUT" 2>&1 | tail -4
/usr/bin/time -f "calibrate: %e s wall" python3 -m shardplan.cli calibrate -o "$OUT/own-calibration/calibration.json" 2>&1 | tail -2
python3 scripts/kernel_split.py "$OUT"/*-single-gpu.json > "$OUT/kernel-split.md"
for results in "$OUT"/*.json; do
    cp "$results" "$OUT/own-calibration/"
    python3 benchmarks/real_training.py --reestimate "$OUT/own-calibration/${results##*/}" \
        --calibration "$OUT/own-calibration/calibration.json" | tail -4
done
