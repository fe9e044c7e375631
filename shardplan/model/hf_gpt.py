"""GPT-2 and GPT-NeoX configs (transformers' modeling_gpt2 / modeling_gpt_neox) as `ModelSpec`s."""

from __future__ import annotations

from shardplan.model.hf_parts import Cfg, assemble, block_spec, heads_of
from shardplan.model.schema import ModelSpec


def gpt2_spec(c: Cfg, name: str) -> ModelSpec:
    h = c.int("n_embd", "hidden_size")
    positions = c.int("n_positions", default=1024)
    # GPT-2 Conv1D layers always carry biases; positions are learned (wpe), dropout is on.
    return _gpt_like(
        c,
        name,
        "gpt2",
        h=h,
        layers=c.int("n_layer", "num_hidden_layers"),
        heads_key="n_head",
        ffn=c.int("n_inner", default=4 * h),
        attn_bias=True,
        tied=c.flag("tie_word_embeddings", True),
        positions=positions,
        seq_default=positions,
        dropout=True,
        rotary=False,
    )


def gpt_neox_spec(c: Cfg, name: str) -> ModelSpec:
    h = c.int("hidden_size")
    return _gpt_like(
        c,
        name,
        "gpt_neox",
        h=h,
        layers=c.int("num_hidden_layers"),
        heads_key="num_attention_heads",
        ffn=c.int("intermediate_size", default=4 * h),
        attn_bias=c.flag("attention_bias", True),
        tied=c.flag("tie_word_embeddings", False),
        positions=0,
        seq_default=c.int("max_position_embeddings", default=2048),
        dropout=False,
        rotary=True,  # GPT-NeoX rotates rotary_pct of each head (charged as all of it)
    )


def _gpt_like(
    c: Cfg,
    name: str,
    model_type: str,
    *,
    h: int,
    layers: int,
    heads_key: str,
    ffn: int,
    attn_bias: bool,
    tied: bool,
    positions: int,
    seq_default: int,
    dropout: bool,
    rotary: bool,
) -> ModelSpec:
    """GPT-2 / GPT-NeoX blocks: two LayerNorms (weight + bias, 2h each), fused QKV h x 3h, output
    projection h x h, GeLU MLP h x f and f x h; MLP biases f + h always, attention biases 3h + h if set."""
    heads, _, hd = heads_of(c, h, heads_key)
    biases = ((3 * h + h) if attn_bias else 0) + ffn + h
    norms = 4 * h
    total = norms + h * 3 * h + h * h + h * ffn + ffn * h + biases
    block = block_spec(
        "transformer block",
        layers,
        params=total,
        active=total,
        h=h,
        heads=heads,
        head_dim=hd,
        embedding_free=norms + biases,
    )
    return assemble(
        c,
        name,
        model_type,
        vocab=c.int("vocab_size"),
        h=h,
        layers=layers,
        heads=heads,
        kv=heads,
        hd=hd,
        ffn=ffn,
        mlp="gelu",
        moe=None,
        tied=tied,
        blocks=[block],
        final_norm=2 * h,
        positions=positions,
        seq_default=seq_default,
        dropout=dropout,
        rotary=rotary,
    )
