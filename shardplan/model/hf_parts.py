"""What every Hugging Face config reader shares: typed access to the config's fields, the heads of its attention,
one kind of block as a `LayerSpec`, and the model around its blocks (`assemble`)."""

from __future__ import annotations

from typing import Any

from shardplan.errors import ModelSpecError
from shardplan.model.schema import GatedDeltaSpec, LayerSpec, MlaSpec, ModelSpec, MoeSpec


class Cfg:
    """Typed access to config fields; a missing or bad field names the file and the field."""

    def __init__(self, data: dict[str, Any], source: str) -> None:
        self.data, self.source = data, source

    def int(self, *names: str, default: int | None = None, positive: bool = True) -> int:
        for name in names:
            value = self.data.get(name)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int) or (positive and value <= 0):
                    raise ModelSpecError(f"{self.source}: {name}: expected a positive integer, found {value!r}")
                return value
        if default is None:
            raise ModelSpecError(f"{self.source}: {names[0]}: missing (required for this model_type)")
        return default

    def flag(self, name: str, default: bool) -> bool:
        value = self.data.get(name, default)
        if not isinstance(value, bool):
            raise ModelSpecError(f"{self.source}: {name}: expected true or false, found {value!r}")
        return value


def heads_of(c: Cfg, h: int, heads_key: str = "num_attention_heads") -> tuple[int, int, int]:
    heads = c.int(*dict.fromkeys((heads_key, "num_attention_heads", "n_head")))  # its own name, then the others
    kv = c.int("num_key_value_heads", default=heads)
    head_dim = c.data.get("head_dim")
    if head_dim is None:
        if h % heads:
            raise ModelSpecError(f"{c.source}: num_attention_heads: {heads} does not divide hidden_size {h}")
        head_dim = h // heads
    head_dim = c.int("head_dim", default=head_dim)
    if heads % kv:
        raise ModelSpecError(f"{c.source}: num_key_value_heads: {kv} does not divide num_attention_heads {heads}")
    return heads, kv, head_dim


def block_spec(
    name: str,
    count: int,
    *,
    params: int,
    active: int,
    h: int,
    heads: int,
    head_dim: int,
    v_head_dim: int | None = None,
    embedding_free: int = 0,
    experts: int = 0,
    window: int | None = None,
    chunk: int | None = None,
    linear: GatedDeltaSpec | None = None,
) -> LayerSpec:
    # Forward matmul FLOPs per token: 2 per weight (multiply + add) of the active matmul weights;
    # `embedding_free` are parameters that are not matmul weights (norms, biases). `linear`: the block mixes tokens
    # through this linear attention, not softmax attention.
    if linear is not None:
        suffix = " (linear attention)"
        # the delta-rule recurrence as Megatron-LM counts it (training.py, gdn_layer_flops): 4 multiply-adds per
        # entry of each value head's key x value state a token; its short convolution left out, as PaLM's
        # convention leaves out the other elementwise work
        state = linear.value_heads * linear.key_head_dim * linear.value_head_dim
        mixing: dict[str, Any] = {"mixer": "gated_delta", "recurrence_flops_per_token": 2 * 4 * state}
    else:
        suffix = " (sliding window)" if window else " (chunked attention)" if chunk else ""
        # QK^T: 2 * s * (heads*head_dim) per token, AV: 2 * s * (heads*v_head_dim), the same but under MLA
        mixing = {"attn_flops_per_token_per_seq": 2 * heads * (head_dim + (v_head_dim or head_dim))}
        mixing |= {"attention_window": window, "attention_chunk": chunk}
    return LayerSpec(
        name=name + suffix,
        kind="block",
        count=count,
        params=params,
        active_params=active,
        expert_params=experts,
        matmul_flops_per_token=2 * (active - embedding_free),
        **mixing,
    )


def assemble(
    c: Cfg,
    name: str,
    model_type: str,
    *,
    vocab: int,
    h: int,
    layers: int,
    heads: int,
    kv: int,
    hd: int,
    ffn: int,
    moe: MoeSpec | None,
    tied: bool,
    blocks: list[LayerSpec],
    mlp: str = "swiglu",
    final_norm: int | None = None,
    positions: int = 0,
    seq_default: int = 4096,
    dropout: bool = False,
    rotary: bool = True,
    mla: MlaSpec | None = None,
    sinks: bool = False,
    block_order: tuple[int, ...] | None = None,
    head_bias: bool = False,
    gated_delta: GatedDeltaSpec | None = None,
    attention_gate: bool = False,
    embedding_norm: int = 0,
) -> ModelSpec:
    """The model around its blocks: the embedding (and a norm of `embedding_norm` parameters over it, BLOOM's), the
    final norm (an RMSNorm of h by default) and the output head. The defaults are the Llama family's: SwiGLU, rotary
    positions, no dropout, 4,096 tokens unless the config's maximum is shorter."""
    # token (and learned position) embeddings: lookups, no matmul FLOPs
    embed = vocab * h + positions * h + embedding_norm
    head_params = (0 if tied else vocab * h) + (vocab if head_bias else 0)  # a bias only where `head_bias` says
    norm = h if final_norm is None else final_norm
    return ModelSpec(
        name=name,
        source=c.source,
        model_type=model_type,
        vocab_size=vocab,
        hidden_size=h,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=hd,
        ffn_hidden_size=ffn,
        mlp=mlp,  # type: ignore[arg-type]
        moe=moe,
        mla=mla,
        tied_embeddings=tied,
        seq_len=min(seq_default, c.int("max_position_embeddings", "n_positions", default=seq_default)),
        dropout=dropout,
        rotary=rotary,
        attention_sinks=sinks,
        attention_gate=attention_gate,
        gated_delta=gated_delta,
        block_order=block_order,
        layers=(
            LayerSpec(name="embedding", kind="embedding", params=embed, active_params=embed, matmul_flops_per_token=0),
            *blocks,
            LayerSpec(name="final norm", kind="norm", params=norm, active_params=norm, matmul_flops_per_token=0),
            # the output head multiplies h x vocab per token even when its weight is the tied embedding
            LayerSpec(
                name="output head",
                kind="head",
                params=head_params,
                active_params=head_params,
                matmul_flops_per_token=2 * vocab * h,
            ),
        ),
    )


def mlp_layer_types(c: Cfg, layers: int) -> list[str]:
    """The config's `mlp_layer_types`: "dense" or "sparse" for each block."""
    kinds = c.data["mlp_layer_types"]
    if not isinstance(kinds, list) or len(kinds) != layers or not set(kinds) <= {"dense", "sparse"}:
        raise ModelSpecError(f'{c.source}: mlp_layer_types: expected "dense" or "sparse" for each of {layers} blocks')
    return kinds
