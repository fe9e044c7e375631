"""Compute time of one micro-batch through the layers of one pipeline stage, on one GPU.

GEMMs take flops / sustained peak + a fixed overhead each (fitted to the measured GEMM table, see calibration.py),
so the small GEMMs that tensor parallelism produces run less efficiently; a GEMM whose rows are not a multiple of 16
bytes (an inner or output dimension not a multiple of 8 in bf16) runs at the share of the peak measured for such
GEMMs. The backward pass runs two GEMMs (data and weight gradient) per forward GEMM. Attention runs at the measured
flash/SDPA forward and backward rates on causal FLOPs (half the s x s count), a learned sink per head (GPT-OSS)
adding its measured backward time; the 2022 Triton FlashAttention runs at the measured FlashAttention-2 rates over
the published ratio; a hybrid's Gated DeltaNet blocks take their share of the linear-attention kernels' time and
memory-bound work (`linear_attention`) in place of attention's; unfused attention (Megatron before FlashAttention)
runs QK^T and AV as batched GEMMs over the whole square, which write and read the s x s scores, and moves the scores
through softmax and dropout in memory. Norms, residual adds, the activation function, RoPE (where the model has it)
and the loss (fp32 or fused) are memory-bound: the bytes each must move (forward; backward twice that) over the rate
measured for that op (eager), or for compiled blocks all of them over the rate measured for a whole compiled block.
A micro-batch takes at least the host's dispatch time for its blocks (eager mode launches each kernel from Python).
All rates come from `shardplan calibrate`; the misaligned share from benchmarks/gemm_alignment.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from shardplan.cost.calibration import (
    ATTN_BWD_FLOPS_OVER_FWD,
    REFERENCE_GPU,
    Rates,
    at_head_dim,
    at_seq,
    elementwise_bytes_per_token,
    rates_for,
)
from shardplan.cost.linear_attention import GATED_DELTA_HOST_S, gated_delta_bytes, gated_delta_s
from shardplan.errors import PlanError
from shardplan.model.schema import Matmul, ModelSpec, MoeSpec
from shardplan.training import Training

BF16 = 2
FP32 = 4
# Bytes per parameter of the optimizer step in mixed precision (DESIGN.md "Memory" layout), by
# counting what the algorithm reads and writes: Adam reads fp32 param, grad and two moments (16 B)
# and writes param and moments (12 B); the bf16 compute copy is rewritten from the fp32 master
# (read 4, write 2) and the fp32 gradient buffer zeroed (write 4).
ADAM_BYTES, COPY_BACK_BYTES, ZERO_GRAD_BYTES = 28, 6, 4
# Per micro-batch, each bf16 weight gradient is added into the fp32 gradient buffer: read 2 + 4,
# write 4 (Megatron-LM's DDP main_grad without gradient_accumulation_fusion; FSDP2's fp32 reduce).
GRAD_ACCUMULATE_BYTES = 10
# Per micro-batch under FSDP2, bytes per weight of the gathered block (torch/distributed/fsdp/_fully_shard/
# _fsdp_collectives.py): split_with_sizes_copy moves each gathered bf16 weight out of the all-gather buffer
# (read 2, write 2), in forward and again in backward (reshard after forward, torchtitan's default); chunk_cat
# writes each bf16 gradient into the fp32 reduce-scatter buffer (read 2, write 4). Per weight of the local
# shard: all_gather_copy_in casts the fp32 shard into the bf16 all-gather input (read 4, write 2), twice.
FSDP2_COPY_BYTES = 2 * 4 + 6
FSDP2_SHARD_COPY_BYTES = 2 * 6
# The FlashAttention kernel in Triton of 2022 against FlashAttention-2 on the same GPU, forward and
# backward: "FlashAttention-2 is around 1.3-1.5x faster than FlashAttention in Triton in the forward
# pass and around 2x faster in the backward pass" (Dao 2023, arXiv:2307.08691, Sec. 4.1, on A100).
TRITON_2022_SLOWER = (1.4, 2.0)
# torch._grouped_mm over a MoE block's local experts (torchtitan's GroupedExperts), forward and backward, took on an
# H100 the calibrated GEMM time of each expert's share without a GEMM's fixed time (the calibration's intercept, 26.5
# us, shows nowhere in it), plus about 1.1 us per expert and GEMM: the median of that excess over eight shapes of 1 to
# 64 local experts of 640 to 8,192 rows (-1.7 to +4.3 us but Mixtral's one expert of 8,192 rows, +50 us, a 2% rate
# difference), which then gives every shape within 7% (GPT-OSS's 2,880-wide experts; the others within 2.5%).
# benchmarks/results/h100-moe-block-54 (`grouped_gemm_s`). Taken as it is on other GPUs.
GROUPED_GEMM_S_PER_EXPERT = 1.1e-6
# A learned sink per query head (GPT-OSS) leaves fused attention's forward as it is and adds backward time per
# (token, query head), whatever the sequence, the window or the head dim: 1.10-1.67 ns, median 1.58, over seven
# shapes (1-4 x 2,048-8,192 tokens, causal or a 128-key window, heads of 64 and 128) in cuDNN 9.19's fused
# attention on an H100, the kernel Transformer Engine runs for it (benchmarks/results/h100-attention-sinks). Other
# GPUs: that time scaled by their GEMM peak against the H100 calibration's, as attention's rates scale.
SINK_BACKWARD_S_PER_ROW = 1.58e-9
# GEMMs whose rows are off 16-byte alignment lose the tensor-core kernels' wide loads. On an H100 the nine
# measured (GPT-2's 50,257-row output head: forward, input and weight gradients; Megatron's core-attention QK^T
# and AV at head dims 108, 150 and 450) ran at 85-221 TFLOP/s, median 150.1, where their aligned neighbours
# ran at 230-795 (benchmarks/results/h100-alignment, torch 2.11 / cuBLAS 13): 0.21 of the calibrated H100
# GEMM peak (715.3 TFLOP/s), taken as that share of any GPU's peak.
MISALIGNED_PEAK_SHARE = 150.1 / 715.3
ALIGN_ELEMENTS = 8  # bf16 elements in 16 bytes
# An FP8 cast (float8 training, each linear's input and weight forward, its output gradient backward)
# reads the bf16 tensor and writes e4m3 twice, row-major and transposed (the weight-gradient GEMM reads
# the transposed copy): Transformer Engine's cast_transpose, torchao's tensorwise cast. Counted bytes.
FP8_CAST_BYTES = 2 + 1 + 1
# Transformer Engine's current scaling (Float8CurrentScalingQuantizer::quantize, transformer_engine/pytorch/csrc/
# quantizer.cpp) first reads the bf16 tensor for its amax (nvte_compute_amax), then derives the scale and casts
# (nvte_quantize_v2): one more read of 2 bytes per element than a cast whose scale is known beforehand. At the
# copy rate: a floor. ATen's reduction read 512 MiB at 0.81 of the copy rate, 32-128 MiB at 0.26-0.60 (a fixed
# ~25 us), on an H100 (benchmarks/results/h100-single-pass).
AMAX_READ_BYTES = 2


@dataclass(frozen=True)
class StageTimes:
    """Seconds for one micro-batch on one GPU of a stage: forward, backward, recompute."""

    forward_s: float
    backward_s: float
    recompute_s: float
    gemm_s: float = 0.0  # of the above, the blocks' GEMMs (what TP communication can hide under)
    attention_s: tuple[float, float] = (0.0, 0.0)  # one block's attention, forward and backward (CP hides under it)
    # one block's attention part forward (linears, attention, memory-bound ops), its MLP's GEMMs forward and its
    # attention part backward: what Megatron's overlapped all-to-alls each run beside (`overlapped_all_to_alls_s`)
    block_parts_s: tuple[float, float, float] = (0.0, 0.0, 0.0)
    host_slack_s: float = 0.0  # of the above, what the GPU waits for the host to dispatch (collectives run there)

    @property
    def total_s(self) -> float:
        """Forward + backward + recompute."""
        return self.forward_s + self.backward_s + self.recompute_s


def gemm_s(m: float, n: float, k: float, rates: Rates, precision: str = "bf16") -> float:
    """One (m x k) @ (k x n) GEMM in row-major bf16 (its rows are k and n elements long), or in FP8
    under `precision`, one of FP8_RECIPES."""
    if precision != "bf16":
        peak, overhead = rates.fp8_gemm[precision]
        return 2 * m * n * k / peak + overhead
    return 2 * m * n * k / _peak(rates, n, k) + rates.gemm_overhead_s


def linear_precisions(training: Training, rates: Rates) -> tuple[str, str]:
    """How the blocks' linear layers run their GEMMs, forward and backward: bf16, or under
    dtype='fp8' the FP8 recipe (forward with fast accumulation where the recipe is tensorwise)."""
    if training.dtype != "fp8":
        return "bf16", "bf16"
    backward = "tensorwise" if training.fp8_recipe == "current" else training.fp8_recipe  # per-tensor scaled GEMMs
    forward = "tensorwise_fast_accum" if backward == "tensorwise" else backward
    if forward not in rates.fp8_gemm or backward not in rates.fp8_gemm:
        raise PlanError(
            f"dtype='fp8' needs FP8 tensor cores (Hopper, Ada, Blackwell) and their {backward} GEMM rates; "
            f"none for this GPU ({rates.source[:70]})"
        )
    return forward, backward


def fp8_cast_s(elements: float, rates: Rates, *, amax_pass: bool = False, compiled: bool = False) -> float:
    """Casting `elements` bf16 values to FP8 as float8 training does before a GEMM: read 2 bytes,
    write 1 in the row-major and 1 in the transposed layout (the other GEMM of the pair reads it), in
    one pass at the copy rate, as Transformer Engine's fused cast-transpose kernel runs (with delayed
    scaling it records the amax in the same pass). `compiled`: torchao's casts as torch.compile fuses them into a
    block, at the rate `shardplan calibrate` measures for them in a whole compiled block (the copy rate where not
    measured). `amax_pass`: the scale comes from this tensor's amax, read in a pass of its own first (Transformer
    Engine's current scaling), at the copy rate."""
    cast_rate = (compiled and rates.fp8_cast_compiled_bytes_per_s) or rates.hbm_bytes_per_s
    return elements * (FP8_CAST_BYTES / cast_rate + AMAX_READ_BYTES * amax_pass / rates.hbm_bytes_per_s)


def mixer_matmuls(
    model: ModelSpec, *, fused: bool = False, ffn: int | None = None
) -> list[tuple[float, tuple[Matmul, ...]]]:
    """(share of the blocks, the block's matmuls) for each mixer the blocks have (`ModelSpec.mixers`): softmax
    attention's, and linear attention's in a hybrid model."""
    return [(share, model.block_matmuls(fused=fused, ffn=ffn, mixer=mixer)) for share, mixer in model.mixers]


def fp8_cast_elements(model: ModelSpec, tokens: float, tp: int, sp: bool, *, weight_casts: bool) -> tuple[float, float]:
    """Elements one block casts to FP8 on one GPU, forward (each linear's input, and its weight with
    `weight_casts`) and backward (each linear's output gradient), its linears fused as Megatron fuses them."""
    forward = backward = 0.0
    for share, matmuls in mixer_matmuls(model, fused=True):
        shapes = [m.per_gpu(tokens, tp, sp) for m in matmuls]
        forward += share * sum(rows * inner + weight_casts * width * inner for rows, width, inner in shapes)
        backward += share * sum(rows * width for rows, width, _ in shapes)
    return forward, backward


def block_elementwise_bytes(model: ModelSpec, tokens: float, tp: int, sp: bool) -> dict[str, float]:
    """Forward bytes of one block's memory-bound ops on one GPU, by op (`elementwise_bytes_per_token`): two norms
    and two residual adds on the tokens (their shard under SP), MLA's norm of its latents as well (over
    `latent_width` / 2 elements per token), RoPE on Q and K where the model rotates them, and the MLP activation,
    both sharded by TP. Backward moves twice these."""
    h = model.hidden_size
    per_token = elementwise_bytes_per_token(
        h, *model.rope_widths, model.active_ffn_hidden_size, swiglu=model.mlp == "swiglu"
    )
    norm_tokens = tokens / tp if sp else tokens
    return {
        "rms_norm": norm_tokens * (2 + model.latent_width / 2 / h) * per_token["rms_norm"],
        "residual_add": norm_tokens * 2 * per_token["residual_add"],
        "rope": tokens / tp * per_token["rope"] * model.rotary,
        "swiglu": tokens / tp * per_token["swiglu"],
    }


def memory_bound_s(moved: dict[str, float], rates: Rates, *, compiled: bool) -> float:
    """Seconds to move `moved` bytes by op: each op at its eager rate, or under `compiled` all of them at the rate
    measured for a whole compiled block (where measured; Inductor fuses across ops)."""
    if compiled and rates.compiled_block_bytes_per_s:
        return sum(moved.values()) / rates.compiled_block_bytes_per_s
    return sum(moved[op] / rates.elementwise_bytes_per_s[op] for op in moved)


def _peak(rates: Rates, *row_elements: float) -> float:
    """The GEMM rate for rows of these lengths: the peak, or its misaligned share when one is not a
    multiple of 16 bytes."""
    aligned = not any(n % ALIGN_ELEMENTS for n in row_elements)
    return rates.gemm_peak_flops * (1.0 if aligned else MISALIGNED_PEAK_SHARE)


def column_parallel_gemms_s(
    model: ModelSpec, tokens: int, tp: int, rates: Rates, precision: str = "bf16"
) -> tuple[float, float]:
    """Forward seconds of the block's column-parallel GEMMs as Megatron fuses them, attention's (the QKV
    projection; MLA: the up-projections) and the MLP's input projection (gate and up fused under SwiGLU). Their
    input- and weight-gradient GEMMs in backward each do the same FLOPs."""

    def seconds(matmuls: Sequence[Matmul]) -> float:
        return sum(gemm_s(*m.per_gpu(tokens, tp, False), rates, precision) for m in matmuls if m.split == "column")

    mixers = mixer_matmuls(model, fused=True)
    return sum(share * seconds(matmuls[:-2]) for share, matmuls in mixers), seconds(mixers[0][1][-2:-1])


def _block_times(
    model: ModelSpec,
    tokens: int,
    seq_len: int,
    tp: int,
    sp: bool,
    rates: Rates,
    *,
    attention: str = "flash",
    compiled: bool = False,
    precisions: tuple[str, str] = ("bf16", "bf16"),
    amax_pass: bool = False,
    weight_casts: bool = True,
    experts: tuple[float, float, float] | None = None,
    grouped: bool = False,
) -> tuple[float, ...]:
    """(forward GEMMs, backward GEMMs, forward attention, backward attention, forward memory-bound, and of the
    forward GEMMs the MLP's) seconds of one transformer block; `compiled`: its memory-bound ops at their rates under
    torch.compile; `precisions`: the linears' GEMMs forward and backward (`linear_precisions`), where
    FP8 adds the casts of their inputs and weights (forward; the weights' only with `weight_casts`) and of their
    output gradients (backward), each after a pass for its amax with `amax_pass` (`fp8_cast_s`).
    `experts` (MoE blocks: `_local_experts`): the routed experts' GEMMs run one expert after the other, each
    paying a GEMM's fixed time (Transformer Engine's GroupedLinear issues one GEMM per expert), not as one GEMM
    of the active width; `grouped` (`Training.expert_gemms`): each projection one grouped GEMM over the local
    experts: each expert's share at its shape's rate, without a GEMM's fixed time, and `GROUPED_GEMM_S_PER_EXPERT`."""
    h = model.hidden_size

    def gemms_s(matmuls: Sequence[Matmul], precision: str) -> float:
        return sum(gemm_s(*m.per_gpu(tokens, tp, sp), rates, precision) for m in matmuls)

    mixers = mixer_matmuls(model, fused=True, ffn=model.ffn_hidden_size)
    mlp_in, down = mixers[0][1][-2:]

    def linears(precision: str) -> tuple[float, float]:
        """The attention's linears and the MLP's (MoE blocks': their share of the routed and shared experts')."""
        mlp_s = gemms_s((mlp_in, down), precision)  # a dense block's
        if experts is not None and model.moe is not None:
            local, rows, width = experts
            inner = (2 if model.mlp == "swiglu" else 1) * width
            routed = local * (gemm_s(rows, inner, h, rates, precision) + gemm_s(rows, h, width, rates, precision))
            if grouped:  # no GEMM's fixed time, the grouped kernel's time per expert
                routed -= 2 * local * (gemm_s(0, 0, 0, rates, precision) - GROUPED_GEMM_S_PER_EXPERT)
            shared = model.moe.shared_ffn_hidden_size / tp
            if shared:
                routed += gemm_s(tokens, 2 * shared, h, rates, precision) + gemm_s(tokens, h, shared, rates, precision)
            share = model.num_moe_layers / model.num_layers
            mlp_s = share * routed + (1 - share) * mlp_s
        return sum(share * gemms_s(matmuls[:-2], precision) for share, matmuls in mixers), mlp_s

    (attention_fwd, mlp_fwd), gemms_bwd = linears(precisions[0]), 2 * sum(linears(precisions[1]))
    gemms = attention_fwd + mlp_fwd
    if precisions[0] != "bf16":  # each linear's input and weight cast forward, its output gradient backward
        cast_fwd, cast_bwd = fp8_cast_elements(model, tokens, tp, sp, weight_casts=weight_casts)
        gemms += fp8_cast_s(cast_fwd, rates, amax_pass=amax_pass, compiled=compiled)
        gemms_bwd += fp8_cast_s(cast_bwd, rates, amax_pass=amax_pass, compiled=compiled)
    # causal attention: QK^T and AV, 2 * 2 * s * q FLOPs per token over the full square, half of it causal; blocks
    # with a sliding window as a causal sequence of the span whose queries see as many keys (`causal_spans`)
    # (QK^T at the query-key head dim, AV at the value head dim: MLA's differ)
    spans = model.causal_spans(seq_len)
    heads_dims = model.num_heads * (model.head_dim + model.v_head_dim) / tp
    attn_flops = [(share, tokens * span * heads_dims, span) for share, span in spans]
    memory = memory_bound_s(block_elementwise_bytes(model, tokens, tp, sp), rates, compiled=compiled)
    norm_tokens = tokens / tp if sp else tokens
    if model.moe is not None:
        # MoE blocks permute each token into its top-k experts' rows before the experts and sum them back after
        # (Megatron-Core's moe_utils permute / unpermute): read 2h, write 2kh, then read 2kh, write 2h bytes per
        # token of this GPU, at the copy rate; a share of blocks where some blocks are dense
        moved = 4 * h * (1 + model.moe.top_k) * model.num_moe_layers / model.num_layers
        memory += norm_tokens * moved / rates.hbm_bytes_per_s
    if attention == "unfused":  # Megatron's core attention before FlashAttention
        scores = tokens * seq_len * model.num_heads / tp  # elements of the s x s matrices
        # QK^T and AV as two batched GEMMs over the whole square (the causal mask is applied after); with
        # the head dim as their inner or output dimension they are bound as much by the scores QK^T writes
        # and AV reads (2 B each) as by their FLOPs: the two add up (within 10% of the aligned head dims
        # 112-216 in benchmarks/results/h100-alignment). Backward runs twice both.
        bmm = (
            2 * scores * (model.head_dim + model.v_head_dim) / _peak(rates, model.head_dim, model.v_head_dim)
            + 2 * scores * BF16 / rates.hbm_bytes_per_s
            + 2 * rates.gemm_overhead_s
        ) * (1 - model.linear_share)  # the softmax blocks' share
        # fused scale-mask-softmax reads scores and writes probabilities (2 + 2 B); its backward reads
        # probabilities and gradient and writes one (6 B). Dropout: out 2 B + mask 1 B forward, and
        # gradient in, mask, gradient out (2 + 1 + 2 B) backward.
        drop = 1 if model.dropout else 0
        attn_fwd = bmm + scores * (4 + 5 * drop) / rates.hbm_bytes_per_s
        attn_bwd = 2 * bmm + scores * (6 + 5 * drop) / rates.hbm_bytes_per_s
    else:  # flash: SDPA's own pick; triton: the 2022 Triton kernel, FlashAttention-2's rates over its slowdown
        kernels = ("flash2", "flash2_bwd") if attention == "triton" else ("attention", "attention_bwd")
        slower = TRITON_2022_SLOWER if attention == "triton" else (1.0, 1.0)

        def seconds(kernel: str, flops: float, span: int) -> float:
            """At the kernel's rate at the span and the model's head dim (`at_head_dim`). MLA's query-key head dim
            (192) sets it: on an H100, SDPA with values of 128 ran at 1.02x (forward) and 0.86x (backward) its rate
            with heads of 128, where the head-dim factors give 1.03x and 0.90x at 192 (0.94x backward at the dims'
            mean); benchmarks/results/h100-mla."""
            rate = at_seq(getattr(rates, f"{kernel}_flops"), span)
            return flops / (rate * at_head_dim(rates.attention_head_dim.get(kernel, {}), model.head_dim))

        attn_fwd = sum(x * slower[0] * seconds(kernels[0], f, span) for x, f, span in attn_flops)
        attn_bwd = sum(
            x * slower[1] * seconds(kernels[1], f * ATTN_BWD_FLOPS_OVER_FWD, span) for x, f, span in attn_flops
        )
        if model.attention_sinks:
            reference = rates_for(REFERENCE_GPU).gemm_peak_flops / rates.gemm_peak_flops
            attn_bwd += tokens * model.num_heads / tp * SINK_BACKWARD_S_PER_ROW * reference
    if model.gated_delta is not None:  # the linear-attention blocks' share of the mixing and its memory-bound work
        share = model.linear_share
        kernel, moved = gated_delta_s(model.gated_delta, tokens / tp, rates), gated_delta_bytes(model.gated_delta)
        attn_fwd, attn_bwd = attn_fwd + share * kernel[0], attn_bwd + share * kernel[1]
        memory += share * tokens / tp * moved / rates.hbm_bytes_per_s
    return gemms, gemms_bwd, attn_fwd, attn_bwd, memory, mlp_fwd


def _modules_recomputed_s(model: ModelSpec, training: Training, tokens: int, tp: int, rates: Rates) -> float:
    """Seconds one block's backward spends recomputing Megatron's `recompute_modules`, forward once more: the two
    norms (on the sequence shard under SP), the routed experts' activation over their rows (top-k per token), and
    MLA's up-projections with the RoPE of their queries and keys."""
    routed = model.moe.top_k * model.moe.expert_ffn_hidden_size if model.moe is not None else 0
    per_token = elementwise_bytes_per_token(model.hidden_size, *model.rope_widths, routed, swiglu=model.mlp == "swiglu")
    moved = dict.fromkeys(per_token, 0.0)
    seconds = 0.0
    if "layernorm" in training.recompute_modules:
        norm_tokens = tokens / tp if training.sequence_parallel and tp > 1 else tokens
        moved["rms_norm"] = norm_tokens * 2 * per_token["rms_norm"]
    if "moe_act" in training.recompute_modules and routed:
        moved["swiglu"] = model.num_moe_layers / model.num_layers * tokens / tp * per_token["swiglu"]
    if "mla_up_proj" in training.recompute_modules and model.mla:
        ups = [m for m in model.block_matmuls() if m.name in ("q_up", "kv_up")]
        precision = linear_precisions(training, rates)[0]
        seconds += sum(gemm_s(*m.per_gpu(tokens, tp, False), rates, precision) for m in ups)
        moved["rope"] = tokens / tp * per_token["rope"]
    return seconds + memory_bound_s(moved, rates, compiled=training.compiled)


def _local_experts(moe: MoeSpec, training: Training, tokens: int, tp: int, ep: int) -> tuple[float, float, float]:
    """(experts on a GPU, rows each receives, its width there) for a micro-batch of `tokens` per GPU, routing
    balanced: split by TP, a GPU holds E / ep experts' 1/tp slices and the TP group's tokens (gathered under SP);
    whole on a GPU (`Training.expert_tensor_parallel` off), E / (ep x tp) experts and its own tokens."""
    group = training.expert_group(ep, tp)
    local = moe.num_experts / group
    sp = training.sequence_parallel and tp > 1
    if group > ep:  # experts whole: this GPU's tokens (its sequence shard under SP)
        rows, width = tokens * moe.top_k / (tp if sp else 1), moe.expert_ffn_hidden_size
    else:
        rows, width = tokens * moe.top_k, moe.expert_ffn_hidden_size / tp
    return local, rows / local, width


def host_wrappers(training: Training, tp: int) -> tuple[bool, bool]:
    """Whether the blocks run under FSDP2 (`Training.fsdp2`) and whether their linears are DTensors: both add host
    time per block. DTensor's excess is measured eager; compiled blocks take their own figures."""
    return training.fsdp2, training.tp_impl == "dtensor" and tp > 1 and not training.compiled


def stage_times(
    model: ModelSpec,
    training: Training,
    *,
    layers: int,
    first: bool,
    last: bool,
    micro_batch: int,
    tp: int,
    rates: Rates,
    cp: int = 1,
    fsdp2: bool | None = None,
    dtensor_tp: bool | None = None,
    ep: int = 1,
) -> StageTimes:
    """Times of one micro-batch through `layers` transformer blocks (plus the embedding on the
    first stage and the output head and loss on the last, where `Training.mtp_layers` multi-token-prediction
    layers each add a block, their projection of 2h onto h, an embedding gather, the head and a loss once more;
    Megatron-Core's MultiTokenPredictionBlock); `cp`: each GPU holds 1/cp of every
    sequence, and 1/cp of the causal attention (load-balanced chunks) against keys of the whole
    sequence; `fsdp2`: each block under FSDP2's fully_shard, `dtensor_tp`: its linears DTensors: both
    add to the host's time per block (None: as `training` and `tp` have them, `host_wrappers`); `ep`: a
    mixture-of-experts block's host time grows with the experts each GPU holds (`Training.expert_group`)."""
    wrapped = host_wrappers(training, tp)
    fsdp2 = wrapped[0] if fsdp2 is None else fsdp2
    dtensor_tp = wrapped[1] if dtensor_tp is None else dtensor_tp
    seq_len, recompute = training.seq_len, training.recompute
    tokens = micro_batch * seq_len // cp
    precisions = linear_precisions(training, rates)
    gemms, gemms_bwd, attn, attn_bwd, memory, mlp = _block_times(
        model,
        tokens,
        seq_len,
        tp,
        training.sequence_parallel and tp > 1,
        rates,
        attention=training.attention,
        compiled=training.compiled,
        precisions=precisions,
        amax_pass=training.fp8_recipe == "current",
        weight_casts=not (training.fp8_weight_cache or training.fp8_gathered),
        experts=_local_experts(model.moe, training, tokens, tp, ep) if model.moe is not None else None,
        grouped=training.expert_gemms == "grouped",
    )
    mtp = training.stage_blocks(layers, last) - layers
    layers += mtp
    fwd = layers * (gemms + attn + memory)
    bwd = layers * (gemms_bwd + attn_bwd + 2 * memory)
    gemm_total = layers * (gemms * {"full": 2, "selective-layer": 1.5}.get(recompute, 1) + gemms_bwd)
    if recompute == "full":
        rec = fwd
    elif recompute == "selective":  # recompute the attention core only (Korthikanti et al. 2022, Sec. 5)
        rec = layers * attn
        if g := model.gated_delta:  # softmax attention's: a linear-attention kernel keeps no s x s scores
            rec -= layers * model.linear_share * gated_delta_s(g, tokens / tp, rates)[0]
    elif recompute == "selective-layer":  # every second block in full
        rec = fwd / 2
    elif recompute == "selective-op":  # every other matmul and the memory-bound ops, not attention
        sp = training.sequence_parallel and tp > 1
        redo = sum(
            share * sum(gemm_s(*m.per_gpu(tokens, tp, sp), rates, precisions[0]) for m in matmuls[1::2])
            for share, matmuls in mixer_matmuls(model)
        )
        rec = layers * (redo + memory)
        gemm_total += layers * redo
    else:
        rec = 0.0
    if training.recompute_modules:
        rec += layers * _modules_recomputed_s(model, training, tokens, tp, rates)
    if last:
        v, h = model.vocab_size, model.hidden_size
        head = gemm_s(tokens, v / tp, h, rates)
        logits = tokens * v / tp
        if training.loss == "fused":
            # one pass reads the bf16 logits forward; backward reads them and writes their gradient, at the copy
            # rate (flash-attn's Triton cross-entropy; a compiled one took 1.4-2x this on an H100, under 2% of any
            # validation row's step: benchmarks/results/h100-single-pass)
            loss_fwd, loss_bwd = logits * BF16 / rates.hbm_bytes_per_s, logits * 2 * BF16 / rates.hbm_bytes_per_s
        else:
            # logits in bf16, upcast to fp32 for the loss, softmax gradient: ~3 fp32 passes over T x V/tp
            # forward and 3 backward, at the measured cross-entropy rate; Megatron's in-place loss makes as many
            loss_fwd = loss_bwd = 3 * logits * FP32 / rates.loss_bytes_per_s
        projection = gemm_s(tokens, h / tp, 2 * h, rates, precisions[0])  # each MTP layer's, column-parallel
        fwd += (1 + mtp) * (head + loss_fwd) + mtp * projection
        bwd += (1 + mtp) * (2 * head + loss_bwd) + mtp * 2 * projection
    if first or mtp:
        fwd += (first + mtp) * tokens * model.hidden_size * BF16 / rates.hbm_bytes_per_s  # embedding gathers
    # eager PyTorch cannot launch kernels faster than the host dispatches them: short kernels leave
    # the GPU waiting (measured per block by `shardplan calibrate`)
    host = rates.host_dispatch
    base = "compiled_" if training.compiled and host["compiled_forward_s_per_block"] else ""

    def per_block(key: str, *wrappers: str) -> float:
        """The host time per block (eager, or compiled where measured) and what each wrapper adds to
        the eager figure (where measured)."""
        return host[base + key] + sum(max(host[w + key] - host[key], 0.0) for w in wrappers if host[w + key])

    wrappers = [prefix for prefix, on in (("fsdp2_", fsdp2), ("dtensor_tp_", dtensor_tp)) if on]
    ends = first or last
    gpu = fwd + bwd + rec
    moe = {"forward": 0.0, "backward": 0.0}  # what MoE blocks add per block on average: fixed, and per local expert
    if model.moe is not None:
        local = model.moe.num_experts / training.expert_group(ep, tp)
        share = model.num_moe_layers / model.num_layers
        kind = "grouped_moe" if training.expert_gemms == "grouped" else "moe"
        moe = {w: share * (host[f"{kind}_{w}_s_per_block"] + local * host[f"{kind}_{w}_s_per_expert"]) for w in moe}
    # Gated DeltaNet blocks: FLA's kernels take the host a fixed time a call (`GATED_DELTA_HOST_S`)
    linear = [model.linear_share * s for s in GATED_DELTA_HOST_S] if model.gated_delta is not None else [0.0, 0.0]
    forward_host = layers * (per_block("forward_s_per_block", *wrappers) + moe["forward"] + linear[0])
    backward_host = layers * (per_block("backward_s_per_block", *wrappers) + moe["backward"] + linear[1])
    fwd = max(fwd, forward_host + ends * host["forward_s_fixed"])
    bwd = max(bwd, backward_host + ends * host["backward_s_fixed"])
    # recompute re-runs the block's ops (DTensor's dispatch again), not FSDP2's forward hooks
    redo = per_block("forward_s_per_block", *(["dtensor_tp_"] if dtensor_tp else [])) + moe["forward"] + linear[0]
    if recompute in ("full", "selective-op"):  # both re-run every op of the block's forward from Python
        rec = max(rec, layers * redo)
    elif recompute == "selective-layer":
        rec = max(rec, layers / 2 * redo)
    return StageTimes(
        forward_s=fwd,
        backward_s=bwd,
        recompute_s=rec,
        gemm_s=gemm_total,
        attention_s=(attn, attn_bwd),
        block_parts_s=(gemms - mlp + attn + memory, mlp, 2 * (gemms - mlp + memory) + attn_bwd),
        host_slack_s=fwd + bwd + rec - gpu,
    )


def optimizer_s(params_local: float, rates: Rates) -> float:
    """Adam step over `params_local` parameters on this GPU at the measured fused-AdamW rate, then
    the bf16 copy-back and zeroing of the fp32 gradients at the copy rate."""
    return params_local * (
        ADAM_BYTES / rates.adamw_bytes_per_s + (COPY_BACK_BYTES + ZERO_GRAD_BYTES) / rates.hbm_bytes_per_s
    )


def fsdp2_copy_s(params_local: float, dp: int, rates: Rates) -> float:
    """FSDP2's copies of one micro-batch over `params_local` gathered weights, sharded over `dp`."""
    return params_local * (FSDP2_COPY_BYTES + FSDP2_SHARD_COPY_BYTES / dp) / rates.hbm_bytes_per_s


def grad_accumulate_s(params_local: float, rates: Rates) -> float:
    """Adding one micro-batch's bf16 weight gradients into the fp32 gradient buffer."""
    return params_local * GRAD_ACCUMULATE_BYTES / rates.hbm_bytes_per_s
