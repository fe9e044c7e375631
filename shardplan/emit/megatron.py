"""Megatron-LM command-line arguments (megatron/training/arguments.py)."""

from __future__ import annotations

from shardplan.emit.chunks import model_chunks
from shardplan.emit.remap import remap_note
from shardplan.plan import Plan
from shardplan.topology.schema import Topology


def megatron_args(plan: Plan, topology: Topology) -> str:
    """Arguments for `pretrain_gpt.py`. Megatron orders ranks tp fastest, then cp, dp and pp: the
    plan's rank_layout order (with expert parallelism, its data-parallel rank d x ep + e, the expert-parallel
    rank fastest, as Megatron folds expert groups out of the data-parallel ones). ZeRO-1 maps to the
    distributed optimizer; ZeRO-2 and 3 to Megatron-FSDP's `optim_grads` and `optim_grads_params` sharding, with the
    flags its user guide requires (docs/discussions/megatron-fsdp-user-guide). Megatron's argument checks
    (megatron/training/arguments.py) do not bar it from a pipeline, and Megatron Bridge's docs/training/
    megatron-fsdp.md says it is meant to run with one, if less benchmarked there: a comment says so.

    >>> from shardplan import Training, estimate, load_topology
    >>> t = load_topology("dgx-h100")
    >>> print(megatron_args(estimate("llama3-8b", t, Training(global_batch=32, seq_len=4096), tp=2, pp=2, dp=2), t))
    ... # doctest: +ELLIPSIS
    # shardplan: ...
    --tensor-model-parallel-size 2 \\
    --pipeline-model-parallel-size 2 \\
    ...
    """
    args = [
        f"--tensor-model-parallel-size {plan.tp}",
        f"--pipeline-model-parallel-size {plan.pp}",
        f"--micro-batch-size {plan.micro_batch}",
        f"--global-batch-size {plan.global_batch}",
        f"--seq-length {plan.seq_len}",
        "--bf16",
    ]
    args += _pipeline_split(plan)
    if plan.cp > 1:  # ring attention over the context-parallel group (Transformer Engine)
        args.append(f"--context-parallel-size {plan.cp}")
        if plan.cp_comm != "p2p":  # passed to Transformer Engine, whose name it is (its help says "allgather")
            args.append(f"--cp-comm-type {plan.cp_comm}")
    if plan.ep > 1:  # experts over ep ranks folded inside the data-parallel ones (with the TP ranks where whole)
        etp = plan.tp if plan.expert_tensor_parallel else 1
        args += [
            f"--expert-model-parallel-size {plan.ep * plan.tp // etp}",
            f"--expert-tensor-parallel-size {etp}",
        ]
        if plan.ep_dispatcher == "deduplicated":  # a token crosses to each other NVLink domain once
            # HybridEP where a domain spans nodes (an NVL72 rack's trays): it takes the whole domain as one node, as
            # the cost model does; DeepEP's nodes are of at most 8 NVLink peers (csrc/kernels/configs.cuh)
            backend = "hybridep" if topology.nvlink_spans_nodes else "deepep"
            args += ["--moe-token-dispatcher-type flex", f"--moe-flex-dispatcher-backend {backend}"]
        else:
            args.append("--moe-token-dispatcher-type alltoall")
        if plan.ep_comm_overlap:  # combined 1F1B: a micro-batch's all-to-alls beside another's compute
            args.append("--overlap-moe-expert-parallel-comm")
    if plan.mtp_layers:  # on the last stage, after its blocks (Megatron-Core's default placement)
        args.append(f"--mtp-num-layers {plan.mtp_layers}")
    if plan.sequence_parallel and plan.tp > 1:
        args.append("--sequence-parallel")
    if plan.recompute == "full":
        args += ["--recompute-granularity full", "--recompute-method uniform", "--recompute-num-layers 1"]
    elif plan.recompute == "selective" or plan.recompute_modules:  # the attention core and/or the modules named
        modules = (["core_attn"] if plan.recompute == "selective" else []) + list(plan.recompute_modules)
        args += ["--recompute-granularity selective", f"--recompute-modules {' '.join(modules)}"]
    elif plan.recompute == "selective-layer":  # half the blocks of each model chunk (Megatron counts per chunk)
        half = max(c.num_layers for c in model_chunks(plan)) // 2
        args += ["--recompute-granularity full", "--recompute-method block", f"--recompute-num-layers {half}"]
    if plan.dtype == "fp8":  # Transformer Engine: e4m3 forward, e5m2 gradients, per-tensor scales
        args += ["--transformer-impl transformer_engine", "--fp8-format hybrid"]
        if plan.fp8_recipe == "current":  # Megatron's name for Transformer Engine's per-tensor current scaling
            args.append("--fp8-recipe tensorwise")
    if plan.loss == "fused":  # Transformer Engine's cross-entropy, in place over the bf16 logits
        args += ["--cross-entropy-loss-fusion", "--cross-entropy-fusion-impl te"]
    if plan.zero_stage >= 1:
        args.append("--use-distributed-optimizer")
    fsdp = plan.zero_stage >= 2
    if fsdp:
        strategy = "optim_grads_params" if plan.zero_stage == 3 else "optim_grads"
        args += ["--use-megatron-fsdp", f"--data-parallel-sharding-strategy {strategy}"]
        args += ["--no-gradient-accumulation-fusion", "--ckpt-format fsdp_dtensor"]
    if plan.tp_comm_overlap and plan.tp > 1:
        args.append("--tp-comm-overlap")  # needs Transformer Engine and --sequence-parallel
    if plan.overlap_param_gather and plan.zero_stage >= 1:
        args += ["--overlap-grad-reduce", "--overlap-param-gather"]
    head = [f"# shardplan: {plan.model} on {plan.topology}, estimated {plan.step_time_s:.3f} s/step"]
    if fsdp and plan.pp > 1:
        head.append(
            "# Megatron-FSDP under a pipeline: code-supported, less benchmarked than without one (Megatron Bridge "
            "docs/training/megatron-fsdp.md)"
        )
    if plan.dtype == "fp8" and not plan.fp8_weight_cache:
        head.append(
            "# the plan casts FP8 weights every micro-batch; Megatron-LM keeps each step's casts (2 B per weight more "
            "memory): estimate with --fp8-weight-cache"
        )
    if plan.dtype == "fp8" and plan.fp8_recipe == "rowwise":
        head.append("# the plan assumes torchao's rowwise FP8 scaling; Transformer Engine scales per tensor")
    if plan.recompute == "selective-op":
        head.append("# the plan assumes torchtitan's per-op selective recompute; Megatron has no such option")
    if plan.compiled:
        head.append(
            "# the plan assumes blocks under torch.compile; Megatron-LM compiles only small fusions (jit_fuser): plan "
            "again without --compiled"
        )
    if plan.loss == "fp32":
        head.append(
            "# the plan assumes torch's fp32 cross-entropy (14 B per logit); Megatron's own holds 6: plan again with "
            "--loss megatron"
        )
    head += remap_note(plan, topology, "#")
    return "\n".join(head) + "\n" + " \\\n".join(args) + "\n"


def _pipeline_split(plan: Plan) -> list[str]:
    """Blocks per (virtual) stage: Megatron's even split where the plan's is even, else the explicit
    `--pipeline-model-parallel-layout` (E: embedding, t: block, m: multi-token-prediction layer, L: output head and
    loss; chunks in model order, separated by |)."""
    stages, v = plan.layers_per_stage, plan.virtual_stages
    if plan.pp == 1:
        return []
    if len(set(stages)) == 1 and stages[0] % v == 0:
        return [f"--num-layers-per-virtual-pipeline-stage {stages[0] // v}"] if v > 1 else []
    segments = []
    for c in model_chunks(plan):
        tokens = ["E"] * c.embedding + [f"t*{c.num_layers}" if c.num_layers > 1 else "t"] * (c.num_layers > 0)
        segments.append(",".join(tokens + ["m"] * (plan.mtp_layers * c.head) + ["L"] * c.head))
    return [f'--pipeline-model-parallel-layout "{"|".join(segments)}"']
