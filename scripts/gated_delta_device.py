"""Gated DeltaNet's chunked kernel (flash-linear-attention's `chunk_gated_delta_rule`, which transformers' Qwen3.5 /
Qwen3-Next layers call where `fla` is installed) timed and traced on this GPU, beside causal SDPA over the same heads:
the measurement a linear-attention block in the cost model would rest on.

Shapes: Qwen3.5's linear-attention heads (16 query/key heads and 32 value heads of 128; `linear_num_key_heads`,
`linear_num_value_heads`, `linear_key_head_dim`, `linear_value_head_dim` of transformers' Qwen3_5TextConfig) and what
TP 2 and 4 leave of them on a GPU, 4,096 to 32,768 tokens a sequence, bf16, L2-normed q and k in the kernel (as
transformers calls it). For each: forward and forward + backward milliseconds (medians of CUDA-event timings), and the
bytes autograd keeps between them (allocated after the forward, less its output), per token and value head. FLA
refuses its gated backward on Hopper under Triton 3.4 to 3.7.0 (its issue #640); the row then says so and keeps the
forward figures. The first run (benchmarks/results/h100-gated-delta) met that.

    python scripts/gated_delta_device.py > results.jsonl   # on a GPU, with fla-core on the path
"""

from __future__ import annotations

import json
import statistics
import sys

import torch
import torch.nn.functional as F

# (key heads, value heads, head dim, tokens per sequence, sequences)
CASES = [
    (16, 32, 128, 4096, 1),
    (16, 32, 128, 4096, 2),
    (16, 32, 128, 8192, 1),
    (16, 32, 128, 16384, 1),
    (16, 32, 128, 32768, 1),
    (8, 16, 128, 8192, 1),  # TP 2
    (4, 8, 128, 8192, 1),  # TP 4
]
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
    try:  # last: FLA refuses its gated backward on Hopper under Triton 3.4-3.7.0 (fla-org/flash-linear-attention#640)
        row["forward_backward_ms"] = round(_ms(step), 4)
        row["forward_backward_ns_per_token_value_head"] = round(row["forward_backward_ms"] * 1e6 / per, 4)
    except RuntimeError as exc:
        row["backward_error"] = str(exc)[:300]
    return row


def main() -> None:
    import fla
    import triton

    versions = {"torch": torch.__version__, "triton": triton.__version__, "fla": fla.__version__}
    print(json.dumps({"gpu": torch.cuda.get_device_name(), **versions}))
    for case in CASES:
        try:
            print(json.dumps(measure(*case)), flush=True)
        except Exception as exc:  # a shape the kernel refuses is recorded, not fatal
            print(json.dumps({"case": case, "error": f"{type(exc).__name__}: {exc}"[:400]}), flush=True)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    sys.exit(main())
