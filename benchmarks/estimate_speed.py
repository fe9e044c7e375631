"""Milliseconds per `estimate()` call (the search calls it many times; the budget is 5 ms).

python benchmarks/estimate_speed.py
"""

from __future__ import annotations

import statistics
import time

from shardplan import Training, estimate, load_model, load_topology

CASES = [
    ("llama3-8b", "dgx-h100", 1, dict(tp=2, pp=1, dp=4), 64),
    ("llama3-8b", "a100-pcie-8gpu-bridged", 1, dict(tp=2, pp=2, dp=2), 64),
    ("llama3-70b", "dgx-h100", 8, dict(tp=8, pp=2, dp=4), 256),
    ("llama3-405b", "dgx-h100", 128, dict(tp=8, pp=16, dp=8), 1024),
]


def main() -> None:
    for model_name, topo_name, nodes, degrees, batch in CASES:
        model, topo = load_model(model_name), load_topology(topo_name, nodes=nodes)
        train = Training(global_batch=batch, seq_len=4096, zero_stage=1, recompute="selective")
        runs = []
        for _ in range(7):
            start = time.perf_counter()
            estimate(model, topo, train, **degrees)
            runs.append(time.perf_counter() - start)
        ms = statistics.median(runs) * 1e3
        print(
            f"{model_name:<12} {topo.num_gpus:>5} GPUs {degrees}: {ms:7.2f} ms per estimate "
            f"({ms / 5:.1f}x the 5 ms budget)"
        )


if __name__ == "__main__":
    main()
