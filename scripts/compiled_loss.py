"""Peak memory and time of torchtitan's loss, eager and under torch.compile, on one GPU.

torchtitan's loss is `cross_entropy(pred.flatten(0, 1).float(), labels.flatten(0, 1))`
(torchtitan/components/loss.py), compiled with the model where `--training.compile` is set. For bf16 logits of
`tokens` x `vocab` (the head's output), this measures what the loss's forward and backward hold at their peak, the
logits and their gradient included, per logit, and how long they take. The cost model's figures: 12 B per logit for
the eager fp32 loss (`memory.LOGIT_BYTES`), 4 B for a fused one (`memory.FUSED_LOGIT_BYTES`).

    python3 scripts/compiled_loss.py OUT.json [tokens] [vocab]
"""

from __future__ import annotations

import json
import sys

import torch
import torch.nn.functional as F


def loss_fn(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(pred.flatten(0, 1).float(), labels.flatten(0, 1))


def measure(fn, tokens: int, vocab: int, repeats: int = 5) -> dict[str, float]:
    """Peak bytes of the loss's forward and backward with the bf16 logits they start from (held throughout, as the
    training step holds the model's output) and the gradient they end with, per logit; and the median milliseconds
    of both."""
    labels = torch.randint(0, vocab, (1, tokens), device="cuda")
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    logits = torch.randn(1, tokens, vocab, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    for _ in range(2):  # warm-up (and compile)
        fn(logits, labels).backward()
        logits.grad = None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn(logits, labels).backward()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    logits.grad = None
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(logits, labels).backward()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
        logits.grad = None
    return {
        "peak_bytes": peak,
        "bytes_per_logit": peak / (tokens * vocab),
        "ms": sorted(times)[len(times) // 2],
    }


def main() -> None:
    out = sys.argv[1]
    tokens = int(sys.argv[2]) if len(sys.argv) > 2 else 16384
    vocab = int(sys.argv[3]) if len(sys.argv) > 3 else 128256
    result = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "tokens": tokens,
        "vocab": vocab,
        "eager": measure(loss_fn, tokens, vocab),
        "compiled": measure(torch.compile(loss_fn), tokens, vocab),
    }
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
