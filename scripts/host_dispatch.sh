#!/usr/bin/env bash
# The host's dispatch time per transformer block, plain, under FSDP2, with DTensor TP and compiled (calibrate's
# measure_host), three times on this GPU; results in $OUT/host_dispatch.json
# (default benchmarks/results/h100-host-dispatch).
set -uo pipefail
OUT=${OUT:-benchmarks/results/h100-host-dispatch}
mkdir -p "$OUT"
source scripts/wheels.sh
OUT="$OUT" python3 - <<'PY'
import json, os, torch
from shardplan.calibrate import measure_host

device = torch.device("cuda", 0)
runs = [measure_host(device) for _ in range(3)]
result = {"device": torch.cuda.get_device_name(device), "torch": torch.__version__, "runs": runs}
print(json.dumps(result, indent=1))
with open(os.path.join(os.environ["OUT"], "host_dispatch.json"), "w") as f:
    json.dump(result, f, indent=1)
PY
