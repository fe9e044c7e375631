"""`Plan.device_mesh`: the plan as a `torch.distributed.DeviceMesh`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from shardplan.errors import PlanError
from shardplan.plan import Plan

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh


def device_mesh(plan: Plan, device_type: str = "cuda", *, rank_of_gpu: Sequence[int] | None = None) -> DeviceMesh:
    """A DeviceMesh whose tensor holds, at each position of `rank_layout`, the global rank that
    drives that GPU (`rank_of_gpu[g]`; default: rank g, as torchrun assigns them when every node
    runs one process per GPU in order). Needs an initialised default process group whose world
    size is the plan's GPU count; every rank must call it (it creates the axis groups)."""
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import DeviceMesh

    if not dist.is_initialized():
        raise PlanError("device_mesh needs torch.distributed initialised (init_process_group, e.g. under torchrun)")
    if dist.get_world_size() != plan.num_gpus:
        raise PlanError(f"the plan is for {plan.num_gpus} GPUs but the world has {dist.get_world_size()} ranks")
    ranks = list(rank_of_gpu) if rank_of_gpu is not None else list(range(plan.num_gpus))
    if sorted(ranks) != list(range(plan.num_gpus)):
        raise PlanError(f"rank_of_gpu must be a permutation of 0..{plan.num_gpus - 1}")
    mesh = torch.tensor(plan.rank_layout, dtype=torch.int).apply_(lambda g: ranks[g])
    return DeviceMesh(device_type, mesh, mesh_dim_names=tuple(plan.mesh_dim_names))
