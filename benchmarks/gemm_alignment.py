"""Batched-GEMM speed of Megatron's unfused attention when the head dimension is (not) a multiple of 8.

Megatron-LM's core attention (before FlashAttention) runs QK^T as `baddbmm` and AV as `bmm` on
strided views of the fused QKV projection: the batch (b x heads) stride is 3 x head_dim elements. A
head_dim that is not a multiple of 8 leaves every other batch's rows off the 16-byte alignment that
tensor-core kernels load with. This measures QK^T and AV forward TFLOP/s for aligned and misaligned
head dims, bf16 and fp16, and an output head's three GEMMs for GPT-2's unpadded vocabulary against
padded ones, on one GPU; it prints JSON (the first argument, if given, is the output file).

    python benchmarks/gemm_alignment.py [OUT.json]
"""

from __future__ import annotations

import json
import sys

import torch

from shardplan.calibrate import _Timer

HEAD_DIMS = (104, 108, 112, 128, 144, 150, 152, 216, 448, 450)
BATCH_HEADS, SEQ = 64, 2048


def measure(dtype: torch.dtype, timer: _Timer, device: torch.device) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for hd in HEAD_DIMS:
        qkv = torch.randn(SEQ, BATCH_HEADS, 3 * hd, device=device, dtype=dtype)
        q, k, v = (t.transpose(0, 1) for t in qkv.split(hd, dim=-1))  # [b*np, s, hd], batch stride 3*hd
        scores = torch.empty(BATCH_HEADS, SEQ, SEQ, device=device, dtype=dtype)
        probs = torch.randn_like(scores)
        flops = 2 * BATCH_HEADS * SEQ * SEQ * hd
        qk = timer(lambda q=q, k=k, s=scores: torch.baddbmm(s, q, k.transpose(1, 2), beta=0.0, alpha=0.1))
        av = timer(lambda v=v, p=probs: torch.bmm(p, v))
        out[str(hd)] = {"qk_tflops": flops / qk / 1e12, "av_tflops": flops / av / 1e12}
    return out


def measure_head(dtype: torch.dtype, timer: _Timer, device: torch.device) -> dict[str, dict[str, float]]:
    """An output head as nn.Linear runs it (x @ W^T, then dX = dY @ W and dW = dY^T @ X) over 8,192
    tokens of width 768 (GPT-2 small), for GPT-2's vocabulary (50,257: rows off alignment) and padded
    ones; TFLOP/s of each GEMM."""
    out: dict[str, dict[str, float]] = {}
    tokens, hidden = 8192, 768
    for vocab in (50257, 50264, 50304):
        x = torch.randn(tokens, hidden, device=device, dtype=dtype)
        w = torch.randn(vocab, hidden, device=device, dtype=dtype)
        dy = torch.randn(tokens, vocab, device=device, dtype=dtype)
        flops = 2 * tokens * vocab * hidden
        out[str(vocab)] = {
            "forward_tflops": flops / timer(lambda x=x, w=w: x @ w.t()) / 1e12,
            "input_grad_tflops": flops / timer(lambda dy=dy, w=w: dy @ w) / 1e12,
            "weight_grad_tflops": flops / timer(lambda dy=dy, x=x: dy.t() @ x) / 1e12,
        }
    return out


def main() -> None:
    device = torch.device("cuda", 0)
    timer = _Timer(device, warmup=3, repeats=10)
    result = {
        "device": torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "batch_heads": BATCH_HEADS,
        "seq": SEQ,
        "bf16": measure(torch.bfloat16, timer, device),
        "fp16": measure(torch.float16, timer, device),
        "head_bf16": measure_head(torch.bfloat16, timer, device),
    }
    text = json.dumps(result, indent=1)
    print(text)
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
