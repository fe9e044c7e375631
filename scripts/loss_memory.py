"""Peak memory and time of four cross-entropy losses on one GPU: torchtitan's, eager and under torch.compile, and
Megatron-LM's vocab-parallel one, plain and as its "native" fusion.

torchtitan's loss is `cross_entropy(pred.flatten(0, 1).float(), labels.flatten(0, 1))`
(torchtitan/components/loss.py), compiled with the model where `--training.compile` is set. Megatron-LM's
(megatron/core/tensor_parallel/cross_entropy.py, its default) is written here as it computes on one tensor-parallel
rank: an fp32 copy of the logits, shifted by the row maximum, exponentiated and normalised in place and saved as
the softmax, whose backward turns it into the gradient in place; `--cross-entropy-loss-fusion` without
`--cross-entropy-fusion-impl te` runs the same steps in four compiled functions (`megatron_fused`). For bf16 logits
of `tokens` x `vocab` (the head's output), this measures the peak bytes per logit of the loss's forward and
backward, and their time:

- `held`: the logits held throughout and their gradient included, as a leaf tensor gives them;
- `dropped`: as a training step runs them (torchtitan's train step deletes `pred` before backward; Megatron's
  logits are a local of the model's forward): the logits come from a head and are freed once the loss has them.
  The caching allocator's reserved peak is given beside the allocated one: a freed block too small for the fp32
  requests that follow stays reserved.

The cost model's figures: 12 B per logit for the eager fp32 loss (`memory.LOGIT_BYTES`) beside the cached bf16
logits (`memory.CACHED_LOGIT_BYTES`), 4 B for a fused one (`memory.FUSED_LOGIT_BYTES`), 6 B for Megatron's
(`memory.MEGATRON_LOGIT_BYTES`); none for Megatron's native fusion, which plans take the fp32 loss's figures for.

    python3 scripts/loss_memory.py OUT.json [tokens] [vocab]
"""

from __future__ import annotations

import json
import sys

import torch
import torch.nn.functional as F


def loss_fn(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(pred.flatten(0, 1).float(), labels.flatten(0, 1))


class MegatronCrossEntropy(torch.autograd.Function):
    """Megatron-LM's vocab-parallel cross-entropy on one tensor-parallel rank (no all-reduce), per token."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        logits -= logits.max(dim=-1)[0].unsqueeze(-1)
        predicted = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
        exp_logits = torch.exp(logits, out=logits)
        sum_exp = exp_logits.sum(dim=-1)
        loss = torch.log(sum_exp) - predicted
        exp_logits.div_(sum_exp.unsqueeze(-1))
        ctx.save_for_backward(exp_logits, labels)
        return loss

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        softmax, labels = ctx.saved_tensors
        grad = softmax  # in place, as Megatron's; autograd casts it to the logits' bf16
        grad.scatter_add_(-1, labels.unsqueeze(-1), torch.full_like(labels, -1.0, dtype=grad.dtype).unsqueeze(-1))
        grad.mul_(grad_output.unsqueeze(-1))
        return grad, None


def megatron_loss_fn(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return MegatronCrossEntropy.apply(pred, labels).mean()


# Megatron's "native" --cross-entropy-loss-fusion (megatron/core/fusions/fused_cross_entropy.py): the same steps in
# four functions under jit_fuser, which is torch.compile from torch 2.2 (megatron/core/jit.py), the gradient cast to
# bf16 inside the last.
@torch.compile
def _upcast_and_max(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits = logits.float()
    return logits, logits.max(dim=-1)[0]


@torch.compile
def _shift_and_exp(logits: torch.Tensor, labels: torch.Tensor, top: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits -= top.unsqueeze(-1)
    predicted = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    exp_logits = torch.exp(logits, out=logits)
    return torch.cat((predicted, exp_logits.sum(dim=-1))), exp_logits


@torch.compile
def _normalise(exp_logits: torch.Tensor, predicted_sum_exp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    predicted, sum_exp = torch.split(predicted_sum_exp, predicted_sum_exp.size(0) // 2)
    exp_logits.div_(sum_exp.unsqueeze(-1))
    return exp_logits, torch.log(sum_exp) - predicted


@torch.compile
def _gradient(softmax: torch.Tensor, grad_output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    grad_2d = softmax.view(-1, softmax.size(-1))
    grad_2d[torch.arange(grad_2d.size(0), device=grad_2d.device), labels.view(-1)] -= 1.0
    softmax.mul_(grad_output.unsqueeze(-1))
    return softmax.to(torch.bfloat16)


class MegatronFusedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits, top = _upcast_and_max(logits)
        predicted_sum_exp, exp_logits = _shift_and_exp(logits, labels, top)
        softmax, loss = _normalise(exp_logits, predicted_sum_exp)
        ctx.save_for_backward(softmax, labels)
        return loss

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        softmax, labels = ctx.saved_tensors
        return _gradient(softmax, grad_output, labels), None


def megatron_fused_loss_fn(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return MegatronFusedCrossEntropy.apply(pred, labels).mean()


class _Head(torch.autograd.Function):
    """Fresh bf16 logits that nothing but the loss holds, as a head's output in a training step; its backward
    takes their gradient and gives nothing back."""

    @staticmethod
    def forward(ctx, anchor: torch.Tensor, tokens: int, vocab: int) -> torch.Tensor:
        return torch.randn(1, tokens, vocab, device=anchor.device, dtype=torch.bfloat16)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return torch.zeros(1, device=grad.device), None, None


def measure_dropped(fn, tokens: int, vocab: int) -> dict[str, float]:
    """Peak allocated and reserved bytes per logit of one forward and backward whose logits are freed once the
    loss has them."""
    labels = torch.randint(0, vocab, (1, tokens), device="cuda")
    anchor = torch.zeros(1, device="cuda", requires_grad=True)
    for _ in range(2):  # warm-up (and compile)
        fn(_Head.apply(anchor, tokens, vocab), labels).backward()
    anchor.grad = None
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base, base_reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
    torch.cuda.reset_peak_memory_stats()
    fn(_Head.apply(anchor, tokens, vocab), labels).backward()
    torch.cuda.synchronize()
    logits = tokens * vocab
    return {
        "allocated_bytes_per_logit": (torch.cuda.max_memory_allocated() - base) / logits,
        "reserved_bytes_per_logit": (torch.cuda.max_memory_reserved() - base_reserved) / logits,
    }


def measure(fn, tokens: int, vocab: int, repeats: int = 5) -> dict[str, float]:
    """Peak bytes of the loss's forward and backward with the bf16 logits they start from (held throughout, a leaf
    tensor) and the gradient they end with, per logit; and the median milliseconds of both."""
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
    compiled = torch.compile(loss_fn)
    result = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "tokens": tokens,
        "vocab": vocab,
        "eager": measure(loss_fn, tokens, vocab),
        "compiled": measure(compiled, tokens, vocab),
        "megatron": measure(megatron_loss_fn, tokens, vocab),
        "megatron_fused": measure(megatron_fused_loss_fn, tokens, vocab),
        "dropped": {
            name: measure_dropped(fn, tokens, vocab)
            for name, fn in (
                ("eager", loss_fn),
                ("compiled", compiled),
                ("megatron", megatron_loss_fn),
                ("megatron_fused", megatron_fused_loss_fn),
            )
        },
    }
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
