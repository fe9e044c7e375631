"""Gated DeltaNet's chunked kernel (flash-linear-attention's `chunk_gated_delta_rule`, which transformers' Qwen3.5 /
Qwen3-Next layers call where `fla` is installed) timed and traced on this GPU, beside causal SDPA over the same heads:
the measurement a linear-attention block in the cost model would rest on.

Shapes: Qwen3.5's linear-attention heads (16 query/key heads and 32 value heads of 128; `linear_num_key_heads`,
`linear_num_value_heads`, `linear_key_head_dim`, `linear_value_head_dim` of transformers' Qwen3_5TextConfig) and what
TP 2 and 4 leave of them on a GPU, 4,096 to 32,768 tokens a sequence, bf16, L2-normed q and k in the kernel (as
transformers calls it). For each: forward and forward + backward milliseconds (medians of CUDA-event timings), and the
bytes autograd keeps between them (allocated after the forward, less the inputs), per token and value head.

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

    with torch.no_grad():
        fwd_ms = _ms(forward)
    step_ms = _ms(step)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    out = forward()
    kept = torch.cuda.memory_allocated() - before - out.numel() * out.element_size()
    del out
    # causal attention over as many heads of the same width (SDPA's own pick of kernel), for scale
    q, k, v = (torch.randn(seqs, v_heads, tokens, dim, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    for t in (q, k, v):
        t.requires_grad_()
    attn_grad = torch.randn_like(q)
    sdpa_ms = _ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(attn_grad))
    per = seqs * tokens * v_heads
    return {
        "kernel": "fla chunk_gated_delta_rule",
        "key_heads": heads,
        "value_heads": v_heads,
        "head_dim": dim,
        "tokens": tokens,
        "sequences": seqs,
        "forward_ms": round(fwd_ms, 4),
        "forward_backward_ms": round(step_ms, 4),
        "kept_bytes": kept,
        "kept_bytes_per_token_value_head": round(kept / per, 2),
        "forward_ns_per_token_value_head": round(fwd_ms * 1e6 / per, 4),
        "forward_backward_ns_per_token_value_head": round(step_ms * 1e6 / per, 4),
        "sdpa_causal_forward_backward_ms": round(sdpa_ms, 4),
    }


def main() -> None:
    import fla

    print(json.dumps({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "fla": fla.__version__}))
    for case in CASES:
        try:
            print(json.dumps(measure(*case)), flush=True)
        except Exception as exc:  # a shape the kernel refuses is recorded, not fatal
            print(json.dumps({"case": case, "error": f"{type(exc).__name__}: {exc}"[:400]}), flush=True)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    sys.exit(main())
