"""Peak memory of Llama 3 8B blocks written as torchtitan wrote them in Dec 2024 (complex RoPE on fp32,
repeat_kv for GQA, RMSNorm in fp32, op-level SAC: attention and every other mm kept), eager against
per-block torch.compile, for N = 2 and 4 blocks at micro-batch 2 x 8,192 tokens. The difference between
N = 4 and N = 2, over 2 blocks and 16,384 tokens, is what one block keeps per token in each mode.

    python scripts/h100_eager_vs_compiled_sac.py > benchmarks/results/h100-eager-vs-compiled-sac.txt
"""

from collections import Counter

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

H, HEADS, KV, FFN, B, S = 4096, 32, 8, 14336, 2, 8192
SAVE = {
    torch.ops.aten.mm.default,
    torch.ops.aten._scaled_dot_product_flash_attention.default,
    torch.ops.aten._scaled_dot_product_efficient_attention.default,
    torch.ops.aten._scaled_dot_product_cudnn_attention.default,
}


def policy_fn(save=SAVE):
    """torchtitan's op-level SAC: every op of `save` kept, but every second mm recomputed."""
    count = Counter()

    def policy(ctx, func, *args, **kwargs):
        key = "recompute" if ctx.is_recompute else "forward"
        if func == torch.ops.aten.mm.default:
            count[key] += 1
        keep = func in save and not (func == torch.ops.aten.mm.default and count[key] % 2 == 0)
        return CheckpointPolicy.MUST_SAVE if keep else CheckpointPolicy.PREFER_RECOMPUTE

    return create_selective_checkpoint_contexts(policy)


class RMSNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        y = x.float()
        return (y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + 1e-5)).type_as(x) * self.weight


def rope(xq, xk, freqs):
    q = torch.view_as_complex(xq.float().reshape(*xq.shape[:-1], -1, 2))
    k = torch.view_as_complex(xk.float().reshape(*xk.shape[:-1], -1, 2))
    f = freqs.view(1, q.shape[1], 1, q.shape[-1])
    return torch.view_as_real(q * f).flatten(3).type_as(xq), torch.view_as_real(k * f).flatten(3).type_as(xk)


def repeat_kv(x, n):
    b, s, kv, d = x.shape
    return x[:, :, :, None, :].expand(b, s, kv, n, d).reshape(b, s, kv * n, d)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        d = H // HEADS
        self.wq, self.wk = nn.Linear(H, H, bias=False), nn.Linear(H, KV * d, bias=False)
        self.wv, self.wo = nn.Linear(H, KV * d, bias=False), nn.Linear(H, H, bias=False)
        self.w1, self.w3 = nn.Linear(H, FFN, bias=False), nn.Linear(H, FFN, bias=False)
        self.w2 = nn.Linear(FFN, H, bias=False)
        self.n1, self.n2 = RMSNorm(H), RMSNorm(H)

    def forward(self, x, freqs):
        b, s, _ = x.shape
        d = H // HEADS
        y = self.n1(x)
        q, k, v = self.wq(y).view(b, s, HEADS, d), self.wk(y).view(b, s, KV, d), self.wv(y).view(b, s, KV, d)
        q, k = rope(q, k, freqs)
        k, v = repeat_kv(k, HEADS // KV), repeat_kv(v, HEADS // KV)
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        x = x + self.wo(o.transpose(1, 2).reshape(b, s, H))
        y = self.n2(x)
        return x + self.w2(F.silu(self.w1(y)) * self.w3(y))


def peak(n, compiled):
    torch.manual_seed(0)
    blocks = [Block().cuda().to(torch.bfloat16) for _ in range(n)]

    # torchtitan's order: the block wrapped in selective checkpointing, then the wrapper compiled
    def wrapped(block):
        return lambda x, freqs: checkpoint(block, x, freqs, use_reentrant=False, context_fn=policy_fn)

    fns = [torch.compile(wrapped(b), fullgraph=True) if compiled else wrapped(b) for b in blocks]
    d = H // HEADS
    inv = 1.0 / (500000.0 ** (torch.arange(0, d, 2, device="cuda").float() / d))
    freqs = torch.polar(torch.ones(S, d // 2, device="cuda"), torch.outer(torch.arange(S, device="cuda").float(), inv))
    x0 = torch.randn(B, S, H, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    for _ in range(3):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        x = x0
        for f in fns:
            x = f(x, freqs)
        fwd = torch.cuda.memory_allocated() - base
        x.float().pow(2).mean().backward()
        torch.cuda.synchronize()
        top = torch.cuda.max_memory_allocated() - base
        for b in blocks:
            for p in b.parameters():
                p.grad = None
        x0.grad = None
    del blocks, fns
    torch.cuda.empty_cache()
    return fwd, top


def main():
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, B={B} S={S} h={H} kv={KV} f={FFN}")
    res = {}
    for compiled in (False, True):
        for n in (2, 4):
            res[compiled, n] = peak(n, compiled)
            print(
                f"compiled={compiled} blocks={n}: kept after forward {res[compiled, n][0] / 2**30:.3f} GiB, "
                f"peak over fwd+bwd {res[compiled, n][1] / 2**30:.3f} GiB",
                flush=True,
            )
    for compiled in (False, True):
        kept = (res[compiled, 4][0] - res[compiled, 2][0]) / 2 / (B * S)
        print(f"compiled={compiled}: kept per block per token {kept:.0f} B = {kept / H:.2f} h")


if __name__ == "__main__":
    main()
