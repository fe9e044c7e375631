"""Build a `ModelSpec` from a Hugging Face `config.json` (plain data in, `ModelSpec` out).

Parameter counts follow each architecture's modelling code in `transformers` layer by layer
(checked against the meta-device model in tests/test_model_specs.py). The Llama family and its kin are read here; the
GPT family before Llama in hf_gpt.py, DeepSeek's latent-attention models in hf_mla.py.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from shardplan.errors import ModelSpecError, describe_validation
from shardplan.model.hf_gpt import GPT_FAMILY
from shardplan.model.hf_mla import mla_spec
from shardplan.model.hf_parts import Cfg, assemble, block_spec, heads_of, mlp_layer_types
from shardplan.model.schema import GatedDeltaSpec, ModelSpec, MoeSpec
from shardplan.textfile import read_text

SUPPORTED = (
    "llama",
    "mistral",
    "mixtral",
    "qwen2",
    "qwen2_moe",
    "qwen3",
    "qwen3_moe",
    "qwen3_next",
    "qwen3_5_text",
    "qwen3_5_moe_text",
    "gemma",
    "gemma2",
    "gemma3_text",
    "phi3",
    "gpt_oss",
    "llama4_text",
    "glm",
    "glm4",
    "cohere",
    "cohere2",
    "cohere2_moe",
    "starcoder2",
    "nemotron",
    "granite",
    "granite_swa",
    "granitemoe_swa",
    "smollm3",
    "ministral",
    "olmo2",
    "olmo3",
    "olmo_hybrid",
    "olmoe",
    "glm4_moe",
    "dots1",
    "phimoe",
    "seed_oss",
    "exaone4",
    "exaone_moe",
    "olmo",
    "ernie4_5",
    "ernie4_5_moe",
    "arcee",
    "apertus",
    "nanochat",
    "deepseek_v2",
    "deepseek_v3",
    *GPT_FAMILY,
)
_MOE = (
    *("mixtral", "qwen2_moe", "qwen3_moe", "gpt_oss", "olmoe", "glm4_moe", "dots1", "phimoe", "llama4_text"),
    *("ernie4_5_moe", "qwen3_next", "qwen3_5_moe_text", "exaone_moe", "cohere2_moe", "granitemoe_swa"),
)
# An attention-sink logit per head (not a matmul weight): transformers' GptOssAttention's and Granite SWA's `sinks`
_SINKS = ("gpt_oss", "granite_swa", "granitemoe_swa")
# A scalar sigmoid gate (h weights) on the shared expert's output
_SHARED_EXPERT_GATE = ("qwen2_moe", "qwen3_next", "qwen3_5_moe_text")
# Hybrids of Gated DeltaNet and softmax attention, by `layer_types` ("linear_attention" or "full_attention"; or every
# `full_attention_interval`-th block full, transformers' default): Qwen3-Next, Qwen3.5, whose softmax attention
# gates its output (`_GATED_ATTENTION`), and OLMo Hybrid (OLMo 3's attention blocks; in its linear ones q, k, v,
# the gate, a and b projected apart, as many weights as Qwen's fused projections, FLA's kernels)
_GATED_ATTENTION = ("qwen3_next", "qwen3_5_text", "qwen3_5_moe_text")
_GATED_DELTA_TYPES = (*_GATED_ATTENTION, "olmo_hybrid")
# attention_bias (or always, Qwen2) biases q, k, v, not o
_QKV_BIAS = ("qwen2", "qwen2_moe", "glm4_moe", "glm", "glm4", "seed_oss")
# Norm weights per block beyond Llama's two (input and post-attention RMSNorm, h each), in transformers' modelling
# code: Gemma's sandwich norms (two more of h); per-head q_norm / k_norm (head_dim each: Qwen3, Gemma 3); OLMo's
# q_norm / k_norm over whole projections (heads x head_dim, kv heads x head_dim), where its two norms of h stay.
_SANDWICH = ("gemma2", "gemma3_text", "glm4")
_HEAD_QK_NORM = ("qwen3", "qwen3_moe", "gemma3_text", "exaone4", "exaone_moe", "apertus", "dots1", *_GATED_ATTENTION)
_PROJECTION_QK_NORM = ("olmo2", "olmo3", "olmoe", "olmo_hybrid")
# the config class's tie_word_embeddings default
_TIED_BY_DEFAULT = (
    "gemma",
    "gemma2",
    "gemma3_text",
    "smollm3",
    "ernie4_5",
    "ernie4_5_moe",
    "cohere",
    "cohere2",
    "cohere2_moe",
    "starcoder2",
    "granite_swa",
)
# Types read as a supported one: other names of an architecture, and the language models of vision-language ones
# (their multimodal rotary positions aside: Qwen2-VL's and Qwen2.5-VL's are Qwen2's, Qwen3-VL's Qwen3's and Qwen3 MoE's)
_SAME_AS = {
    # Kimi K2 "reuses the DeepSeekV3CausalLM architecture" and names its own model_type only so that inference
    # engines can tell it apart (Moonshot's Kimi-K2 deployment guide, which suggests deepseek_v3 in its place)
    "kimi_k2": "deepseek_v3",
    # transformers' modelling code of these builds the same parameters as the type named (checked against it in
    # tests/test_model_specs.py): Ministral 3's is Mistral's, Helium's Llama's, Hunyuan's dense one Qwen3's (q and k
    # norms per head), MiniMax-M2's OLMoE's (q and k norms over whole projections, routed experts, no shared one),
    # Mistral 4's and GLM-4.7-Flash's (glm4_moe_lite) DeepSeek-V3's (latent attention, shared and routed experts)
    "ministral3": "mistral",
    "helium": "llama",
    "hunyuan_v1_dense": "qwen3",
    "minimax_m2": "olmoe",
    "granitemoe": "mixtral",  # Granite 3's MoE (its multipliers scale activations, not parameters)
    "internlm3": "llama",  # under its own names for the biases (`_FIELD_NAMES`)
    "granitemoeshared": "mixtral",  # Granite 3's MoE and an ungated shared expert of `shared_intermediate_size`
    # Hunyuan-A13B: q and k norms per head, routed experts and one ungated shared expert, all of intermediate_size
    # (HunYuanMoEV1Experts and HunYuanMoEV1MLP read it; the config's moe_intermediate_size is not read)
    "hunyuan_v1_moe": "qwen3_moe",
    "mistral4": "deepseek_v3",
    "glm4_moe_lite": "deepseek_v3",
    "qwen2_vl_text": "qwen2",
    "qwen2_5_vl_text": "qwen2",
    "qwen3_vl_text": "qwen3",
    "qwen3_vl_moe_text": "qwen3_moe",
    # Config classes subclassing the named type's, their modelling code built of its parts (transformers' modular
    # files): EXAONE 3.x's and IQuest-Coder's Llama's; Code World Model's Llama's with sliding blocks by
    # `layer_types`; Sarvam-M's MLA DeepSeek-V3's; Sarvam's MoE and Param-2 MoE GLM-4.5's; VaultGemma's Gemma 2's
    # without its post-norms, which is Gemma's; Mellum's Qwen3 MoE's with dense blocks by `mlp_layer_types`;
    # FlexOlmo's OLMoE's (its norms after attention and MLP as OLMo 2 places them, as many); Apertus 1.5's Apertus's;
    # Jais 2's Llama with LayerNorms and Nemotron's ungated ReLU^2 MLP, Nemotron's parameters
    "exaone": "llama",
    "iquestcoder": "llama",
    "cwm": "llama",
    "sarvam_mla": "deepseek_v3",
    "sarvam_moe": "glm4_moe",
    "param2moe": "glm4_moe",
    "vaultgemma": "gemma",
    "mellum": "qwen3_moe",
    "flex_olmo": "olmoe",
    "apertus1p5_text": "apertus",
    "jais2": "nemotron",
    # Youtu-LLM's config DeepSeek-V3's, MiniCPM3's Llama's with MLA's fields: MLA and a dense MLP in every block
    "youtu": "deepseek_v3",
    "minicpm3": "deepseek_v2",
    # Solar Open: GLM-4.5's config and experts, Llama's attention (no q/k norms, which GLM-4.5's `use_qk_norm` would
    # add), every block MoE (no dense width: `_COPIED_FIELDS`); 102.65 B parameters, 12.05 B active at its defaults
    "solar_open": "glm4_moe",
    # DBRX: Mixtral's parameters (fused Wqkv, weight-only LayerNorms, SwiGLU experts w1 / v1 / w2, a router without
    # bias) under its own field names, some in its `attn_config` and `ffn_config` (`_NESTED_FIELDS`)
    "dbrx": "mixtral",
}
# Config fields a type read as another names its own way (transformers' attribute_map of its config class)
_FIELD_NAMES = {
    "internlm3": {"qkv_bias": "attention_bias", "bias": "mlp_bias"},
    "dbrx": {
        **dict(d_model="hidden_size", n_heads="num_attention_heads", n_layers="num_hidden_layers"),
        **dict(max_seq_len="max_position_embeddings", kv_n_heads="num_key_value_heads"),
        **dict(ffn_hidden_size="intermediate_size", moe_num_experts="num_local_experts"),
        **dict(moe_top_k="num_experts_per_tok"),
    },
}
# Sub-objects whose fields a type reads as its own (the top level's win where both name one)
_NESTED_FIELDS = {"dbrx": ("attn_config", "ffn_config")}
# Fields a type read as another takes from another of its own, over what the config says (the width its modelling
# code reads)
_COPIED_FIELDS = {
    "solar_open": {"intermediate_size": "moe_intermediate_size"},
    "hunyuan_v1_moe": {
        "moe_intermediate_size": "intermediate_size",
        "shared_expert_intermediate_size": "intermediate_size",
    },
}
# Vision-language wrappers whose language model keeps its own output head, tied as its text_config says (transformers'
# Llama4ForConditionalGeneration holds a Llama4ForCausalLM); the others' head is the wrapper's, tied as it says.
_HEAD_IN_TEXT_MODEL = ("llama4",)
# MLPs of two matrices, up and down, without a gate: ReLU^2 (Arcee, Nemotron, nanochat), xIELU with two learned
# scalars (Apertus), GELU (StarCoder2, whose `use_bias` biases every linear)
_UNGATED = {"arcee": 0, "apertus": 2, "starcoder2": 0, "nemotron": 0, "nanochat": 0}
# LayerNorms with a bias (2h a norm) where the others have an RMSNorm's weight (h): StarCoder2's, Nemotron's LayerNorm1P
_LAYERNORM = ("starcoder2", "nemotron", "phimoe")
# Norms without weights (OLMo 1's non-parametric OlmoLayerNorm, nanochat's RMSNorm, its q and k norms too): no norm
# parameters at all
_NORM_FREE = ("olmo", "nanochat")
# MoE types with DeepSeek's layout of experts: `n_shared_experts` shared ones of the routed ones' width
_DEEPSEEK_EXPERTS = ("glm4_moe", "dots1", "ernie4_5_moe", "exaone_moe", "cohere2_moe")
# Types whose `use_bias` biases every linear (StarCoder2's by default)
_USE_BIAS = ("starcoder2", "ernie4_5", "ernie4_5_moe")
# One norm before attention and MLP side by side (Cohere's parallel block), where Llama has one before each
_PARALLEL_BLOCK = ("cohere", "cohere2", "cohere2_moe")
# Types refused for blocks the cost model has no measured time or memory for (note 52 of issue 5)
_NOT_MODELLED = {
    "kimi_linear": "Kimi Delta Attention (linear-attention) blocks",
    "nemotron_h": "Mamba-2 blocks",
    "granitemoehybrid": "Mamba-2 blocks",
    "falcon_h1": "Mamba-2 heads",
    "deepseek_v32": "DeepSeek Sparse Attention blocks",
    "gemma4_text": "per-layer input embeddings and global blocks of another head width",
    "deepseek_v4": "compressed sparse attention blocks",
    "glm_moe_dsa": "DeepSeek Sparse Attention blocks",
    "hy_v4": "DeepSeek Sparse Attention blocks",
    "bailing_hybrid": "linear-attention blocks",
    "minimax": "lightning (linear) attention blocks",
    "lfm2": "short-convolution blocks",
    "lfm2_moe": "short-convolution blocks",
    "zaya": "convolutional attention blocks",
    **dict.fromkeys(("mamba", "mamba2", "falcon_mamba", "bamba", "jamba", "zamba", "zamba2"), "Mamba blocks"),
    "rwkv": "RWKV blocks",
    "xlstm": "xLSTM blocks",
    "recurrent_gemma": "RG-LRU recurrent blocks",
}
# Models whose config-wide `sliding_window` (where set) bounds every block's attention, without `layer_types`
_EVERY_BLOCK_SLIDING = ("mistral", "mixtral", "starcoder2", "phimoe")


def read_config(path: Path) -> dict[str, Any]:
    """The JSON object in a `config.json` file (or in a directory holding one)."""
    file = path / "config.json" if path.is_dir() else path
    text = read_text(file, ModelSpecError)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelSpecError(f"{file}: line {exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise ModelSpecError(f"{file}: expected a JSON object, found {type(data).__name__}")
    return data


def spec_from_config(data: dict[str, Any], source: str, name: str | None = None) -> ModelSpec:
    """A `ModelSpec` for a config of one of the `SUPPORTED` model types, or of a vision-language model whose
    `text_config` is one (Gemma 3, Mistral 3, ...): its language model, the vision tower and projector left out."""
    model_type = data.get("model_type")
    if not isinstance(model_type, str) and not isinstance(data.get("text_config"), dict):
        found = "none" if model_type is None else repr(model_type)
        raise ModelSpecError(f'{source}: model_type: expected a name such as "llama", found {found}')
    if model_type in _SAME_AS:
        return _read_as_another(data, model_type, source, name or model_type)
    if model_type not in SUPPORTED and isinstance(data.get("text_config"), dict):
        text = dict(data["text_config"])
        if "tie_word_embeddings" in data and model_type not in _HEAD_IN_TEXT_MODEL:
            text["tie_word_embeddings"] = data["tie_word_embeddings"]  # the wrapper's own head, tied as it says
        return spec_from_config(text, f"{source}: text_config", name or f"{model_type} language model")
    if model_type not in SUPPORTED:
        why = f": its {_NOT_MODELLED[model_type]} are not in the cost model yet" if model_type in _NOT_MODELLED else ""
        raise ModelSpecError(
            f"{source}: model_type: {model_type!r} is not supported{why} (supported: "
            f"{', '.join([*SUPPORTED, *_SAME_AS])}); for other architectures build the model on the meta device "
            "and use model_from_module(module)"
        )
    c = Cfg(data, source)
    try:
        if model_type in GPT_FAMILY:
            return GPT_FAMILY[model_type](c, name or model_type)
        if model_type.startswith("deepseek"):
            return mla_spec(c, model_type, name or model_type)
        return _llama_like(c, model_type, name or model_type)
    except ValidationError as err:
        raise ModelSpecError(f"{source}: {describe_validation(err)}") from None


def _read_as_another(data: dict[str, Any], model_type: str, source: str, name: str) -> ModelSpec:
    """A config of a type in `_SAME_AS`, read as the type named there: its sub-objects' fields and its own names for
    fields taken in; an error names a field as this config does (`attn_config.kv_n_heads`, not
    `num_key_value_heads`)."""
    nested, shown = {}, {}
    for field in _NESTED_FIELDS.get(model_type, ()):
        sub = data.get(field, {})
        if not isinstance(sub, dict):
            raise ModelSpecError(f"{source}: {field}: expected an object of fields, found {sub!r}")
        nested |= sub
        shown |= {key: f"{field}.{key}" for key in sub if key not in data}
    names = _FIELD_NAMES.get(model_type, {})
    renamed = {names.get(key, key): value for key, value in (nested | data).items()}
    shown = {names.get(key, key): shown.get(key, key) for key in [*names, *shown]}
    for to, of in _COPIED_FIELDS.get(model_type, {}).items():
        if of in renamed:
            renamed[to], shown[to] = renamed[of], shown.get(of, of)
    try:
        return spec_from_config({**renamed, "model_type": _SAME_AS[model_type]}, source, name)
    except ModelSpecError as err:
        prefix, _, rest = str(err).removeprefix(f"{source}: ").partition(":")
        if str(err).startswith(f"{source}: ") and prefix in shown and shown[prefix] != prefix:
            raise ModelSpecError(f"{source}: {shown[prefix]}:{rest}") from None
        raise


def _attention_kinds(c: Cfg, model_type: str, layers: int) -> list[tuple[int | None, int | None]]:
    """Each block's (attention window, chunk): `sliding_window` keys where `layer_types` names the block
    "sliding_attention" (transformers' convention: gemma2, gpt_oss, qwen2/3 past max_window_layers) or in every
    block where the model type applies it to all (`_EVERY_BLOCK_SLIDING`), its chunk of `attention_chunk_size`
    where `layer_types` names it "chunked_attention" (llama4_text), else neither."""
    kinds = c.data.get("layer_types") or []
    if not isinstance(kinds, list) or not all(isinstance(kind, str) for kind in kinds):
        found = f"found {kinds!r}"
        raise ModelSpecError(f"{c.source}: layer_types: expected a list of attention kinds, one per block, {found}")
    if not kinds and model_type in _EVERY_BLOCK_SLIDING and c.data.get("sliding_window") is not None:
        kinds = ["sliding_attention"] * layers
    if c.data.get("use_sliding_window") is False:
        kinds = ["full_attention" if kind == "sliding_attention" else kind for kind in kinds]
    if not {"sliding_attention", "chunked_attention"} & set(kinds):
        return [(None, None)] * layers
    if len(kinds) != layers:
        raise ModelSpecError(f"{c.source}: layer_types: {len(kinds)} entries for {layers} num_hidden_layers")
    window = c.int("sliding_window") if "sliding_attention" in kinds else None
    chunk = c.int("attention_chunk_size") if "chunked_attention" in kinds else None
    return [
        (window if kind == "sliding_attention" else None, chunk if kind == "chunked_attention" else None)
        for kind in kinds
    ]


def _layer_list(c: Cfg, name: str, layers: int) -> set[int]:
    """A config field that lists block indexes (0 .. layers - 1)."""
    value = c.data.get(name)
    if not isinstance(value, list) or not all(isinstance(k, int) and 0 <= k < layers for k in value):
        raise ModelSpecError(f"{c.source}: {name}: expected a list of block indexes below {layers}, found {value!r}")
    return set(value)


def _llama_like(c: Cfg, model_type: str, name: str) -> ModelSpec:
    h = c.int("hidden_size")
    vocab = c.int("vocab_size")
    layers = c.int("num_hidden_layers")
    heads, kv, hd = heads_of(c, h)
    # Qwen3.5 MoE has no dense MLP, and no intermediate_size: its experts' width stands in
    ffn = c.int("intermediate_size", *(["moe_intermediate_size"] if model_type == "qwen3_5_moe_text" else []))
    expert_width = None
    if model_type == "llama4_text":  # intermediate_size is each expert's width, intermediate_size_mlp the dense MLP's
        expert_width, ffn = ffn, c.int("intermediate_size_mlp")
    if model_type == "cohere2_moe":  # intermediate_size is each expert's, the leading dense blocks' their own
        expert_width, ffn = ffn, c.int("prefix_dense_intermediate_size", default=ffn)
    # `use_bias` biases every linear: StarCoder2's by default, ERNIE 4.5's where set (its routed experts excepted)
    biased = c.flag("use_bias", model_type == "starcoder2") if model_type in _USE_BIAS else False
    attention_bias = biased or c.flag("attention_bias", model_type in ("glm", "glm4"))
    qkv_bias = model_type in ("qwen2", "qwen2_moe") or attention_bias
    mlp_bias = biased or c.flag("mlp_bias", False)
    tied = c.flag("tie_word_embeddings", model_type in _TIED_BY_DEFAULT)
    # attention: q (h x heads*hd), k and v (h x kv*hd each), o (heads*hd x h); gated: q_proj twice as wide
    linear, gate = model_type in _GATED_DELTA_TYPES, model_type in _GATED_ATTENTION
    attn = (2 if gate else 1) * h * heads * hd + 2 * h * kv * hd + heads * hd * h
    attn_bias = (heads * hd + 2 * kv * hd) if qkv_bias else 0
    if attention_bias and model_type not in _QKV_BIAS:
        attn_bias += h  # llama's attention_bias also biases o_proj
    norm = 2 * h if model_type in _LAYERNORM else 0 if model_type in _NORM_FREE else h  # a norm's weight (and bias)
    norms = (4 if model_type in _SANDWICH else 1 if model_type in _PARALLEL_BLOCK else 2) * norm
    head_qk_norm = model_type in _HEAD_QK_NORM or (model_type == "glm4_moe" and c.flag("use_qk_norm", False))
    # Command R+'s use_qk_norm: a LayerNorm weight over every head of q and of k (CohereLayerNorm((heads, hd)))
    projection_qk_norm = model_type in _PROJECTION_QK_NORM or (model_type == "cohere" and c.flag("use_qk_norm", False))
    qk_norms = 2 * hd if head_qk_norm else (heads + kv) * hd if projection_qk_norm else 0
    gated = model_type not in _UNGATED
    mlp_biases = ((2 * ffn if gated else ffn) + h) if mlp_bias else 0
    dense_mlp = (3 if gated else 2) * h * ffn + mlp_biases  # gate, up (h x f), down (f x h)
    norms += _UNGATED.get(model_type, 0)
    norms += heads if model_type in _SINKS else 0
    moe = None
    mixers = {"attention": (attn + attn_bias + qk_norms, attn_bias + qk_norms)}  # params, of them not matmul weights
    gated_delta = _gated_delta(c) if linear else None
    if gated_delta is not None:
        mixers["gated_delta"] = _gated_delta_params(gated_delta, h)
    mlp = {False: (dense_mlp, dense_mlp, mlp_biases, 0)}  # total, active, free, experts
    is_moe = [False] * layers
    if model_type in _MOE:
        ernie = model_type == "ernie4_5_moe"
        experts = c.int("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
        top_k = c.int("num_experts_per_tok", "moe_k", "moe_topk")  # moe_topk: hunyuan_v1_moe's
        expert_ffn = expert_width or c.int("moe_intermediate_size", default=ffn)
        # shared_intermediate_size: granitemoeshared's (an ungated shared expert)
        shared_ffn = c.int("shared_expert_intermediate_size", "shared_intermediate_size", default=0, positive=False)
        if model_type == "llama4_text":  # one shared expert of the routed ones' width (Llama4TextMoe)
            shared_ffn = expert_ffn
        shared_count = 1 if shared_ffn else 0
        if model_type in _DEEPSEEK_EXPERTS:  # DeepSeek's layout: n shared ones of the routed ones' width
            shared_count = c.int(
                "n_shared_experts", "moe_num_shared_experts", "num_shared_experts", default=0, positive=False
            )
            shared_ffn = shared_count * expert_ffn
        grouped = model_type in ("glm4_moe", "dots1")  # group-limited routing (n_group, topk_group), as DeepSeek-V3's
        moe = MoeSpec(
            num_experts=experts,
            top_k=top_k,
            expert_ffn_hidden_size=expert_ffn,
            shared_experts=shared_count,
            shared_ffn_hidden_size=shared_ffn,
            shared_expert_gate=model_type in _SHARED_EXPERT_GATE,
            groups=c.int("n_group", default=1) if grouped else 1,
            top_groups=c.int("topk_group", default=1) if grouped else 1,
        )
        # gpt_oss biases its router and each expert's fused gate-up (2f) and down (h) projections; ERNIE 4.5's
        # router keeps its score-correction bias as a parameter (moe_statics), its shared experts `use_bias`'s
        biases = (experts, 2 * expert_ffn + h) if model_type == "gpt_oss" else (experts, 0) if ernie else (0, 0)
        shared_bias = (2 * shared_ffn + h) if ernie and mlp_bias and shared_ffn else 0
        router = h * experts + biases[0]
        expert = 3 * h * expert_ffn + biases[1]
        shared = 3 * h * shared_ffn + (h if model_type in _SHARED_EXPERT_GATE and shared_ffn else 0) + shared_bias
        mlp[True] = (
            router + experts * expert + shared,
            router + top_k * expert + shared,
            biases[0] + top_k * biases[1] + shared_bias,
            experts * expert,
        )
        step = c.int("decoder_sparse_step", "interleave_moe_layer_step", default=1)
        dense_layers = _layer_list(c, "mlp_only_layers", layers) if c.data.get("mlp_only_layers") else set()
        dense_layers |= set(range(c.int("first_k_dense_replace", default=0, positive=False)))
        is_moe = [(k not in dense_layers) and (k + 1) % step == 0 for k in range(layers)]
        if model_type == "qwen3_5_moe_text":  # every block routed (Qwen3_5MoeDecoderLayer), whatever the two say
            is_moe = [True] * layers
        if c.data.get("mlp_layer_types") is not None:  # transformers 5's per-block list (EXAONE MoE)
            is_moe = [kind == "sparse" for kind in mlp_layer_types(c, layers)]
        if c.data.get("moe_layers") is not None:  # llama4_text names them, overriding the step
            routed_layers = _layer_list(c, "moe_layers", layers)
            is_moe = [k in routed_layers for k in range(layers)]
        if ernie:  # every moe_layer_interval-th block from the start index to the end index, both included
            interval = c.int("moe_layer_interval", default=1)
            start = c.int("moe_layer_start_index", default=0, positive=False)
            end = c.int("moe_layer_end_index", default=layers - 1, positive=False)
            end += layers if end < 0 else 0
            is_moe = [(k + 1) % interval == 0 and start <= k <= end for k in range(layers)]
    # one LayerSpec per kind of block (MoE or dense MLP, attention window, mixer) as first met, and each block's kind
    attention = _attention_kinds(c, model_type, layers)
    kinds = list(zip(is_moe, attention, _linear_blocks(c, layers) if linear else ["attention"] * layers, strict=True))
    order = tuple(map(list(Counter(kinds)).index, kinds))
    blocks = [
        block_spec(
            "moe block" if routed else ("dense block" if moe else "transformer block"),
            count,
            params=norms + mixers[mixer][0] + mlp[routed][0],
            active=norms + mixers[mixer][0] + mlp[routed][1],
            h=h,
            heads=heads,
            head_dim=hd,
            embedding_free=norms + mixers[mixer][1] + mlp[routed][2],
            experts=mlp[routed][3],
            window=window,
            chunk=chunk,
            linear=gated_delta if mixer == "gated_delta" else None,
        )
        for (routed, (window, chunk), mixer), count in Counter(kinds).items()
    ]
    return assemble(
        c,
        name,
        model_type,
        vocab=vocab,
        h=h,
        layers=layers,
        heads=heads,
        kv=kv,
        hd=hd,
        ffn=ffn,
        moe=moe,
        tied=tied,
        final_norm=norm,
        blocks=blocks,
        mlp="swiglu" if gated else "gelu",  # "gelu": an MLP of two matrices, whatever its activation
        sinks=model_type in _SINKS,
        block_order=None if list(order) == sorted(order) else order,
        # ERNIE 4.5 MoE's lm_head takes `use_bias` (its dense model's not), PhiMoE's `lm_head_bias`
        head_bias=biased if model_type == "ernie4_5_moe" else model_type == "phimoe" and c.flag("lm_head_bias", False),
        gated_delta=gated_delta,
        attention_gate=gate,
    )


def _gated_delta(c: Cfg) -> GatedDeltaSpec:
    """The linear attention of the "linear_attention" blocks of Qwen3-Next, Qwen3.5 and OLMo Hybrid, from their
    config's fields."""
    key_heads, value_heads = c.int("linear_num_key_heads"), c.int("linear_num_value_heads")
    if value_heads % key_heads:
        raise ModelSpecError(
            f"{c.source}: linear_num_value_heads: {value_heads} is not a multiple of linear_num_key_heads {key_heads}"
        )
    return GatedDeltaSpec(
        key_heads=key_heads,
        value_heads=value_heads,
        key_head_dim=c.int("linear_key_head_dim"),
        value_head_dim=c.int("linear_value_head_dim"),
        conv_kernel=c.int("linear_conv_kernel_dim"),
    )


def _gated_delta_params(g: GatedDeltaSpec, h: int) -> tuple[int, int]:
    """(parameters, of them not matmul weights) of a Gated DeltaNet mixer (transformers' Qwen3_5GatedDeltaNet): the
    input projections of q, k, v, the gate z, beta and the decay's input a (h x each); the depthwise convolution
    (one filter of `conv_kernel` per channel, no bias); dt_bias and A_log (one per value head); the gated norm's
    weight (the value head dim, shared by the heads); the output projection."""
    free = g.conv_width * g.conv_kernel + 2 * g.value_heads + g.value_head_dim
    return h * (g.conv_width + g.value_width + 2 * g.value_heads) + g.value_width * h + free, free


def _linear_blocks(c: Cfg, layers: int) -> list[str]:
    """Each block's mixer, "gated_delta" or "attention", from `layer_types` ("linear_attention" or
    "full_attention") or, where a config has none, every `full_attention_interval`-th block softmax attention
    (transformers' Qwen3NextConfig and Qwen3_5TextConfig, 4 by default)."""
    kinds = c.data.get("layer_types")
    if kinds is None:
        interval = c.int("full_attention_interval", default=4)
        return ["attention" if (k + 1) % interval == 0 else "gated_delta" for k in range(layers)]
    if not isinstance(kinds, list) or len(kinds) != layers or not set(kinds) <= {"linear_attention", "full_attention"}:
        raise ModelSpecError(
            f'{c.source}: layer_types: expected "linear_attention" or "full_attention" for each of {layers} blocks'
        )
    return ["gated_delta" if kind == "linear_attention" else "attention" for kind in kinds]
