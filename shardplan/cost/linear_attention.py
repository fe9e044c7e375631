"""Gated DeltaNet's linear attention on one GPU (Qwen3-Next's and Qwen3.5's "linear_attention" blocks), as
flash-linear-attention (fla-core 0.6.0) runs it in training: its chunked kernels' time, and the memory-bound work
around them.

Not measured yet: the lent GPUs' stack could not run FLA's gated backward (its issue #640 guard, Triton < 3.7.1 on
Hopper; benchmarks/results/h100-gated-delta) and no machine was lent since; `scripts/gated_delta_device.sh` measures
the kernels and the whole mixer when one is. Until then the kernels' time is a roofline of the work FLA's code
does, kernel by kernel (`_FORWARD`, `_BACKWARD`): each kernel takes the longer of its bytes at the GPU's copy rate
and its FLOPs at the GEMM peak, plus a GEMM's fixed time (both from the GPU's calibration). It is a floor for the
bytes and FLOPs; Triton's tiles at a 64-token chunk reach neither rate, so it is likely short of the real time.
"""

from __future__ import annotations

from typing import NamedTuple

from shardplan.cost.calibration import Rates
from shardplan.model.schema import GatedDeltaSpec

BF16, FP32 = 2, 4
CHUNK = 64  # chunk_gated_delta_rule's chunk_size


class _Rows(NamedTuple):
    """What one kernel reads and writes per token and value head, in rows of each kind (a row of q or k: the key
    head dim; of v, u, w's value side, o and their gradients: the value head dim; of A: the chunk; a state: the key
    x value state of a chunk, shared by its tokens), and its FLOPs in multiples of 2 x dk x dv (a token's product
    with a state) and of CHUNK x (dk + dv) (its products within the chunk)."""

    key: float = 0  # rows of the key head dim (bf16)
    value: float = 0  # rows of the value head dim (bf16)
    chunk: float = 0  # rows of A (bf16)
    state: float = 0  # chunk states (bf16), per token: dk x dv / CHUNK
    scalars: float = 0  # fp32 or bf16 scalars per token and head (g, beta and their gradients), in bytes
    state_flops: float = 0  # multiples of 2 x dk x dv
    chunk_flops: float = 0  # multiples of CHUNK x (dk + dv)


# fla/ops/gated_delta_rule/chunk.py, chunk_gated_delta_rule_fwd, kernel by kernel
_FORWARD = {
    "l2norm q, k": _Rows(key=4),  # read and write q and k (per key head: `_l2norm_rows` scales it)
    "chunk_local_cumsum g": _Rows(scalars=2 * FP32),
    # k k^T within the chunk, its triangular solve, then w = A (k beta) and u = A (v beta): reads k, v, g, beta,
    # writes w, u and A
    "fwd_intra": _Rows(key=2, value=2, chunk=1, scalars=FP32 + BF16, chunk_flops=3),
    # the state chunk by chunk: v_new = u - w h, h <- h + k^T v_new; reads k, w, u, g, writes every chunk's h, v_new
    "fwd_h": _Rows(key=2, value=2, state=1, scalars=FP32, state_flops=2),
    # o = q h + (q k^T masked) v_new; reads q, k, v_new, h, g, writes o
    "fwd_o": _Rows(key=2, value=2, state=1, scalars=FP32, state_flops=1, chunk_flops=2),
}
# chunk_gated_delta_rule_bwd, kernel by kernel
_BACKWARD = {
    "recompute_w_u": _Rows(key=2, value=2, chunk=1, scalars=FP32 + BF16, chunk_flops=2),
    "fwd_h again": _FORWARD["fwd_h"],
    "bwd_dv_local": _Rows(key=2, value=2, scalars=FP32, chunk_flops=2),  # reads q, k, g, do, writes dv
    # dh chunk by chunk, backwards; reads q, k, w, g, do, dv, writes dh and dv
    "bwd_dhu": _Rows(key=3, value=3, state=1, scalars=FP32, state_flops=3),
    # reads q, k, v_new, w, g, h, dv, do, dh, writes dq, dk, dw, dg
    "bwd_dqkwg": _Rows(key=6, value=3, state=2, scalars=2 * FP32, state_flops=4, chunk_flops=2),
    # reads k, v, beta, g, A, dw, du, writes dk, dv, dbeta, dg
    "prepare_wy_repr_bwd": _Rows(key=3, value=3, chunk=1, scalars=2 * FP32 + 2 * BF16, chunk_flops=4),
    "dk.add_": _Rows(key=3),
    "dg.add_, reverse cumsum": _Rows(scalars=5 * FP32),
    "l2norm backward q, k": _Rows(key=6),  # reads x and its gradient, writes the gradient, for q and for k
}
_L2NORM = ("l2norm q, k", "l2norm backward q, k")  # per key head: their rows scale by key heads / value heads


def _kernel_s(name: str, rows: _Rows, g: GatedDeltaSpec, token_heads: float, rates: Rates) -> float:
    dk, dv = g.key_head_dim, g.value_head_dim
    key = rows.key * (g.key_heads / g.value_heads if name in _L2NORM else 1)
    moved = BF16 * (key * dk + rows.value * dv + rows.chunk * CHUNK + rows.state * dk * dv / CHUNK) + rows.scalars
    flops = 2 * dk * dv * rows.state_flops + CHUNK * (dk + dv) * rows.chunk_flops
    busy = max(moved / rates.hbm_bytes_per_s, flops / rates.gemm_peak_flops)
    return token_heads * busy + rates.gemm_overhead_s


def gated_delta_s(g: GatedDeltaSpec, tokens: float, rates: Rates) -> tuple[float, float]:
    """Forward and backward seconds of FLA's chunked Gated DeltaNet kernels for `tokens` tokens through all of
    `g`'s heads (a TP rank's heads: a share of the tokens): the module's roofline, not a measurement."""
    token_heads = tokens * g.value_heads
    forward = sum(_kernel_s(name, rows, g, token_heads, rates) for name, rows in _FORWARD.items())
    return forward, sum(_kernel_s(name, rows, g, token_heads, rates) for name, rows in _BACKWARD.items())


def gated_delta_bytes(g: GatedDeltaSpec) -> float:
    """Forward bytes per token of a Gated DeltaNet mixer's memory-bound work outside its kernels and linears, in
    FLA's ops (backward moves twice these): the causal convolution with its SiLU reads and writes q, k and v (2 B
    each way); the kernels' input guard copies q, k and v out of the convolution's output (split views, not
    contiguous: read and write once more); the gated RMSNorm reads the kernels' output and the gate and writes its
    output (2 B each). The decay's and beta's few elements per head are left out."""
    return 2 * BF16 * g.conv_width + 2 * BF16 * g.conv_width + 3 * BF16 * g.value_width
