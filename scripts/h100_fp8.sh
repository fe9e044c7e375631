#!/usr/bin/env bash
# FP8 GEMM rates on a lent H100 (issue 5: float8 training): every GEMM shape `shardplan calibrate`
# measures in bf16, again in e4m3 (tensorwise, tensorwise with fast accumulation, rowwise), in one run.
# Writes $OUT/h100-fp8.json. Run from the repository root. (The recorded benchmarks/results/h100-fp8/
# h100-fp8.json also holds fp8_cast_gbps: a standalone compiled cast this script measured then,
# 216-723 GB/s, which the cost model does not use.)
set -euo pipefail
source scripts/wheels.sh
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > "$OUT/nvidia-smi.csv"
python3 - <<'PY'
import json, os, torch
from shardplan.calibrate import TOKENS, TP, WIDTHS, _gemm_shapes, _Timer, measure_gemms, measure_gemms_fp8

device = torch.device("cuda", 0)
timer = _Timer(device)
shapes = _gemm_shapes(WIDTHS, TOKENS, TP)
result = {
    "device_name": torch.cuda.get_device_name(device),
    "torch": torch.__version__,
    "cuda": torch.version.cuda,
    "gemm_fp8_tflops": measure_gemms_fp8(timer, device, shapes),
    # bf16 again in the same run, so that the FP8/BF16 ratio is taken at one clock and temperature
    "gemm_tflops": measure_gemms(timer, device, shapes),
}
with open(os.path.join(os.environ["OUT"], "h100-fp8.json"), "w") as f:
    json.dump(result, f, indent=2)
for name, table in result["gemm_fp8_tflops"].items():
    v = sorted(table.values())
    print(name, "median", round(v[len(v) // 2], 1), "max", round(v[-1], 1))
v = sorted(result["gemm_tflops"].values()); print("bf16 median", round(v[len(v) // 2], 1), "max", round(v[-1], 1))
PY
