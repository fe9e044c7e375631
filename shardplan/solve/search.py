"""`suggest()`: degrees, options, stages and rank placement, best first.

1. Every candidate of the space (`space.candidates`) is checked for memory, which does not depend
   on placement; what does not fit is dropped (the closest miss explains an infeasible request).
2. The rest are sorted by a lower bound on their step time (`cost.step_bound.time_lower_bound_s`:
   compute, bubble and optimizer with the compute as if stages were even, and communication free
   but for TP collectives at the fastest any ring of that many GPUs can run, and MoE all-to-alls at
   the fastest any group of that many GPUs can: through the NICs their GPUs reach where it cannot fit one
   island; where no NVLink-connected component holds an ep x tp grid, TP or EP at the pace of a group that
   leaves its component; the gradient sync and ZeRO-3 gathers at the fastest any ring of their GPUs can run,
   hidden under the whole micro-batch at best).
3. Branch and bound: candidates are costed in that order (layers onto stages by `stages`, placement
   by CP-SAT, each solver layout and the default order scored by the cost model) until the next
   lower bound cannot beat the k-th best plan. Each candidate's bound is first tightened with its
   fastest split of layers into stages; one that then cannot enter the top k is not placed. What is
   left unexplored when the time limit stops the loop becomes the reported gap.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, get_args

from shardplan.cost.bounds import all_to_all_gbps_bound, ring_gbps_bound
from shardplan.cost.calibration import Calibration, Rates, fastest_rates, rates_for, read_calibration
from shardplan.cost.link_scale import calibrated_links
from shardplan.cost.memory import fullest_stages, reduces_chunks_as_they_finish, required_bytes, stage_memories
from shardplan.cost.step import (
    StepCost,
    split_layers,
    stage_gpu_models,
    step_cost,
)
from shardplan.cost.step_bound import time_lower_bound_s
from shardplan.cost.traffic import traffic_bytes
from shardplan.errors import PlanError
from shardplan.model import ModelSpec, load_model
from shardplan.model.schema import Recompute
from shardplan.plan import Plan
from shardplan.solve import space
from shardplan.solve.estimate import check_cp, check_ep, make_plan, mesh_of
from shardplan.solve.placement import Layout, Placement, layouts_for
from shardplan.solve.stages import balance_stages
from shardplan.topology import Topology, load_topology
from shardplan.topology.catalog import gpu_model
from shardplan.training import Training

Progress = Callable[[int, int], None]  # (candidates costed, candidates that fit)


@dataclass(frozen=True)
class _Scored:
    candidate: space.Candidate
    training: Training
    layout: Layout
    cost: StepCost
    default: StepCost
    placement: Placement


def suggest(
    model: ModelSpec | str | Path,
    topology: Topology | str | Path,
    training: Training,
    *,
    top_k: int = 5,
    time_limit_s: float | None = None,
    calibration: Calibration | str | Path | None = None,
    zero_stages: tuple[int, ...] | None = None,
    recompute: tuple[str, ...] | None = None,
    micro_batch: tuple[int, ...] | None = None,
    pp: tuple[int, ...] | None = None,
    tp: tuple[int, ...] | None = None,
    cp: tuple[int, ...] | None = None,
    ep: tuple[int, ...] | None = None,
    progress: Progress | None = None,
) -> list[Plan]:
    """The `top_k` best plans, best first (ties: smaller degrees and options first).

    `training`'s ZeRO stage and recompute setting are searched over unless `zero_stages` or
    `recompute` pin them; `micro_batch`, `pp` and `tp` pin micro-batch sizes and degrees; `cp` names
    the context-parallel degrees to try (default: none, cp = 1); `ep` pins expert-parallel degrees (default: a
    mixture-of-experts model tries every one that divides its experts and the data-parallel GPUs).
    `time_limit_s` bounds the search (wall clock; None: until proved, and then the same inputs give
    the same plans); plans then carry the gap to what is left unexplored.

    >>> from shardplan import Training
    >>> best = suggest("llama3-8b", "a100-pcie-8gpu-bridged", Training(global_batch=64, seq_len=4096), top_k=1)[0]
    >>> best.tp, best.rank_layout[0][0]  # TP pairs on the NVLink bridges
    (2, [0, 1])
    """
    start = time.perf_counter()
    cal = read_calibration(calibration) if isinstance(calibration, str | Path) else calibration
    spec, topo = load_model(model), calibrated_links(load_topology(topology), cal)
    rates = fastest_rates(topo.gpu_model_ids[0], cal)  # stage splits and lower bounds: no stage runs faster
    hbm = topo.smallest_memory_bytes
    if top_k < 1:
        raise PlanError("top_k must be at least 1")
    if time_limit_s is not None and time_limit_s < 0:
        raise PlanError(f"time limit {time_limit_s} s: expected 0 or more seconds")
    pins = {
        "zero_stages": zero_stages,
        "recompute": recompute,
        "micro_batch": micro_batch,
        "pp": pp,
        "tp": tp,
        "cp": cp,
        "ep": ep,
    }
    _check_pins(pins)
    for degree in cp or ():
        check_cp(spec, training, degree)
    for degree in ep or ():
        check_ep(spec, degree)
    cache: dict[tuple, Any] = {}  # stage splits, placements and ring bandwidth bounds, shared by candidates alike
    fitting: list[tuple[float, space.Candidate, Training]] = []
    closest: tuple[float, space.Candidate] | None = None
    too_big: set[tuple] = set()  # candidates that do not fit, their micro-batch left out
    for c in _candidates(spec, topo.num_gpus, training, pins):
        others = (*_alike(c), c.zero_stage)
        if others in too_big:
            continue  # a smaller micro-batch of it did not fit, and memory never shrinks with a larger one
        train = _training_of(training, c)
        need = _memory_bytes(spec, train, c, rates.context_bytes)
        if hbm is not None and need > hbm:
            too_big.add(others)
            if closest is None or need < closest[0]:
                closest = (need, c)
            continue
        fitting.append((_lower_bound(spec, topo, train, c, rates, cal, cache, split=False), c, train))
    if not fitting:
        raise PlanError(_infeasible(spec, topo, training, closest, hbm or 0.0, pins, rates.context_bytes))
    fitting.sort(key=lambda item: (item[0], item[1]))

    best: list[_Scored] = []
    memo: dict[tuple, float] = {}  # collective times, shared by layouts alike
    explored = len(fitting)
    for k, (bound, c, train) in enumerate(fitting):
        if len(best) >= top_k and bound >= best[top_k - 1].cost.step_time_s:
            break  # no candidate left can enter the top k
        if time_limit_s is not None and best and time.perf_counter() - start > time_limit_s:
            explored = k
            break
        if progress is not None:
            progress(k, len(fitting))
        if len(best) >= top_k and _lower_bound(spec, topo, train, c, rates, cal, cache) >= best[-1].cost.step_time_s:
            continue  # with its own split of layers into stages it cannot enter the top k
        scored = _cost(spec, topo, train, c, rates, hbm, cal, cache, memo)
        if scored is not None:
            best.append(scored)
            best.sort(key=lambda s: (s.cost.step_time_s, s.candidate))
            del best[top_k:]
    if not best:
        raise PlanError(_infeasible(spec, topo, training, closest, hbm or 0.0, pins, rates.context_bytes))
    unexplored = fitting[explored][0] if explored < len(fitting) else None
    return [_plan(spec, topo, s, unexplored) for s in best]


def _check_pins(pins: dict[str, tuple | None]) -> None:
    """A one-line `PlanError` for a pinned value no plan can take."""
    modes = get_args(Recompute)
    if unknown := [r for r in pins["recompute"] or () if r not in modes]:
        raise PlanError(f"recompute {', '.join(unknown)}: expected one of {', '.join(modes)}")
    if bad := [z for z in pins["zero_stages"] or () if z not in (0, 1, 2, 3)]:
        raise PlanError(f"ZeRO stage {', '.join(map(str, bad))}: expected 0, 1, 2 or 3")
    for name in ("micro_batch", "pp", "tp", "cp", "ep"):
        if bad := [v for v in pins[name] or () if v < 1]:
            raise PlanError(f"{name} {', '.join(map(str, bad))}: expected whole numbers of at least 1")


def _memory_bytes(
    model: ModelSpec,
    training: Training,
    c: space.Candidate,
    context_bytes: float,
    layers: tuple[int, ...] | None = None,
) -> float:
    """Bytes that must fit on the fullest GPU, layers split as given or evenly (placement does not change it)."""
    layers = layers or split_layers(model.num_layers, c.pp)
    mems = stage_memories(
        model,
        training,
        layers=layers,
        stages=fullest_stages(model, layers, training, c.virtual_stages),
        tp=c.tp,
        dp=c.dp,
        cp=c.cp,
        ep=c.ep,
        micro_batch=c.micro_batch,
        virtual_stages=c.virtual_stages,
        context_bytes=context_bytes,
    )
    return max(map(required_bytes, mems))


def _fastest_split(
    model: ModelSpec, training: Training, c: space.Candidate, rates: Rates, cache: dict[tuple, Any]
) -> tuple[int, ...]:
    """The split of layers whose slowest stage is fastest, memory aside. It depends on the shapes and
    recompute only (ZeRO and dp change memory, which may veto it)."""
    key = ("stages", c.tp, c.pp, c.cp, c.ep, c.micro_batch, c.virtual_stages, c.recompute, c.recompute_modules)
    if key not in cache:
        cache[key] = balance_stages(model, training, rates, **_shape(c), memory_bytes=None, memo=cache)
    return cache[key]


def _lower_bound(
    model: ModelSpec,
    topology: Topology,
    training: Training,
    c: space.Candidate,
    rates: Rates,
    cal: Calibration | None,
    cache: dict[tuple, Any],
    *,
    split: bool = True,
) -> float:
    """`time_lower_bound_s` of the candidate, its TP collectives at the fastest any ring of tp GPUs can run and its
    all-to-alls at the fastest a stage's groups of ep (ep x tp) GPUs can, all at once; with `split`, its slowest
    stage from its fastest split of layers, not the average, and the axis that must leave an NVLink component where
    none holds a stage (`stage_grid`)."""
    group = training.expert_group(c.ep, c.tp)
    groups = topology.num_gpus // (c.pp * group)  # a stage's EP groups, all at once
    if ("ring_gbps", c.tp) not in cache:
        cache["ring_gbps", c.tp] = ring_gbps_bound(topology, c.tp)
    if ("all_to_all_gbps", group, groups) not in cache:
        cache["all_to_all_gbps", group, groups] = all_to_all_gbps_bound(topology, group, groups=groups)
    return time_lower_bound_s(
        model,
        topology,
        training,
        tp=c.tp,
        pp=c.pp,
        dp=c.dp,
        micro_batch=c.micro_batch,
        virtual_stages=c.virtual_stages,
        calibration=cal,
        layers_per_stage=_fastest_split(model, training, c, rates, cache) if split else None,
        tp_ring_gbps=cache["ring_gbps", c.tp],
        cp=c.cp,
        ep=c.ep,
        ep_gbps=cache["all_to_all_gbps", group, groups],
        memo=cache,
        stage_grid=split,
    )


def _cost(
    model: ModelSpec,
    topology: Topology,
    training: Training,
    c: space.Candidate,
    rates: Rates,
    hbm: float | None,
    cal: Calibration | None,
    cache: dict[tuple, Any],
    memo: dict[tuple, float],
) -> _Scored | None:
    """Stages, placement and cost of one candidate; None when no stage split fits. Context and expert
    parallelism are placed as part of the tensor-parallel axis: the placement lays out (pp, dp, cp x ep x tp)
    with the CP and EP traffic added to TP's (all move activations every block), read as (pp, dp, cp, ep, tp)."""
    layers = _fastest_split(model, training, c, rates, cache)
    if hbm is not None and _memory_bytes(model, training, c, rates.context_bytes, layers) > hbm:
        layers = balance_stages(model, training, rates, **_shape(c), memory_bytes=hbm, memo=cache)
    if layers is None:
        return None
    import numpy as np  # here, not at start-up

    shape = (c.pp, c.dp, c.cp * c.ep * c.tp)
    traffic = traffic_bytes(model, training, tp=c.tp, pp=c.pp, dp=c.dp, cp=c.cp, ep=c.ep, micro_batch=c.micro_batch)
    traffic["tp"] += traffic.pop("cp", 0.0) + traffic.pop("ep", 0.0)
    key = ("placement", shape, *_weight_class(traffic))
    if key not in cache:
        placed = layouts_for(topology, shape, traffic)
        # its layouts as arrays too, once for every candidate that shares them: `step_cost` takes an array as it
        # is, where a nested list of thousands of GPUs costs more to convert than to cost
        cache[key] = placed, [np.asarray(layout, dtype=np.int64) for layout in placed.layouts]
    placement, arrays = cache[key]

    def mesh(layout: Any) -> Any:
        """The placement's (pp, dp, cp x ep x tp) layout, an array, as the mesh: with the cp and ep axes where
        used."""
        return layout.reshape(mesh_of(c.pp, c.dp, c.cp, c.tp, c.ep)[0])

    def split_for(layout: Any) -> tuple[int, ...]:
        """On mixed clusters, the layers rebalanced for the GPU models the layout gives each stage (each
        at its slowest's rates); elsewhere the split above."""
        if c.pp == 1 or len(topology.gpu_model_ids[0]) == 1:
            return layers
        slowest = tuple(
            min(keys, key=lambda k: gpu_model(k).bf16_dense_tflops) for keys in stage_gpu_models(topology, layout)
        )
        key = ("mixed split", training.recompute, training.zero_stage, *_shape(c).values(), slowest)
        if key not in cache:
            # one Rates object per GPU model, so that balance_stages times stages of one model once
            per_stage = [cache.setdefault(("rates", gpu), rates_for(gpu, cal)) for gpu in slowest]
            cache[key] = balance_stages(model, training, per_stage, **_shape(c), memory_bytes=hbm, memo=cache) or layers
        return cache[key]

    def cost_of(layout: Any) -> StepCost:
        return step_cost(
            model,
            topology,
            training,
            mesh(layout),
            micro_batch=c.micro_batch,
            virtual_stages=c.virtual_stages,
            layers_per_stage=split_for(layout),
            calibration=cal,
            memo=memo,
            ep=c.ep,
        )

    row_major = np.arange(topology.num_gpus, dtype=np.int64).reshape(shape)
    default = cost_of(row_major)
    chosen, cost = row_major, default
    layouts = arrays
    if c.pp > 1 and len(topology.gpu_model_ids[0]) > 1:
        # the placement weighs links, not GPU speeds: on mixed models the stage order also decides which GPUs
        # hold the embedding and which the output head, so each layout is tried with its stages reversed too
        layouts = [order for layout in layouts for order in (layout, layout[::-1])]
    for layout in layouts:
        if not np.array_equal(layout, row_major):
            candidate = cost_of(layout)
            if candidate.step_time_s < cost.step_time_s:
                chosen, cost = layout, candidate
    return _Scored(c, training, mesh(chosen).tolist(), cost, default, placement)


def _shape(c: space.Candidate) -> dict[str, int]:
    """The candidate's degrees, micro-batch and chunks as `balance_stages` takes them."""
    return dict(tp=c.tp, pp=c.pp, dp=c.dp, cp=c.cp, ep=c.ep, micro_batch=c.micro_batch, virtual_stages=c.virtual_stages)


def _weight_class(traffic: dict[str, float]) -> tuple[int, ...]:
    """Each axis's traffic relative to the heaviest, in factors of 4 (0: the heaviest, -1: a quarter
    of it, ... down to -5, or None when the axis is idle): candidates alike share one placement."""
    heaviest = max(traffic.values()) or 1.0
    return tuple(max(-5, round(math.log(v / heaviest, 4))) if v > 0 else None for v in traffic.values())


def _plan(model: ModelSpec, topology: Topology, s: _Scored, unexplored_bound: float | None) -> Plan:
    step = s.cost.step_time_s
    gap = s.placement.gap
    if unexplored_bound is not None:  # the time limit left candidates unexplored
        gap = max(gap, (step - unexplored_bound) / step)
    return make_plan(
        model,
        topology,
        s.training,
        s.layout,
        s.cost,
        s.default,
        micro_batch=s.candidate.micro_batch,
        virtual_stages=s.candidate.virtual_stages,
        cp=s.candidate.cp,
        ep=s.candidate.ep,
        optimal=s.placement.optimal and gap <= 0,
        gap=max(gap, 0.0),
    )


def _infeasible(
    model: ModelSpec,
    topology: Topology,
    training: Training,
    closest: tuple[float, space.Candidate] | None,
    hbm: float,
    pins: dict[str, tuple],
    context: float,
) -> str:
    """Why nothing fits, by how much, and what would (`context`: bytes outside the allocator)."""
    n = topology.num_gpus
    if closest is None:
        for name in ("tp", "pp", "cp", "ep", "micro_batch"):  # a pinned value no layout takes: say which would
            if not pins.get(name):
                continue
            values = sorted({getattr(c, name) for c in _candidates(model, n, training, {**pins, name: None})})
            if values and not set(values) & set(pins[name]):
                label, asked = name.replace("_", "-"), ", ".join(map(str, pins[name]))
                return (
                    f"no layout of {model.name} on {n} GPUs takes {label} {asked} with the rest as asked; "
                    f"{label} {', '.join(map(str, values))} would"
                )
        return (
            f"no layout of {model.name} on {n} GPUs: no TP degree divides both its "
            f"{model.num_heads} heads and the GPU count, or the global batch {training.global_batch} "
            "does not split over the data-parallel replicas"
        )
    need, c = closest
    fixes = []
    if pins.get("zero_stages") and _fits(model, training, n, hbm, {**pins, "zero_stages": (3,)}, context):
        fixes.append("ZeRO-3")
    if pins.get("recompute") and _fits(model, training, n, hbm, {**pins, "recompute": ("full",)}, context):
        fixes.append("full recompute")
    seq = training.seq_len // 2
    while seq >= 128 and not _fits(model, training.model_copy(update={"seq_len": seq}), n, hbm, {}, context):
        seq //= 2
    if seq >= 128:
        fixes.append(f"sequences of {seq} tokens")
    more = next((n * f for f in (2, 4, 8, 16, 32, 64) if _fits(model, training, n * f, hbm, {}, context)), None)
    if more:
        fixes.append(f"{more} GPUs")
    what = "; would fit: " + ", or ".join(fixes) if fixes else ""
    return (
        f"{model.name} does not fit on {n} GPUs of {hbm / 1e9:.1f} GB: the closest layout "
        f"(tp={c.tp} pp={c.pp} dp={c.dp}{f' ep={c.ep}' if c.ep > 1 else ''}, micro-batch {c.micro_batch}, "
        f"ZeRO-{c.zero_stage}, recompute {' + '.join((c.recompute, *c.recompute_modules))}) needs "
        f"{need / 1e9:.1f} GB per GPU, {(need - hbm) / 1e9:.1f} GB short{what}"
    )


# Megatron's selective recompute of a MoE block's cheap, wide tensors (its MoE recipes' choice: Megatron-Bridge
# gpt_oss_workload_base_configs.py, Megatron-MoE-ModelZoo best-practice/qwen3): tried beside recompute none and
# selective for MoE models under Megatron's runtime, unless the user names modules.
MOE_RECOMPUTE_MODULES = ("moe_act", "layernorm")


def _candidates(model: ModelSpec, num_gpus: int, training: Training, pins: dict[str, Any]) -> Iterator[space.Candidate]:
    """`space.candidates` for `training`'s batch and pipeline runtime, pinned where `pins` name values."""
    modules: tuple[tuple[str, ...], ...] = ((),)
    if training.recompute_modules:
        modules = (training.recompute_modules,)
    elif model.moe is not None and training.pipeline_runtime == "megatron":
        modules = ((), MOE_RECOMPUTE_MODULES + (("mla_up_proj",) if model.mla else ()))
    return space.candidates(
        model,
        num_gpus,
        training.global_batch,
        interleaved=training.interleaved_pipeline,
        pipeline_zero_stages=training.pipeline_zero_stages,
        micro_batch_per_stage=training.micro_batch_per_stage,
        expert_tensor_parallel=training.expert_tensor_parallel,
        module_sets=modules,
        **{k: v for k, v in pins.items() if v},
    )


def _training_of(training: Training, c: space.Candidate) -> Training:
    """`training` with the candidate's ZeRO stage and recompute (one copy per combination: candidates share them)."""
    return _copy_with(training, c.zero_stage, c.recompute, c.recompute_modules)


@lru_cache(maxsize=64)
def _copy_with(training: Training, zero_stage: int, recompute: str, modules: tuple[str, ...]) -> Training:
    return training.model_copy(update={"zero_stage": zero_stage, "recompute": recompute, "recompute_modules": modules})


def _alike(c: space.Candidate) -> tuple:
    """The candidate but for its ZeRO stage and micro-batch (a tuple: cheaper than a dataclass copy)."""
    return c.tp, c.pp, c.dp, c.cp, c.ep, c.virtual_stages, c.recompute, c.recompute_modules


def _fits(
    model: ModelSpec, training: Training, num_gpus: int, hbm: float, pins: dict[str, tuple], context: float
) -> bool:
    """Whether any candidate on `num_gpus` GPUs fits `hbm` bytes. Memory never grows with more ZeRO sharding nor
    shrinks with a larger micro-batch (but where a pipeline reduces its chunks' gradients as they finish), so of
    candidates otherwise alike only those that no other shards more with a micro-batch as small are tried."""
    alike: dict[tuple, list[space.Candidate]] = {}
    for c in _candidates(model, num_gpus, training, pins):
        alike.setdefault(_alike(c), []).append(c)
    for group in alike.values():
        for c in group:
            train = _training_of(training, c)
            monotone = not reduces_chunks_as_they_finish(train, c.pp, c.virtual_stages)
            as_small = (
                o for o in group if o.micro_batch == c.micro_batch or (monotone and o.micro_batch < c.micro_batch)
            )
            if any(o.zero_stage >= c.zero_stage and o != c for o in as_small):
                continue
            if _memory_bytes(model, train, c, context) <= hbm:
                return True
    return False
