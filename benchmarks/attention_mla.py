"""One GPU: causal attention whose query-key and value head dims differ, as DeepSeek's multi-head latent attention
runs it in training (queries and keys of 128 + 64, values of 128), against the cost model's reading: QK^T at the
query-key head dim, AV at the value head dim, at the calibrated rate of heads of their mean (`compute._block_times`).

DeepSeek-V3 under TP 2 (64 of its 128 heads on a GPU) at 2 x 4,096 tokens, forward and backward, CUDA events
(median of repeats), for head dims (query-key, value) of (128, 128), (192, 128), (160, 160) and (192, 192), with
torch's scaled_dot_product_attention: its own kernel pick, and each backend forced (one that refuses a shape is
recorded with its error). FLOPs count the causal (query, key) pairs: 2 x (query-key + value head dim) per pair and
head forward, 2.5x that backward.

    python benchmarks/attention_mla.py [OUT.json]
"""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.nn.functional as F
from attention_window import forward_backward
from torch.nn.attention import SDPBackend, sdpa_kernel

TINY = os.environ.get("TINY") == "1"  # a CPU check that everything runs
DEVICE = "cpu" if TINY else "cuda"
BATCH, SEQ, HEADS = (1, 128, 2) if TINY else (2, 4096, 64)
HEAD_DIMS = ((16, 16), (24, 16)) if TINY else ((128, 128), (192, 128), (160, 160), (192, 192))
BACKENDS = {
    "default": None,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
}


def measure(qk: int, v: int, backend: SDPBackend | None) -> dict:
    """Forward and backward seconds and TFLOP/s of causal SDPA with query-key head dim `qk` and value head dim `v`."""
    shape = dict(device=DEVICE, dtype=torch.float32 if TINY else torch.bfloat16)
    q, k = (torch.randn(BATCH, HEADS, SEQ, qk, **shape, requires_grad=True) for _ in range(2))
    value = torch.randn(BATCH, HEADS, SEQ, v, **shape, requires_grad=True)
    grad = torch.randn(BATCH, HEADS, SEQ, v, **shape)

    def attend() -> torch.Tensor:
        if backend is None:
            return F.scaled_dot_product_attention(q, k, value, is_causal=True)
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, value, is_causal=True)

    flops = 2 * BATCH * HEADS * (qk + v) * SEQ * (SEQ + 1) // 2
    return forward_backward(attend, [q, k, value], grad, flops)


def main() -> None:
    torch.manual_seed(0)
    device = "cpu" if TINY else torch.cuda.get_device_name()
    results: dict = {"device": device, "torch": torch.__version__, "batch": BATCH, "seq": SEQ, "heads": HEADS}
    results["cases"] = []
    for (qk, v), (name, backend) in ((d, b) for d in HEAD_DIMS for b in BACKENDS.items()):
        case: dict = {"qk_head_dim": qk, "v_head_dim": v, "backend": name}
        try:
            case |= measure(qk, v, backend)
        except RuntimeError as exc:  # the backend refuses this shape (or is not built)
            case["error"] = str(exc).splitlines()[0][:200]
        results["cases"].append(case)
        print(json.dumps(case), flush=True)
        if not TINY:
            torch.cuda.empty_cache()
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
