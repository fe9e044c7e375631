"""`estimate()`: score one given layout without searching."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shardplan.cost.calibration import Calibration, read_calibration
from shardplan.cost.link_scale import calibrated_links
from shardplan.cost.memory import CACHE_PART
from shardplan.cost.step import StepCost, step_cost
from shardplan.errors import PlanError, ShardplanError
from shardplan.model import ModelSpec, load_model
from shardplan.plan import Plan
from shardplan.topology import Topology, load_topology
from shardplan.training import Training

if TYPE_CHECKING:
    import numpy as np


def mesh_of(pp: int, dp: int, cp: int, tp: int, ep: int = 1) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """The mesh's shape and axis names: (pp, dp, tp), with cp and then ep between dp and tp where used."""
    axes = [("pp", pp), ("dp", dp), ("cp", cp), ("ep", ep), ("tp", tp)]
    used = [(name, n) for name, n in axes if n > 1 or name in ("pp", "dp", "tp")]
    return tuple(n for _, n in used), tuple(name for name, _ in used)


def check_ep(model: ModelSpec, ep: int, cp: int = 1, group: int | None = None) -> None:
    """A one-line `PlanError` where `model` cannot split its experts over `ep` GPUs (`group`: the GPUs that split
    them, `Training.expert_group`; default `ep`)."""
    if ep > 1 and cp > 1:
        # Megatron-Core and torchtitan both fold expert groups over the context-parallel ranks too; the layout's
        # separate cp and ep axes do not say how
        raise PlanError("context and expert parallelism together are not modelled: set cp=1 or ep=1")
    if ep > 1 and model.moe is None:
        raise PlanError(f"{model.name} has no experts to split: expert parallelism needs a mixture-of-experts model")
    group = group or ep
    if ep > 1 and model.moe is not None and model.moe.num_experts % group:
        what = f"ep={ep}" if group == ep else f"ep x tp = {group} (experts whole on a GPU)"
        raise PlanError(f"{what} does not divide the {model.moe.num_experts} experts of {model.name}")


def check_cp(model: ModelSpec, training: Training, cp: int) -> None:
    """A one-line `PlanError` where context parallelism of degree `cp` cannot run with `training`."""
    if cp > 1 and model.gated_delta is not None:
        # a sequence's chunks would pass each linear-attention block's state along (FLA's cp_context); not modelled
        raise PlanError(f"context parallelism of {model.name}'s linear-attention blocks is not modelled: set cp=1")
    if cp > 1 and training.attention == "unfused":
        raise PlanError("context parallelism runs the attention in chunks: it needs attention='flash' or 'triton'")
    if cp > 1 and training.seq_len % (2 * cp):
        raise PlanError(f"seq_len {training.seq_len} does not split into 2 x cp = {2 * cp} load-balanced chunks")


def check_layout(
    model: ModelSpec,
    topology: Topology,
    training: Training,
    *,
    tp: int,
    pp: int,
    dp: int,
    micro_batch: int,
    virtual_stages: int,
    rank_layout: Sequence[Sequence[Sequence[Any]]] | None,
    cp: int = 1,
    ep: int = 1,
) -> np.ndarray:
    """The layout as a (pp, dp, tp) integer array, with the cp and ep axes between dp and tp where used
    (`mesh_of`; row-major where `rank_layout` is None); a one-line `PlanError` saying what to change when
    the request cannot be a layout."""
    import numpy as np  # here, not at start-up

    n = topology.num_gpus
    degrees = dict(tp=tp, pp=pp, dp=dp, cp=cp, ep=ep, micro_batch=micro_batch, virtual_stages=virtual_stages)
    if low := [f"{name} {k}" for name, k in degrees.items() if k < 1]:
        raise PlanError(f"{', '.join(low)}: expected at least 1")
    if tp * pp * dp * cp * ep != n:
        extra = [(name, k) for name, k in (("cp", cp), ("ep", ep)) if k > 1]
        names = " x ".join(["tp", "pp", "dp", *(name for name, _ in extra)])
        values = " x ".join(map(str, [tp, pp, dp, *(k for _, k in extra)]))
        raise PlanError(f"{names} = {values} = {tp * pp * dp * cp * ep}, but the topology has {n} GPUs")
    check_ep(model, ep, cp, training.expert_group(ep, tp))
    if model.num_heads % tp:
        raise PlanError(f"tp={tp} does not divide the {model.num_heads} attention heads of {model.name}")
    if model.num_kv_heads % tp and tp % model.num_kv_heads:
        raise PlanError(f"tp={tp} and the {model.num_kv_heads} KV heads of {model.name} do not divide one another")
    if model.gated_delta is not None and model.gated_delta.key_heads % tp:
        raise PlanError(
            f"tp={tp} does not divide the {model.gated_delta.key_heads} key heads of {model.name}'s linear attention"
        )
    if "mla_up_proj" in training.recompute_modules and model.mla is None:
        raise PlanError(f"recompute module mla_up_proj needs multi-head latent attention, which {model.name} lacks")
    # a model chunk may hold just the embedding (first) or just the output head and loss (last): Llama 3's
    # split (arXiv:2407.21783 Sec. 3.3.2), Megatron's --account-for-{embedding,loss}-in-pipeline-split
    if pp * virtual_stages > model.num_layers + 2:
        raise PlanError(
            f"pp x virtual stages = {pp * virtual_stages} exceeds the {model.num_layers} layers plus embedding and head"
        )
    if training.global_batch % (dp * ep * micro_batch):
        what = (
            f"dp x ep x micro_batch = {dp} x {ep} x {micro_batch}"
            if ep > 1
            else f"dp x micro_batch = {dp} x {micro_batch}"
        )
        raise PlanError(f"global batch {training.global_batch} is not a multiple of {what}")
    if virtual_stages > 1 and pp == 1:
        raise PlanError(f"virtual_stages={virtual_stages} interleaves pipeline stages: set pp > 1, or virtual_stages=1")
    if virtual_stages > 1 and not training.interleaved_pipeline:
        raise PlanError(
            f"the {training.pipeline_runtime} pipeline runtime runs one model chunk per GPU: set virtual_stages=1"
        )
    if pp > 1 and training.zero_stage not in training.pipeline_zero_stages:
        raise PlanError(
            f"the {training.pipeline_runtime} pipeline runtime refuses ZeRO-{training.zero_stage} with pp > 1: "
            f"set zero_stage to {' or '.join(map(str, training.pipeline_zero_stages))}, or pp=1"
        )
    num_micro = training.global_batch // (dp * ep * micro_batch)
    if training.micro_batch_per_stage and num_micro < pp:
        raise PlanError(
            f"the {training.pipeline_runtime} pipeline runtime needs a micro-batch per stage, pp={pp}, here "
            f"{num_micro}: a smaller micro-batch, a larger global batch, or fewer stages"
        )
    if virtual_stages > 1 and num_micro % pp:
        raise PlanError(
            f"interleaved pipelines need the micro-batches to be a multiple of pp={pp}, here {num_micro}: set "
            f"virtual_stages=1, or a global batch that gives a multiple"
        )
    check_cp(model, training, cp)
    shape, names = mesh_of(pp, dp, cp, tp, ep)
    if rank_layout is None:
        return np.arange(n).reshape(shape)
    try:
        grid = np.asarray(rank_layout)
    except ValueError:  # ragged
        grid = np.empty(0)
    if grid.shape != shape:
        raise PlanError(f"rank_layout must have shape ({', '.join(names)}) = {shape}")
    if grid.dtype.kind not in "iu" or not np.array_equal(np.sort(grid, axis=None), np.arange(n)):
        raise PlanError(f"rank_layout must use every GPU 0..{n - 1} exactly once (integer indexes)")
    return grid.astype(np.int64)


def estimate(
    model: ModelSpec | str | Path,
    topology: Topology | str | Path,
    training: Training,
    *,
    tp: int,
    pp: int,
    dp: int,
    micro_batch: int = 1,
    virtual_stages: int = 1,
    cp: int = 1,
    ep: int = 1,
    rank_layout: Sequence[Sequence[Sequence[Any]]] | None = None,
    layers_per_stage: Sequence[int] | None = None,
    calibration: Calibration | str | Path | None = None,
) -> Plan:
    """Score one layout: step time, memory per GPU, throughput and where the time goes. `cp` > 1
    splits every sequence over that many GPUs (context parallelism, `Training.cp_comm`); the layout
    then has shape (pp, dp, cp, tp). `ep` > 1 splits a mixture-of-experts model's experts over that many
    GPUs, which swap tokens by all-to-all in every MoE block; they take different data, so the dense layers'
    data-parallel group spans dp x ep (x cp) and the global batch splits over dp x ep replicas. The layout
    then has shape (pp, dp, ep, tp), or (pp, dp, cp, ep, tp) with both.

    >>> from shardplan import Training
    >>> train = Training(global_batch=32, seq_len=8192, zero_stage=3)
    >>> plan = estimate("llama3-8b", "dgx-h100", train, tp=1, pp=1, dp=8)
    >>> plan.fits, plan.mesh_shape
    (True, (1, 8, 1))
    """
    import numpy as np  # here, not at start-up

    try:  # numpy integers as well as ints
        tp, pp, dp, cp, ep, micro_batch, v = map(operator.index, (tp, pp, dp, cp, ep, micro_batch, virtual_stages))
    except TypeError:
        raise PlanError("tp, pp, dp, cp, ep, micro_batch and virtual_stages must be whole numbers") from None
    spec = load_model(model)
    cal = read_calibration(calibration) if isinstance(calibration, str | Path) else calibration
    topo = calibrated_links(load_topology(topology), cal)
    layout = check_layout(
        spec,
        topo,
        training,
        tp=tp,
        pp=pp,
        dp=dp,
        micro_batch=micro_batch,
        virtual_stages=v,
        rank_layout=rank_layout,
        cp=cp,
        ep=ep,
    )
    if layers_per_stage is not None and (
        len(layers_per_stage) != pp or sum(layers_per_stage) != spec.num_layers or min(layers_per_stage) < 1
    ):
        raise PlanError(
            f"layers_per_stage {tuple(layers_per_stage)} must give {pp} stages of at least one layer each, "
            f"summing to the {spec.num_layers} layers"
        )
    if layers_per_stage is not None and v > 1:
        # each of a stage's chunks holds a block, or the embedding / head on the first / last stage
        short = [p for p, n in enumerate(layers_per_stage) if n + (p == 0) + (p == pp - 1) < v]
        if short:
            raise PlanError(f"stage {short[0]} has {layers_per_stage[short[0]]} layers, too few for {v} virtual stages")
    options = dict(micro_batch=micro_batch, virtual_stages=v, layers_per_stage=layers_per_stage, calibration=cal, ep=ep)
    cost = step_cost(spec, topo, training, layout, **options)
    default = cost
    row_major = np.arange(topo.num_gpus).reshape(layout.shape)
    if not np.array_equal(layout, row_major):
        default = step_cost(spec, topo, training, row_major, **options)
    return make_plan(
        spec, topo, training, layout.tolist(), cost, default, micro_batch=micro_batch, virtual_stages=v, cp=cp, ep=ep
    )


def make_plan(
    model: ModelSpec,
    topology: Topology,
    training: Training,
    layout: list[Any],
    cost: StepCost,
    default: StepCost,
    *,
    micro_batch: int,
    virtual_stages: int,
    cp: int = 1,
    ep: int = 1,
    optimal: bool = False,
    gap: float | None = None,
) -> Plan:
    """The `Plan` for a costed layout, nested lists of the shape `mesh_of` gives (`default`: the same
    degrees in row-major order)."""
    pp, dp = len(layout), len(layout[0])
    tp = topology.num_gpus // (pp * dp * cp * ep)
    shape, names = mesh_of(pp, dp, cp, tp, ep)
    # the cost model's own values, not the user's: validating them again would walk every rank of the layout
    # (0.2 ms, 4% of an estimate at 8,192 GPUs); `Plan.from_json` validates what users hand back
    return Plan.model_construct(
        model=model.name,
        topology=topology.name,
        num_gpus=topology.num_gpus,
        tp=tp,
        pp=pp,
        dp=dp,
        cp=cp,
        ep=ep,
        expert_tensor_parallel=training.expert_tensor_parallel,
        ep_comm_overlap=training.ep_comm_overlap,
        ep_dispatcher=training.ep_dispatcher,
        expert_gemms=training.expert_gemms,
        recompute_modules=training.recompute_modules,
        mtp_layers=training.mtp_layers,
        micro_batch=micro_batch,
        num_micro_batches=training.global_batch // (dp * ep * micro_batch),
        virtual_stages=virtual_stages,
        zero_stage=training.zero_stage,
        recompute=training.recompute,
        dtype=training.dtype,
        fp8_recipe=training.fp8_recipe,
        fp8_weight_cache=training.fp8_weight_cache and training.dtype == "fp8",
        fp8_all_gather=training.fp8_gathered,
        sequence_parallel=training.sequence_parallel,
        compiled=training.compiled,
        loss=training.loss,
        tp_impl=training.tp_impl,
        pipeline_runtime=training.pipeline_runtime,
        cp_comm=training.cp_comm,
        tp_comm_overlap=training.tp_comm_overlap,
        overlap_param_gather=training.overlap_param_gather,
        global_batch=training.global_batch,
        seq_len=training.seq_len,
        mesh_dim_names=names,
        mesh_shape=shape,
        rank_layout=layout,
        layers_per_stage=cost.layers_per_stage,
        step_time_s=cost.step_time_s,
        tokens_per_s=training.tokens_per_step / cost.step_time_s,
        mfu=cost.model_flops_per_step / cost.step_time_s / topology.peak_bf16_flops,
        memory_per_gpu_bytes=cost.memory_per_gpu_bytes,
        memory_breakdown=cost.memory_breakdown,
        fits=cost.fits,
        breakdown=cost.breakdown,
        comm_time_by_link=cost.comm_time_by_link,
        default_step_time_s=default.step_time_s,
        optimal=optimal,
        gap=gap,
    )


def shortfall(model: ModelSpec | str | Path, topology: Topology, training: Training, plan: Plan, **layout: Any) -> str:
    """For `plan`, `estimate`'s of `layout` (its keyword arguments) that does not fit: how many GiB per GPU it is
    short, and the first of ZeRO-3, full recompute, both, and both with a micro-batch of one that would fit the same
    degrees, or that none would."""
    need = plan.memory_per_gpu_bytes - plan.memory_breakdown.get(CACHE_PART, 0.0)
    hbm = topology.smallest_memory_bytes or need
    mb = layout.get("micro_batch", 1)
    both = {"zero_stage": 3, "recompute": "full"}
    changes = [("ZeRO-3", {"zero_stage": 3}, mb), ("full recompute", {"recompute": "full"}, mb)]
    changes += [("ZeRO-3 and full recompute", both, mb), ("micro-batch 1, ZeRO-3 and full recompute", both, 1)]
    what = (
        "; neither ZeRO-3, full recompute nor a micro-batch of one makes these degrees fit: `shardplan suggest` "
        "searches the others and says what would fit where none does"
    )
    tried = {(training, mb)}
    for label, update, micro_batch in changes:
        changed = training.model_copy(update=update)
        if (changed, micro_batch) in tried:
            continue
        tried.add((changed, micro_batch))
        try:
            other = estimate(model, topology, changed, **layout | {"micro_batch": micro_batch})
        except ShardplanError:  # degrees that cannot take this option (ZeRO-3 under some pipelines)
            continue
        if other.fits:
            what = f"; would fit: {label} ({other.memory_per_gpu_bytes / 2**30:.1f} GiB)"
            break
    return (
        f"needs {need / 2**30:.1f} GiB per GPU beyond the allocator's cache, {(need - hbm) / 2**30:.1f} GiB more "
        f"than the smallest GPU's {hbm / 2**30:.1f}{what}"
    )
