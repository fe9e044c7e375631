"""The framework options `shardplan estimate` and `shardplan suggest` share: one typer option type per `Training`
field, under the field's own name, and the `Training` a command builds from them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from shardplan.training import Training

TpCommOverlap = Annotated[
    bool, typer.Option(help="TP collectives run under their GEMMs (Megatron --tp-comm-overlap, async TP).")
]
OverlapParamGather = Annotated[
    bool, typer.Option(help="ZeRO-1/2 weight all-gather runs under the next forward (--overlap-param-gather).")
]
SequenceParallel = Annotated[bool, typer.Option(help="Megatron sequence parallelism with TP > 1.")]
Attention = Annotated[
    str,
    typer.Option(
        help="flash (FlashAttention, SDPA), triton (the 2022 Triton FlashAttention, llm-foundry's attn_impl) "
        "or unfused (Megatron's s x s core attention, pre-2022)."
    ),
]
Loss = Annotated[
    str | None,
    typer.Option(
        help="megatron (Megatron-LM's vocab-parallel cross-entropy, its default: an fp32 softmax made in place, 6 B "
        "per logit; its native --cross-entropy-loss-fusion holds 10), "
        "fp32 (cross_entropy on an fp32 copy of the logits, eager torchtitan / Hugging Face: 14 B) or fused (one "
        "kernel over bf16 logits: flash-attn's CrossEntropyLoss, llm-foundry, Transformer Engine's (Megatron's "
        "--cross-entropy-fusion-impl te), a compiled loss: 4 B; under --tp-impl dtensor both run in torch's "
        "loss_parallel: 16 and 10 B) \\[default: the framework's: megatron; fp32 for "
        "--emit torchtitan or python; fused for --emit torchtitan with --compiled, as torchtitan compiles its loss "
        "with the model]."
    ),
]
Compiled = Annotated[
    bool,
    typer.Option(
        help="Blocks run under torch.compile (torchtitan --training.compile): compiled host time per block, the "
        "memory-bound ops (and FP8 casts) at the rates measured for a whole compiled block; SwiGLU kept as with "
        "--fused-swiglu; op-level selective recompute keeps one bf16 h-wide tensor fewer per block and token; with "
        "--dtype fp8 and no recompute, the norms' outputs and the down-projection's input are not kept."
    ),
]
TpAsyncBackward = Annotated[
    bool,
    typer.Option(
        help="Column-parallel backward collectives under the gradient GEMMs (Megatron since 2022); "
        "off: --no-async-tensor-model-parallel-allreduce, Megatron-DeepSpeed."
    ),
]
FsdpVersion = Annotated[
    int,
    typer.Option(
        help="ZeRO-3 as FSDP2 (2: per-parameter fully_shard, torchtitan; its buffer copies counted) or flat "
        "parameters (1: FSDP1, DeepSpeed ZeRO-3)."
    ),
]
TpImpl = Annotated[
    str | None,
    typer.Option(
        help="megatron (Megatron-LM's TP layers, plain tensors) or dtensor (parallelize_module, torchtitan: "
        "DTensor dispatch adds host time per block unless --compiled) \\[default: megatron; suggest --emit torchtitan "
        "or python: dtensor]."
    ),
]
Dtype = Annotated[
    str,
    typer.Option(
        help="Compute precision: bf16 (mixed precision), or fp8: the blocks' linears in FP8 (Transformer Engine, "
        "torchao float8; needs FP8 tensor cores)."
    ),
]
Fp8Recipe = Annotated[
    str,
    typer.Option(
        help="FP8 scaling with --dtype fp8: tensorwise (a scale per tensor set in the cast's pass: Transformer "
        "Engine's delayed scaling, torchao compiled), current (Transformer Engine's current scaling: an amax pass "
        "first) or rowwise (torchao)."
    ),
]
GradDtype = Annotated[
    str,
    typer.Option(
        help="Gradients kept and reduced in fp32 (Megatron main_grad, FSDP reduce_dtype) or in the half-precision "
        "weights' own dtype, bf16 or fp16 (DeepSpeed fp16/bf16, Megatron fp16 without fp32 grad accumulation)."
    ),
]
GradAccumulationFusion = Annotated[
    bool,
    typer.Option(
        help="Weight-gradient GEMMs accumulate into the fp32 gradients themselves (Megatron's default with APEX)."
    ),
]
FusedSwiglu = Annotated[
    bool, typer.Option(help="SwiGLU keeps only its input and recomputes SiLU (Megatron-Core's bias_activation_fusion).")
]
Fp8SavedInputs = Annotated[
    bool, typer.Option(help="With --dtype fp8, linears keep FP8 casts of their inputs (Transformer Engine).")
]
Fp8WeightCache = Annotated[
    bool,
    typer.Option(
        help="With --dtype fp8, linears cast their weights on a step's first micro-batch and keep the casts "
        "(Transformer Engine under Megatron-Core)."
    ),
]
Fp8AllGather = Annotated[
    bool,
    typer.Option(
        help="With --dtype fp8 (tensorwise or current) and ZeRO-3 under FSDP2: FSDP gathers the FP8 linears' weights "
        "in float8, 1 byte each (torchao's enable_fsdp_float8_all_gather, torchtitan's \\[float8] option)."
    ),
]
ExpertTensorParallel = Annotated[
    bool,
    typer.Option(
        help="With --ep and tp > 1: experts split by TP (Megatron's default); off: each expert whole on a GPU, tokens "
        "swapped over ep x tp GPUs (--expert-tensor-parallel-size 1)."
    ),
]
RecomputeModules = Annotated[
    list[str] | None,
    typer.Option(
        "--recompute-module",
        help="With recompute none or selective, Megatron's --recompute-modules (repeat): moe_act (the routed experts' "
        "activation), layernorm (each block's two norms), mla_up_proj (MLA's up-projections).",
    ),
]
MtpLayers = Annotated[
    int,
    typer.Option(
        min=0,
        help="Multi-token prediction layers (Megatron's --mtp-num-layers, DeepSeek-V3's 1): each one more block, "
        "the output head and a loss on the last pipeline stage.",
    ),
]
EpCommOverlap = Annotated[
    bool,
    typer.Option(
        help="With --ep: all-to-alls beside another micro-batch's compute (--overlap-moe-expert-parallel-comm)."
    ),
]
EpDispatcher = Annotated[
    str,
    typer.Option(
        help="With --ep: alltoall (a copy per chosen expert) or deduplicated (a copy per other NVLink domain: "
        "node or NVL72 rack; DeepEP / HybridEP, Megatron's flex dispatcher)."
    ),
]
Emit = Annotated[
    str | None,
    typer.Option(
        help="Write the best plan as torchtitan, megatron, deepspeed or python, planned for what that framework "
        "runs (torchtitan and python: torch pipelines, DTensor TP, grouped expert GEMMs; torchtitan: no ZeRO-1 "
        "unless --zero says; deepspeed: its PipelineEngine) where --pipeline-runtime, --tp-impl, --cp-comm and "
        "--expert-gemms do not say."
    ),
]
ExpertGemms = Annotated[
    str | None,
    typer.Option(
        help="A MoE block's local experts: loop (a GEMM each after a host sync: Megatron-Core, Transformer Engine) "
        "or grouped (one torch._grouped_mm, torchtitan) \\[default: loop; suggest --emit torchtitan or python: "
        "grouped]."
    ),
]
PipelineScatterGather = Annotated[
    bool,
    typer.Option(help="Without SP, each TP rank sends 1/tp of a stage's output (Megatron); off: whole tensors."),
]

PipelineRuntime = Annotated[
    str | None,
    typer.Option(
        help="megatron (Megatron-LM), torch (torch.distributed.pipelining, torchtitan: a receive buffer per "
        "micro-batch for activations and for gradients on every stage) or deepspeed (DeepSpeed's PipelineEngine: "
        "blocking sends of whole tensors, four per micro-batch; one model chunk per GPU; ZeRO-0/1 only with pp > 1) "
        "\\[default: megatron; suggest --emit torchtitan or python: torch, --emit deepspeed: deepspeed]."
    ),
]


# The Training fields `estimate` and `suggest` both take as options, under the fields' own names.
FRAMEWORK_OPTIONS = (
    "dtype",
    "fp8_recipe",
    "grad_dtype",
    "grad_accumulation_fusion",
    "tp_comm_overlap",
    "overlap_param_gather",
    "fused_swiglu",
    "fp8_saved_inputs",
    "fp8_weight_cache",
    "fp8_all_gather",
    "expert_tensor_parallel",
    "ep_comm_overlap",
    "ep_dispatcher",
    "expert_gemms",
    "recompute_modules",
    "mtp_layers",
    "sequence_parallel",
    "pipeline_scatter_gather",
    "pipeline_runtime",
    "tp_async_backward",
    "fsdp_version",
    "tp_impl",
    "attention",
    "loss",
    "compiled",
)


# What runs the plan, where a command names no runtime of its own: Megatron-LM's, unless `suggest --emit` names a
# framework. torchtitan (and torch code that builds the emitted DeviceMesh) pipelines with torch.distributed.pipelining,
# splits layers as DTensors, gathers context-parallel keys and values whole (torch's context_parallel rotation
# "allgather", torchtitan's default) and runs a MoE block's experts as grouped GEMMs; DeepSpeed pipelines with its
# PipelineEngine.
_TORCH = {"pipeline_runtime": "torch", "tp_impl": "dtensor", "cp_comm": "all_gather", "expert_gemms": "grouped"}
_MEGATRON = {"pipeline_runtime": "megatron", "tp_impl": "megatron", "cp_comm": "p2p", "expert_gemms": "loop"}
RUNTIMES: dict[str | None, dict[str, str]] = {
    None: _MEGATRON,
    "torchtitan": _TORCH,
    "python": _TORCH,
    "deepspeed": _MEGATRON | {"pipeline_runtime": "deepspeed"},
}


def training_of(options: dict[str, Any], **fields: Any) -> Training:
    """The `Training` of a command: `fields`, and its framework options (`options`: its locals); what is left
    unset (None) runs as the framework of its `--emit` runs it (`RUNTIMES`)."""
    from shardplan.training import Training

    values = {name: options[name] for name in FRAMEWORK_OPTIONS} | fields
    values["recompute_modules"] = tuple(values["recompute_modules"] or ())
    for name, value in RUNTIMES.get(options.get("emit"), RUNTIMES[None]).items():
        if values.get(name) is None:
            values[name] = value
    if values.get("loss") is None:
        values["loss"] = loss_of(options.get("emit"), compiled=values.get("compiled", False))
    return Training(**values)


def loss_of(emit: str | None, *, compiled: bool) -> str:
    """The loss the framework of `--emit` computes: Megatron-LM's own (and Megatron-DeepSpeed's) vocab-parallel
    cross-entropy; torch's cross_entropy on an fp32 copy of the logits in torch code, which torchtitan compiles with
    the model (components/loss.py, 2025 on) into the fused loss's 4 B per logit (benchmarks/results/
    h100-loss-memory)."""
    if emit not in ("torchtitan", "python"):
        return "megatron"
    return "fused" if emit == "torchtitan" and compiled else "fp32"
