"""Step time and memory of a placed layout: compute, exposed TP, CP and PP communication, pipeline
bubble, data-parallel gradient sync (overlapped with the last backward), FSDP gathers, optimizer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, partial
from typing import Any

from shardplan.cost.block_comm import cp_block_s, tp_layer_s, tp_passes
from shardplan.cost.calibration import Calibration, rates_for
from shardplan.cost.compute import (
    column_parallel_gemms_s,
    fp8_cast_s,
    fsdp2_copy_s,
    grad_accumulate_s,
    host_wrappers,
    linear_precisions,
    optimizer_s,
    stage_times,
)
from shardplan.cost.experts import (
    dispatch_bytes,
    ep_passes,
    mlp_tp_share,
    overlapped_all_to_alls_s,
    remote_copies_share,
    unpaired_share,
)
from shardplan.cost.memory import (
    BF16_WEIGHT,
    block_weights,
    gathered_across_micro_batches,
    kv_bytes,
    local_params,
    peak_memory,
    stage_memories,
)
from shardplan.cost.overlap import Overlap
from shardplan.cost.stage_blocks import stage_models
from shardplan.cost.traffic import gradient_syncs, pipeline_split
from shardplan.model.schema import ModelSpec
from shardplan.topology.schema import Topology
from shardplan.training import Training

Layout = Sequence[Sequence[Sequence[Any]]]  # layout[p][d][t] -> GPU; [p][d][c][t], [p][d][e][t] or [p][d][c][e][t]


@dataclass(frozen=True)
class _Stage:
    """One pipeline stage's work per micro-batch, on the GPU model that sets its pace (`rates`)."""

    rates: Any
    models: list[Any]  # the rates of each GPU model the stage runs on
    comm: dict[str, float]  # what its GPUs' TP, CP and EP collectives move, per link class
    total_s: float  # compute
    forward_s: float
    tp_s: float  # exposed TP, CP and EP collectives
    cp_s: float
    ep_s: float

    @property
    def micro_s(self) -> float:
        return self.total_s + self.tp_s + self.cp_s + self.ep_s


@dataclass
class StepCost:
    """What `step_cost` finds for one layout."""

    step_time_s: float
    breakdown: dict[str, float]
    comm_time_by_link: dict[str, float]
    memory_per_gpu_bytes: float
    memory_breakdown: dict[str, float]
    fits: bool
    layers_per_stage: tuple[int, ...]
    model_flops_per_step: float


def _pipeline_transfers(training: Training, num_micro: int, pp: int, virtual_stages: int) -> int:
    """Transfers on a stage's path per step, each an exchange with one neighbour (activations one
    way, gradients the other at once): Megatron's 1F1B sends forward and receives backward in one
    batched exchange with the next stage, then the reverse with the previous one, 2 per micro-batch and
    model chunk (interleaved: one exchange with both neighbours, as long as two); DeepSpeed's
    PipelineEngine sends and receives each tensor on its own, blocking (runtime/pipe/schedule.py
    TrainSchedule: SendGrad and RecvActivation before each forward, RecvGrad and SendActivation before
    each backward), 4 per micro-batch. The pipeline's fill and drain add pp - 1 of each."""
    per_micro = 4 if training.pipeline_runtime == "deepspeed" else 2
    return per_micro * (num_micro + pp - 1) * virtual_stages


def _optimizer_step_s(
    params_local: float, training: Training, dp: int, num_micro: int, rates: Any, *, held: bool = False
) -> float:
    """The optimizer step over this GPU's shard, and each micro-batch's weight gradients added into
    the fp32 buffer (sharded under ZeRO-3, whose reduce-scatter runs per micro-batch, unless `held`:
    `gathered_across_micro_batches`) unless the weight-gradient GEMMs accumulate there themselves."""
    shard = dp if training.zero_stage >= 1 else 1
    accumulate = 0.0
    if not training.grad_accumulation_fusion:
        sharded = training.zero_stage == 3 and not held
        accumulate = num_micro * grad_accumulate_s(params_local / (dp if sharded else 1), rates)
    return optimizer_s(params_local / shard, rates) + accumulate


def _stage_timer(
    model: ModelSpec,
    training: Training,
    *,
    micro_batch: int,
    tp: int,
    rates: Any,
    cp: int = 1,
    ep: int = 1,
    memo: dict[tuple, Any] | None = None,
) -> Callable[..., Any]:
    """`stage_times` of this model, training and shape: call it with `layers`, `first` and `last` (each
    combination timed once: the middle stages of a pipeline mostly hold as many layers). With `memo`, one timer
    serves every call with the same model, training and rates objects (the search costs several layouts of each
    candidate, and stage times do not depend on where ranks sit)."""
    key = ("stage timer", id(model), id(training), id(rates), micro_batch, tp, cp, ep)
    held = memo.get(key) if memo is not None else None
    if held is None or held[0] is not model or held[1] is not training or held[2] is not rates:  # ids reused
        timer = cache(partial(stage_times, model, training, micro_batch=micro_batch, tp=tp, cp=cp, ep=ep, rates=rates))
        held = (model, training, rates, timer)
        if memo is not None:
            memo[key] = held
    return held[3]


def stage_gpu_models(topology: Topology, grid: Any) -> list[tuple[str, ...]]:
    """The GPU models (catalogue keys) each pipeline stage of `grid` (a layout, stages first) runs on."""
    import numpy as np  # here, not at start-up

    keys, model_ids = topology.gpu_model_ids
    if len(keys) == 1:
        return [keys] * len(grid)
    return [tuple(keys[i] for i in np.unique(model_ids[np.asarray(stage)])) for stage in grid]


@cache
def split_layers(num_layers: int, pp: int) -> tuple[int, ...]:
    """Layers per stage, as even as possible, the remainder on the middle stages (the first holds the
    embedding and the last the output head, both heavy)."""
    base, extra = divmod(num_layers, pp)
    order = sorted(range(pp), key=lambda s: (s in (0, pp - 1), s))
    bonus = set(order[:extra])
    return tuple(base + (1 if s in bonus else 0) for s in range(pp))


def step_cost(
    model: ModelSpec,
    topology: Topology,
    training: Training,
    layout: Layout,
    *,
    micro_batch: int,
    virtual_stages: int = 1,
    layers_per_stage: Sequence[int] | None = None,
    calibration: Calibration | None = None,
    memo: dict[tuple, Any] | None = None,
    ep: int = 1,
) -> StepCost:
    """The cost of one optimiser step for `layout` (shape pp x dp x tp, pp x dp x cp x tp with context
    parallelism, pp x dp x ep x tp with `ep`-way expert parallelism, or pp x dp x cp x ep x tp); layers per
    stage as given, else `split_layers`. `memo` keeps collective times between calls on the same topology (the
    search costs many layouts that share groups)."""
    import numpy as np  # here, not at start-up: `shardplan topo` never costs a layout

    from shardplan.cost.axis import AxisTimes

    grid = np.asarray(layout, dtype=np.int64)
    pp, dp, tp = grid.shape[0], grid.shape[1], grid.shape[-1]
    cp = grid.size // (pp * dp * ep * tp)
    grid = grid.reshape(pp, dp, cp, ep, tp)
    shards = dp * cp * ep  # a stage's GPUs that hold the same dense weights: gradients reduced and ZeRO shards
    replicas = grid.reshape(pp, shards, tp)
    num_micro = training.global_batch // (dp * ep * micro_batch)
    fsdp2 = host_wrappers(training, tp)[0]
    keys = topology.gpu_model_ids[0]
    rates_of = {key: rates_for(key, calibration) for key in keys}
    memo = {} if memo is None else memo
    sp = training.sequence_parallel and tp > 1
    tokens = micro_batch * training.seq_len // cp  # on each GPU
    layers = tuple(layers_per_stage) if layers_per_stage else split_layers(model.num_layers, pp)
    views = stage_models(model, layers, virtual_stages)  # each stage's blocks

    def timer(view: ModelSpec, key: str) -> Callable[..., Any]:
        return _stage_timer(
            view, training, micro_batch=micro_batch, tp=tp, cp=cp, ep=ep, rates=rates_of[key], memo=memo
        )

    tp_axis = AxisTimes(topology, replicas, memo)  # stage p's TP groups: replicas[p, d, :]
    dp_axis = AxisTimes(topology, replicas.transpose(0, 2, 1), memo)  # its DP (x CP x EP) groups: replicas[p, :, t]
    cp_axis = ep_axis = edp_axis = None
    if cp > 1:
        cp_axis = AxisTimes(topology, grid.transpose(0, 1, 3, 4, 2).reshape(pp, dp * ep * tp, cp), memo)
    if ep > 1:  # the GPUs that swap tokens (ep, or ep x tp), and those that hold the same experts (dp x cp)
        swap = grid.transpose(0, 1, 2, 4, 3).reshape(pp, dp * cp * tp, ep)
        if training.expert_group(ep, tp) > ep:
            swap = grid.reshape(pp, dp * cp, ep * tp)
        ep_axis = AxisTimes(topology, swap, memo)
        edp_axis = AxisTimes(topology, grid.transpose(0, 3, 4, 1, 2).reshape(pp, ep * tp, dp * cp), memo)

    # --- per stage: compute, TP and CP collectives ----------------------------------------------
    def run_stage(p: int, present: tuple[str, ...], alone: float) -> _Stage:
        """Stage p's work per micro-batch; `alone`: the share of its passes with none beside them (`unpaired_share`)."""
        first, last, view = p == 0, p == pp - 1, views[p]
        moe_share = view.num_moe_layers / view.num_layers  # of the stage's blocks, those with experts
        # a stage runs at the pace of its slowest GPU model (mixed clusters: the stage's GPUs work in lockstep)
        key = max(present, key=lambda k: timer(view, k)(layers=layers[p], first=first, last=last).total_s)
        times, rates = timer(view, key)(layers=layers[p], first=first, last=last), rates_of[key]
        blocks = training.stage_blocks(layers[p], last)
        moving = dict.fromkeys(("nvlink", "pcie", "net"), 0.0)  # the link classes of `Plan.comm_time_by_link`
        tp_s = 0.0
        if tp > 1:
            col = column_parallel_gemms_s(view, tokens, tp, rates, linear_precisions(training, rates)[1])

            def time_of(op: str, width: int, p: int = p) -> float:  # bf16 activations, the full (gathered) buffer
                return tp_axis.time_s(op, p, tokens * width * 2)

            def beside(op: str, width: int, p: int = p) -> Overlap:
                return tp_axis.overlap(p, op, tokens * width * 2)

            widths = model.column_input_widths(sequence_parallel=sp), model.hidden_size
            mlp_share = mlp_tp_share(view, training, ep, tp)
            forward, backward, moved = tp_layer_s(training, sp, time_of, col, widths, mlp_share, beside)
            forward_passes = tp_passes(training) - 1  # 1, plus what recompute runs again
            tp_s = blocks * (forward * forward_passes + backward)
            moved_s = blocks * (forward * forward_passes + moved)
            moving[tp_axis.link_class(p)] += moved_s * num_micro
            if training.tp_comm_overlap:  # each all-gather / reduce-scatter runs under its GEMM
                tp_s = max(0.0, moved_s - times.gemm_s)
        cp_s = 0.0
        if cp_axis is not None:
            gathered = kv_bytes(model, training, tokens, tp) * cp  # the whole sequence's K and V
            time_of = partial(cp_axis.time_s, stage=p, size_bytes=gathered)
            link = cp_axis.link_class(p)
            beside_cp = partial(cp_axis.overlap, p, size_bytes=gathered)
            exposed, moved = cp_block_s(training, time_of, times.attention_s, cp, beside_cp)
            cp_s = blocks * exposed
            moving[link] += num_micro * blocks * moved
        ep_s = 0.0
        if ep_axis is not None:
            # the dispatch and combine all-to-alls of each MoE block, each waited for; or with `ep_comm_overlap`
            # each beside a piece of another micro-batch's block (`overlapped_all_to_alls_s`)
            size = dispatch_bytes(model, training, tokens, tp)
            if training.ep_dispatcher == "deduplicated":
                domains = len({topology.island_of[g] for g in ep_axis.groups[p, 0].tolist()})
                size *= remote_copies_share(model, domains)
            one = ep_axis.time_s("all_to_all", p, size)
            moved = blocks * moe_share * ep_passes(training) * one
            moving[ep_axis.link_class(p)] += num_micro * moved
            ep_s = moved
            if training.ep_comm_overlap:  # recompute's all-to-alls beyond the four, and those of unpaired passes, alone
                paired = overlapped_all_to_alls_s(one, times.block_parts_s, ep_axis.overlap(p, "all_to_all", size))
                ep_s = blocks * moe_share * ((1 - alone) * paired + alone * 4 * one + (ep_passes(training) - 4) * one)
        if times.host_slack_s and tp_s + cp_s + ep_s:
            # where the host sets the pace the GPU waits between kernels, and the collectives it runs in
            # line fill that wait first: a micro-batch takes max(host, GPU work + collectives)
            keep = max(0.0, tp_s + cp_s + ep_s - times.host_slack_s) / (tp_s + cp_s + ep_s)
            tp_s, cp_s, ep_s = tp_s * keep, cp_s * keep, ep_s * keep
        models = [rates_of[k] for k in present]
        return _Stage(rates, models, moving, times.total_s, times.forward_s, tp_s, cp_s, ep_s)

    # stages alike in their GPU models, layers, ends of the pipeline and in how the groups they time sit (the middle
    # stages of most layouts) are worked out once
    timed = [a for a in (tp_axis if tp > 1 else None, cp_axis, ep_axis) if a is not None]
    synced = [a for a in (dp_axis, edp_axis) if a is not None and shards > 1]
    alike: dict[tuple[Any, ...], _Stage] = {}
    stages: list[_Stage] = []
    kinds: list[tuple[Any, ...]] = []  # each stage's kind, for the end of the step below
    overlapped = ep_axis is not None and training.ep_comm_overlap  # only then does the unpaired share matter
    for p, present in enumerate(stage_gpu_models(topology, grid)):
        unpaired = unpaired_share(pp, p, virtual_stages, num_micro) if overlapped else 0.0
        kind = (present, layers[p], id(views[p]), p == 0, p == pp - 1, unpaired, *(a.sitting(p) for a in timed))
        if kind not in alike:
            alike[kind] = run_stage(p, present, unpaired)
        stages.append(alike[kind])
        kinds.append((*kind, *(a.sitting(p) for a in synced)))

    bottleneck = max(range(pp), key=lambda p: stages[p].micro_s)
    per_micro = stages[bottleneck].micro_s
    compute_s = num_micro * stages[bottleneck].total_s
    if training.dtype == "fp8" and training.fp8_weight_cache:  # the stage's weights cast once, on the first micro-batch
        last = bottleneck == pp - 1
        weights = block_weights(views[bottleneck], training, layers=layers[bottleneck], last=last, tp=tp, ep=ep)
        compute_s += fp8_cast_s(weights, stages[bottleneck].rates, amax_pass=training.fp8_recipe == "current")
    tp_total = num_micro * stages[bottleneck].tp_s
    cp_total = num_micro * stages[bottleneck].cp_s
    ep_total = num_micro * stages[bottleneck].ep_s
    bubble_s = (pp - 1) / virtual_stages * per_micro if pp > 1 else 0.0
    on_nics = [s.comm["net"] / num_micro for s in stages]  # per micro-batch, each stage's TP/CP/EP on the NICs
    comm = dict(stages[bottleneck].comm)  # a GPU's, of the stage that sets the pace (stages run side by side)

    # --- pipeline point-to-point ----------------------------------------------------------------
    pp_s = 0.0
    if pp > 1:
        # each TP rank sends its 1/tp of the activations: its sequence shard under SP, else a slice
        # that the receiving TP group all-gathers (Megatron's scatter-gather, Narayanan et al. 2021
        # Sec. 4.1, on unless --no-scatter-gather-tensors-in-pipeline); DeepSpeed's PipelineEngine
        # sends the whole tensor from every TP rank (runtime/pipe/engine.py _exec_send_activations)
        full = tokens * model.hidden_size * 2
        split = pipeline_split(training, tp)
        worst = 0.0
        flat = grid.reshape(pp, shards * tp)
        pairs = np.stack([flat[:-1], flat[1:]], axis=-1)  # boundary p: stage p -> p+1
        # Neighbouring stages run opposite passes (one forward while the next runs backward), so each
        # stage talks with one neighbour at a time and every other boundary transfers at once: the even
        # boundaries together, then the odd ones (Megatron's 1F1B, DeepSpeed's TrainSchedule, torch's).
        by_parity = [AxisTimes(topology, pairs[parity::2], memo) for parity in range(min(2, pp - 1))]
        for p in range(pp - 1):
            gather = tp_axis.time_s("all_gather", p + 1, full) if split > 1 and not sp else 0.0
            worst = max(worst, by_parity[p % 2].time_s("send_recv", p // 2, full / split) + gather)
        pp_s = _pipeline_transfers(training, num_micro, pp, virtual_stages) * worst
        comm[by_parity[(pp - 2) % 2].link_class((pp - 2) // 2)] += pp_s
        if any(by_parity[q % 2].link_class(q // 2) == "net" for q in range(pp - 1)):
            on_nics = [t + pp_s / num_micro for t in on_nics]  # the activations sent between stages

    # --- data parallel: each stage reduces its own gradients and steps its own optimizer; the step ends
    # with the stage that takes longest there (not necessarily the pipeline's bottleneck) ---------------
    held = gathered_across_micro_batches(training, pp)

    def end_of_step(p: int) -> tuple[float, float, float, str, float]:
        """Stage p's exposed gradient sync, FSDP gathers and optimizer step; the link and seconds it moves."""
        dp_s = fsdp_s = moved = 0.0
        link = "nvlink"
        dense, experts = local_params(
            views[p], layers=layers[p], first=p == 0, last=p == pp - 1, tp=tp, ep=ep, mtp=training.mtp_layers
        )
        # each weight group with the axis whose GPUs hold it and their count: under expert parallelism the dense
        # layers over dp x cp x ep, the experts over dp x cp, one collective after the other
        groups = [(dp_axis, dense + experts, shards)]
        if edp_axis is not None:
            groups = [(dp_axis, dense, shards), (edp_axis, experts, dp * cp)]

        def run(*moves: tuple[int, str, float, int]) -> tuple[float, Overlap]:
            """Seconds alone of collectives that run one after another, each move (count, op, bytes per parameter,
            blocks) on every weight group's axis, and how they and the compute beside them slow each other
            (`Overlap.merged`; a single collective's own)."""
            runs = [
                (k * axis.time_s(op, p, size), axis.overlap(p, op, size))
                for k, op, per, blocks in moves
                for axis, n, _ in groups
                for size in (n * per / blocks,)
            ]
            return sum(seconds for seconds, _ in runs), runs[0][1] if len(runs) == 1 else Overlap.merged(runs)

        if shards > 1:
            sync_op = "reduce_scatter" if training.zero_stage >= 1 else "all_reduce"
            sync, on_sync = run((1, sync_op, training.grad_bytes, 1))  # ZeRO: then all-gather the bf16 weights
            gather, on_gather = run((1, "all_gather", 2, 1)) if training.zero_stage >= 1 else (0.0, Overlap())
            link = dp_axis.link_class(p)
            # where the data-parallel groups leave the node, the stage's TP, CP and EP collectives and pipeline sends
            # that leave it too hold the same NICs for part of every micro-batch: the sync hides only under the rest
            window = max(0.0, per_micro - on_nics[p]) if link == "net" else per_micro
            if training.zero_stage == 3:
                # FSDP / ZeRO-3 gathers and reduces one transformer block at a time (its wrapping unit), so
                # each micro-batch runs a gather (forward), a gather and a reduce-scatter (backward) per
                # block, each paying the collective's latency. Prefetching one block ahead, each pass's
                # collectives hide under that pass's compute (the backward's, recompute included, under the
                # backward), the two slowing each other (`AxisTimes.overlap`); a pass's first gather and last
                # reduce-scatter have no compute beside them (nor the step's optimizer).
                # Under PP the stage stays gathered across micro-batches (`gathered_across_micro_batches`):
                # one gather per block in the first forward and one reduce-scatter in the last backward.
                blocks = max(training.stage_blocks(layers[p], p == pp - 1), 1)
                # bytes per weight a gather moves: bf16, or float8 for the blocks' FP8 linears (`fp8_gathered`)
                gathered = BF16_WEIGHT
                if training.fp8_gathered:
                    fp8 = block_weights(views[p], training, layers=layers[p], last=p == pp - 1, tp=tp, ep=ep)
                    gathered -= fp8 / (dense + experts)
                gather_block = run((1, "all_gather", gathered, blocks))[0]
                sync_block = run((1, "reduce_scatter", training.grad_bytes, blocks))[0]
                rounds, gathers = (1, 1) if held else (num_micro, 2)
                forward = window * stages[p].forward_s / stages[p].total_s
                forward_moves, on_forward = run((blocks - 1, "all_gather", gathered, blocks))
                backward_moves, on_backward = run(
                    (blocks * (gathers - 1), "all_gather", gathered, blocks),
                    (blocks - 1, "reduce_scatter", training.grad_bytes, blocks),
                )
                fsdp_s = rounds * (gather_block + on_forward.added_s(forward_moves, forward))
                fsdp_s += rounds * (sync_block + on_backward.added_s(backward_moves, window - forward))
                moved = rounds * blocks * (gathers * gather_block + sync_block)
            else:
                # Gradient sync overlaps the backward of the last micro-batch (ZeRO-0/1 accumulate into the whole
                # gradient buffer), or of every micro-batch under ZeRO-2 without a pipeline, which holds gradients
                # only as shards and so reduce-scatters each backward's (DeepSpeed refuses no_sync with partitioned
                # gradients, runtime/engine.py; FSDP's SHARD_GRAD_OP and Megatron-FSDP's optim_grads alike). The
                # weight gather (ZeRO 1/2) follows the optimizer step, or runs under the next step's first forward.
                # They and the compute beside them slow each other (`AxisTimes.overlap`).
                syncs = gradient_syncs(training, num_micro, pp)
                backward = window * 2 / 3
                hidden = stages[p].forward_s if training.overlap_param_gather else 0.0
                dp_s = syncs * on_sync.added_s(sync, backward) + on_gather.added_s(gather, hidden)
                moved = syncs * sync + gather
        # each at the pace of the stage's GPU model slowest at it (not necessarily the one slowest at compute)
        if fsdp2:  # its copies in and out of the collective buffers run on the compute stream, at any DP degree
            copies = max(sum(fsdp2_copy_s(n, k, r) for _, n, k in groups) for r in stages[p].models)
            fsdp_s += (1 if held else num_micro) * copies
        opt_s = max(
            sum(_optimizer_step_s(n, training, k, num_micro, r, held=held) for _, n, k in groups)
            for r in stages[p].models
        )
        return dp_s, fsdp_s, opt_s, link, moved

    ends: dict[tuple[Any, ...], tuple[float, float, float, str, float]] = {}  # per kind of stage, as above
    for p in (bottleneck, *(q for q in range(pp) if q != bottleneck)):  # ties: the bottleneck
        if kinds[p] not in ends:
            ends[kinds[p]] = end_of_step(p)
    dp_s, fsdp_s, opt_s, link, moved = max(ends.values(), key=lambda c: c[0] + c[1] + c[2])
    comm[link] += moved
    step = compute_s + tp_total + cp_total + ep_total + bubble_s + pp_s + dp_s + fsdp_s + opt_s
    context = max(s.rates.context_bytes for s in stages)
    hbm = topology.smallest_memory_bytes
    # memory does not depend on where ranks sit: the layouts of one candidate share it
    key = ("memory", id(model), id(training), layers, tp, dp, cp, ep, micro_batch, virtual_stages, context, hbm)
    held = memo.get(key)
    if held is None or held[0] is not model or held[1] is not training:  # ids reused
        shape = dict(tp=tp, dp=dp, cp=cp, ep=ep, micro_batch=micro_batch, virtual_stages=virtual_stages)
        mems = stage_memories(model, training, layers=layers, **shape, context_bytes=context)
        held = memo[key] = (model, training, peak_memory(mems, hbm))
    need, worst_mem = held[2]
    memory = sum(worst_mem.values())
    return StepCost(
        step_time_s=step,
        breakdown={
            "compute": compute_s,
            "tp": tp_total,
            "cp": cp_total,
            "ep": ep_total,
            "pp": pp_s,
            "bubble": bubble_s,
            "dp": dp_s,
            "fsdp": fsdp_s,
            "optimizer": opt_s,
        },
        comm_time_by_link=comm,
        memory_per_gpu_bytes=memory,
        memory_breakdown=dict(worst_mem),
        fits=hbm is None or need <= hbm,
        layers_per_stage=layers,
        model_flops_per_step=3 * model.flops_per_token(training.seq_len) * training.tokens_per_step,
    )
