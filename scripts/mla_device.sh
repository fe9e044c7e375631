#!/usr/bin/env bash
# On a lent GPU machine, from the repository root: attention with DeepSeek's query-key and value head dims
# (benchmarks/attention_mla.py) and DeepSeek-V3's MoE MLP under EP 32 (benchmarks/moe_block.py). Results into $OUT.
set -u
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv > "$OUT/nvidia-smi.csv"
cd benchmarks
timeout 240 python3 attention_mla.py "$OUT/attention-mla.json" > "$OUT/attention-mla.log" 2>&1
timeout 200 python3 moe_block.py "$OUT/moe-block-deepseek.json" deepseek > "$OUT/moe-block.log" 2>&1
grep -v Warning "$OUT/attention-mla.log" | grep -v "return F" | tail -c 5000
tail -c 2500 "$OUT/moe-block.log"
