"""The search's lower bound on a candidate's step time: what no placement and no split of layers into stages
beats, from its degrees alone (`time_lower_bound_s`)."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from typing import Any

from shardplan.cost.block_comm import tp_layer_s, tp_passes
from shardplan.cost.bounds import all_to_all_gbps_bound, ring_gbps_bound, transfer_lower_bound_s
from shardplan.cost.calibration import Calibration, fastest_rates, rates_for
from shardplan.cost.compute import column_parallel_gemms_s, fsdp2_copy_s, host_wrappers, linear_precisions
from shardplan.cost.experts import dispatch_bytes, ep_passes, mlp_tp_share
from shardplan.cost.memory import gathered_across_micro_batches, local_params
from shardplan.cost.overlap import Overlap
from shardplan.cost.stage_blocks import stages_differ
from shardplan.cost.step import _optimizer_step_s, _stage_timer
from shardplan.cost.traffic import gradient_syncs
from shardplan.model.schema import ModelSpec
from shardplan.topology.schema import Topology
from shardplan.training import Training


def time_lower_bound_s(
    model: ModelSpec,
    topology: Topology,
    training: Training,
    *,
    tp: int,
    pp: int,
    dp: int,
    micro_batch: int,
    virtual_stages: int = 1,
    calibration: Calibration | None = None,
    layers_per_stage: Sequence[int] | None = None,
    tp_ring_gbps: float | None = None,
    cp: int = 1,
    ep: int = 1,
    ep_gbps: float | None = None,
    memo: dict[tuple, Any] | None = None,
    stage_grid: bool = True,
) -> float:
    """No placement and no split of layers into stages beats this: every micro-batch through the slowest stage
    plus its pipeline bubble, then the average stage's optimizer step, FSDP2 copies and what its gradient sync
    and ZeRO-3 gathers leave unhidden at best. Without `layers_per_stage` the slowest stage is taken as the
    average (all compute / pp); with it, the split whose slowest stage is fastest (`balance_stages` without a
    memory bound) must be given, whose slowest stage no split can beat (unless stages differ in their blocks).
    Communication is free, but for the TP collectives no overlap hides, at `tp_ring_gbps`
    (`bounds.ring_gbps_bound`) where given, the MoE blocks' all-to-alls at `ep_gbps` (`bounds.all_to_all_gbps_bound`:
    GB/s of a rank's buffer), and the data-parallel collectives at `ring_gbps_bound` of their groups, latency left
    out. On mixed clusters a pipeline's stages are timed at the rates no model beats at any part of the
    step (`fastest_rates`), and no faster than the stages of the slowest GPUs allow; one stage holds every GPU and
    runs at its slowest model's pace, so any model's rates bound it: the one of the lowest peak. Where no NVLink
    component holds an ep x tp grid (TP or EP), or with `stage_grid` a stage's GPUs (TP, EP or DP), the axis that
    must leave one is the cheapest of those, each way timed once more. `memo` keeps stage timers and ring bounds
    between calls (`_stage_timer`)."""
    keys = topology.gpu_model_ids[0]
    rates = fastest_rates(keys, calibration) if pp > 1 else rates_for(topology.slowest_gpu_model, calibration)
    fsdp2 = host_wrappers(training, tp)[0]
    num_micro = training.global_batch // (dp * ep * micro_batch)
    tokens = micro_batch * training.seq_len // cp

    def tp_block(gbps: float | None) -> float:
        """One block's TP collectives, seconds, at `gbps`, that no placement hides."""
        if tp == 1 or not gbps or training.tp_comm_overlap:
            return 0.0
        col = column_parallel_gemms_s(model, tokens, tp, rates, linear_precisions(training, rates)[1])

        def time_of(op: str, width: int) -> float:
            return transfer_lower_bound_s(op, tp, tokens * width * 2, gbps)

        sp = training.sequence_parallel
        widths = model.column_input_widths(sequence_parallel=sp), model.hidden_size
        mlp_share = mlp_tp_share(model, training, ep, tp)
        forward, backward, _ = tp_layer_s(training, sp, time_of, col, widths, mlp_share, lambda *_: Overlap())
        return forward * (tp_passes(training) - 1) + backward

    def a2a_block(gbps: float | None) -> float:
        """One block's all-to-alls, seconds, at `gbps` (of a rank's buffer), on average over the blocks."""
        if ep == 1 or not gbps or training.ep_dispatcher != "alltoall":  # deduplicated: no bound here
            return 0.0
        a2a = dispatch_bytes(model, training, tokens, tp) / (gbps * 1e9)
        alone = ep_passes(training) - (4 if training.ep_comm_overlap else 0)  # the overlap may hide four a block
        return model.num_moe_layers / model.num_layers * alone * a2a

    memo = {} if memo is None else memo
    group = training.expert_group(ep, tp)

    def crossing(kind: str, n: int) -> float:
        """The fastest a ring (`kind` "ring") or an all-to-all ("a2a") of n GPUs not all of one NVLink-connected
        component can run, GB/s (`ring_gbps_bound`, `all_to_all_gbps_bound`)."""
        if ("crossing", kind, n) not in memo:
            of = ring_gbps_bound if kind == "ring" else all_to_all_gbps_bound
            memo["crossing", kind, n] = of(topology, n, crossing=True)
        return memo["crossing", kind, n]

    tp_fast, a2a_fast = tp_block(tp_ring_gbps), a2a_block(ep_gbps)

    def block_s(cross: str) -> float:
        """One block's TP collectives and all-to-alls, seconds, that no placement makes shorter or hides, where a
        group of the axis `cross` ("tp", "ep", "dp" or "" for none) leaves its NVLink component."""
        tp_s, a2a_s = tp_fast, a2a_fast
        if cross == "tp" and tp_ring_gbps:
            tp_s = tp_block(min(tp_ring_gbps, crossing("ring", tp)))
        if (cross == "ep" or (cross == "tp" and group > ep)) and ep_gbps:  # experts whole: EP groups span TP's
            a2a_s = a2a_block(min(ep_gbps, crossing("a2a", group)))
        return tp_s + a2a_s

    stage_of = _stage_timer(model, training, micro_batch=micro_batch, tp=tp, cp=cp, ep=ep, rates=rates, memo=memo)
    # the average stage, with its TP collectives less what they fill of the GPU's wait for the host (the slowest
    # stage takes at least the average: summed over stages, neither the time nor the GPU's work alone is less)
    whole = stage_of(layers=model.num_layers, first=True, last=True)
    least = 0.0  # what no split of the layers beats, collectives aside
    # split on whole microseconds: a tie either way is within one. Where stages differ in their blocks (`stage_models`),
    # which ones a stage holds depends on the split too, and `balance_stages` times the average block: no bound there
    if layers_per_stage is not None and pp > 1 and not stages_differ(model):
        least = max(stage_of(layers=n, first=p == 0, last=p == pp - 1).total_s for p, n in enumerate(layers_per_stage))
        least -= 1e-6
    if pp > 1 and len(keys) > 1:
        # mixed GPU models: a stage runs at its slowest GPU's pace, and its time grows by at least that pace per
        # block (GPU work and host dispatch alike are linear in blocks). With the slowest GPUs packed into as few
        # stages as hold them (the most stages left fast), no split beats the layers spread so that every stage
        # finishes together.
        pace = {
            key: _stage_timer(
                model,
                training,
                micro_batch=micro_batch,
                tp=tp,
                cp=cp,
                ep=ep,
                rates=rates_for(key, calibration),
                memo=memo,
            )(layers=1, first=False, last=False).total_s
            for key in keys
        }
        slow_first = sorted(keys, key=lambda key: -pace[key])
        # ends[k]: the GPUs of the k + 1 slowest models
        ends = list(itertools.accumulate(topology.gpu_model_counts[key] for key in slow_first))
        size = topology.num_gpus // pp  # stage p's slowest GPU is the (p * size)-th, slowest first
        per_stage = [pace[slow_first[bisect.bisect_right(ends, p * size)]] for p in range(pp)]
        least = max(least, model.num_layers / sum(1 / b for b in per_stage))
    # The step ends with the stage that takes longest over its gradient sync, FSDP gathers and optimizer: no less
    # than the average stage (each part is linear in the stage's parameters, or grows and is convex in them), its
    # collectives at the fastest any ring of their GPUs can run and hidden under all of a micro-batch's time. The
    # sum with the micro-batches never shrinks as `per_micro` grows, so its bound above may stand in for it.
    held = gathered_across_micro_batches(training, pp)
    dense, experts = local_params(
        model, layers=model.num_layers, first=True, last=True, tp=tp, ep=ep, mtp=training.mtp_layers
    )
    groups = ((dense / pp, dp * cp * ep), (experts / pp, dp * cp))  # a stage's weights and the GPUs that share them
    ends_s = 0.0  # the optimizer step and FSDP2's copies
    for params, shards in groups:
        ends_s += _optimizer_step_s(params, training, shards, num_micro, rates, held=held)
        if fsdp2:
            ends_s += (1 if held else num_micro) * fsdp2_copy_s(params, shards, rates)

    def ring_of(shards: int, leaves: bool) -> float:
        """The fastest any ring of `shards` GPUs runs, GB/s; `leaves`: one that leaves its NVLink component."""
        if ("ring_gbps", shards) not in memo:
            memo["ring_gbps", shards] = ring_gbps_bound(topology, shards)
        return min(memo["ring_gbps", shards], crossing("ring", shards)) if leaves else memo["ring_gbps", shards]

    def step_s(cross: str) -> float:
        """The bound where a group of the axis `cross` leaves its NVLink component (as `block_s`): the dense
        weights' data-parallel groups span the EP axis, the experts' do not."""
        per_micro = max((whole.total_s + max(0.0, model.num_layers * block_s(cross) - whole.host_slack_s)) / pp, least)
        bound = num_micro * per_micro + (pp - 1) / virtual_stages * per_micro + ends_s
        if dp * cp * ep == 1:
            return bound
        leaving = (cross in ("ep", "dp"), cross == "dp")

        def moved_s(op: str, bytes_per_param: float) -> float:
            """The collective over each group's weights, at the fastest any ring of its GPUs can run."""
            total = 0.0
            for (params, shards), leaves in zip(groups, leaving, strict=True):
                total += transfer_lower_bound_s(op, shards, params * bytes_per_param, ring_of(shards, leaves))
            return total

        if training.zero_stage == 3:
            rounds, gathers = (1, 1) if held else (num_micro, 2)
            gathered = 1 if training.fp8_gathered else 2  # no more than the FP8 linears' bytes per weight
            per_round = gathers * moved_s("all_gather", gathered) + moved_s("reduce_scatter", training.grad_bytes)
            return bound + rounds * max(0.0, per_round - per_micro)
        sync = moved_s("reduce_scatter" if training.zero_stage >= 1 else "all_reduce", training.grad_bytes)
        bound += gradient_syncs(training, num_micro, pp) * max(0.0, sync - per_micro * 2 / 3)
        if training.zero_stage >= 1 and not training.overlap_param_gather:
            bound += moved_s("all_gather", 2)
        return bound

    # Where no NVLink-connected component holds a grid of GPUs, some axis has a group that leaves one: every GPU of
    # the grid reaches every other by steps along its axes, so were each axis's groups inside one component, the
    # whole grid would be. TP groups are the rows of each ep x tp grid and EP groups its columns, so where no
    # component holds one, TP or EP leaves; where none holds a stage's dp x ep x tp GPUs, TP, EP or DP does (CP,
    # free here, could instead). The step takes at least the least of those ways.
    component = len(topology._nvlink_islands[0])  # the largest
    crossings = [""]
    if tp_ring_gbps and ep_gbps and tp > 1 and group == ep > 1 and tp * ep > component:
        crossings = ["tp", "ep"]
    elif stage_grid and cp == 1 and topology.num_gpus // pp > component:
        crossings = [axis for axis, size in (("dp", dp), ("ep", ep), ("tp", tp)) if size > 1] or [""]
    return min(map(step_s, crossings))
