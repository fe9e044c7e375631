"""Gated DeltaNet's linear attention on one GPU (Qwen3-Next's and Qwen3.5's "linear_attention" blocks), as
flash-linear-attention (fla-core 0.6.0) runs it in training: its chunked kernels' time, and the memory-bound work
around them.

The kernels' GPU time is a roofline of the work FLA's code does per token and value head, kernel by kernel
(`_FORWARD`, `_BACKWARD`: each kernel the longer of its bytes at the GPU's copy rate and its FLOPs at the GEMM peak,
from the GPU's calibration), times what an H100 measured over it; so shapes and GPUs move it as the roofline does.
Each call also takes the host a fixed time (FLA's Python wrappers and some thirty Triton launches, `MEASURED`), which
the GPU waits out only where it has no other work queued: the cost model adds it to the block's host time.
"""

from __future__ import annotations

from functools import cache
from typing import NamedTuple

from shardplan.cost.calibration import Rates, rates_for
from shardplan.model.schema import GatedDeltaSpec

BF16, FP32 = 2, 4
CHUNK = 64  # chunk_gated_delta_rule's chunk_size
# Measured on H100 80GB HBM3s (torch 2.11, Triton 3.6.0 with FLA's #640 guard lifted for timing, fla-core 0.6.0;
# scripts/gated_delta_device.sh), chunk_gated_delta_rule with L2-normed q and k, 32 value heads (16 key heads) of 128:
# - the host's time a call: a 512-token call took the host as long as the GPU (forward 0.93 / 1.01 ms, forward +
#   backward 4.44 / 4.43 ms; benchmarks/results/h100-gated-delta-54, `*_host_ms`), so the time a short call takes is
#   the host's. Its figure here is the intercept of session 53's lease (benchmarks/results/h100-gated-delta-53: 4,096
#   and 16,384 tokens, forward 0.733 and 1.369 ms, backward 2.011 and 4.041 ms, as fixed + slope: 0.521 / 1.335 ms),
#   the lease the shipped host-dispatch figures match; session 54's lease took the host 1.4-2.3x that a call.
# - the GPU's time per token and value head where the host kept ahead (its time well under the call's): forward 2.61,
#   3.47 and 3.13 ns, backward 7.71, 8.11 and 7.73 ns (one sequence of 16,384 tokens in each lease, of 32,768 in
#   session 54's), medians 3.13 and 7.73 ns.
MEASURED = {
    "gpu": "h100-sxm",
    "heads": (16, 32, 128, 128),
    "slope_s": (3.13e-9, 7.73e-9),
    "host_s": (0.521e-3, 1.335e-3),
}


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
    "l2norm q, k": _Rows(key=4),  # read and write q and k (per key head: `_L2NORM` scales them)
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


def _kernel_s(name: str, rows: _Rows, g: GatedDeltaSpec, rates: Rates) -> float:
    """The roofline seconds of one kernel per token and value head."""
    dk, dv = g.key_head_dim, g.value_head_dim
    key = rows.key * (g.key_heads / g.value_heads if name in _L2NORM else 1)
    moved = BF16 * (key * dk + rows.value * dv + rows.chunk * CHUNK + rows.state * dk * dv / CHUNK) + rows.scalars
    flops = 2 * dk * dv * rows.state_flops + CHUNK * (dk + dv) * rows.chunk_flops
    return max(moved / rates.hbm_bytes_per_s, flops / rates.gemm_peak_flops)


def _roofline_s(g: GatedDeltaSpec, rates: Rates) -> tuple[float, float]:
    """Forward and backward roofline seconds per token and value head."""
    forward = sum(_kernel_s(name, rows, g, rates) for name, rows in _FORWARD.items())
    return forward, sum(_kernel_s(name, rows, g, rates) for name, rows in _BACKWARD.items())


@cache
def _measured_over_roofline() -> tuple[float, float]:
    """What the H100 measured per token and value head over the roofline at the measured heads: 1.96 forward,
    1.86 backward."""
    key_heads, value_heads, key_dim, value_dim = MEASURED["heads"]
    spec = GatedDeltaSpec(
        key_heads=key_heads, value_heads=value_heads, key_head_dim=key_dim, value_head_dim=value_dim, conv_kernel=4
    )
    roofline = _roofline_s(spec, rates_for(MEASURED["gpu"]))
    return MEASURED["slope_s"][0] / roofline[0], MEASURED["slope_s"][1] / roofline[1]


def gated_delta_s(g: GatedDeltaSpec, tokens: float, rates: Rates) -> tuple[float, float]:
    """Forward and backward GPU seconds of FLA's chunked Gated DeltaNet kernels for `tokens` tokens through all of
    `g`'s heads (a TP rank's heads: a share of the tokens), one call: the roofline per token and value head scaled by
    what the H100 measured over it. The host's time a call is `GATED_DELTA_HOST_S`."""
    (fwd, bwd), (over_fwd, over_bwd) = _roofline_s(g, rates), _measured_over_roofline()
    token_heads = tokens * g.value_heads
    return token_heads * fwd * over_fwd, token_heads * bwd * over_bwd


# The host's seconds a call, forward and backward (`MEASURED`), taken as they are on every GPU
GATED_DELTA_HOST_S: tuple[float, float] = MEASURED["host_s"]


def gated_delta_bytes(g: GatedDeltaSpec) -> float:
    """Forward bytes per token of a Gated DeltaNet mixer's memory-bound work outside its kernels and linears, in
    FLA's ops (backward moves twice these): the causal convolution with its SiLU reads and writes q, k and v (2 B
    each way); the kernels' input guard copies q, k and v out of the convolution's output (split views, not
    contiguous: read and write once more); the gated RMSNorm reads the kernels' output and the gate and writes its
    output (2 B each). The decay's and beta's few elements per head are left out."""
    return 2 * BF16 * g.conv_width + 2 * BF16 * g.conv_width + 3 * BF16 * g.value_width
