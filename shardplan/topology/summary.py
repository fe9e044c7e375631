"""What a person wants to know about a topology at a glance, as plain data for the CLI."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from shardplan.errors import TopologyError
from shardplan.topology.schema import PATH_KINDS, Topology


def summarize(topology: Topology) -> dict[str, Any]:
    """GPU models, NVLink islands, PCIe groups per node, the nodes whose GPUs lack PCIe peer-to-peer and the link
    classes NCCL copies through host memory, NICs, and link classes with their achievable and datasheet GB/s (None
    where a fact such as the GPU model is unknown)."""
    models = Counter(g.model or f"unknown ({g.name or 'no name'})" for g in topology.gpus)
    first_node = [g for g in topology.gpus if g.node == 0]
    classes: dict[str, dict[str, Any]] = {}
    n = topology.num_gpus
    # Pairs within the first node, plus node 0 <-> node 1: enough to see every link class.
    pairs = [(a.index, b.index) for a in first_node for b in first_node if a.index < b.index]
    if topology.num_nodes > 1:
        second = next(g.index for g in topology.gpus if g.node == 1)
        pairs.append((0, second))
    for i, j in pairs:
        kind = topology.path_kind(i, j)
        entry = classes.setdefault(kind, {"pairs": 0, "gbps": set(), "datasheet_gbps": set()})
        entry["pairs"] += 1
        for key, achievable in (("gbps", True), ("datasheet_gbps", False)):
            try:
                entry[key].add(round(topology.bandwidth_gbps(i, j, achievable=achievable), 1))
            except TopologyError:
                entry[key].add(math.nan)
    link_classes = [
        {
            "kind": kind,
            "pairs_in_first_node": classes[kind]["pairs"] if kind != "net" else None,
            "gbps": _span(classes[kind]["gbps"]),
            "datasheet_gbps": _span(classes[kind]["datasheet_gbps"]),
        }
        for kind in PATH_KINDS
        if kind in classes
    ]
    sockets = sorted({g.socket for g in first_node})
    return {
        "name": topology.name,
        "source": topology.source,
        "caveats": list(topology.caveats),
        "num_gpus": n,
        "num_nodes": topology.num_nodes,
        "gpu_models": dict(models),
        "nvlink_islands": [isl for isl in topology.nvlink_islands() if len(isl) > 1][:16],
        "sockets_first_node": [[g.index for g in first_node if g.socket == s] for s in sockets],
        "nodes_without_p2p": [node.index for node in topology.nodes if not node.p2p],
        # link classes whose pairs NCCL copies through host memory in a group of the whole first node
        "through_host_first_node": [
            kind
            for kind in PATH_KINDS
            if any(
                topology.path_kind(i, j) == kind and topology.copies_through_host(i, j, local_gpus=len(first_node))
                for i, j in pairs
            )
        ],
        "nics_first_node": [
            {"name": nic.name, "gbit": nic.gbit, "near": list(nic.near)} for nic in topology.nics if nic.node == 0
        ],
        "link_classes": link_classes,
    }


def _span(values: set[float]) -> str | None:
    known = sorted(v for v in values if not math.isnan(v))
    if not known:
        return None
    return f"{known[0]:g}" if known[0] == known[-1] else f"{known[0]:g}-{known[-1]:g}"
