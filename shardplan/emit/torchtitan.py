"""torchtitan job config (TOML): the [parallelism], [training] and [activation_checkpoint] sections.
Keys as in torchtitan/config/job_config.py (Parallelism, Training, ActivationCheckpoint)."""

from __future__ import annotations

from shardplan.emit.chunks import model_chunks
from shardplan.emit.remap import remap_note
from shardplan.errors import PlanError
from shardplan.plan import Plan
from shardplan.topology.schema import Topology

_ROTATE = {"p2p": "alltoall", "all_gather": "allgather"}  # a plan's cp_comm as torchtitan's rotate method


def torchtitan_toml(plan: Plan, topology: Topology) -> str:
    """TOML to merge into a torchtitan job config. torchtitan's data parallelism is FSDP2
    (`data_parallel_shard_degree`) when the plan shards over replicas (ZeRO >= 1), else plain
    replication (`data_parallel_replicate_degree`). ZeRO-3 reshards weights after forward (torchtitan's
    "default"); ZeRO-1 and 2 keep them gathered from forward to backward ("never": FSDP's SHARD_GRAD_OP, ZeRO-2;
    torchtitan has no ZeRO-1, a comment says so).

    >>> from shardplan import Training, estimate, load_topology
    >>> t = load_topology("dgx-h100")
    >>> print(torchtitan_toml(estimate("llama3-8b", t, Training(global_batch=32, seq_len=8192, zero_stage=3),
    ...                                tp=2, pp=1, dp=4), t))  # doctest: +ELLIPSIS
    # shardplan: llama3-8b on dgx-h100, ...
    [parallelism]
    data_parallel_replicate_degree = 1
    data_parallel_shard_degree = 4
    fsdp_reshard_after_forward = "default"
    tensor_parallel_degree = 2
    ...
    """
    if plan.recompute_modules:
        raise PlanError(
            "torchtitan has no per-module recompute (Megatron's --recompute-modules): emit for megatron, or plan "
            "again for torchtitan (--pipeline-runtime torch) without --recompute-module"
        )
    if plan.mtp_layers:
        raise PlanError(
            "torchtitan has no multi-token prediction (Megatron's --mtp-num-layers): emit for megatron, or plan again "
            "without --mtp-layers"
        )
    shard = plan.zero_stage >= 1
    data = plan.dp * plan.ep  # torchtitan's expert parallelism borrows its GPUs from data_parallel_shard_degree
    etp = plan.tp if plan.expert_tensor_parallel else 1  # and from tensor_parallel_degree where experts stay whole
    replicate, sharded = (1, data) if shard else (plan.dp, plan.ep)
    schedule = "Interleaved1F1B" if plan.virtual_stages > 1 else "1F1B"
    async_tp = plan.tp_comm_overlap and plan.tp > 1
    # torchtitan's loss: torch's cross_entropy on an fp32 copy of the logits, compiled with the model where compiling
    own_loss = "fused" if plan.compiled else "fp32"
    lines = [
        f"# shardplan: {plan.model} on {plan.topology}, estimated {plan.step_time_s:.3f} s/step",
        *remap_note(plan, topology, "#"),
        *([f"# the plan assumes the {plan.loss} loss; torchtitan's is {own_loss} here"] * (plan.loss != own_loss)),
        "[parallelism]",
        f"data_parallel_replicate_degree = {replicate}",
        f"data_parallel_shard_degree = {sharded}"
        + ("  # HSDP: EP borrows from the shard axis" * (not shard and sharded > 1)),
        *_reshard_after_forward(plan.zero_stage),
        f"tensor_parallel_degree = {plan.tp}",
        f"pipeline_parallel_degree = {plan.pp}",
        f'pipeline_parallel_schedule = "{schedule}"',
        f"pipeline_parallel_microbatch_size = {plan.micro_batch}",
        *_model_parts(plan),
        # async TP is torchtitan's TP/GEMM overlap; it needs torch.compile
        f"enable_async_tensor_parallel = {str(async_tp).lower()}"
        + ("  # takes effect only compiled: plan again with --compiled" if async_tp and not plan.compiled else ""),
        f"context_parallel_degree = {plan.cp}",
        # torch's context_parallel passes K/V chunks around the ring by all-to-all, or gathers them whole
        *([f'context_parallel_rotate_method = "{_ROTATE[plan.cp_comm]}"'] if plan.cp > 1 else []),
        f"expert_parallel_degree = {plan.ep * (plan.tp // etp)}",
        *([f"expert_tensor_parallel_degree = {etp}"] if plan.ep > 1 else []),
        "",
        "[training]",
        f"global_batch_size = {plan.global_batch}",
        f"local_batch_size = {_local_batch(plan)}",
        f"seq_len = {plan.seq_len}",
        'mixed_precision_param = "bfloat16"',
        *(["compile = true  # the blocks and the loss, as planned"] if plan.compiled else []),
        "",
        "[activation_checkpoint]",
        *_activation_checkpoint(plan.recompute),
    ]
    if plan.dtype == "fp8":  # torchao's float8 linears (torchtitan's float8 converter); its tensorwise recipe scales
        # by each tensor's current amax, the plan's "current" (which assumed the amax read in a pass of its own)
        recipe = "tensorwise" if plan.fp8_recipe == "current" else plan.fp8_recipe
        lines += ["", "[model]", 'converters = ["float8"]', "", "[float8]", f'recipe_name = "{recipe}"']
        if plan.fp8_all_gather:  # FSDP gathers the float8 casts of the weight shards, scaled once per step
            lines += ["enable_fsdp_float8_all_gather = true", "precompute_float8_dynamic_scale_for_fsdp = true"]
    return "\n".join(lines) + "\n"


def _local_batch(plan: Plan) -> int:
    """torchtitan's `local_batch_size`: what one forward takes on a data-parallel rank without a pipeline, where
    torchtitan accumulates gradients over global_batch_size // (local_batch_size x its dp degree) of them (train.py),
    so the plan's micro-batch; with a pipeline, a rank's whole share of the step, which the schedule splits into
    micro-batches of `pipeline_parallel_microbatch_size`."""
    return plan.micro_batch * (1 if plan.pp == 1 else plan.num_micro_batches)


def _reshard_after_forward(zero_stage: int) -> list[str]:
    """torchtitan's `fsdp_reshard_after_forward` for a plan's ZeRO stage (none without sharding)."""
    if zero_stage == 0:
        return []
    if zero_stage == 3:
        return ['fsdp_reshard_after_forward = "default"']
    note = "  # ZeRO-2; the plan's ZeRO-1 kept gradients whole" if zero_stage == 1 else ""
    return [f'fsdp_reshard_after_forward = "never"{note}']


def _activation_checkpoint(recompute: str) -> list[str]:
    """torchtitan's [activation_checkpoint] keys for a plan's recompute mode."""
    if recompute == "selective-op":
        return ['mode = "selective"', 'selective_ac_option = "op"']
    if recompute == "selective-layer":
        return ['mode = "selective"', 'selective_ac_option = "2"']
    if recompute == "selective":  # Megatron's: recompute the s x s attention core, which SDPA never keeps
        return ['mode = "none"  # the plan\'s Megatron-style selective recompute: nothing to do with SDPA']
    return [f'mode = "{recompute}"']


def _model_parts(plan: Plan) -> list[str]:
    """The plan's split of blocks into pipeline stages, as torchtitan's module names per model chunk
    (its Llama-family models: tok_embeddings, layers.<i>, norm, output)."""
    if plan.pp == 1:
        return []
    parts = []
    for c in model_chunks(plan):
        names = ["tok_embeddings"] * c.embedding + [
            f"layers.{i}" for i in range(c.first_layer, c.first_layer + c.num_layers)
        ]
        parts.append(names + ["norm", "output"] * c.head)
    body = ", ".join("[" + ", ".join(f'"{n}"' for n in names) + "]" for names in parts)
    return [f"module_fqns_per_model_part = [{body}]"]
