"""One GPU: causal attention with and without a sliding window, and at head dims 64 and 128, against the cost
model's reading of a window (`ModelSpec.causal_spans`: a block whose queries see min(i + 1, w) keys is timed as
causal attention over the sequence whose queries see as many keys on average, 2w - w(w - 1)/s).

GPT-OSS's attention (openai/gpt-oss-120b config.json: 64 query heads of 64, 8 KV heads, window 128) at
4 x 4,096 tokens, forward and backward, CUDA events (median of repeats):
- `sdpa`: torch's scaled_dot_product_attention, causal, its own kernel pick (the calibration's shape family);
- `flex`: flex_attention (compiled) with the causal mask, and with causal sliding windows of 128 to 2,048 keys
  (block-sparse: tiles outside the window are skipped);
- `sdpa_short`: SDPA causal over sequences of the span the model maps each window to, at the same tokens.
FLOPs count the (query, key) pairs attended: 4 x heads x head dim per pair forward, 2.5x that backward.

    python benchmarks/attention_window.py [OUT.json]
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F
from moe_block import gpu_s

TINY = os.environ.get("TINY") == "1"  # a CPU check that everything runs
DEVICE = "cpu" if TINY else "cuda"
BATCH, SEQ, HEADS, KV_HEADS = (1, 256, 4, 2) if TINY else (4, 4096, 64, 8)
WINDOWS = (16, 64) if TINY else (128, 512, 2048)
HEAD_DIMS = (16,) if TINY else (64, 128)
REPEATS = 2 if TINY else 20
BWD_OVER_FWD = 2.5  # the FlashAttention-2 paper's count, as shardplan's calibration takes it


def pairs(seq: int, window: int | None) -> int:
    """(query, key) pairs a causal attention over `seq` tokens attends, within `window` keys if given."""
    if window is None or window >= seq:
        return seq * (seq + 1) // 2
    return window * (window + 1) // 2 + (seq - window) * window


def span(seq: int, window: int) -> int:
    """The causal sequence length whose queries see as many keys on average (`ModelSpec.causal_spans`)."""
    return seq if window >= seq else round(2 * window - window * (window - 1) / seq)


def measure(attend: Callable[..., torch.Tensor], batch: int, seq: int, head_dim: int, n_pairs: int) -> dict:
    """Forward and backward seconds and TFLOP/s of `attend(q, k, v)` over `batch` sequences of `seq` tokens."""
    shape = dict(device=DEVICE, dtype=torch.float32 if TINY else torch.bfloat16)
    q = torch.randn(batch, HEADS, seq, head_dim, **shape, requires_grad=True)
    k = torch.randn(batch, KV_HEADS, seq, head_dim, **shape, requires_grad=True)
    v = torch.randn(batch, KV_HEADS, seq, head_dim, **shape, requires_grad=True)
    grad = torch.randn(batch, HEADS, seq, head_dim, **shape)
    return forward_backward(lambda: attend(q, k, v), [q, k, v], grad, 4 * batch * HEADS * head_dim * n_pairs)


def forward_backward(
    attend: Callable[[], torch.Tensor], inputs: list[torch.Tensor], grad: torch.Tensor, flops: float
) -> dict:
    """Forward and backward seconds of `attend()` (backward: `grad` into `inputs`), and TFLOP/s at `flops` forward
    and BWD_OVER_FWD times that backward."""

    def forward() -> None:
        with torch.no_grad():
            attend()

    def both() -> None:
        attend().backward(grad)
        for tensor in inputs:
            tensor.grad = None

    fwd = gpu_s(forward, REPEATS)
    bwd = max(gpu_s(both, REPEATS) - fwd, 1e-9)
    return {
        "forward_s": fwd,
        "backward_s": bwd,
        "forward_tflops": flops / fwd / 1e12,
        "backward_tflops": BWD_OVER_FWD * flops / bwd / 1e12,
    }


def main() -> None:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    flex = flex_attention if TINY else torch.compile(flex_attention)

    def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    def flex_with(window: int | None, seq: int) -> Callable[..., torch.Tensor]:
        def mask(b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor) -> torch.Tensor:
            causal = q_idx >= kv_idx
            return causal if window is None else causal & (q_idx - kv_idx < window)

        block = create_block_mask(mask, B=None, H=None, Q_LEN=seq, KV_LEN=seq, device=DEVICE)
        return lambda q, k, v: flex(q, k, v, block_mask=block, enable_gqa=True)

    result: dict = {"torch": torch.__version__, "device": "cpu" if TINY else torch.cuda.get_device_name()}
    result |= {"batch": BATCH, "seq": SEQ, "heads": HEADS, "kv_heads": KV_HEADS, "cases": []}
    tokens = BATCH * SEQ
    for head_dim in HEAD_DIMS:
        cases = [("sdpa", None, sdpa, BATCH, SEQ, pairs(SEQ, None))]
        cases += [("flex", w, flex_with(w, SEQ), BATCH, SEQ, pairs(SEQ, w)) for w in (None, *WINDOWS)]
        for w in WINDOWS:  # the same tokens in sequences of the window's span
            short = span(SEQ, w)
            cases.append(("sdpa_short", w, sdpa, tokens // short, short, pairs(short, None)))
        for kind, window, attend, batch, seq, n_pairs in cases:
            row = {"kind": kind, "head_dim": head_dim, "window": window, "batch": batch, "seq": seq}
            try:
                row |= measure(attend, batch, seq, head_dim, n_pairs)
            except Exception as exc:  # a kernel this torch or GPU lacks: say so and go on
                row["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
            result["cases"].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    text = json.dumps(result, indent=1)
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            f.write(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
