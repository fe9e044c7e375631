"""Collective times measured by `shardplan calibrate` under torchrun against the cost model on the
same machine's live topology.

    python benchmarks/collectives_vs_calibration.py benchmarks/results/multi-gpu-2gpu/calibration.json \
        tests/data/nvml/h200-x2-nvlink.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from shardplan.cost.collectives import bus_factor, collective_time_s
from shardplan.topology.cluster import build
from shardplan.topology.sources.nvml import spec_from_facts


def main() -> None:
    calibration, facts = (json.loads(Path(path).read_text()) for path in sys.argv[1:3])
    topo = build(spec_from_facts(facts["nvml_facts"]))
    print(f"{topo.num_gpus} x {topo.gpus[0].model}, NVLinks between GPU 0 and 1: {topo.nvlink_count(0, 1)}")
    errors = []
    for row in calibration["collectives"]:
        g, size = row["ranks"], row["bytes"]
        measured = size * bus_factor(row["op"], g) / (row["busbw_gbps"] * 1e9)
        estimated = collective_time_s(topo, row["op"], list(range(g)), size)
        errors.append((estimated - measured) / measured)
        print(
            f"{row['op']:15s} {g} ranks {size / 2**20:6.0f} MiB  measured {measured * 1e6:8.1f} us  "
            f"estimated {estimated * 1e6:8.1f} us  {errors[-1]:+.1%}"
        )
    print(f"|error| mean {sum(map(abs, errors)) / len(errors):.1%}, max {max(map(abs, errors)):.1%}")


if __name__ == "__main__":
    main()
