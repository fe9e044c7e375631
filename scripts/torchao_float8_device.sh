#!/usr/bin/env bash
# On a lent GPU machine, from the repository root: torchao's Float8 training memory (scripts/torchao_float8_memory.py).
# torchao travels as wheels in .whl-torchao/ (pip download torchao==VERSION --no-deps); the newest one that trains a
# compiled Float8Linear on this machine's torch is used. Results into $OUT.
set -u
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt"
for wheel in $(ls -r .whl-torchao/torchao-*.whl); do
  rm -rf /tmp/tao && python3 -m pip install -q --no-index --no-deps --target /tmp/tao "$wheel" || continue
  if PYTHONPATH=/tmp/tao python3 - <<'PY' >> "$OUT/gpu.txt" 2>> "$OUT/errors.txt"
import torch, torchao
from torchao.float8 import Float8LinearConfig, convert_to_float8_training
m = torch.nn.Sequential(torch.nn.Linear(256, 256, bias=False)).cuda().bfloat16()
convert_to_float8_training(m, config=Float8LinearConfig())
torch.compile(m)(torch.randn(64, 256, device="cuda", dtype=torch.bfloat16, requires_grad=True)).sum().backward()
print("torch", torch.__version__, "torchao", torchao.__version__)
PY
  then break; fi
done
cat "$OUT/gpu.txt"
PYTHONPATH=/tmp/tao python3 scripts/torchao_float8_memory.py "$@" > "$OUT/torchao-float8-memory.jsonl" 2>> "$OUT/errors.txt"
tail -c 4000 "$OUT/errors.txt"
