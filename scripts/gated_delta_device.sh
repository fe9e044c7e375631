#!/usr/bin/env bash
# On a lent GPU machine, from the repository root: flash-linear-attention's Gated DeltaNet kernel timed and traced
# (scripts/gated_delta_device.py). fla-core and einops travel as wheels in .whl-fla/ (pip download fla-core einops
# --no-deps). Results into $OUT.
set -u
rm -rf /tmp/fla && python3 -m pip install -q --no-index --no-deps --target /tmp/fla .whl-fla/*.whl
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt"
PYTHONPATH=/tmp/fla python3 scripts/gated_delta_device.py > "$OUT/gated-delta.jsonl" 2> "$OUT/errors.txt"
cat "$OUT/gated-delta.jsonl"; tail -c 3000 "$OUT/errors.txt"
