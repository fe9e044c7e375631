"""`ModelSpec`: the layers of a transformer with exact parameter counts, forward FLOPs per token and
activation bytes per token, the three numbers the planner needs per layer."""

from __future__ import annotations

from functools import cached_property
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, model_validator

Recompute = Literal["none", "selective", "selective-op", "selective-layer", "full"]
BYTES_BF16 = 2  # activations are stored in bf16 (2 bytes per element)
FP32 = 4


class Matmul(NamedTuple):
    """One weight matmul of a transformer block: its output width, inner dimension, and how TP splits it:
    "column" (its output columns), "row" (its inner dimension; each rank's output a full-width partial sum) or
    "duplicated" (whole on every rank, as Megatron-Core's MLA down-projections: under sequence parallelism each
    rank multiplies its own sequence shard)."""

    name: str
    width: int
    inner: int
    split: Literal["column", "row", "duplicated"]

    def per_gpu(self, tokens: float, tp: int, sp: bool) -> tuple[float, float, float]:
        """(rows, output width, inner dimension) of this matmul on one GPU of a TP group of `tp`, for `tokens`
        tokens of the micro-batch (`sp`: sequence parallelism)."""
        if self.split == "column":
            return tokens, self.width / tp, self.inner
        if self.split == "row":
            return tokens, self.width, self.inner / tp
        return tokens / tp if sp else tokens, self.width, self.inner


class MoeSpec(BaseModel):
    """Mixture of experts in the MLP."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    num_experts: int = Field(gt=0)
    top_k: int = Field(gt=0)
    expert_ffn_hidden_size: int = Field(gt=0, description="Hidden size of one expert's MLP.")
    shared_experts: int = Field(0, ge=0, description="Experts every token passes through.")
    shared_ffn_hidden_size: int = Field(0, ge=0, description="Hidden size of the shared expert MLP.")
    shared_expert_gate: bool = Field(False, description="A scalar sigmoid gate on the shared expert (qwen2_moe).")
    groups: int = Field(
        1,
        gt=0,
        description="Expert groups (DeepSeek's n_group, experts in order): each token's top-k experts come from "
        "its `top_groups` best groups alone (node-limited routing where a group's experts sit on one node).",
    )
    top_groups: int = Field(1, gt=0, description="Groups each token's experts come from (DeepSeek's topk_group).")

    @model_validator(mode="after")
    def _groups_hold_the_top_k(self) -> MoeSpec:
        if self.num_experts % self.groups or self.top_groups > self.groups:
            raise ValueError(
                f"{self.groups} expert groups, {self.top_groups} per token: expected groups dividing "
                f"the {self.num_experts} experts and at most as many per token as there are"
            )
        reachable = self.top_groups * self.num_experts // self.groups
        if self.top_k > reachable:
            where = f" in its {self.top_groups} of {self.groups} expert groups" if self.groups > 1 else ""
            raise ValueError(f"each token's {self.top_k} experts (top_k) exceed the {reachable} it can reach{where}")
        return self


class MlaSpec(BaseModel):
    """DeepSeek's multi-head latent attention (DeepSeek-V2, arXiv:2405.04434, Sec. 2.1), as training runs it: the
    hidden state is projected down to a query latent (`q_lora_rank`; None: Q projected directly) and a key-value
    latent (`kv_lora_rank`) plus one shared RoPE key (`qk_rope_head_dim`), each latent normalised and projected
    up to every head's query and key (`qk_nope_head_dim` + `qk_rope_head_dim`) and value (`v_head_dim`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    q_lora_rank: int | None = Field(gt=0)
    kv_lora_rank: int = Field(gt=0)
    qk_nope_head_dim: int = Field(gt=0)
    qk_rope_head_dim: int = Field(gt=0)
    v_head_dim: int = Field(gt=0)


class GatedDeltaSpec(BaseModel):
    """Gated DeltaNet linear attention (Yang, Kautz and Hatamizadeh 2024, arXiv:2412.06464) as Qwen3-Next and Qwen3.5
    run it in their "linear_attention" blocks (transformers' Qwen3_5GatedDeltaNet): the hidden state projected to
    queries and keys (`key_heads` of `key_head_dim`), values and an output gate (`value_heads` of `value_head_dim`)
    and two scalars per value head (the write strength beta and the decay's input); a causal depthwise convolution
    of `conv_kernel` taps over q, k and v; the chunked delta-rule recurrence over a key x value state per value head;
    an RMSNorm of each head's output gated by SiLU of the gate; the output projection."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key_heads: int = Field(gt=0)
    value_heads: int = Field(gt=0)
    key_head_dim: int = Field(gt=0)
    value_head_dim: int = Field(gt=0)
    conv_kernel: int = Field(gt=0)

    @model_validator(mode="after")
    def _key_heads_divide(self) -> GatedDeltaSpec:
        if self.value_heads % self.key_heads:
            raise ValueError(f"{self.key_heads} key heads do not divide the {self.value_heads} value heads")
        return self

    @property
    def key_width(self) -> int:
        """Elements per token of the queries (and of the keys)."""
        return self.key_heads * self.key_head_dim

    @property
    def value_width(self) -> int:
        """Elements per token of the values (and of the output gate and the output)."""
        return self.value_heads * self.value_head_dim

    @property
    def conv_width(self) -> int:
        """Channels of the convolution: q, k and v."""
        return 2 * self.key_width + self.value_width


class LayerSpec(BaseModel):
    """One layer kind, `count` times in sequence."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    kind: Literal["embedding", "block", "norm", "head"]
    count: int = Field(1, ge=1)
    params: int = Field(ge=0, description="Parameters of one such layer.")
    active_params: int = Field(ge=0, description="Parameters one token touches (MoE: top-k experts).")
    expert_params: int = Field(
        0, ge=0, description="Of `params`, the routed experts' (MoE): what expert parallelism splits."
    )
    matmul_flops_per_token: int = Field(ge=0, description="Forward FLOPs per token of the weight matmuls.")
    attn_flops_per_token_per_seq: int = Field(
        0, ge=0, description="Forward attention (QK^T and AV) FLOPs per token per token of sequence."
    )
    attention_window: int | None = Field(
        None, gt=0, description="Sliding-window attention: each token attends to at most this many (None: all)."
    )
    attention_chunk: int | None = Field(
        None,
        gt=0,
        description="Chunked attention (Llama 4's attention_chunk_size): each token attends within its chunk of "
        "this many positions, causally (None: no chunks).",
    )
    mixer: Literal["attention", "gated_delta"] = Field(
        "attention",
        description="What mixes the tokens: softmax attention, or Gated DeltaNet linear attention (the model's "
        "`gated_delta`).",
    )
    recurrence_flops_per_token: int = Field(
        0,
        ge=0,
        description="Forward FLOPs per token of a linear-attention recurrence, whatever the sequence length.",
    )

    def attended(self, seq_len: int) -> int:
        """Keys a query's attention spans at `seq_len`, the causal mask aside: the window, its chunk, or the
        sequence."""
        return min(seq_len, self.attention_window or self.attention_chunk or seq_len)

    def flops_per_token(self, seq_len: int) -> int:
        """Forward FLOPs per token of one such layer at `seq_len` (`ModelSpec.flops_per_token`'s convention)."""
        attention = self.attn_flops_per_token_per_seq * self.attended(seq_len)
        return self.matmul_flops_per_token + attention + self.recurrence_flops_per_token


class ModelSpec(BaseModel):
    """A transformer as the planner sees it. Build one with `load_model`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    source: str = Field(description="Where the architecture comes from (config file, paper).")
    model_type: str
    vocab_size: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    num_layers: int = Field(gt=0)
    num_heads: int = Field(gt=0)
    num_kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    ffn_hidden_size: int = Field(gt=0)
    mlp: Literal["gelu", "swiglu"]
    moe: MoeSpec | None = None
    mla: MlaSpec | None = Field(
        None, description="Multi-head latent attention (head_dim: the query and key head dim, qk nope + rope)."
    )
    tied_embeddings: bool
    seq_len: int = Field(gt=0, description="Default training sequence length.")
    dropout: bool = Field(False, description="Dropout in attention and MLP (GPT-2/3 style); adds masks.")
    rotary: bool = Field(
        True,
        description="Rotary position embedding applied to Q and K in every block (Llama family, GPT-NeoX); "
        "False where positions are learned (GPT-2/3) or a bias inside attention (ALiBi: BLOOM, MPT).",
    )
    attention_sinks: bool = Field(
        False,
        description="A learned logit per query head that joins every softmax (GPT-OSS's `sinks`); fused "
        "attention's backward takes longer with it.",
    )
    attention_gate: bool = Field(
        False,
        description="A sigmoid gate on every query head's attention output, its weights beside Q's (Qwen3-Next, "
        "Qwen3.5: q_proj twice as wide).",
    )
    gated_delta: GatedDeltaSpec | None = Field(
        None, description="The linear attention of the blocks whose `mixer` is gated_delta (hybrid models)."
    )
    layers: tuple[LayerSpec, ...]
    block_order: tuple[int, ...] | None = Field(
        None,
        description="Where kinds of block interleave: for each block in model order, the index of its kind among "
        "the blocks of `layers` (None: each entry's `count` blocks in a row, in the order listed).",
    )

    @model_validator(mode="after")
    def _heads_divide(self) -> ModelSpec:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}")
        return self

    @model_validator(mode="after")
    def _linear_blocks_described(self) -> ModelSpec:
        # (a pipeline stage's view may hold none of the blocks it describes)
        if self.num_linear_layers and self.gated_delta is None:
            raise ValueError("gated_delta: missing, where blocks have the gated_delta mixer")
        return self

    @model_validator(mode="after")
    def _block_order_counts(self) -> ModelSpec:
        counts = [ly.count for ly in self.layers if ly.kind == "block"]
        expected = [i for i, n in enumerate(counts) for _ in range(n)]
        if self.block_order is not None and sorted(self.block_order) != expected:
            raise ValueError(f"block_order: expected each block kind's index as often as its count {counts}")
        return self

    @cached_property
    def block_kinds(self) -> tuple[int, ...]:
        """For each block in model order, the index of its kind among the blocks of `layers`."""
        if self.block_order is not None:
            return self.block_order
        counts = [ly.count for ly in self.layers if ly.kind == "block"]
        return tuple(i for i, n in enumerate(counts) for _ in range(n))

    @cached_property
    def _views(self) -> dict[tuple[int, ...], tuple[ModelSpec, ModelSpec]]:
        return {}  # counts -> (this model, its view); `model_copy` copies the dict with the cached properties

    def with_blocks(self, counts: tuple[int, ...]) -> ModelSpec:
        """The model with `counts[i]` blocks of its i-th kind of block (a pipeline stage's blocks), the rest as it
        is: what a stage's per-block averages are taken over. Made once per `counts`.

        >>> from shardplan import load_model
        >>> stage = load_model("deepseek-v3").with_blocks((0, 4))  # four of the MoE blocks, none of the 3 dense
        >>> stage.num_layers, stage.num_moe_layers
        (4, 4)
        """
        held = self._views.get(counts)
        if held is None or held[0] is not self:
            kinds = iter(counts)
            layers = []
            for ly in self.layers:
                count = next(kinds) if ly.kind == "block" else ly.count
                if count:
                    layers.append(ly.model_copy(update={"count": count}))
            fields = {name: getattr(self, name) for name in type(self).model_fields}
            update = {"layers": tuple(layers), "num_layers": sum(counts), "block_order": None}
            held = self._views[counts] = (self, type(self)(**fields | update))
        return held[1]

    @property
    def attention(self) -> Literal["mha", "gqa", "mqa", "mla"]:
        """MHA (one KV head per head), MQA (one KV head), GQA (in between) or MLA (latent keys and values)."""
        if self.mla:
            return "mla"
        if self.num_kv_heads == self.num_heads:
            return "mha"
        return "mqa" if self.num_kv_heads == 1 else "gqa"

    @cached_property
    def num_params(self) -> int:
        """Total parameters (MoE: all experts)."""
        return sum(layer.params * layer.count for layer in self.layers)

    @cached_property
    def num_active_params(self) -> int:
        """Parameters one token uses (MoE: router, top-k and shared experts only)."""
        return sum(layer.active_params * layer.count for layer in self.layers)

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Forward FLOPs per token at `seq_len` (default: the model's): 2 per weight multiply-add of
        every matmul (embedding lookup is free, the output head is not), plus attention counted over
        the full s x s score matrix, the convention of PaLM (arXiv:2204.02311, App. B) and of
        `torch.utils.flop_counter` (s x window where blocks attend within a sliding window). Training is 3x
        this (backward = 2x forward)."""
        s = seq_len or self.seq_len
        return sum(ly.flops_per_token(s) * ly.count for ly in self.layers)

    def causal_spans(self, seq_len: int) -> tuple[tuple[float, int], ...]:
        """(share of the blocks, span) per kind of attention at `seq_len`: the causal sequence length whose queries
        see as many keys on average as the blocks' queries do (s itself without a window; a window w < s gives a
        query min(i + 1, w) keys, w - w(w - 1)/2s on average, as a causal sequence of 2w - w(w - 1)/s does;
        chunks of c are causal sequences of c). Linear-attention blocks have none: the shares sum to the softmax
        blocks' share."""
        spans: dict[int, float] = {}
        for ly in self.layers:
            if ly.kind == "block" and ly.mixer == "attention":
                w = ly.attended(seq_len)
                span = w if w == seq_len or ly.attention_chunk else round(2 * w - w * (w - 1) / seq_len)
                spans[span] = spans.get(span, 0.0) + ly.count / self.num_layers
        return tuple((share, span) for span, share in spans.items())

    @cached_property
    def params_by_part(self) -> tuple[float, int, int, int]:
        """(parameters per block on average over the blocks, embedding, output head, final norm): the parts a
        pipeline stage holds."""
        blocks = sum(ly.params * ly.count for ly in self.layers if ly.kind == "block")
        head = next(ly.params for ly in self.layers if ly.kind == "head")
        norm = next(ly.params for ly in self.layers if ly.kind == "norm")
        return blocks / self.num_layers, self.layers[0].params, head, norm

    @cached_property
    def mtp_layer_params(self) -> tuple[int, int]:
        """(parameters, of them the routed experts') of one multi-token-prediction layer (DeepSeek-V3, arXiv:2412.19437
        Sec. 2.2; Megatron-Core's MultiTokenPredictionLayer): a block like the model's last, the projection of the
        normalised hidden state and next token's embedding (2h -> h), and three norms; it shares the embedding and
        the output head."""
        block = [ly for ly in self.layers if ly.kind == "block"][-1]
        h = self.hidden_size
        return block.params + 2 * h * h + 3 * h, block.expert_params

    @cached_property
    def num_expert_params(self) -> int:
        """Parameters of the routed experts, summed over blocks (0 for a dense model)."""
        return sum(layer.expert_params * layer.count for layer in self.layers)

    @property
    def caveats(self) -> tuple[str, ...]:
        """What the cost model knows of this model's blocks only from others' code, a line each (printed beside
        every plan for it)."""
        if self.gated_delta is None:
            return ()
        return (
            "the linear-attention kernels' time was measured on H100s (fla-core 0.6.0); other shapes and GPUs "
            "follow a roofline of its kernels (shardplan/cost/linear_attention.py)",
        )

    @cached_property
    def num_linear_layers(self) -> int:
        """Blocks whose tokens mix through linear attention (`gated_delta`) rather than softmax attention."""
        return sum(ly.count for ly in self.layers if ly.kind == "block" and ly.mixer == "gated_delta")

    @cached_property
    def linear_share(self) -> float:
        """The share of the blocks that mix through linear attention (0 without any)."""
        return self.num_linear_layers / self.num_layers

    @property
    def mixers(self) -> tuple[tuple[float, Literal["attention", "gated_delta"]], ...]:
        """(share of the blocks, mixer) for each mixer the blocks have: what per-block figures average over."""
        shares = ((1.0 - self.linear_share, "attention"), (self.linear_share, "gated_delta"))
        return tuple((share, mixer) for share, mixer in shares if share > 0)  # type: ignore[misc]

    @cached_property
    def num_moe_layers(self) -> int:
        """Blocks whose MLP routes tokens to experts (each runs an all-to-all dispatch and combine under
        expert parallelism)."""
        return sum(layer.count for layer in self.layers if layer.expert_params)

    @property
    def active_ffn_hidden_size(self) -> int:
        """The MLP width one token passes through: MoE's top-k experts and shared experts together."""
        if self.moe is None:
            return self.ffn_hidden_size
        return self.moe.expert_ffn_hidden_size * self.moe.top_k + self.moe.shared_ffn_hidden_size

    @cached_property
    def v_head_dim(self) -> int:
        """The value (and attention output) head dim: MLA's `v_head_dim`, else `head_dim`."""
        return self.mla.v_head_dim if self.mla else self.head_dim

    @cached_property
    def rope_widths(self) -> tuple[int, int]:
        """Elements per token RoPE rotates in Q and in K: every head's, or MLA's RoPE parts (each query head's
        `qk_rope_head_dim`, and one key part shared by the heads)."""
        if self.mla:
            return self.num_heads * self.mla.qk_rope_head_dim, self.mla.qk_rope_head_dim
        return self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim

    def block_matmuls(
        self, *, fused: bool = False, ffn: int | None = None, mixer: Literal["attention", "gated_delta"] = "attention"
    ) -> tuple[Matmul, ...]:
        """The block's weight matmuls in forward order, unfused as Llama and torchtitan write them:
        Q, K, V, out-projection, then the MLP (SwiGLU: gate w1, up w3, down w2; GeLU: up, down); MLA: the query
        and key-value down-projections (duplicated under TP) and up-projections, then the out-projection; with
        `attention_gate`, Q twice as wide (the gate's weights beside it). `mixer` "gated_delta": the linear
        attention's projections in place of attention's (transformers' in_proj_qkv, in_proj_z, in_proj_b and
        in_proj_a, then out_proj; each split over TP by heads).
        `fused`: as Megatron-Core runs them, QKV one matmul (linear attention: one in_proj) and SwiGLU's gate and up
        one. `ffn`: the MLP's width (default: the active one, `active_ffn_hidden_size`)."""
        h, f = self.hidden_size, ffn or self.active_ffn_hidden_size
        q, kv = self.num_heads * self.head_dim * (1 + self.attention_gate), self.num_kv_heads * self.head_dim
        out = Matmul("o", h, self.num_heads * self.v_head_dim, "row")
        if mixer == "gated_delta" and self.gated_delta:
            g = self.gated_delta
            inputs = (g.conv_width, g.value_width, g.value_heads, g.value_heads)
            names = ("in_proj_qkv", "in_proj_z", "in_proj_b", "in_proj_a")
            projections = [Matmul(name, width, h, "column") for name, width in zip(names, inputs, strict=True)]
            if fused:
                projections = [Matmul("in_proj", sum(inputs), h, "column")]
            attention = (*projections, Matmul("out_proj", h, g.value_width, "row"))
        elif self.mla:
            m = self.mla
            query = (Matmul("q", q, h, "column"),)
            if m.q_lora_rank:
                query = (Matmul("q_down", m.q_lora_rank, h, "duplicated"), Matmul("q_up", q, m.q_lora_rank, "column"))
            latent = m.kv_lora_rank
            up = Matmul("kv_up", self.num_heads * (m.qk_nope_head_dim + m.v_head_dim), latent, "column")
            attention = (*query, Matmul("kv_down", latent + m.qk_rope_head_dim, h, "duplicated"), up, out)
        elif fused:
            attention = (Matmul("qkv", q + 2 * kv, h, "column"), out)
        else:
            attention = (Matmul("q", q, h, "column"), Matmul("k", kv, h, "column"), Matmul("v", kv, h, "column"), out)
        down = Matmul("w2" if self.mlp == "swiglu" else "fc2", h, f, "row")
        if self.mlp == "gelu":
            return (*attention, Matmul("fc1", f, h, "column"), down)
        if fused:
            return (*attention, Matmul("w13", 2 * f, h, "column"), down)
        return (*attention, Matmul("w1", f, h, "column"), Matmul("w3", f, h, "column"), down)

    def column_input_widths(self, *, sequence_parallel: bool) -> tuple[int, int]:
        """Elements per token that attention's and the MLP's column-parallel GEMMs take in: what TP all-gathers
        before them under sequence parallelism and reduces their input gradients over. The hidden size, but for
        MLA's up-projections: the query latent (the hidden size where the query has none) and the key-value
        latent, and under SP the RoPE key part, all-gathered beside them (Megatron-Core's
        multi_latent_attention.py: the duplicated down-projections run on each rank's sequence shard)."""
        h = self.hidden_size
        if self.mla is None:
            return h, h
        m = self.mla
        return (m.q_lora_rank or h) + m.kv_lora_rank + m.qk_rope_head_dim * sequence_parallel, h

    @cached_property
    def latent_width(self) -> int:
        """MLA's latents per token that its down-projections' side keeps for backward: the query latent before
        and after its norm, the key-value latent with the RoPE key before its norm, and the normed latent (0
        without MLA)."""
        if self.mla is None:
            return 0
        m = self.mla
        return 2 * (m.q_lora_rank or 0) + 2 * m.kv_lora_rank + m.qk_rope_head_dim

    def activation_bytes_per_token(
        self,
        *,
        tp: int = 1,
        sequence_parallel: bool = True,
        recompute: Recompute = "none",
        seq_len: int | None = None,
        flash_attention: bool = True,
        fused_swiglu: bool = False,
        fp8_inputs: bool = False,
        fp8_recast_inputs: bool = False,
        experts_whole: bool = False,
        recompute_modules: tuple[str, ...] = (),
    ) -> float:
        """Activation bytes kept for backward by one transformer block, per token of the micro-batch,
        on one GPU of a TP group of size `tp` (Korthikanti et al. 2022, arXiv:2205.05198, Sec. 4).

        The paper's 34*h per token per layer, factor by factor (bf16, 2 bytes):
          attention 11h: LN output (QKV input) 2h + Q 2h + K 2h + V 2h + out-proj input 2h + dropout mask 1h
          MLP       19h: LN output 2h + first linear output 8h + GeLU output 8h + dropout mask 1h
          norms      4h: two LayerNorm inputs, 2h each
        plus 5*a*s per token for the s x s softmax (2as), its dropout mask (as) and output (2as).
        Adapted, with FFN size f (GPT: f = 4h, so 2f + 2f = 16h as above):
          GQA: K and V are num_kv_heads*head_dim wide (2*kv bytes each, not 2h); Q and the out-proj
            input are num_heads*head_dim wide (gemma2: not h).
          MLA: Q and K at the query-key head dim, V and the out-proj input at `v_head_dim`, and the latents
            (`latent_width`: replicated without SP, as Megatron-Core's duplicated down-projections make them).
          SwiGLU: gate out 2f + up out 2f + SiLU out 2f + product (down-proj input) 2f = 8f.
          MoE: f = top_k * expert f + shared f (what one token's MLP work keeps), and the permuted tokens the
            experts' first linear keeps for its weight gradient, top_k copies of h (2 B each; 1 B under
            `fp8_inputs`). Under TP these are whole: the TP ranks of an expert gather their group's tokens; with
            `experts_whole` (each expert on one GPU, expert TP 1) a GPU's own tokens' (its sequence shard under SP).
          No dropout: no 1h masks; s x s part is the softmax output alone (2as instead of 5as).
          Flash attention (SDPA): no s x s matrix is kept (only O(s) statistics), so no as term.
          `fused_swiglu` (Megatron-Core's SwiGLUFunction keeps its input, recomputes SiLU): 4f + 2f = 6f.
          `fp8_inputs` (Transformer Engine's FP8 linears keep their inputs' FP8 casts): the two LN outputs and the
            down-projection's input at 1 B an element; the out-projection keeps an FP8 copy (1 B x q) beside
            the bf16 attention output that attention's backward reads.
          `fp8_recast_inputs` (FP8 linears that keep their bf16 inputs and cast them again in backward, as torchao's
            float8 does, under torch.compile): the inputs that backward only casts are recomputed there, fused into
            the cast, so the two LN outputs and the down-projection's input (the product of the activation) are not
            kept; the out-projection's is (attention's backward reads it). Measured by scripts/compiled_saved.py on
            an H100 at three widths: 11h, 12h and 9.4h a token fewer than the same block compiled in bf16, 4h + 2f
            (benchmarks/results/h100-compiled-block/saved). (A block rebuilt under full recompute is not smaller:
            its backward materialises those inputs again for the casts; `cost.memory.activation_bytes`.)
        Tensor parallelism divides what is sharded (QKV/MLP internals) by tp; sequence parallelism
        also divides the LN outputs, norm inputs and masks (the paper's 10h becomes 10h/t).
        Selective recompute drops the s x s part; full recompute keeps only the block input (2h).
        `recompute_modules` (Megatron-Core's, beside none or selective): "moe_act" keeps of the routed experts'
        activation its input alone (gate and up outputs, 4 B per element of their width); "layernorm" drops the
        two LN outputs (recomputed in backward from the norms' inputs, which are kept); "mla_up_proj" drops MLA's
        queries, keys and values (recomputed in backward from the latents, which are kept).
        Op-level selective recompute ("selective-op", torchtitan's `selective_ac_option = "op"`,
        torchtitan/models/llama/parallelize_llama.py `_save_list`) keeps the block input, the outputs
        of every other weight matmul in forward order (`block_matmuls`: the 1st, 3rd, ...), the
        attention output with its fp32 log-sum-exp, and the outputs of TP's reduce-scatters; the rest
        is recomputed in backward. A row-parallel matmul's output is the full-width partial sum.
        Layer-level selective recompute ("selective-layer", torchtitan's `selective_ac_option = "2"`,
        its default) recomputes every second block in full and keeps everything in the others: the
        mean of the two per block.
        """
        h, f = self.hidden_size, self.active_ffn_hidden_size
        q, k = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        v, out = self.num_kv_heads * self.v_head_dim, self.num_heads * self.v_head_dim
        s = seq_len or self.seq_len
        mask = 1 if self.dropout else 0
        if recompute == "full":
            return BYTES_BF16 * h / (tp if sequence_parallel else 1)
        if recompute == "selective-layer":
            shape = {"tp": tp, "sequence_parallel": sequence_parallel, "seq_len": s, "flash_attention": flash_attention}
            shape |= {"fused_swiglu": fused_swiglu, "fp8_inputs": fp8_inputs, "fp8_recast_inputs": fp8_recast_inputs}
            shape["experts_whole"] = experts_whole
            full = self.activation_bytes_per_token(**shape, recompute="full")
            return (full + self.activation_bytes_per_token(**shape)) / 2
        attention_share = 1 - self.linear_share
        if recompute == "selective-op":
            kept = 0.0
            for share, mixer in self.mixers:
                shapes = (m.per_gpu(1, tp, sequence_parallel) for m in self.block_matmuls(mixer=mixer)[::2])
                kept += share * sum(rows * width for rows, width, _ in shapes)  # outputs per token
            kept += h / (tp if sequence_parallel else 1) + attention_share * out / tp  # block input, attention output
            if tp > 1 and sequence_parallel:
                kept += 2 * h / tp  # reduce-scatter outputs after the out- and down-projections
            return float(BYTES_BF16 * kept + attention_share * FP32 * self.num_heads / tp)
        # Sharded by TP: Q, K, V, out-proj input (heads x the value head dim), and the gate's sigmoid and the
        # product where attention is gated; linear attention's instead in its blocks (`_linear_mixer_bytes`);
        # MLP internals.
        mlp_inner = (2 * f + 2 * f) if self.mlp == "gelu" else (6 if fused_swiglu else 8) * f
        attention = 2 * q + 2 * k + 2 * v + 2 * out + self.attention_gate * (2 * q + 2 * out)
        sharded = attention_share * attention + (1 - attention_share) * self._linear_mixer_bytes + mlp_inner
        linear_out = self.gated_delta.value_width if self.gated_delta else 0
        out_width = attention_share * out + (1 - attention_share) * linear_out
        linear_input = 2  # bytes per element of a linear's input kept for its weight gradient
        if fp8_inputs:
            linear_input = 1
            sharded += out_width - f  # the out-projection's FP8 copy; the down-projection's input in 1 B
        if "moe_act" in recompute_modules and self.moe is not None:  # the routed experts keep 4 B an element
            routed = self.moe.top_k * self.moe.expert_ffn_hidden_size * self.num_moe_layers / self.num_layers
            sharded -= ((6 if fused_swiglu else 8) - (1 if fp8_inputs else 0) - 4) * routed
        # Replicated without SP: LN outputs feeding attention and MLP (2h each), norm inputs (2h each), masks.
        if "mla_up_proj" in recompute_modules and self.mla:
            sharded -= 2 * q + 2 * k + 2 * v
        if fp8_recast_inputs:
            sharded -= 2 * f
        norm_outputs = 0 if "layernorm" in recompute_modules or fp8_recast_inputs else 2 * linear_input * h
        replicated = norm_outputs + 4 * h + mask * 2 * h + BYTES_BF16 * self.latent_width
        per_token = sharded / tp + replicated / (tp if sequence_parallel else 1)
        if self.moe is not None:  # each MoE block's permuted tokens, the experts' first linear's input
            permuted = linear_input * self.moe.top_k * h * self.num_moe_layers / self.num_layers
            per_token += permuted / (tp if experts_whole and sequence_parallel else 1)
        if recompute == "none" and not flash_attention:  # softmax 2as (+ dropout out 2as + mask as)
            per_token += attention_share * (2 + 3 * mask) * self.num_heads * s / tp
        return float(per_token)

    @cached_property
    def _linear_mixer_bytes(self) -> float:
        """Bytes per token a linear-attention mixer keeps for backward, all split over TP by heads (0 without
        one), as flash-linear-attention's autograd functions save them (fla 0.6.0):
          causal_conv1d: its input, q, k and v before the convolution, 2 B an element;
          chunk_gated_delta_rule: q and k after their L2 norm (2 B) with an fp32 reciprocal norm per key head
            each, v (2 B), the decay's chunk-local cumulative sum (fp32) and beta (2 B) per value head, and the
            inverted chunk matrix A, 64 entries (the chunk size) a token and value head in bf16;
          the decay, fp32 per value head: softplus's input and output;
          FusedRMSNormGated: the kernel's output and the gate (2 B each), an fp32 reciprocal norm per value head;
          out_proj: its input (2 B);
        and what an H100 measured beyond these (benchmarks/results/h100-gated-delta-53: 70,464 and 70,592 B a token
        for the whole mixer at hidden 2,048 and 4,096, 16 key / 32 value heads of 128, where the above give 62,144;
        the kernel alone kept exactly its part above): one more value-wide bf16 tensor and an fp32 value per value
        head, a copy not identified in FLA's code."""
        g = self.gated_delta
        if g is None:
            return 0.0
        kernel = 2 * 2 * g.key_width + 2 * FP32 * g.key_heads + 2 * g.value_width + (FP32 + 2 + 2 * 64) * g.value_heads
        norm = 2 * 2 * g.value_width + FP32 * g.value_heads
        measured = 2 * g.value_width + FP32 * g.value_heads
        return float(2 * g.conv_width + kernel + 2 * FP32 * g.value_heads + norm + 2 * g.value_width + measured)
