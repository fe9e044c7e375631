#!/usr/bin/env bash
# On the lent H100 (one GPU): live topology, the example under torchrun with NCCL, suggest on the
# live topology, and the gpu-marked tests. Writes everything under $OUT (benchmarks/results/device/).
# Wheels in .whl/ (ortools, immutabledict, protobuf, pydantic...) travel with the call.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/nvidia-smi.txt"
python3 -m shardplan.cli topo live --json > "$OUT/topo-live.json" 2> "$OUT/topo-live.err"
python3 -m torch.distributed.run --nproc-per-node 1 examples/train_auto_mesh.py --topology live --steps 8 \
    > "$OUT/example-1gpu-nccl.txt" 2>&1
echo "exit $?" >> "$OUT/example-1gpu-nccl.txt"
/usr/bin/time -f "%e s wall" python3 -m shardplan.cli suggest --model llama3-8b --topology live --global-batch 8 \
    --seq-len 4096 --top 3 > "$OUT/suggest-live.txt" 2>&1
python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_live_gpu.py > "$OUT/pytest-gpu.txt" 2>&1
tail -n 5 "$OUT"/*.txt
