#!/usr/bin/env bash
# On a lent GPU machine, from the repository root: rank 0 of torchtitan's Llama 3.1 405B arrangement of
# benchmarks B5-1 / B5-2 (pp 8 x FSDP 8 x TP 8 with sequence parallelism, full activation checkpointing,
# 8 micro-batches of 4 x 8192 tokens) with 16 blocks per GPU, under 1F1B (one stage) and interleaved 1F1B
# (two stages of 8 blocks), in bf16 without Float8, async TP or torch.compile; the other ranks exist only in
# a fake process group (scripts/pp_fsdp_memory.py). One JSON line per case into $OUT/runs.jsonl.
set -u
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt"
python3 -c 'import torch; print(torch.__version__)' >> "$OUT/gpu.txt"
shape='"pp": 8, "dp": 8, "tp": 8, "h": 16384, "heads": 128, "ffn": 53248, "seq": 8192, "mb": 4, "n_micro": 8'
for case in '"schedule": "1f1b", "blocks": 16' '"schedule": "interleaved", "blocks": 8'; do
  PYTORCH_CUDA_ALLOC_CONF="expandable_segments:True" python3 scripts/pp_fsdp_memory.py sweep "{$shape, $case}" \
    >> "$OUT/runs.jsonl" 2>> "$OUT/errors.txt"
done
tail -c 3000 "$OUT/errors.txt"
cat "$OUT/gpu.txt"
