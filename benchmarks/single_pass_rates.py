"""One GPU: the single-pass kernels the cost model times at the copy rate, against the copy rate itself.

- `copy`: a bf16 tensor copied (bytes read + written), the rate `hbm_bytes_per_s` stands for;
- `amax`: the largest magnitude of a bf16 tensor, as Transformer Engine's current scaling reads each tensor before
  its FP8 cast (`compute.AMAX_READ_BYTES`: 2 bytes per element), by ATen's one reduction kernel
  (`torch.linalg.vector_norm` of order inf) and by torch.compile's (`abs().amax()`);
- `cross_entropy`: a compiled cross-entropy over bf16 logits with its fp32 upcast inside the kernel, forward and
  backward, against the fused-loss model (`Training.loss="fused"`: 2 bytes per logit forward, 2 read and 2
  written backward, at the copy rate).

Each: GB/s counting the bytes the model counts, and that against the copy rate.

    python benchmarks/single_pass_rates.py [OUT.json]
"""

from __future__ import annotations

import json
import sys

import torch
import torch.nn.functional as F
from moe_block import gpu_s  # CUDA-event medians after warm-up

# (tokens, vocabulary): Llama 3 (128,256) and GPT-OSS (201,088) heads at 8,192 and 4,096 tokens of a micro-batch
LOSS_SHAPES = [(8192, 128256), (4096, 201088)]
AMAX_ELEMENTS = [2**24, 2**26, 2**28]  # 32 MiB to 512 MiB of bf16


def main() -> None:
    torch.manual_seed(0)
    out: dict[str, object] = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}
    x = torch.randn(2**28, device="cuda", dtype=torch.bfloat16)
    y = torch.empty_like(x)
    copy = 2 * x.numel() * 2 / gpu_s(lambda: y.copy_(x))
    out["copy_gbps"] = copy / 1e9
    kernels = {
        "aten": lambda t: torch.linalg.vector_norm(t, float("inf")),
        "compiled": torch.compile(lambda t: t.abs().amax()),
    }
    out["amax"] = []
    for name, amax in kernels.items():
        for n in AMAX_ELEMENTS:
            t = x[:n]
            rate = n * 2 / gpu_s(lambda t=t, amax=amax: amax(t))
            out["amax"].append({"kernel": name, "elements": n, "gbps": rate / 1e9, "of_copy_rate": rate / copy})

    def loss_step(logits: torch.Tensor, labels: torch.Tensor) -> None:
        F.cross_entropy(logits.float(), labels).backward()

    step = torch.compile(loss_step)
    out["cross_entropy"] = []
    for tokens, vocab in LOSS_SHAPES:
        logits = torch.randn(tokens, vocab, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        labels = torch.randint(vocab, (tokens,), device="cuda")

        def run(logits: torch.Tensor = logits, labels: torch.Tensor = labels) -> None:
            logits.grad = None
            step(logits, labels)

        seconds = gpu_s(run)
        modelled = tokens * vocab * (2 + 2 + 2)  # forward reads; backward reads and writes the gradient
        out["cross_entropy"].append(
            {
                "tokens": tokens,
                "vocab": vocab,
                "seconds": seconds,
                "model_seconds_at_copy_rate": modelled / copy,
                "gbps_of_modelled_bytes": modelled / seconds / 1e9,
                "of_copy_rate": modelled / seconds / copy,
            }
        )
        del logits
    print(json.dumps(out, indent=1))
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
