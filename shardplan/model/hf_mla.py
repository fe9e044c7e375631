"""DeepSeek-V2 and -V3 configs (and the types read as them) as `ModelSpec`s: multi-head latent attention, with
DeepSeek's layout of experts or a dense MLP in every block."""

from __future__ import annotations

from shardplan.errors import ModelSpecError
from shardplan.model.hf_parts import Cfg, assemble, block_spec, mlp_layer_types
from shardplan.model.schema import MlaSpec, ModelSpec, MoeSpec


def _leading_dense(c: Cfg, layers: int) -> int:
    """How many blocks `mlp_layer_types` (one "dense" or "sparse" per block) opens with dense MLPs; the others must
    all be sparse, as DeepSeek's layout of blocks has them."""
    kinds = mlp_layer_types(c, layers)
    dense = next((k for k, kind in enumerate(kinds) if kind == "sparse"), layers)
    if "dense" in kinds[dense:]:
        block = kinds.index("dense", dense)
        raise ModelSpecError(f"{c.source}: mlp_layer_types: block {block} is dense after a sparse one (not supported)")
    return dense


def mla_spec(c: Cfg, model_type: str, name: str) -> ModelSpec:
    """DeepSeek-V2/V3 (transformers' modeling_deepseek_v2/v3): multi-head latent attention (`MlaSpec`) in every
    block, a dense SwiGLU MLP in the first `first_k_dense_replace` blocks and a MoE in the others (a router
    whose weight is a parameter and whose score-correction bias a buffer, routed experts without biases, and
    `n_shared_experts` shared ones as one MLP). Multi-token prediction layers (`num_nextn_predict_layers`) are
    left out, as transformers leaves them out. A config without `n_routed_experts` has the dense MLP in every block
    (MLA with Llama's MLP: MiniCPM3, Youtu-LLM)."""
    h, vocab, layers = c.int("hidden_size"), c.int("vocab_size"), c.int("num_hidden_layers")
    heads = c.int("num_attention_heads")
    q_lora = 0 if c.data.get("q_lora_rank") is None else c.int("q_lora_rank")  # None: Q projected directly
    mla = MlaSpec(
        q_lora_rank=q_lora or None,
        kv_lora_rank=c.int("kv_lora_rank"),
        qk_nope_head_dim=c.int("qk_nope_head_dim"),
        qk_rope_head_dim=c.int("qk_rope_head_dim"),
        v_head_dim=c.int("v_head_dim"),
    )
    qk = mla.qk_nope_head_dim + mla.qk_rope_head_dim
    bias = c.flag("attention_bias", False)  # on the down-projections and the out-projection
    query = (h * q_lora + q_lora * heads * qk) if q_lora else h * heads * qk
    kv_down = mla.kv_lora_rank + mla.qk_rope_head_dim
    attn = query + h * kv_down + mla.kv_lora_rank * heads * (mla.qk_nope_head_dim + mla.v_head_dim)
    attn += heads * mla.v_head_dim * h
    attn_bias = ((kv_down + h) if bias else 0) + (q_lora if bias and q_lora else 0)
    norms = 2 * h + (q_lora or 0) + mla.kv_lora_rank  # two block norms, the latents' norms
    common, free = attn + attn_bias + norms, attn_bias + norms
    ffn, mlp_bias = c.int("intermediate_size"), c.flag("mlp_bias", False)

    def mlp(width: int) -> tuple[int, int]:
        """A SwiGLU MLP's parameters, and of them its biases."""
        biases = (2 * width + h) if mlp_bias else 0
        return 3 * h * width + biases, biases

    dense_params, dense_free = mlp(ffn)
    moe, dense, moe_kinds = None, layers, []
    if c.data.get("n_routed_experts") is not None:
        experts, expert_ffn = c.int("n_routed_experts"), c.int("moe_intermediate_size")
        top_k, shared = c.int("num_experts_per_tok"), c.int("n_shared_experts", default=0, positive=False)
        # group-limited routing: DeepSeek-V3's (noaux_tc) always, DeepSeek-V2's where its topk_method says so
        grouped = model_type == "deepseek_v3" or c.data.get("topk_method") == "group_limited_greedy"
        moe = MoeSpec(
            num_experts=experts,
            top_k=top_k,
            expert_ffn_hidden_size=expert_ffn,
            shared_experts=shared,
            shared_ffn_hidden_size=shared * expert_ffn,
            groups=c.int("n_group", default=1) if grouped else 1,
            top_groups=c.int("topk_group", default=1) if grouped else 1,
        )
        router, expert = h * experts, 3 * h * expert_ffn
        shared_params, shared_free = mlp(shared * expert_ffn) if shared else (0, 0)
        dense = min(c.int("first_k_dense_replace", default=0, positive=False), layers)
        if c.data.get("mlp_layer_types") is not None:  # transformers 5's per-block list, where a config has it
            dense = _leading_dense(c, layers)
        total, active = router + experts * expert + shared_params, router + top_k * expert + shared_params
        moe_kinds = [("moe block", layers - dense, total, active, shared_free, experts * expert)]
    kinds = [("dense block", dense, dense_params, dense_params, dense_free, 0), *moe_kinds]
    blocks = [
        block_spec(
            block,
            count,
            params=common + total,
            active=common + active,
            h=h,
            heads=heads,
            head_dim=qk,
            v_head_dim=mla.v_head_dim,
            embedding_free=free + mlp_free,
            experts=routed,
        )
        for block, count, total, active, mlp_free, routed in kinds
        if count
    ]
    return assemble(
        c,
        name,
        model_type,
        vocab=vocab,
        h=h,
        layers=layers,
        heads=heads,
        kv=heads,
        hd=qk,
        ffn=ffn,
        moe=moe,
        tied=c.flag("tie_word_embeddings", False),
        blocks=blocks,
        mla=mla,
    )
