"""Gated DeltaNet's chunked kernel (flash-linear-attention's `chunk_gated_delta_rule`, which transformers' Qwen3.5 /
Qwen3-Next layers call where `fla` is installed) and the whole linear-attention mixer around it, timed and traced on
this GPU, beside causal SDPA over the same heads: the measurement the cost model's Gated DeltaNet blocks rest on.

Kernel shapes: Qwen3.5's linear-attention heads (16 query/key heads and 32 value heads of 128; `linear_num_key_heads`,
`linear_num_value_heads`, `linear_key_head_dim`, `linear_value_head_dim` of transformers' Qwen3_5TextConfig) and what
TP 2 and 4 leave of them on a GPU, 4,096 to 32,768 tokens a sequence, bf16, L2-normed q and k in the kernel (as
transformers calls it). For each: forward and forward + backward milliseconds (medians of CUDA-event timings), and the
bytes autograd keeps between them (allocated after the forward, less its output), per token and value head, and the
host's milliseconds to queue each (`*_host_ms`: whether the per-call fixed time is the host's or the GPU's).

Mixer (`mixer` rows): the block's linear-attention half as FLA's GatedDeltaNet layer and Megatron-Core run it: one
input projection (q, k, v, the output gate z, and the per-head beta and decay inputs), FLA's causal depthwise
convolution (kernel 4) with SiLU, the decay g = -exp(A_log) softplus(a + dt_bias), the kernel, FLA's gated RMSNorm
(`FusedRMSNormGated`) and the output projection; forward, forward + backward and kept bytes, at Qwen3-Next's and
Qwen3.5's hidden sizes.

FLA refuses its gated backward on Hopper under Triton 3.4 to 3.7.0 (its issue #640: that Triton miscompiles
`chunk_bwd_dqkwg` into wrong gradients). torch's own Triton is in that range, so the guard is lifted here, for timing
alone (`guard_lifted` in every row): the kernels run as they would, their gradients are not used. The first run
(benchmarks/results/h100-gated-delta, session 52) kept the guard and met it.

    python scripts/gated_delta_device.py > results.jsonl   # on a GPU, with fla-core on the path
    GDN_QUICK=1 python scripts/gated_delta_device.py ...    # four kernel shapes and two mixers
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

# kernel: (key heads, value heads, head dim, tokens per sequence, sequences)
CASES = [
    (16, 32, 128, 512, 1),  # short: the per-call fixed time alone
    (16, 32, 128, 4096, 1),
    (16, 32, 128, 4096, 2),
    (16, 32, 128, 8192, 1),
    (16, 32, 128, 16384, 1),
    (16, 32, 128, 32768, 1),
    (8, 16, 128, 8192, 1),  # TP 2
    (4, 8, 128, 8192, 1),  # TP 4
]
# mixer: (hidden size, key heads, value heads, head dim, tokens per sequence, sequences)
MIXERS = [
    (2048, 16, 32, 128, 4096, 1),  # Qwen3-Next-80B-A3B, Qwen3.5-35B-A3B
    (2048, 16, 32, 128, 4096, 4),
    (4096, 16, 32, 128, 4096, 2),  # Qwen3.5's default text config
    (4096, 8, 16, 128, 4096, 2),  # its TP 2 share
    (5120, 16, 48, 128, 8192, 1),
]
CONV = 4
if os.environ.get("GDN_QUICK") == "1":  # a short run where little device time is left: fewer shapes to compile
    CASES, MIXERS = [CASES[0], CASES[1], CASES[4], CASES[6]], [MIXERS[0], MIXERS[2]]
WARMUP, REPEATS = 3, 10


def _ms(fn) -> float:
    for _ in range(WARMUP):
        fn()
    times = []
    for _ in range(REPEATS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _host_ms(fn) -> float:
    """Median milliseconds the host takes to return from `fn` (its launches queued, the GPU idle before each): where
    it matches the CUDA-event time, the host sets the pace and the GPU waits for it."""
    for _ in range(WARMUP):
        fn()
    times = []
    for _ in range(REPEATS):
        torch.cuda.synchronize()
        begin = time.perf_counter()
        fn()
        times.append((time.perf_counter() - begin) * 1e3)
    torch.cuda.synchronize()
    return statistics.median(times)


def _inputs(heads: int, v_heads: int, dim: int, tokens: int, seqs: int) -> list[torch.Tensor]:
    def leaf(*shape: int, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
        return torch.randn(*shape, device="cuda", dtype=dtype).requires_grad_()

    q, k, v = leaf(seqs, tokens, heads, dim), leaf(seqs, tokens, heads, dim), leaf(seqs, tokens, v_heads, dim)
    g = (-F.softplus(torch.randn(seqs, tokens, v_heads, device="cuda"))).requires_grad_()  # log decay, <= 0
    beta = torch.rand(seqs, tokens, v_heads, device="cuda", dtype=torch.bfloat16).requires_grad_()
    return [q, k, v, g, beta]


def measure(heads: int, v_heads: int, dim: int, tokens: int, seqs: int) -> dict:
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    inputs = _inputs(heads, v_heads, dim, tokens, seqs)
    grad = torch.randn(seqs, tokens, v_heads, dim, device="cuda", dtype=torch.bfloat16)

    def forward() -> torch.Tensor:
        out, _ = chunk_gated_delta_rule(*inputs, use_qk_l2norm_in_kernel=True)
        return out

    def step() -> None:
        forward().backward(grad)

    per = seqs * tokens * v_heads
    row: dict = {"kernel": "fla chunk_gated_delta_rule", "key_heads": heads, "value_heads": v_heads, "head_dim": dim}
    row |= {"tokens": tokens, "sequences": seqs}
    with torch.no_grad():
        row["forward_ms"] = round(_ms(forward), 4)
        row["forward_host_ms"] = round(_host_ms(forward), 4)
    row["forward_ns_per_token_value_head"] = round(row["forward_ms"] * 1e6 / per, 4)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    out = forward()
    row["kept_bytes"] = torch.cuda.memory_allocated() - before - out.numel() * out.element_size()
    row["kept_bytes_per_token_value_head"] = round(row["kept_bytes"] / per, 2)
    del out
    # causal attention over as many heads of the same width (SDPA's own pick of kernel), for scale
    q, k, v = (torch.randn(seqs, v_heads, tokens, dim, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    for t in (q, k, v):
        t.requires_grad_()
    attn_grad = torch.randn_like(q)
    row["sdpa_causal_forward_backward_ms"] = round(
        _ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(attn_grad)), 4
    )
    row["forward_backward_ms"] = round(_ms(step), 4)
    row["forward_backward_host_ms"] = round(_host_ms(step), 4)
    row["forward_backward_ns_per_token_value_head"] = round(row["forward_backward_ms"] * 1e6 / per, 4)
    return row


def measure_mixer(hidden: int, heads: int, v_heads: int, dim: int, tokens: int, seqs: int) -> dict:
    """The linear-attention mixer of one block, input projection to output projection (the module docstring)."""
    from fla.modules import FusedRMSNormGated
    from fla.modules.causal_conv1d import causal_conv1d
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    kd, vd = heads * dim, v_heads * dim
    conv_dim = 2 * kd + vd

    def param(*shape: int, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
        return (torch.randn(*shape, device="cuda", dtype=dtype) * shape[-1] ** -0.5).requires_grad_()

    w_in, w_conv, w_out = param(conv_dim + vd + 2 * v_heads, hidden), param(conv_dim, CONV), param(hidden, vd)
    a_log, dt_bias = param(v_heads, dtype=torch.float32), param(v_heads, dtype=torch.float32)
    norm = FusedRMSNormGated(dim, eps=1e-6, device="cuda", dtype=torch.bfloat16)
    x = torch.randn(seqs, tokens, hidden, device="cuda", dtype=torch.bfloat16).requires_grad_()
    grad = torch.randn_like(x)

    def forward() -> torch.Tensor:
        qkv, z, b, a = F.linear(x, w_in).split([conv_dim, vd, v_heads, v_heads], dim=-1)
        qkv, _ = causal_conv1d(qkv, w_conv, activation="silu")
        q, k, v = (t.unflatten(-1, (-1, dim)) for t in qkv.split([kd, kd, vd], dim=-1))
        g = -a_log.exp() * F.softplus(a.float() + dt_bias)
        o, _ = chunk_gated_delta_rule(q, k, v, g, b.sigmoid(), use_qk_l2norm_in_kernel=True)
        o = norm(o, z.unflatten(-1, (-1, dim)))
        return F.linear(o.flatten(-2), w_out)

    row: dict = {"kernel": "mixer", "hidden": hidden, "key_heads": heads, "value_heads": v_heads, "head_dim": dim}
    row |= {"tokens": tokens, "sequences": seqs}
    with torch.no_grad():
        row["forward_ms"] = round(_ms(forward), 4)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    out = forward()
    row["kept_bytes"] = torch.cuda.memory_allocated() - before - out.numel() * out.element_size()
    row["kept_bytes_per_token"] = round(row["kept_bytes"] / (seqs * tokens), 2)
    del out
    row["forward_backward_ms"] = round(_ms(lambda: forward().backward(grad)), 4)
    return row


def main() -> None:
    import fla
    import fla.ops.common.chunk_o as chunk_o
    import triton

    lifted = not chunk_o.TRITON_ABOVE_3_7_1 and chunk_o.TRITON_ABOVE_3_4_0 and chunk_o.IS_NVIDIA_HOPPER
    chunk_o.TRITON_ABOVE_3_7_1 = True  # FLA's #640 guard, lifted for timing (the module docstring)
    versions = {"torch": torch.__version__, "triton": triton.__version__, "fla": fla.__version__}
    print(json.dumps({"gpu": torch.cuda.get_device_name(), **versions, "guard_lifted": lifted}))
    for fn, cases in ((measure, CASES), (measure_mixer, MIXERS)):
        for case in cases:
            try:
                print(json.dumps(fn(*case)), flush=True)
            except Exception as exc:  # a shape the kernel refuses is recorded, not fatal
                print(json.dumps({"case": case, "error": f"{type(exc).__name__}: {exc}"[:400]}), flush=True)
            torch.cuda.empty_cache()


if __name__ == "__main__":
    sys.exit(main())
