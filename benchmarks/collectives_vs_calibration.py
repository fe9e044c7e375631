"""Collective times measured by `shardplan calibrate` under torchrun against the cost model on the
same machine's live topology: at the shipped link rates, and with the rates the file itself sets
(`cost.link_scale.calibrated_links`, as `--calibration FILE` does).

    python benchmarks/collectives_vs_calibration.py benchmarks/results/multi-gpu-2gpu/calibration.json \
        tests/data/nvml/h200-x2-nvlink.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from shardplan.cost.calibration import Calibration
from shardplan.cost.collectives import bus_factor, collective_time_s
from shardplan.cost.link_scale import MIN_BYTES, calibrated_links
from shardplan.topology.cluster import build
from shardplan.topology.sources.nvml import spec_from_facts


def main() -> None:
    calibration, facts = (json.loads(Path(path).read_text()) for path in sys.argv[1:3])
    topo = build(spec_from_facts(facts["nvml_facts"]))
    scaled = calibrated_links(topo, Calibration.model_validate(calibration))
    print(f"{topo.num_gpus} x {topo.gpus[0].model}, NVLinks between GPU 0 and 1: {topo.nvlink_count(0, 1)}")
    print(f"link rates the file sets (measured over shipped): {scaled.link_scale}")
    errors: dict[str, list[float]] = {"shipped": [], "set": []}
    for row in calibration["collectives"]:
        g, size = row["ranks"], row["bytes"]
        measured = size * bus_factor(row["op"], g) / (row["busbw_gbps"] * 1e9)
        shipped, own = (collective_time_s(t, row["op"], list(range(g)), size) for t in (topo, scaled))
        if size >= MIN_BYTES:
            errors["shipped"].append(shipped / measured - 1)
            errors["set"].append(own / measured - 1)
        print(
            f"{row['op']:15s} {g} ranks {size / 2**20:6.0f} MiB  measured {measured * 1e6:8.1f} us  "
            f"shipped rates {shipped * 1e6:8.1f} us {shipped / measured - 1:+7.1%}  "
            f"the file's {own * 1e6:8.1f} us {own / measured - 1:+7.1%}"
        )
    for name, errs in errors.items():
        mean, worst = sum(map(abs, errs)) / len(errs), max(map(abs, errs))
        print(f"from {MIN_BYTES >> 20} MiB, {name} rates: |error| mean {mean:.1%}, max {worst:.1%}")


if __name__ == "__main__":
    main()
