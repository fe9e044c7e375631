#!/usr/bin/env bash
# Causal attention forward/backward TFLOP/s on this GPU for each SDPA backend (PyTorch's own pick,
# FlashAttention-2, cuDNN, memory-efficient), with the shapes `shardplan calibrate` uses (since
# 2026-11-25 the sequence sweep at 16,384 tokens; benchmarks/results/h100-attention holds a run with
# the four shapes it used before).
# Results: $OUT/attention_backends.json (default benchmarks/results/h100-attention-seq).
set -uo pipefail
OUT=${OUT:-benchmarks/results/h100-attention-seq}
mkdir -p "$OUT"
source scripts/wheels.sh
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv > "$OUT/nvidia-smi.csv"
OUT="$OUT" python3 - <<'PY'
import json, os, torch
from torch.nn.attention import SDPBackend
from shardplan.calibrate import ATTENTION, _Timer, measure_attention

device = torch.device("cuda", 0)
timer = _Timer(device, warmup=3, repeats=10)
result = {"device": torch.cuda.get_device_name(device), "torch": torch.__version__, "cuda": torch.version.cuda}
backends = {"default": None, "flash2": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION}
for name, backend in backends.items():
    try:
        fwd, bwd = measure_attention(timer, device, ATTENTION, backend)
        result[name] = {"forward_tflops": fwd, "backward_tflops": bwd}
    except RuntimeError as exc:
        result[name] = {"error": str(exc)[:300]}
    print(name, json.dumps(result[name]))
with open(os.path.join(os.environ["OUT"], "attention_backends.json"), "w") as f:
    json.dump(result, f, indent=2)
PY
