"""`validate_plan`: an independent check of a plan, written without the solver or the cost model's
internals, run on every plan the search returns."""

from __future__ import annotations

import itertools
import math

from shardplan.cost.memory import CACHE_PART
from shardplan.errors import PlanError
from shardplan.model.schema import ModelSpec
from shardplan.plan import Plan
from shardplan.topology.schema import Topology


def mesh_groups(plan: Plan, axis: str) -> list[list[int]]:
    """The GPU groups along one mesh axis (`pp`, `dp`, `cp`, `ep` or `tp`), as a DeviceMesh slices them: all
    positions that differ only in that axis's coordinate, in order."""
    names, shape = list(plan.mesh_dim_names), tuple(plan.mesh_shape)
    if axis not in names:
        raise PlanError(f"unknown mesh axis {axis!r}; one of {', '.join(names)}")
    k = names.index(axis)
    flat = plan.gpu_of_rank()
    strides = [math.prod(shape[j + 1 :]) for j in range(len(shape))]
    others = [j for j in range(len(shape)) if j != k]
    starts = (
        sum(i * strides[j] for j, i in zip(others, idx, strict=True))
        for idx in itertools.product(*(range(shape[j]) for j in others))
    )
    return [[flat[start + c * strides[k]] for c in range(shape[k])] for start in starts]


def _has_shape(layout: object, shape: tuple[int, ...]) -> bool:
    """Whether nested lists `layout` have exactly `shape`."""
    if not shape:
        return isinstance(layout, int)
    return isinstance(layout, list) and len(layout) == shape[0] and all(_has_shape(x, shape[1:]) for x in layout)


def validate_plan(plan: Plan, model: ModelSpec, topology: Topology) -> None:
    """Raise `PlanError` naming the first broken rule; return None when the plan is sound.

    Rules: the layout has the mesh shape and is a permutation of the topology's GPUs; degrees
    multiply to the GPU count; tensor parallelism splits the heads; stages hold every layer; the
    batch splits into micro-batches; memory fits the smallest GPU; each axis's groups have the
    axis's size and together cover every GPU once.
    """
    n = topology.num_gpus
    degrees = plan.tp * plan.pp * plan.dp * plan.cp * plan.ep
    if plan.num_gpus != n or degrees != n:
        raise PlanError(f"tp x pp x dp x cp x ep = {degrees}, plan says {plan.num_gpus} GPUs, topology has {n}")
    dims = {"pp": plan.pp, "dp": plan.dp, "cp": plan.cp, "ep": plan.ep, "tp": plan.tp}
    names = tuple(a for a in dims if dims[a] > 1 or a in ("pp", "dp", "tp"))
    if tuple(plan.mesh_dim_names) != names or tuple(plan.mesh_shape) != tuple(dims[a] for a in names):
        raise PlanError(f"mesh {plan.mesh_dim_names} of shape {plan.mesh_shape} is not {names} of the plan's degrees")
    if not _has_shape(plan.rank_layout, tuple(plan.mesh_shape)):
        raise PlanError(f"rank_layout does not have shape {plan.mesh_shape}")
    if sorted(plan.gpu_of_rank()) != list(range(n)):
        raise PlanError(f"rank_layout is not a permutation of GPUs 0..{n - 1}")
    if model.num_heads % plan.tp:
        raise PlanError(f"tp={plan.tp} does not divide {model.num_heads} heads")
    if plan.ep > 1 and (model.moe is None or model.moe.num_experts % plan.ep):
        raise PlanError(f"ep={plan.ep} does not divide the model's experts")
    stages = plan.layers_per_stage
    if len(stages) != plan.pp or sum(stages) != model.num_layers or min(stages) < 1:
        raise PlanError(f"layers per stage {stages} do not give {plan.pp} stages of the {model.num_layers} layers")
    if plan.micro_batch * plan.num_micro_batches * plan.dp * plan.ep != plan.global_batch:
        raise PlanError(
            f"micro-batch {plan.micro_batch} x {plan.num_micro_batches} micro-batches x dp {plan.dp} x ep {plan.ep} "
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
