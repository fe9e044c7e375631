#!/usr/bin/env bash
# On a lent GPU machine, from the repository root: rank 0 of torchtitan's Llama 3.1 70B 2D arrangement of
# benchmarks B4-1 / B4-2 (FSDP 32 x TP 8 with sequence parallelism and loss_parallel, full activation
# checkpointing, a local batch of 16 x 8192 tokens, 80 blocks, 8 KV heads repeated as torchtitan's repeat_kv), in
# bf16 eager without Float8, async TP or torch.compile; the other ranks exist only in a fake process group
# (scripts/pp_fsdp_memory.py two_d). One JSON line into $OUT/runs.jsonl.
set -u
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt"
python3 -c 'import torch; print(torch.__version__)' >> "$OUT/gpu.txt"
shape='{"dp": 32, "tp": 8, "blocks": 80, "h": 8192, "heads": 64, "ffn": 28672, "vocab": 128256, "seq": 8192, "mb": 16, "kv_heads": 8}'
PYTORCH_CUDA_ALLOC_CONF="expandable_segments:True" python3 scripts/pp_fsdp_memory.py 2d "$shape" \
  >> "$OUT/runs.jsonl" 2>> "$OUT/errors.txt"
tail -c 3000 "$OUT/errors.txt"
cat "$OUT/gpu.txt"
