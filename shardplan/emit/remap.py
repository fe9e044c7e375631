"""How a launcher's default rank order becomes the plan's: torchrun gives node k's local rank i the
global rank k x nproc + i and GPU cuda:i, and frameworks lay their mesh out row-major over ranks
(torchtitan [pp, dp, cp, tp], Megatron-LM tp fastest, then cp, dp and pp: the plan's (pp, dp[, cp][, ep], tp)
order, ep folded inside dp). So rank r must drive the GPU at flat position r of `rank_layout`. When each node's ranks
land on that node's own GPUs, a per-node `CUDA_VISIBLE_DEVICES` order does it."""

from __future__ import annotations

from shardplan.plan import Plan
from shardplan.topology.schema import Topology


def visible_devices(plan: Plan, topology: Topology) -> dict[int, str] | None:
    """Per node, the `CUDA_VISIBLE_DEVICES` that realises the plan (`{}` when the default order
    already does), or None when some node's ranks would need GPUs of another node."""
    gpus = plan.gpu_of_rank()
    out: dict[int, str] = {}
    rank = 0
    for node, mine in enumerate(topology.gpus_by_node):
        wanted = gpus[rank : rank + len(mine)]
        if tuple(sorted(wanted)) != mine:
            return None
        local = [topology.gpus[g].local_index for g in wanted]
        if local != sorted(local):
            out[node] = ",".join(map(str, local))
        rank += len(mine)
    return out


def remap_note(plan: Plan, topology: Topology, comment: str) -> list[str]:
    """Comment lines saying how to launch so that ranks sit where the plan puts them."""
    order = visible_devices(plan, topology)
    if order == {}:
        return []
    if order is None:
        return [
            f"{comment} The plan's rank order cannot be set per node with CUDA_VISIBLE_DEVICES (a node's ranks",
            f"{comment} would drive another node's GPUs): build the mesh with shardplan (Plan.device_mesh or",
            f"{comment} auto_device_mesh). GPU of each rank: {plan.gpu_of_rank()}",
        ]
    lines = [f"{comment} The plan's rank order differs from torchrun's default: launch each node with"]
    lines += [f"{comment}   node {node}: CUDA_VISIBLE_DEVICES={devices}" for node, devices in order.items()]
    return lines
