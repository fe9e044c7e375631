"""What each GPU sends per step on each mesh axis, by the formulas `step.step_cost` times: what the placement
weighs one axis's links against another's, and the counts both share (gradient reductions per step, the slices a
stage's output goes out in)."""

from __future__ import annotations

from shardplan.cost.block_comm import attention_forward_passes, tp_passes
from shardplan.cost.experts import dispatch_bytes, ep_passes, mlp_tp_share
from shardplan.cost.memory import gathered_across_micro_batches, kv_bytes, local_params, reduces_every_micro_batch
from shardplan.model.schema import ModelSpec
from shardplan.training import Training


def pipeline_split(training: Training, tp: int) -> int:
    """Into how many slices a stage's output goes across the TP ranks that send it: tp (the SP
    sequence shards, or Megatron's scatter-gather), or 1 where every TP rank sends the whole tensor
    (DeepSpeed's PipelineEngine: runtime/pipe/engine.py _exec_send_activations)."""
    scatter = training.pipeline_scatter_gather and training.pipeline_runtime != "deepspeed"
    return tp if training.sequence_parallel or scatter else 1


def gradient_syncs(training: Training, num_micro: int, pp: int) -> int:
    """Gradient reductions per step outside FSDP's per-block ones: one, but one per micro-batch where ZeRO-2 keeps
    only gradient shards (`memory.reduces_every_micro_batch`)."""
    return num_micro if reduces_every_micro_batch(training, pp) else 1


def traffic_bytes(
    model: ModelSpec,
    training: Training,
    *,
    tp: int,
    pp: int,
    dp: int,
    micro_batch: int,
    virtual_stages: int = 1,
    cp: int = 1,
    ep: int = 1,
) -> dict[str, float]:
    """Bytes each GPU sends per step on each mesh axis ("tp", "dp", "pp", "cp" where cp > 1 and "ep" where
    ep > 1; "dp" spans dp x cp x ep, the experts' share dp x cp), by the same formulas `step_cost` times: what
    the placement weighs one axis's links against another's."""
    num_micro = training.global_batch // (dp * ep * micro_batch)
    tokens = micro_batch * training.seq_len // cp
    act = tokens * model.hidden_size * 2  # bf16 activations of one micro-batch on one GPU
    split = pipeline_split(training, tp)
    passes, sp = tp_passes(training), training.sequence_parallel and tp > 1
    layers = model.num_layers / pp
    dense, experts = local_params(model, layers=round(layers), first=False, last=False, tp=tp, ep=ep)
    gathers = 1 if gathered_across_micro_batches(training, pp) else num_micro * 2
    shards = dp * cp * ep
    mlp_share = mlp_tp_share(model, training, ep, tp)

    def sent(params: float, n: int) -> float:  # the share of `params` bytes a GPU sends in a gather over n
        return params * (n - 1) / n

    sharded = sent(dense, shards) + sent(experts, dp * cp)
    zero3_gathers = gathers * 2 * sharded if training.zero_stage == 3 else 0.0
    # per block, elements per token (`tp_layer_s`): forward two all-reduces of the activations (each moves twice
    # its buffer), or under SP an all-gather of each column-parallel GEMM's input and two reduce-scatters; backward
    # the column-parallel input gradients all-reduced, or under SP those inputs gathered again, their gradients
    # reduce-scattered and the row-parallel outputs' gradients gathered
    h, (attention, mlp) = model.hidden_size, model.column_input_widths(sequence_parallel=sp)
    forward = backward = 0.0
    for width, share in ((attention, 1.0), (mlp, mlp_share)):  # the MLP's in `mlp_share` of the blocks
        forward += share * ((width + h) if sp else 2 * h)
        backward += share * ((2 * width + h) if sp else 2 * width)
    out = {
        "tp": num_micro * layers * ((passes - 1) * forward + backward) * (tp - 1) / tp * tokens * 2,
        # gradients reduced once per step, or per micro-batch under ZeRO-2 without PP (all-reduce moves twice the
        # reduce-scatter's bytes, as reduce-scatter and all-gather do together)
        "dp": 2 * sharded * training.grad_bytes * gradient_syncs(training, num_micro, pp) + zero3_gathers,
        # activations forward and gradients backward across each stage boundary
        "pp": (2 * (num_micro + pp - 1) * virtual_stages * act / split) if pp > 1 else 0.0,
    }
    if cp > 1:  # per layer: K/V gathered forward (and in a recomputed forward), gathered and reduced backward
        ops = attention_forward_passes(training) + 2
        out["cp"] = num_micro * layers * ops * (cp - 1) * kv_bytes(model, training, tokens, tp)
    if ep > 1:  # per MoE block: dispatch and combine, forward and backward
        moe_layers = layers * model.num_moe_layers / model.num_layers
        group = training.expert_group(ep, tp)
        sent_share = (group - 1) / group
        out["ep"] = (
            num_micro * moe_layers * ep_passes(training) * sent_share * dispatch_bytes(model, training, tokens, tp)
        )
    return out
