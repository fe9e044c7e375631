#!/usr/bin/env bash
# benchmarks/real_parallel.py on a lent one-GPU machine (benchmarks/results/real-parallel-h100-1gpu/):
# the CUDA path of the runner (meta init, NCCL, memory peaks) and its estimates on a 1.2B Llama, plus
# FSDP2 over a single GPU at 8, 4 and 2 micro-batches per step, next to the same steps without it.
#   OUT=DIR bash scripts/real_parallel_1gpu.sh
set -u
source scripts/wheels.sh
S=/tmp/rp; mkdir -p $S
python3 benchmarks/real_parallel.py plan --topology live --model llama-1b --global-batch 8 --seq-len 4096 -o $OUT/cases.json > $OUT/plan.txt || exit 1
python3 - <<'PY'
import json, os, sys
sys.path.insert(0, "benchmarks")
import real_parallel as rp
from shardplan import Training, estimate, load_topology
out = os.environ["OUT"]
cases = json.load(open(f"{out}/cases.json"))
spec = rp.spec_from_config(rp.model_config("llama-1b", 4096), "x", name="llama-1b")
topo = load_topology("live")
for z, rc, mb in ((3, "none", 1), (3, "none", 2), (3, "none", 4), (0, "full", 8)):
    t = Training(global_batch=8, seq_len=4096, zero_stage=z, recompute=rc, **rp.IMPLEMENTATION)
    p = estimate(spec, topo, t, tp=1, pp=1, dp=1, micro_batch=mb)
    cases.append(rp.case_of(f"FSDP2 over 1 GPU, mb{mb}" if z else f"{rc} recompute mb{mb}", p, "llama-1b"))
json.dump(cases, open(f"{out}/cases.json", "w"), indent=1)
PY
n=$(python3 -c "import json; print(len(json.load(open('$OUT/cases.json'))))")
for ((i=0;i<n;i++)); do
  PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True timeout 200 torchrun --nproc-per-node 1 benchmarks/real_parallel.py run $OUT/cases.json --case $i --out $S > $S/case-$i.log 2>&1; echo "case $i exit $?"; grep "^case" $S/case-$i.log
done
python3 benchmarks/real_parallel.py report $OUT/cases.json $S --out $OUT
