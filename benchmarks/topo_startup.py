"""Wall time of `shardplan topo PRESET` as a whole process (the budget is 0.5 s), and of
`load_topology` in process for presets up to thousands of GPUs.

    python benchmarks/topo_startup.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from shardplan import load_topology


def main() -> None:
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "shardplan.cli", "topo", "dgx-h100"], capture_output=True, check=True)
        runs.append(time.perf_counter() - start)
    median = statistics.median(runs)
    print(
        f"shardplan topo dgx-h100 (process): median {median:.3f} s over 5 runs, {median / 0.5:.0%} of the 0.5 s budget"
    )
    for source, nodes in (("dgx-h100", 1), ("dgx-h100", 128), ("gb200-nvl72", 8), ("dgx-h100", 2048)):
        start = time.perf_counter()
        topo = load_topology(source, nodes=nodes)
        print(f"load_topology({source!r}, nodes={nodes}): {topo.num_gpus} GPUs in {time.perf_counter() - start:.3f} s")


if __name__ == "__main__":
    main()
