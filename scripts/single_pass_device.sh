#!/usr/bin/env bash
# On a lent GPU machine, from the repository root: the amax pass and the compiled cross-entropy against the copy
# rate (benchmarks/single_pass_rates.py). Results into $OUT.
set -u
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv > "$OUT/nvidia-smi.csv"
timeout 400 python3 benchmarks/single_pass_rates.py "$OUT/single-pass-rates.json" > "$OUT/single-pass.log" 2>&1
tail -c 4000 "$OUT/single-pass.log"
