"""Say in the topology's terms where each axis of a plan communicates."""

from __future__ import annotations

import itertools

from shardplan.cost.collectives import ring_hops
from shardplan.plan import Plan
from shardplan.solve.validate import mesh_groups
from shardplan.topology.schema import PATH_KINDS, Topology

_WHERE = {
    "nvlink": "over NVLink",
    "pix": "under one PCIe switch",
    "pxb": "across PCIe switches",
    "phb": "through the PCIe host bridge",
    "node": "across PCIe host bridges",
    "sys": "across CPU sockets",
    "net": "across nodes",
}


def axis_path(topology: Topology, groups: list[list[int]], chain: bool = False) -> str:
    """The slowest path kind any group of an axis uses (rings: the hops of the ring NCCL builds, `ring_hops`; pp:
    neighbours). It stops at the first hop between nodes, the slowest kind there is."""
    worst = 0
    for g in groups:
        for a, b in itertools.pairwise(g) if chain else ring_hops(topology, g):
            worst = max(worst, PATH_KINDS.index(topology.path_kind(a, b)))
            if worst == len(PATH_KINDS) - 1:
                return PATH_KINDS[worst]
    return PATH_KINDS[worst]


def explain(plan: Plan, topology: Topology) -> str:
    """One line: each used axis and the slowest link it crosses, and what placement wins.

    >>> from shardplan import Training, estimate, load_topology
    >>> p = estimate("llama3-8b", "a100-pcie-8gpu-bridged", Training(global_batch=64, seq_len=4096),
    ...              tp=2, pp=1, dp=4, rank_layout=[[[0, 1], [2, 3], [4, 5], [6, 7]]])
    >>> explain(p, load_topology("a100-pcie-8gpu-bridged"))
    'TP=2 over NVLink; DP=4 across CPU sockets'
    """
    parts = []
    for axis in ("tp", "cp", "ep", "pp", "dp"):
        size = getattr(plan, axis)
        if size > 1:
            kind = axis_path(topology, mesh_groups(plan, axis), chain=axis == "pp")
            parts.append(f"{axis.upper()}={size} {_WHERE.get(kind, kind)}")
    line = "; ".join(parts) or "one GPU does it all"
    if plan.pp > 1 and len(topology.gpu_model_ids[0]) > 1:  # mixed GPU models: which stage runs where
        from shardplan.cost.step import stage_gpu_models

        stages = zip(stage_gpu_models(topology, plan.rank_layout), plan.layers_per_stage, strict=True)
        line += "; stages on " + ", ".join(f"{'+'.join(models)} ({n} layer{'s' * (n != 1)})" for models, n in stages)
    if plan.default_step_time_s and plan.default_step_time_s > plan.step_time_s * 1.005:
        line += f" ({plan.default_step_time_s / plan.step_time_s:.2f}x faster than the default rank order)"
    return line
