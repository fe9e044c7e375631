"""Read a `ModelSpec` from a `torch.nn.Module` without weights or real compute.

The repeated block is the largest `nn.ModuleList` of identical children; parameters are counted
with `numel()` (shared parameters once, so tied embeddings are seen); forward FLOPs come from
`torch.utils.flop_counter.FlopCounterMode` run on meta tensors (or fake tensors for a module with
real weights) at two sequence lengths, which separates the per-token matmul work from the attention
work that grows with the sequence: flops(s) / s = matmul + attention * s.
"""

from __future__ import annotations

from typing import Any

from shardplan.errors import ModelSpecError
from shardplan.model.schema import LayerSpec, MlaSpec, ModelSpec

_HEAD_ATTRS = ("num_attention_heads", "num_heads", "n_head", "n_heads")
_KV_ATTRS = ("num_key_value_heads", "num_kv_heads", "n_kv_heads")


def _find_blocks(module: Any) -> tuple[str, list[Any]]:
    import torch.nn as nn

    best: tuple[int, str, list[Any]] | None = None
    for fqn, sub in module.named_modules():
        if not isinstance(sub, nn.ModuleList) or len(sub) < 2:
            continue
        kids = list(sub)
        if len({type(k) for k in kids}) != 1:
            continue
        size = sum(p.numel() for p in sub.parameters())
        if best is None or size > best[0]:
            best = (size, fqn, kids)
    if best is None:
        raise ModelSpecError(
            f"{type(module).__name__}: no repeated block found (expected an nn.ModuleList of identical layers)"
        )
    return best[1], best[2]


def _attr(module: Any, names: tuple[str, ...]) -> int | None:
    config = getattr(module, "config", None)
    for owner in (config, *module.modules()):
        for name in names:
            value = getattr(owner, name, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def _mla(module: Any) -> MlaSpec | None:
    """DeepSeek's multi-head latent attention, where the module's config names its latent and head dims."""
    dims = {
        name: _attr(module, (name,)) for name in ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
    }
    if any(value is None for value in dims.values()):
        return None
    return MlaSpec(q_lora_rank=_attr(module, ("q_lora_rank",)), **dims)


def _flops_by_module(module: Any, seq_len: int) -> dict[str, int]:
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    on_meta = all(p.device.type == "meta" for p in module.parameters())
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad():
            if on_meta:
                tokens = torch.zeros(1, seq_len, dtype=torch.long, device="meta")
                with counter:
                    module(tokens)
            else:
                with FakeTensorMode(allow_non_fake_inputs=True):
                    tokens = torch.zeros(1, seq_len, dtype=torch.long)
                    with counter:
                        module(tokens)
    except Exception as exc:  # the module's own code: routing, kernels or dtype checks that need real tensors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ModelSpecError(
            f"{type(module).__name__}: its forward could not run without real tensors ({type(exc).__name__}: "
            f"{first[:160]}); for a Hugging Face model, load_model(its config.json) reads it"
        ) from None
    return {fqn: sum(ops.values()) for fqn, ops in counter.get_flop_counts().items()}


def spec_from_module(module: Any, *, seq_len: int = 2048, name: str | None = None) -> ModelSpec:
    """A `ModelSpec` for `module`, whose forward takes a (batch, seq) tensor of token ids."""
    import torch.nn as nn

    if not isinstance(module, nn.Module):
        raise ModelSpecError(f"model_from_module needs a torch.nn.Module, got {type(module).__name__}")
    if seq_len < 2:
        raise ModelSpecError(f"seq_len must be at least 2, got {seq_len}")
    list_fqn, blocks = _find_blocks(module)
    block_ids = {id(p) for b in blocks for p in b.parameters()}
    embeddings = [m for m in module.modules() if isinstance(m, nn.Embedding)]
    if not embeddings:
        raise ModelSpecError(f"{type(module).__name__}: no nn.Embedding found for the token embedding")
    token_embedding = max(embeddings, key=lambda e: e.num_embeddings)
    vocab, hidden = token_embedding.num_embeddings, token_embedding.embedding_dim
    embed_params = sum(e.weight.numel() for e in embeddings if id(e.weight) not in block_ids)
    heads_linear = [
        (fqn, m)
        for fqn, m in module.named_modules()
        if isinstance(m, nn.Linear) and m.out_features == vocab and id(m.weight) not in block_ids
    ]
    tied = bool(heads_linear) and heads_linear[0][1].weight is token_embedding.weight
    head_params = 0 if tied or not heads_linear else sum(p.numel() for p in heads_linear[0][1].parameters())
    total = sum(p.numel() for p in module.parameters())
    per_block = [sum(p.numel() for p in b.parameters()) for b in blocks]
    norm_params = total - embed_params - sum(per_block) - head_params

    heads = _attr(module, _HEAD_ATTRS)
    if heads is None:
        raise ModelSpecError(f"{type(module).__name__}: cannot tell the attention head count (no num_heads attribute)")
    kv_heads = _attr(module, _KV_ATTRS) or heads
    head_dim = _attr(module, ("head_dim",)) or hidden // heads
    mla = _mla(module)
    if mla is not None:  # queries and keys of nope + rope (a config's head_dim is DeepSeek's RoPE part)
        head_dim = mla.qk_nope_head_dim + mla.qk_rope_head_dim
    linears = [m for m in blocks[0].modules() if isinstance(m, nn.Linear)]
    ffn = max((m.out_features for m in linears if m.out_features not in (hidden,)), default=4 * hidden)
    ffn = _attr(module, ("intermediate_size", "n_inner", "ffn_hidden_size")) or ffn
    swiglu = sum(1 for m in linears if m.out_features == ffn) >= 2

    s2, s1 = seq_len, seq_len // 2
    f1, f2 = _flops_by_module(module, s1), _flops_by_module(module, s2)
    prefix = f"{type(module).__name__}.{list_fqn}." if list_fqn else f"{type(module).__name__}."

    def per_token(fqn_flops: dict[str, int], s: int) -> tuple[float, float]:
        block = sum(v for k, v in fqn_flops.items() if k.startswith(prefix) and k.count(".") == prefix.count(".")) / s
        everything = fqn_flops.get("Global", 0) / s
        return block / len(blocks), everything - block

    (b1, rest1), (b2, rest2) = per_token(f1, s1), per_token(f2, s2)
    attn = (b2 - b1) / (s2 - s1)  # attention flops per token per token of sequence, per block
    matmul = b1 - attn * s1
    layers = [
        LayerSpec(
            name="embedding",
            kind="embedding",
            params=embed_params,
            active_params=embed_params,
            matmul_flops_per_token=0,
        )
    ]
    layers.append(
        LayerSpec(
            name="transformer block",
            kind="block",
            count=len(blocks),
            params=per_block[0],
            active_params=per_block[0],
            matmul_flops_per_token=round(matmul),
            attn_flops_per_token_per_seq=max(0, round(attn)),
        )
    )
    layers.append(
        LayerSpec(
            name="final norm",
            kind="norm",
            params=max(norm_params, 0),
            active_params=max(norm_params, 0),
            matmul_flops_per_token=0,
        )
    )
    layers.append(
        LayerSpec(
            name="output head",
            kind="head",
            params=head_params,
            active_params=head_params,
            matmul_flops_per_token=round((rest1 + rest2) / 2),
        )
    )
    if len(set(per_block)) != 1:
        raise ModelSpecError(
            f"{type(module).__name__}: blocks differ in size ({sorted(set(per_block))}); "
            "mixed dense/MoE stacks need a config.json (load_model)"
        )
    return ModelSpec(
        name=name or type(module).__name__,
        source=f"torch.nn.Module {type(module).__name__} (FlopCounterMode at seq {s1} and {s2})",
        model_type=str(getattr(getattr(module, "config", None), "model_type", "module")),
        vocab_size=vocab,
        hidden_size=hidden,
        num_layers=len(blocks),
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        mla=mla,
        ffn_hidden_size=ffn,
        mlp="swiglu" if swiglu else "gelu",
        tied_embeddings=tied,
        seq_len=seq_len,
        layers=tuple(layers),
    )
