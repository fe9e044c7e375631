"""Compute time of one micro-batch through the layers of one pipeline stage, on one GPU.

GEMMs take flops / sustained peak + a fixed overhead each (fitted to the measured GEMM table, see
calibration.py), so the small GEMMs that tensor parallelism produces run less efficiently. The
backward pass runs two GEMMs (data and weight gradient) per forward GEMM. Attention runs at the
measured flash/SDPA rate on causal FLOPs (half the s x s count). Norms, residual adds, activation
functions, RoPE and the loss are memory-bound: bytes moved / achievable HBM bandwidth.
"""

from __future__ import annotations

from dataclasses import dataclass

from shardplan.cost.calibration import Rates
from shardplan.model.schema import ModelSpec
from shardplan.training import Training

BF16 = 2
FP32 = 4
# Backward attention does 5 of the forward's 2 matmul passes (FlashAttention-2 paper, Dao 2023,
# Sec. 3.1: backward needs recomputing S and P plus dV, dP, dS -> 2.5x the forward FLOPs).
ATTN_BACKWARD_FACTOR = 2.5


@dataclass(frozen=True)
class StageTimes:
    """Seconds for one micro-batch on one GPU of a stage: forward, backward, recompute."""

    forward_s: float
    backward_s: float
    recompute_s: float

    @property
    def total_s(self) -> float:
        """Forward + backward + recompute."""
        return self.forward_s + self.backward_s + self.recompute_s


def gemm_s(m: float, n: float, k: float, rates: Rates) -> float:
    """One (m x k) @ (k x n) GEMM."""
    return 2 * m * n * k / rates.gemm_peak_flops + rates.gemm_overhead_s


def _block_times(model: ModelSpec, tokens: int, seq_len: int, tp: int, sp: bool, rates: Rates) -> tuple[float, ...]:
    """(forward GEMMs, forward attention, forward memory-bound) seconds of one transformer block."""
    h, q = model.hidden_size, model.num_heads * model.head_dim
    kv = model.num_kv_heads * model.head_dim
    if model.moe is not None:
        f = model.moe.expert_ffn_hidden_size * model.moe.top_k + model.moe.shared_ffn_hidden_size
    else:
        f = model.ffn_hidden_size
    mlp_in = 2 * f if model.mlp == "swiglu" else f  # gate and up fused, or one GeLU input projection
    gemms = (
        gemm_s(tokens, (q + 2 * kv) / tp, h, rates)  # QKV projection
        + gemm_s(tokens, h, q / tp, rates)  # attention output projection
        + gemm_s(tokens, mlp_in / tp, h, rates)  # MLP up (and gate)
        + gemm_s(tokens, h, f / tp, rates)  # MLP down
    )
    # causal attention: QK^T and AV, 2 * 2 * s * q FLOPs per token over the full square, half of it causal
    attn = tokens * 2 * seq_len * (q / tp) / rates.attention_flops
    # memory-bound element-wise work per token, bf16 elements read + written:
    #   two norms (read h, write h) and two residual adds (read 2h, write h), on tokens/tp with SP
    #   RoPE on Q and K (read + write), the MLP activation (SwiGLU: read 2f, write f; GeLU: read f, write f)
    norm_tokens = tokens / tp if sp else tokens
    elements = (
        norm_tokens * (2 * 2 * h + 2 * 3 * h) + tokens * (2 * (q + kv) + (3 if model.mlp == "swiglu" else 2) * f) / tp
    )
    memory = elements * BF16 / rates.hbm_bytes_per_s
    return gemms, attn, memory


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
) -> StageTimes:
    """Times of one micro-batch through `layers` transformer blocks (plus the embedding on the
    first stage and the output head and loss on the last)."""
    seq_len, recompute = training.seq_len, training.recompute
    tokens = micro_batch * seq_len
    gemms, attn, memory = _block_times(model, tokens, seq_len, tp, training.sequence_parallel and tp > 1, rates)
    fwd = layers * (gemms + attn + memory)
    bwd = layers * (2 * gemms + ATTN_BACKWARD_FACTOR * attn + 2 * memory)
    if recompute == "full":
        rec = fwd
    elif recompute == "selective":
        rec = layers * attn  # recompute the attention core only (Korthikanti et al. 2022, Sec. 5)
    else:
        rec = 0.0
    if last:
        v, h = model.vocab_size, model.hidden_size
        head = gemm_s(tokens, v / tp, h, rates)
        # logits in bf16, upcast to fp32 for the loss, softmax gradient: ~3 fp32 passes over T x V/tp
        loss = 3 * tokens * v / tp * FP32 / rates.hbm_bytes_per_s
        fwd += head + loss
        bwd += 2 * head + loss
    if first:
        fwd += tokens * model.hidden_size * BF16 / rates.hbm_bytes_per_s  # embedding gather
    return StageTimes(forward_s=fwd, backward_s=bwd, recompute_s=rec)


def optimizer_s(params_local: float, rates: Rates) -> float:
    """Adam step over `params_local` parameters on this GPU: read fp32 param, grad, m, v (16 B),
    write param, m, v (12 B) and the bf16 copy (2 B): 30 bytes per parameter, memory-bound."""
    return params_local * 30 / rates.hbm_bytes_per_s
