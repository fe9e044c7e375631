"""The GPT family before Llama as `ModelSpec`s: GPT-2, GPT-NeoX, GPT-J, CodeGen, GPT-Neo, GPTBigCode (StarCoder),
OPT, BLOOM, Falcon, MPT, Phi (1 to 2), StableLM and Persimmon, each with the parameters transformers' modelling code
builds (modeling_<type>.py; checked against it in tests/test_model_specs.py)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from shardplan.errors import ModelSpecError
from shardplan.model.hf_parts import Cfg, assemble, block_spec, heads_of
from shardplan.model.schema import ModelSpec


@dataclass(frozen=True)
class _Block:
    """One block's parameters: q (h x heads*hd), k and v (h x kv*hd each), the output projection (heads*hd x h) and
    an MLP of two matrices (h x ffn, ffn x h; three, gate and up and down, where `gated`), the biases each flag
    names, `norms` parameters of its norms and `qk_norms` of norms over q and k."""

    h: int
    heads: int
    kv: int
    hd: int
    ffn: int
    qkv_bias: bool
    out_bias: bool
    mlp_bias: bool
    norms: int
    gated: bool = False
    qk_norms: int = 0

    def params(self) -> tuple[int, int]:
        """(all its parameters, of them those that are not matmul weights)."""
        h, q, kv, mats = self.h, self.heads * self.hd, self.kv * self.hd, 3 if self.gated else 2
        biases = (q + 2 * kv if self.qkv_bias else 0) + (h if self.out_bias else 0)
        biases += ((mats - 1) * self.ffn + h) if self.mlp_bias else 0
        free = self.norms + self.qk_norms + biases
        return h * (q + 2 * kv) + q * h + mats * h * self.ffn + free, free


def _dropout(c: Cfg, *names: str, default: float = 0.0) -> bool:
    """Whether any of these dropout probabilities (`default` where not set) is above 0."""
    values = [c.data.get(n, default) for n in names]
    return any(isinstance(v, int | float) and v > 0 for v in values)


def _gpt_like(
    c: Cfg,
    name: str,
    block: _Block,
    *,
    layers: int,
    tied: bool,
    final_norm: int,
    seq_default: int,
    dropout: bool,
    positions: int = 0,
    rotary: bool = True,
    windows: list[int | None] | None = None,
    head_bias: bool = False,
    embedding_norm: int = 0,
) -> ModelSpec:
    """The model of `layers` such blocks, one kind per attention window (`windows`, one per block: None for full
    attention); `positions` learned position embeddings (none: rotary, or ALiBi where not `rotary`)."""
    windows = windows or [None] * layers
    params, free = block.params()
    kinds = Counter(windows)
    order = tuple(map(list(kinds).index, windows))
    blocks = [
        block_spec(
            "transformer block",
            count,
            params=params,
            active=params,
            h=block.h,
            heads=block.heads,
            head_dim=block.hd,
            embedding_free=free,
            window=window,
        )
        for window, count in kinds.items()
    ]
    return assemble(
        c,
        name,
        c.data["model_type"],
        vocab=c.int("vocab_size"),
        h=block.h,
        layers=layers,
        heads=block.heads,
        kv=block.kv,
        hd=block.hd,
        ffn=block.ffn,
        mlp="swiglu" if block.gated else "gelu",  # "gelu": an MLP of two matrices, whatever its activation
        moe=None,
        tied=tied,
        blocks=blocks,
        final_norm=final_norm,
        positions=positions,
        seq_default=seq_default,
        dropout=dropout,
        rotary=rotary,
        block_order=None if list(order) == sorted(order) else order,
        head_bias=head_bias,
        embedding_norm=embedding_norm,
    )


def _gpt2(c: Cfg, name: str) -> ModelSpec:
    """GPT-2 and GPTBigCode (StarCoder, SantaCoder): Conv1D layers (linears in GPTBigCode) that always carry biases,
    learned positions, dropout of 0.1 unless set; GPTBigCode's one key and value head where `multi_query`."""
    h = c.int("n_embd", "hidden_size")
    heads, _, hd = heads_of(c, h, "n_head")
    kv = 1 if c.data["model_type"] == "gpt_bigcode" and c.flag("multi_query", True) else heads
    positions = c.int("n_positions", default=1024)
    block = _Block(h, heads, kv, hd, c.int("n_inner", default=4 * h), True, True, True, norms=4 * h)
    return _gpt_like(
        c,
        name,
        block,
        layers=c.int("n_layer", "num_hidden_layers"),
        tied=c.flag("tie_word_embeddings", True),
        final_norm=2 * h,
        positions=positions,
        seq_default=positions,
        dropout=_dropout(c, "resid_pdrop", "embd_pdrop", "attn_pdrop", default=0.1),
        rotary=False,
    )


def _gpt_neox(c: Cfg, name: str) -> ModelSpec:
    """GPT-NeoX (Pythia): `attention_bias` biases the fused QKV and the output projection; rotary_pct of each head
    rotated (charged as all of it)."""
    h = c.int("hidden_size")
    heads, _, hd = heads_of(c, h)
    bias = c.flag("attention_bias", True)
    block = _Block(h, heads, heads, hd, c.int("intermediate_size", default=4 * h), bias, bias, True, norms=4 * h)
    return _gpt_like(
        c,
        name,
        block,
        layers=c.int("num_hidden_layers"),
        tied=c.flag("tie_word_embeddings", False),
        final_norm=2 * h,
        seq_default=c.int("max_position_embeddings", default=2048),
        dropout=False,
    )


def _gptj(c: Cfg, name: str) -> ModelSpec:
    """GPT-J and CodeGen: attention and MLP side by side after one LayerNorm, q, k, v and the output projection
    without biases (CodeGen's fused into qkv_proj, as many), the MLP's and the output head's with them."""
    h = c.int("n_embd", "hidden_size")
    heads, _, hd = heads_of(c, h, "n_head")
    block = _Block(h, heads, heads, hd, c.int("n_inner", default=4 * h), False, False, True, norms=2 * h)
    return _gpt_like(
        c,
        name,
        block,
        layers=c.int("n_layer", "num_hidden_layers"),
        tied=c.flag("tie_word_embeddings", False),
        final_norm=2 * h,
        seq_default=c.int("n_positions", default=2048),
        dropout=_dropout(c, "resid_pdrop", "embd_pdrop", "attn_pdrop"),
        head_bias=True,
    )


def _gpt_neo(c: Cfg, name: str) -> ModelSpec:
    """GPT-Neo: learned positions, q, k and v without biases, blocks of global attention and of local attention
    over the last `window_size` tokens as `attention_types` lists them ([[kinds, repeats], ...])."""
    h = c.int("hidden_size")
    heads, _, hd = heads_of(c, h, "num_heads")
    layers = c.int("num_layers", "num_hidden_layers")
    types = c.data.get("attention_types", [[["global", "local"], layers // 2]])
    try:
        kinds = [kind for pattern, repeats in types for _ in range(repeats) for kind in pattern]
    except (TypeError, ValueError):
        kinds = None
    if kinds is None or len(kinds) != layers or not set(kinds) <= {"global", "local"}:
        raise ModelSpecError(
            f'{c.source}: attention_types: expected [[["global", "local"], repeats], ...] covering {layers} '
            f"num_layers, found {types!r}"
        )
    window = c.int("window_size", default=256)
    block = _Block(h, heads, heads, hd, c.int("intermediate_size", default=4 * h), False, True, True, norms=4 * h)
    positions = c.int("max_position_embeddings", default=2048)
    return _gpt_like(
        c,
        name,
        block,
        layers=layers,
        tied=c.flag("tie_word_embeddings", True),
        final_norm=2 * h,
        positions=positions,
        seq_default=positions,
        dropout=_dropout(c, "resid_dropout", "embed_dropout", "attention_dropout"),
        rotary=False,
        windows=[window if kind == "local" else None for kind in kinds],
    )


def _opt(c: Cfg, name: str) -> ModelSpec:
    """OPT: learned positions (2 more than the maximum: OPTLearnedPositionalEmbedding's offset), `enable_bias` on every
    linear, a ReLU MLP of `ffn_dim`, LayerNorms with weight and bias unless not elementwise-affine, the final one only
    where each block's norms come first."""
    h = c.int("hidden_size")
    if c.int("word_embed_proj_dim", default=h) != h:
        raise ModelSpecError(
            f"{c.source}: word_embed_proj_dim: {c.data['word_embed_proj_dim']} differs from hidden_size {h} "
            "(OPT-350m's projections in and out of the embedding are not modelled)"
        )
    heads, _, hd = heads_of(c, h)
    bias = c.flag("enable_bias", True)
    norm = 2 * h if c.flag("layer_norm_elementwise_affine", True) else 0
    block = _Block(h, heads, heads, hd, c.int("ffn_dim"), bias, bias, bias, norms=2 * norm)
    positions = c.int("max_position_embeddings", default=2048)
    final = c.flag("do_layer_norm_before", True) and not c.flag("_remove_final_layer_norm", False)
    return _gpt_like(
        c,
        name,
        block,
        layers=c.int("num_hidden_layers"),
        tied=c.flag("tie_word_embeddings", True),
        final_norm=norm if final else 0,
        positions=positions + 2,
        seq_default=positions,
        dropout=_dropout(c, "dropout", "attention_dropout"),
        rotary=False,
    )


def _bloom(c: Cfg, name: str) -> ModelSpec:
    """BLOOM: ALiBi, a LayerNorm over the word embeddings, biases on every linear, an MLP of 4h. No maximum length
    (ALiBi): 2,048 tokens by default, its pretraining length (BigScience, arXiv:2211.05100, Table 3)."""
    h = c.int("hidden_size", "n_embed")
    heads, _, hd = heads_of(c, h, "n_head")
    block = _Block(h, heads, heads, hd, 4 * h, True, True, True, norms=4 * h)
    return _gpt_like(
        c,
        name,
        block,
        layers=c.int("n_layer", "num_hidden_layers"),
        tied=c.flag("tie_word_embeddings", True),
        final_norm=2 * h,
        seq_default=2048,
        dropout=_dropout(c, "hidden_dropout", "attention_dropout"),
        rotary=False,
        embedding_norm=2 * h,
    )


def _falcon(c: Cfg, name: str) -> ModelSpec:
    """Falcon: one key and value head where `multi_query` (7B), `num_kv_heads` of them in the new decoder
    architecture (40B, 180B); attention and MLP side by side (`parallel_attn`) after one LayerNorm, or two
    (`num_ln_in_parallel_attn`, 2 by default in the new architecture), else one after the other with one each;
    `bias` on every linear; rotary positions unless `alibi`."""
    h = c.int("hidden_size")
    heads, _, hd = heads_of(c, h)  # its key and value heads from its own fields, below
    new = c.flag("new_decoder_architecture", False)
    kv = c.int("num_kv_heads", default=heads) if new else 1 if c.flag("multi_query", True) else heads
    if heads % kv:
        raise ModelSpecError(f"{c.source}: num_kv_heads: {kv} does not divide num_attention_heads {heads}")
    norms = 2 if not c.flag("parallel_attn", True) else c.int("num_ln_in_parallel_attn", default=2 if new else 1)
    bias = c.flag("bias", False)
    block = _Block(h, heads, kv, hd, c.int("ffn_hidden_size", default=4 * h), bias, bias, bias, norms * 2 * h)
    return _gpt_like(
        c,
        name,
        block,
        layers=c.int("num_hidden_layers", "n_layer"),
        tied=c.flag("tie_word_embeddings", True),
        final_norm=2 * h,
        seq_default=c.int("max_position_embeddings", default=2048),
        dropout=_dropout(c, "hidden_dropout", "attention_dropout"),
        rotary=not c.flag("alibi", False),
    )


def _mpt(c: Cfg, name: str) -> ModelSpec:
    """MPT as transformers builds it: ALiBi, no biases, LayerNorms of weights alone, an MLP of 4h (its
    `expansion_ratio`, `no_bias` and `learned_pos_emb` not read)."""
    h = c.int("d_model", "hidden_size")
    heads, _, hd = heads_of(c, h, "n_heads")
    block = _Block(h, heads, heads, hd, 4 * h, False, False, False, norms=2 * h)
    return _gpt_like(
        c,
        name,
        block,
        layers=c.int("n_layers", "num_hidden_layers"),
        tied=c.flag("tie_word_embeddings", True),
        final_norm=h,
        seq_default=c.int("max_seq_len", default=2048),
        dropout=_dropout(c, "resid_pdrop", "emb_pdrop"),
        rotary=False,
    )


def _phi(c: Cfg, name: str) -> ModelSpec:
    """Phi-1 to Phi-2: attention and MLP side by side after one LayerNorm, biases on every linear and the output head,
    LayerNorms over each head of q and k where `qk_layernorm`; partial rotary (charged as all of the head)."""
    h = c.int("hidden_size")
    heads, kv, hd = heads_of(c, h)
    qk = 4 * hd if c.flag("qk_layernorm", False) else 0  # nn.LayerNorm(head_dim): weight and bias, for q and for k
    block = _Block(h, heads, kv, hd, c.int("intermediate_size"), True, True, True, norms=2 * h, qk_norms=qk)
    return _gpt_like(
        c,
        name,
        block,
        layers=c.int("num_hidden_layers"),
        tied=c.flag("tie_word_embeddings", False),
        final_norm=2 * h,
        seq_default=c.int("max_position_embeddings", default=2048),
        dropout=_dropout(c, "resid_pdrop", "embd_pdrop", "attention_dropout"),
        head_bias=True,
    )


def _stablelm(c: Cfg, name: str) -> ModelSpec:
    """StableLM: Llama's blocks with LayerNorms (weight and bias), biases on q, k, v where `use_qkv_bias`, one norm
    before attention and MLP side by side where `use_parallel_residual`, per-head norms of q and k (weights alone)
    where `qk_layernorm`; partial rotary (charged as all of the head)."""
    h = c.int("hidden_size")
    heads, kv, hd = heads_of(c, h)
    norms = (1 if c.flag("use_parallel_residual", False) else 2) * 2 * h
    qk = (heads + kv) * hd if c.flag("qk_layernorm", False) else 0
    bias = c.flag("use_qkv_bias", False)
    ffn = c.int("intermediate_size")
    block = _Block(h, heads, kv, hd, ffn, bias, False, False, norms=norms, gated=True, qk_norms=qk)
    return _gpt_like(
        c,
        name,
        block,
        layers=c.int("num_hidden_layers"),
        tied=c.flag("tie_word_embeddings", False),
        final_norm=2 * h,
        seq_default=c.int("max_position_embeddings", default=4096),
        dropout=_dropout(c, "hidden_dropout", "attention_dropout"),
    )


def _persimmon(c: Cfg, name: str) -> ModelSpec:
    """Persimmon: biases on every linear, a ReLU^2 MLP of two matrices, LayerNorms (weight and bias) over each head of
    q and of k where `qk_layernorm`; partial rotary (charged as all of the head)."""
    h = c.int("hidden_size")
    heads, _, hd = heads_of(c, h)
    qk = 4 * hd if c.flag("qk_layernorm", True) else 0
    block = _Block(h, heads, heads, hd, c.int("intermediate_size"), True, True, True, norms=4 * h, qk_norms=qk)
    return _gpt_like(
        c,
        name,
        block,
        layers=c.int("num_hidden_layers"),
        tied=c.flag("tie_word_embeddings", False),
        final_norm=2 * h,
        seq_default=c.int("max_position_embeddings", default=16384),
        dropout=_dropout(c, "hidden_dropout", "attention_dropout"),
    )


GPT_FAMILY: dict[str, Callable[[Cfg, str], ModelSpec]] = {
    "gpt2": _gpt2,
    "gpt_neox": _gpt_neox,
    "gptj": _gptj,
    "codegen": _gptj,
    "gpt_neo": _gpt_neo,
    "gpt_bigcode": _gpt2,
    "opt": _opt,
    "bloom": _bloom,
    "falcon": _falcon,
    "mpt": _mpt,
    "phi": _phi,
    "stablelm": _stablelm,
    "persimmon": _persimmon,
}
