#!/usr/bin/env bash
# On a lent GPU machine, from the repository root: FSDP2 under 1F1B (scripts/pp_fsdp_memory.py, case 1) with
# the allocator's trace, under the default allocator and with expandable segments; JSON into $OUT.
set -u
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt"
python3 -c 'import torch; print(torch.__version__)' >> "$OUT/gpu.txt"
python3 scripts/pp_fsdp_memory.py snapshot 1f1b > "$OUT/default.json" 2> "$OUT/default.err"
PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True python3 scripts/pp_fsdp_memory.py snapshot 1f1b \
    > "$OUT/expandable.json" 2> "$OUT/expandable.err"
python3 scripts/pp_fsdp_memory.py snapshot interleaved > "$OUT/interleaved.json" 2> "$OUT/interleaved.err"
tail -c 2000 "$OUT"/*.err
cat "$OUT/gpu.txt"
