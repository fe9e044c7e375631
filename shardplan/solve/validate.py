"""`validate_plan`: an independent check of a plan, written without the solver or the cost model's
internals, run on every plan the search returns."""

from __future__ import annotations

from shardplan.cost.memory import CACHE_PART
from shardplan.errors import PlanError
from shardplan.model.schema import ModelSpec
from shardplan.plan import Plan
from shardplan.topology.schema import Topology


def mesh_groups(plan: Plan, axis: str) -> list[list[int]]:
    """The GPU groups along one mesh axis (`pp`, `dp` or `tp`), as a DeviceMesh slices them: all
    positions that differ only in that axis's coordinate, in order."""
    layout = plan.rank_layout
    pp, dp, tp = len(layout), len(layout[0]), len(layout[0][0])
    if axis == "tp":
        return [list(layout[p][d]) for p in range(pp) for d in range(dp)]
    if axis == "dp":
        return [[layout[p][d][t] for d in range(dp)] for p in range(pp) for t in range(tp)]
    if axis == "pp":
        return [[layout[p][d][t] for p in range(pp)] for d in range(dp) for t in range(tp)]
    raise PlanError(f"unknown mesh axis {axis!r}; one of pp, dp, tp")


def validate_plan(plan: Plan, model: ModelSpec, topology: Topology) -> None:
    """Raise `PlanError` naming the first broken rule; return None when the plan is sound.

    Rules: the layout has the mesh shape and is a permutation of the topology's GPUs; degrees
    multiply to the GPU count; tensor parallelism splits the heads; stages hold every layer; the
    batch splits into micro-batches; memory fits the smallest GPU; each axis's groups have the
    axis's size and together cover every GPU once.
    """
    n = topology.num_gpus
    if plan.num_gpus != n or plan.tp * plan.pp * plan.dp != n:
        raise PlanError(
            f"tp x pp x dp = {plan.tp * plan.pp * plan.dp}, plan says {plan.num_gpus} GPUs, topology has {n}"
        )
    if tuple(plan.mesh_shape) != (plan.pp, plan.dp, plan.tp) or len(plan.mesh_dim_names) != len(plan.mesh_shape):
        raise PlanError(f"mesh shape {plan.mesh_shape} is not (pp, dp, tp) = ({plan.pp}, {plan.dp}, {plan.tp})")
    layout = plan.rank_layout
    if len(layout) != plan.pp or any(len(r) != plan.dp or any(len(c) != plan.tp for c in r) for r in layout):
        raise PlanError(f"rank_layout does not have shape {plan.mesh_shape}")
    if sorted(g for r in layout for c in r for g in c) != list(range(n)):
        raise PlanError(f"rank_layout is not a permutation of GPUs 0..{n - 1}")
    if model.num_heads % plan.tp:
        raise PlanError(f"tp={plan.tp} does not divide {model.num_heads} heads")
    stages = plan.layers_per_stage
    if len(stages) != plan.pp or sum(stages) != model.num_layers or min(stages) < 1:
        raise PlanError(f"layers per stage {stages} do not give {plan.pp} stages of the {model.num_layers} layers")
    if plan.micro_batch * plan.num_micro_batches * plan.dp != plan.global_batch:
        raise PlanError(
            f"micro-batch {plan.micro_batch} x {plan.num_micro_batches} micro-batches x dp {plan.dp} "
            f"!= global batch {plan.global_batch}"
        )
    smallest = topology.smallest_memory_bytes
    need = plan.memory_per_gpu_bytes - plan.memory_breakdown.get(CACHE_PART, 0.0)
    if smallest and need > smallest:
        raise PlanError(f"needs {need / 1e9:.1f} GB per GPU, the smallest GPU has {smallest / 1e9:.1f}")
    for axis, size in zip(plan.mesh_dim_names, plan.mesh_shape, strict=True):
        groups = mesh_groups(plan, axis)
        if any(len(g) != size for g in groups) or sorted(x for g in groups for x in g) != list(range(n)):
            raise PlanError(f"the {axis} groups do not partition the GPUs into groups of {size}")
