#!/usr/bin/env bash
# Issue 9, first part, on a lent machine with several GPUs: live topology (NVML), `nvidia-smi topo -m`,
# and `shardplan calibrate` under torchrun (peer copies per GPU pair, all-reduce / all-gather /
# reduce-scatter bus bandwidth per group size and message size, plus everything one GPU measures).
# Results go to $OUT (default benchmarks/results/multi-gpu-<n>gpu/). Wheels in .whl/ are installed
# when present (the lent device has no network). NVLink multicast stays off (KINDS.md).
set -uo pipefail
N=$(nvidia-smi -L | wc -l)
OUT=${OUT:-benchmarks/results/multi-gpu-${N}gpu}
mkdir -p "$OUT"
source scripts/wheels.sh
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm --format=csv > "$OUT/nvidia-smi.txt"
nvidia-smi topo -m > "$OUT/nvidia-smi-topo.txt"
python3 -m shardplan.cli topo live --json > "$OUT/topo-live.json" 2> "$OUT/topo-live.err"
/usr/bin/time -f "calibrate: %e s wall" torchrun --standalone --nproc_per_node "$N" -m shardplan.cli calibrate \
    -o "$OUT/calibration.json" 2>&1 | tail -5
