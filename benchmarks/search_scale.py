"""Seconds per `suggest()` from 8 to 16,384 GPUs, with the candidates costed and the gap proved.

python benchmarks/search_scale.py [--quick]

Budgets (issue 6): 8 GPUs < 0.5 s; 64 GPUs (8x DGX H100, Llama-3-8B) < 2 s, where the nearest
PyTorch-native planner reports about 52 s; 1,024 GPUs < 10 s; 16,384 GPUs (Llama-3-405B) < 60 s, also
at 131,072 tokens with context-parallel degrees up to 16 tried. And 64 GPUs of two generations
(benchmarks/machines/mixed-h100-a100.yaml, Llama-3-70B) < 10 s: its lower bounds are looser (a pipeline
is bounded on the faster GPUs), so more candidates are costed; GPT-OSS 20B on two bridged A100 PCIe boxes < 10 s
for the same reason (its all-to-alls contend on PCIe, which the bound leaves out).
Times are wall clock in this process after `import networkx, ortools` (0.1 s and 0.2 s, paid once per process).
"its report": the CLI's lines beside the table for the best plan (`explain`, `visible_devices`), which once went
through every pair of GPUs of a data-parallel group (105 s for Llama-3-8B on 16,384 GPUs).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import networkx  # noqa: F401  (import costs paid up front: 0.1 s and 0.2 s, once per process)
import ortools.sat.python.cp_model  # noqa: F401

from shardplan import Training, load_model, load_topology, suggest
from shardplan.emit.remap import visible_devices
from shardplan.solve.explain import explain

MACHINES = Path(__file__).resolve().parent / "machines"
CASES = [
    # model, topology, nodes, global batch, seq len, budget s, context-parallel degrees tried
    ("llama3-8b", "a100-pcie-8gpu-bridged", 1, 64, 4096, 0.5, None),
    ("llama3-8b", "dgx-h100", 1, 64, 4096, 0.5, None),
    ("llama3-8b", "dgx-h100", 8, 256, 4096, 2.0, None),
    ("llama3-70b", "dgx-h100", 128, 1024, 4096, 10.0, None),
    ("llama3-405b", "dgx-h100", 2048, 2048, 8192, 60.0, None),
    ("llama3-405b", "dgx-h100", 2048, 256, 131072, 60.0, (1, 2, 4, 8, 16)),  # long sequences
    ("llama3-70b", str(MACHINES / "mixed-h100-a100.yaml"), 1, 256, 4096, 10.0, None),  # two GPU generations
    ("qwen3-235b-a22b", "dgx-h100", 32, 2048, 4096, 10.0, None),  # mixture of experts: every ep degree tried
    # experts on PCIe: the all-to-all bound knows no contention between groups (nor TP's bound the DP groups that
    # take the bridges), so many candidates are costed
    ("gpt-oss-20b", "a100-pcie-8gpu-bridged", 2, 128, 2048, 10.0, None),
    ("qwen3-235b-a22b", "dgx-h100", 128, 8192, 4096, 10.0, None),
    # DeepSeek-V3 on 2,048 GPUs, its paper's batch (arXiv:2412.19437 Sec. 4.2: 15,360 sequences of 4K at the end)
    ("deepseek-v3", "dgx-h100", 256, 15360, 4096, 20.0, None),
]


def main() -> None:
    quick = "--quick" in sys.argv
    for model, topo_name, nodes, batch, seq, budget, cp in CASES[:3] if quick else CASES:
        topo = load_topology(topo_name, nodes=nodes)
        counted: list[tuple[int, int]] = []
        start = time.perf_counter()
        plans = suggest(
            load_model(model),
            topo,
            Training(global_batch=batch, seq_len=seq),
            top_k=3,
            time_limit_s=budget * 0.8,
            cp=cp,
            progress=lambda done, total, seen=counted: seen.append((done, total)),
        )
        seconds = time.perf_counter() - start
        best = plans[0]
        start = time.perf_counter()  # what `shardplan suggest` prints beside the table: the why line, the launch order
        explain(best, topo), visible_devices(best, topo)
        report = time.perf_counter() - start
        recompute = "+".join((best.recompute, *best.recompute_modules))
        examined, fitting = (counted[-1][0] + 1, counted[-1][1]) if counted else (0, 0)
        print(
            f"{model:<12} {topo.num_gpus:>6} GPUs: {seconds:6.2f} s ({seconds / budget:4.0%} of {budget:g} s); "
            f"{examined} of {fitting} fitting candidates examined; best tp={best.tp} pp={best.pp} dp={best.dp} "
            f"{f'cp={best.cp} ' if cp else ''}{f'ep={best.ep} ' if best.ep > 1 else ''}"
            f"mb={best.micro_batch} v={best.virtual_stages} ZeRO-{best.zero_stage} {recompute}, "
            f"{best.step_time_s:.2f} s/step, MFU {best.mfu:.1%}, gap {best.gap:.1%}; its report {report:.3f} s"
        )


if __name__ == "__main__":
    main()
