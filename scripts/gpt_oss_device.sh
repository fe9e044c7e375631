#!/usr/bin/env bash
# On a lent GPU machine, from the repository root: GPT-OSS's attention (sliding window, head dim 64) and its MoE
# MLP on one GPU (benchmarks/attention_window.py, benchmarks/moe_block.py's gpt-oss shape). Results into $OUT.
set -u
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv > "$OUT/nvidia-smi.csv"
timeout 300 python3 benchmarks/attention_window.py "$OUT/attention-window.json" 2> "$OUT/attention-window.log"
timeout 200 python3 benchmarks/moe_block.py "$OUT/moe-block-gpt-oss.json" gpt-oss > "$OUT/moe-block.log" 2>&1
tail -c 2500 "$OUT/attention-window.log"
tail -c 2500 "$OUT/moe-block.log"
