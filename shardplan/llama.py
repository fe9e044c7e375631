"""A Llama-2-style decoder in plain eager PyTorch and Megatron-style mixed-precision AdamW.

`shardplan calibrate` times a tiny one of these to measure the host's dispatch cost per transformer
block; benchmarks/real_training.py trains full-size ones. Written the way torchtitan and Hugging Face
write Llama, so that what it keeps for backward is what `ModelSpec.activation_bytes_per_token`
counts: per block the two norm inputs and outputs, Q and K after RoPE, V, the attention output, and
SwiGLU's gate, up, SiLU output and product (flash attention keeps no s x s matrix)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

# Op-level selective recompute as torchtitan writes it (parallelize_llama.py `_save_list`): keep the
# outputs of attention and of every other matmul in forward order, recompute the rest.
_ATTENTION_OPS = {
    torch.ops.aten._scaled_dot_product_flash_attention.default,
    torch.ops.aten._scaled_dot_product_efficient_attention.default,
    torch.ops.aten._scaled_dot_product_cudnn_attention.default,
}


def _op_policy() -> Any:
    """A fresh selective-checkpoint context per block call (the matmul count restarts per block)."""
    count: Counter[str] = Counter()

    def policy(ctx: Any, func: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
        if func is torch.ops.aten.mm.default:
            key = "recompute" if ctx.is_recompute else "forward"
            count[key] += 1
            keep = count[key] % 2 == 1
        else:
            keep = func in _ATTENTION_OPS
        return CheckpointPolicy.MUST_SAVE if keep else CheckpointPolicy.PREFER_RECOMPUTE

    return create_selective_checkpoint_contexts(policy)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def rope_tables(
    head_dim: int, positions: int, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """bf16 cos and sin of the rotary angles (base 10000), one row per position."""
    inv = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    angles = torch.outer(torch.arange(positions, dtype=torch.float32, device=device), inv)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos().to(torch.bfloat16), angles.sin().to(torch.bfloat16)


class Experts(nn.Module):
    """A mixture-of-experts MLP as Megatron-Core's alltoall dispatcher runs it on one rank, bar the all-to-all:
    router, softmax and top-k, the tokens per expert copied to the host (the dispatcher needs the split sizes
    there: a synchronisation), the tokens permuted into their experts' rows, each SwiGLU expert in turn (as
    Transformer Engine's GroupedLinear launches them), and the probability-weighted sum back. This rank holds
    `local` of the `experts`: each token's top-k choices fold onto them, as evenly as force-balanced routing.

    `grouped`: as torchtitan's MoE runs them instead (models/moe/moe.py, `use_grouped_mm`): the tokens per expert
    counted on the GPU (histc, no host synchronisation), the local experts' weights stacked, the gate-up and the
    down projection each one torch._grouped_mm over all of them."""

    def __init__(self, h: int, ffn: int, experts: int, local: int, top_k: int, *, grouped: bool = False) -> None:
        super().__init__()
        self.top_k, self.local, self.grouped = top_k, local, grouped
        self.router = nn.Linear(h, experts, bias=False)
        if grouped:
            self.w13 = nn.Parameter(torch.randn(local, h, 2 * ffn) * h**-0.5)
            self.w2 = nn.Parameter(torch.randn(local, ffn, h) * ffn**-0.5)
        else:
            self.w13 = nn.ModuleList(nn.Linear(h, 2 * ffn, bias=False) for _ in range(local))
            self.w2 = nn.ModuleList(nn.Linear(ffn, h, bias=False) for _ in range(local))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(0, -2)
        weights, chosen = torch.softmax(self.router(flat).float(), dim=-1).topk(self.top_k, dim=-1)
        chosen = chosen.flatten() % self.local
        order = chosen.argsort(stable=True)
        rows = flat.index_select(0, order // self.top_k)
        if self.grouped:
            ends = torch.histc(chosen.float(), bins=self.local, min=0, max=self.local).cumsum(0).to(torch.int32)
            gate, up = torch._grouped_mm(rows, self.w13, offs=ends).chunk(2, dim=-1)
            out = torch._grouped_mm(F.silu(gate) * up, self.w2, offs=ends)
        else:
            counts = torch.bincount(chosen, minlength=self.local).tolist()  # the dispatcher's host synchronisation
            outs = []
            for part, w13, w2 in zip(rows.split(counts), self.w13, self.w2, strict=True):
                gate, up = w13(part).chunk(2, dim=-1)
                outs.append(w2(F.silu(gate) * up))
            out = torch.cat(outs)
        scaled = out * weights.flatten().index_select(0, order).unsqueeze(-1).to(flat.dtype)
        return torch.zeros_like(flat).index_add_(0, order // self.top_k, scaled).view_as(x)


class Block(nn.Module):
    """A Llama block; `kv_heads` (default: `heads`) key and value heads, each repeated for heads / kv_heads
    query heads before attention as torchtitan's `repeat_kv` does (a copy, not a view). With `experts` (experts,
    local experts, top-k, grouped) its MLP is a mixture of experts of width `ffn` each (`Experts`)."""

    def __init__(
        self,
        h: int,
        heads: int,
        ffn: int,
        eps: float,
        kv_heads: int | None = None,
        experts: tuple[int, int, int, bool] | None = None,
    ) -> None:
        super().__init__()
        self.head_dim = h // heads
        self.repeats = heads // (kv_heads or heads)
        kv = h // self.repeats
        self.attn_norm, self.mlp_norm = nn.RMSNorm(h, eps=eps), nn.RMSNorm(h, eps=eps)
        self.wq, self.wo = nn.Linear(h, h, bias=False), nn.Linear(h, h, bias=False)
        self.wk, self.wv = nn.Linear(h, kv, bias=False), nn.Linear(h, kv, bias=False)
        self.moe = Experts(h, ffn, *experts[:3], grouped=experts[3]) if experts else None
        if self.moe is None:
            self.w1, self.w3 = nn.Linear(h, ffn, bias=False), nn.Linear(h, ffn, bias=False)
            self.w2 = nn.Linear(ffn, h, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        y = self.attn_norm(x)
        # -1 heads: under tensor parallelism each rank holds heads / tp of them (and under sequence
        # parallelism the projections see the whole sequence where x holds a shard of it)
        q, k, v = (w(y).unflatten(-1, (-1, self.head_dim)).transpose(1, 2) for w in (self.wq, self.wk, self.wv))
        if self.repeats > 1:
            k, v = k.repeat_interleave(self.repeats, dim=1), v.repeat_interleave(self.repeats, dim=1)
        o = F.scaled_dot_product_attention(_rotate(q, cos, sin), _rotate(k, cos, sin), v, is_causal=True)
        x = x + self.wo(o.transpose(1, 2).flatten(2))
        y = self.mlp_norm(x)
        if self.moe is not None:
            return x + self.moe(y)
        return x + self.w2(F.silu(self.w1(y)) * self.w3(y))


class Llama(nn.Module):
    """Embedding, blocks, final norm, untied head; forward returns the mean cross-entropy (fp32). With
    `num_experts` in `cfg`, every block's MLP is a mixture of experts (`Experts`: `local_experts` of them on
    this rank, default all; `num_experts_per_tok`; each `moe_intermediate_size` wide; `grouped_experts`: as
    torchtitan runs them)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        h, heads, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["rms_norm_eps"]
        self.embed = nn.Embedding(cfg["vocab_size"], h)
        ffn, experts = cfg["intermediate_size"], None
        if cfg.get("num_experts"):
            ffn = cfg["moe_intermediate_size"]
            local = cfg.get("local_experts", cfg["num_experts"])
            experts = (cfg["num_experts"], local, cfg["num_experts_per_tok"], cfg.get("grouped_experts", False))
        self.blocks = nn.ModuleList(Block(h, heads, ffn, eps, experts=experts) for _ in range(cfg["num_hidden_layers"]))
        self.norm = nn.RMSNorm(h, eps=eps)
        self.head = nn.Linear(h, cfg["vocab_size"], bias=False)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.normal_(p, std=0.02)
        self.to(torch.bfloat16)
        cos, sin = rope_tables(h // heads, cfg["max_position_embeddings"])
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor, *, recompute: str = "none") -> torch.Tensor:
        """`recompute`: "none", "full" (each block's input kept) or "selective-op" (torchtitan's policy)."""
        s = tokens.shape[1]
        cos, sin = self.cos[:s], self.sin[:s]
        x = self.embed(tokens)
        for block in self.blocks:
            if recompute == "full":
                x = checkpoint(block, x, cos, sin, use_reentrant=False)
            elif recompute == "selective-op":
                x = checkpoint(block, x, cos, sin, use_reentrant=False, context_fn=_op_policy)
            else:
                x = block(x, cos, sin)
        logits = self.head(self.norm(x))
        return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())


def _to_fp8(x: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """`x` scaled by its absolute maximum into `dtype`'s range and cast (dynamic per-tensor scaling),
    with the inverse scale the FP8 GEMM multiplies back."""
    top = torch.finfo(dtype).max
    scale = top / x.abs().amax().float().clamp(min=1e-12)
    return (x.float() * scale).clamp(-top, top).to(dtype), scale.reciprocal()


def _column_major(x: torch.Tensor) -> torch.Tensor:
    return x.t().contiguous().t()


class _Float8Matmul(torch.autograd.Function):
    """y = x @ w.T with both in e4m3 (forward GEMM with fast accumulation) and, in backward, the output
    gradient in e5m2 against e4m3 copies of w and x: torchao's tensorwise float8 recipe. x and w are
    kept in bf16 for backward and cast again there."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        ctx.save_for_backward(x2, w)
        ctx.shape = x.shape
        (xq, xs), (wq, ws) = _to_fp8(x2, torch.float8_e4m3fn), _to_fp8(w, torch.float8_e4m3fn)
        y = torch._scaled_mm(xq, wq.t(), scale_a=xs, scale_b=ws, out_dtype=torch.bfloat16, use_fast_accum=True)
        return y.view(*x.shape[:-1], w.shape[0])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x2, w = ctx.saved_tensors
        gq, gs = _to_fp8(grad.reshape(-1, grad.shape[-1]), torch.float8_e5m2)
        (xq, xs), (wq, ws) = _to_fp8(x2, torch.float8_e4m3fn), _to_fp8(w, torch.float8_e4m3fn)
        dx = torch._scaled_mm(gq, _column_major(wq), scale_a=gs, scale_b=ws, out_dtype=torch.bfloat16)
        dw = torch._scaled_mm(gq.t().contiguous(), _column_major(xq), scale_a=gs, scale_b=xs, out_dtype=torch.bfloat16)
        return dx.view(ctx.shape), dw


class Float8Linear(nn.Linear):
    """A bias-free linear whose GEMMs run in FP8 (`_Float8Matmul`); weights stay bf16."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _Float8Matmul.apply(x, self.weight)


def float8_linears(blocks: Iterable[nn.Module]) -> None:
    """Every linear layer of `blocks` (a Llama's `blocks`: its output head stays bf16, as torchtitan's float8
    converter leaves it) to `Float8Linear`; call before compiling or sharding."""
    for block in blocks:
        for child in block.children():
            if type(child) is nn.Linear:
                child.__class__ = Float8Linear


def parallelize_blocks(model: nn.Module, mesh: Any) -> None:
    """Tensor parallelism as torchtitan writes it for Llama: in every block, Q, K, V, W1 and W3
    column-wise and O and W2 row-wise as DTensors over `mesh` (a 1-D device mesh)."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    plan = {name: ColwiseParallel() for name in ("wq", "wk", "wv", "w1", "w3")}
    plan |= {name: RowwiseParallel() for name in ("wo", "w2")}
    for block in model.blocks:
        parallelize_module(block, mesh, plan)


def compile_blocks(model: nn.Module) -> None:
    """Each block under torch.compile, as torchtitan's --training.compile does."""
    for i, block in enumerate(model.blocks):
        model.blocks[i] = torch.compile(block, fullgraph=True)


def fully_shard_model(model: nn.Module, mesh: Any) -> None:
    """FSDP2 as torchtitan applies it: every block, then the model, sharded over `mesh`, computing in
    bf16 and reducing gradients in fp32 (the shards keep the parameters' dtype)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for block in model.blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)


def param_groups(params: Iterable[torch.Tensor]) -> list[dict[str, list[torch.Tensor]]]:
    """Optimizer groups, one per kind of parameter (plain tensors, or DTensors on one device mesh, as
    tensor parallelism and FSDP2 leave them): AdamW's multi-tensor kernels run a group at a time and
    cannot mix kinds."""
    groups: dict[tuple[str, int], list[torch.Tensor]] = {}
    for p in params:
        groups.setdefault((type(p).__name__, id(getattr(p, "device_mesh", None))), []).append(p)
    return [{"params": g} for g in groups.values()]


class MixedPrecisionAdamW:
    """fp32 master weights and AdamW for a bf16 model. Each bf16 weight gradient is added into a
    persistent fp32 buffer as soon as autograd produces it, then freed (Megatron-LM's main_grad)."""

    def __init__(self, model: nn.Module, lr: float = 1e-4) -> None:
        self.params = list(model.parameters())
        self.master = [p.detach().float() for p in self.params]
        for p, m in zip(self.params, self.master, strict=True):
            m.grad = torch.zeros_like(m)
            p.register_post_accumulate_grad_hook(partial(self._accumulate, m.grad))
        # fused AdamW (what real_training measured); on the CPU, DTensors (tensor parallel) take foreach
        fused = self.master[0].is_cuda or all(type(m) is torch.Tensor for m in self.master)
        self.opt = torch.optim.AdamW(param_groups(self.master), lr=lr, fused=fused, foreach=not fused)

    @staticmethod
    def _accumulate(main_grad: torch.Tensor, p: torch.Tensor) -> None:
        main_grad.add_(p.grad)
        p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.opt.step()
        for p, m in zip(self.params, self.master, strict=True):
            p.copy_(m)
            m.grad.zero_()
