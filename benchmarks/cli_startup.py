"""Wall time of whole CLI processes, and of what a process spends it on.

- `shardplan topo dgx-h100`: the budget is 0.5 s.
- `shardplan suggest` for 8 GPUs: a plan should appear in well under a second (1 s is the budget here). On an
  NVSwitch node every placement costs the same and OR-Tools is never imported; on a box of bridged pairs CP-SAT
  places the ranks, and importing OR-Tools' `cp_model` (which imports pandas at its top) is part of the wait.
- In process: the imports, one `suggest` for each, and `load_topology` for presets up to thousands of GPUs.

The processes run as an installed package does, from compiled bytecode: PYTHONDONTWRITEBYTECODE (set in the
developers' VM) is dropped and a first run writes the caches. Compiling shardplan's modules on every start adds
0.1-0.2 s to each figure.

    python benchmarks/cli_startup.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

COMMANDS = [
    (["topo", "dgx-h100"], 0.5),
    (["suggest", "--model", "llama3-8b", "--topology", "dgx-h100"], 1.0),
    (["suggest", "--model", "llama3-8b", "--topology", "a100-pcie-8gpu-bridged"], 1.0),
]


ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # bytecode cached, as installed


def _process_s(args: list[str], runs: int = 5) -> float:
    """Median wall seconds of `python -m shardplan.cli ARGS` over `runs` processes, after one that warms the caches."""
    times = []
    for _ in range(runs + 1):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "shardplan.cli", *args], capture_output=True, check=True, env=ENV)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def _import_s(statement: str) -> float:
    """Wall seconds of a fresh interpreter running `statement`, less an empty one's."""

    def run(code: str) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=ENV)
        return time.perf_counter() - start

    return statistics.median(run(statement) for _ in range(3)) - statistics.median(run("pass") for _ in range(3))


def main() -> None:
    for args, budget in COMMANDS:
        median = _process_s(args)
        share = f"{median / budget:.0%} of {budget} s"
        print(f"shardplan {' '.join(args)} (process): median {median:.3f} s over 5 runs, {share}")
    cli = _import_s("import shardplan.cli")
    solver = _import_s("import shardplan.cli; from ortools.sat.python import cp_model") - cli
    print(f"imports: shardplan.cli {cli:.3f} s; OR-Tools cp_model after it {solver:.3f} s")

    from shardplan import Training, load_model, load_topology, suggest

    train = Training(global_batch=256, seq_len=4096)
    for source in ("dgx-h100", "a100-pcie-8gpu-bridged"):
        start = time.perf_counter()
        suggest(load_model("llama3-8b"), load_topology(source), train)
        print(f"suggest llama3-8b on {source} in process (first call): {time.perf_counter() - start:.3f} s")
    for source, nodes in (("dgx-h100", 1), ("dgx-h100", 128), ("gb200-nvl72", 8), ("dgx-h100", 2048)):
        start = time.perf_counter()
        topo = load_topology(source, nodes=nodes)
        print(f"load_topology({source!r}, nodes={nodes}): {topo.num_gpus} GPUs in {time.perf_counter() - start:.3f} s")


if __name__ == "__main__":
    main()
