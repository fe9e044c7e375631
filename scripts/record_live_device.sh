#!/usr/bin/env bash
# On a lent GPU machine, from the repository root: record what the live readers see (NVML, sysfs NICs,
# nvidia-smi) for replay on CI, and run the gpu-marked live tests. Results into $OUT.
set -u
. scripts/wheels.sh
python3 -c "import networkx, yaml, pynvml, pytest" || echo "missing a package"
python3 scripts/record_live_topology.py "$OUT" live-h100-sysfs > "$OUT/record.log" 2>&1 || tail -20 "$OUT/record.log"
{ ls -l /sys/class/infiniband /sys/class/net; for f in /sys/class/infiniband/*/ports/*/{state,rate,link_layer}; do echo "$f: $(cat "$f")"; done; } > "$OUT/sys-listing.txt" 2>&1
nvidia-smi topo -m > "$OUT/topo-m.txt" 2>&1
python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_live_gpu.py 2>&1 | tail -15
head -c 3000 "$OUT/sys-listing.txt"
