"""Milliseconds to cost one layout (the search costs many; the budget is 5 ms).

Two figures per case: `estimate()` from cold (every collective timed afresh), and `step_cost` of
new layouts of the same degrees (the nodes shuffled) with the collective-time memo the search shares
between the layouts it costs: groups that sit alike inside their nodes, in the same company, are
timed once per search. Each figure is the median of 21 runs (15 for new layouts): a run that a full garbage
collection of the large topology lands in takes several times the others. The fastest run follows in brackets:
on a shared VM the medians of the same code vary by half from one minute to the next, the fastest far less.

    python benchmarks/estimate_speed.py
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable

import numpy as np

from shardplan import Training, estimate, load_model, load_topology
from shardplan.cost.step import step_cost

CASES = [
    ("llama3-8b", "dgx-h100", 1, dict(tp=2, pp=1, dp=4), 64),
    ("llama3-8b", "a100-pcie-8gpu-bridged", 1, dict(tp=2, pp=2, dp=2), 64),
    ("llama3-70b", "dgx-h100", 8, dict(tp=8, pp=2, dp=4), 256),
    ("llama3-405b", "dgx-h100", 128, dict(tp=8, pp=16, dp=8), 1024),
    ("llama3-405b", "dgx-h100", 1024, dict(tp=8, pp=16, dp=64), 2048),
]
BUDGET_MS = 5.0


def _median_ms(fn: Callable[[int], object], repeats: int = 21) -> tuple[float, float]:
    """Milliseconds per call of `fn`: the median and the fastest."""
    runs = []
    for k in range(repeats):
        start = time.perf_counter()
        fn(k)
        runs.append(time.perf_counter() - start)
    return statistics.median(runs) * 1e3, min(runs) * 1e3


def _shuffled_nodes(layout: list[list[list[int]]], per_node: int, nodes: int, seed: int) -> list[list[list[int]]]:
    order = list(range(nodes))
    random.Random(seed).shuffle(order)
    return [[[order[g // per_node] * per_node + g % per_node for g in cell] for cell in row] for row in layout]


def main() -> None:
    for model_name, topo_name, nodes, degrees, batch in CASES:
        model, topo = load_model(model_name), load_topology(topo_name, nodes=nodes)
        train = Training(global_batch=batch, seq_len=4096, zero_stage=1, recompute="selective")
        cold, cold_best = _median_ms(lambda _, m=model, t=topo, tr=train, d=degrees: estimate(m, t, tr, **d))
        memo: dict = {}
        base = np.arange(topo.num_gpus).reshape(degrees["pp"], degrees["dp"], degrees["tp"]).tolist()  # row-major
        per_node = topo.num_gpus // topo.num_nodes
        step_cost(model, topo, train, base, micro_batch=1, memo=memo)

        # nested lists, as the search passes them; shuffled before the clock starts
        shuffled = [_shuffled_nodes(base, per_node, topo.num_nodes, k) for k in range(15)]

        def new_layout(k: int, m=model, t=topo, tr=train, layouts=shuffled, memo=memo) -> object:
            return step_cost(m, t, tr, layouts[k], micro_batch=1, memo=memo)

        warm, warm_best = _median_ms(new_layout, repeats=15)
        print(
            f"{model_name:<12} {topo.num_gpus:>5} GPUs {degrees}: estimate {cold:5.2f} ms [{cold_best:5.2f}] "
            f"({cold / BUDGET_MS:.1f}x budget); another layout with the search's memo {warm:5.2f} ms "
            f"[{warm_best:5.2f}] ({warm / BUDGET_MS:.1f}x)"
        )


if __name__ == "__main__":
    main()
