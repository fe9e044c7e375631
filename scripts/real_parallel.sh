#!/usr/bin/env bash
# Issue 9 on a machine with several GPUs: shardplan's plans and the usual alternatives trained under
# torchrun, one torchrun per case (a clean memory peak each), then measured vs estimated.
#   bash scripts/real_parallel.sh OUT_DIR [MODEL] [GLOBAL_BATCH] [SEQ_LEN]
# A calibration.json in OUT_DIR (`shardplan calibrate` on this machine) feeds the estimates. OUT_DIR
# gets cases.json, results.json (per case: estimate, measurement, errors) and report.md; the per-case
# files and logs stay in $SCRATCH (the lent device returns few files).
set -uo pipefail
out=${1:?usage: real_parallel.sh OUT_DIR [MODEL] [GLOBAL_BATCH] [SEQ_LEN]}
model=${2:-llama-13b}
batch=${3:-16}
seq=${4:-4096}
gpus=$(nvidia-smi -L | wc -l)
source scripts/wheels.sh
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
scratch=${SCRATCH:-/tmp/real-parallel}
mkdir -p "$out" "$scratch"
cal=()
[ -f "$out/calibration.json" ] && cal=(--calibration "$out/calibration.json")
python benchmarks/real_parallel.py plan --topology live --model "$model" --global-batch "$batch" --seq-len "$seq" \
    "${cal[@]}" -o "$out/cases.json" | tee "$out/plan.txt" || exit 1
count=$(python -c 'import json, sys; print(len(json.load(open(sys.argv[1]))))' "$out/cases.json")
for ((i = 0; i < count; i++)); do
    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True timeout 400 torchrun --nproc-per-node "$gpus" \
        benchmarks/real_parallel.py run "$out/cases.json" --case "$i" --out "$scratch" >"$scratch/case-$i.log" 2>&1
    echo "case $i: exit $?; $(grep -m1 '^case ' "$scratch/case-$i.log")"
done
python benchmarks/real_parallel.py report "$out/cases.json" "$scratch" --out "$out"
