#!/usr/bin/env bash
# On a lent GPU machine, from the repository root: FSDP2 under torch.distributed.pipelining
# (scripts/pp_fsdp_memory.py): the allocator's trace of case 1 (snapshot.json), and a sweep of shapes
# (sweep.jsonl: one JSON line per shape and allocator setting) -- what the allocator reserves beyond
# the allocated peak, and on which stream. Results into $OUT.
set -u
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt"
python3 -c 'import torch; print(torch.__version__)' >> "$OUT/gpu.txt"
python3 scripts/pp_fsdp_memory.py snapshot 1f1b > "$OUT/snapshot.json" 2> "$OUT/errors.txt"
shapes=(
  '{}'
  '{"n_micro": 4}'
  '{"n_micro": 16}'
  '{"mb": 1}'
  '{"mb": 4}'
  '{"blocks": 2}'
  '{"blocks": 8}'
  '{"pp": 2}'
  '{"pp": 8, "n_micro": 16}'
  '{"fsdp": false}'
  '{"schedule": "interleaved"}'
)
for conf in "" "expandable_segments:True"; do
  for shape in "${shapes[@]}"; do
    PYTORCH_CUDA_ALLOC_CONF="$conf" python3 scripts/pp_fsdp_memory.py sweep "$shape" >> "$OUT/sweep.jsonl" 2>> "$OUT/errors.txt"
  done
done
tail -c 3000 "$OUT/errors.txt"
wc -l "$OUT/sweep.jsonl"
cat "$OUT/gpu.txt"
