"""ModelSpec: exact parameter counts against `transformers` (a test-only oracle, meta device, no
weights), FLOPs against the analytic count and FlopCounterMode, activation memory against
Korthikanti et al. 2022, and clear errors for bad configs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import DATA

from shardplan.errors import ModelSpecError
from shardplan.model import SUPPORTED, load_model, model_from_module
from shardplan.model.hf_config import spec_from_config
from shardplan.model.presets import read_model_preset

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

_COMMON = {"vocab_size": 1000, "max_position_embeddings": 256}
# Small configs of every supported model_type; odd sizes so that no count matches by accident.
_DENSE = {"hidden_size": 96, "intermediate_size": 200}
TINY: dict[str, dict] = {
    "llama": {
        "hidden_size": 96,
        "intermediate_size": 200,
        "num_hidden_layers": 3,
        "num_attention_heads": 6,
        "num_key_value_heads": 2,
        "tie_word_embeddings": False,
    },
    "mistral": {
        "hidden_size": 96,
        "intermediate_size": 200,
        "num_hidden_layers": 2,
        "num_attention_heads": 6,
        "num_key_value_heads": 3,
    },
    "mixtral": {
        "hidden_size": 64,
        "intermediate_size": 120,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
    },
    "qwen2": {
        "hidden_size": 96,
        "intermediate_size": 200,
        "num_hidden_layers": 2,
        "num_attention_heads": 6,
        "num_key_value_heads": 2,
        "tie_word_embeddings": True,
    },
    "qwen2_moe": {
        "hidden_size": 64,
        "intermediate_size": 160,
        "moe_intermediate_size": 40,
        "shared_expert_intermediate_size": 80,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "num_experts": 6,
        "num_experts_per_tok": 2,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [1],
    },
    "qwen3": {
        "hidden_size": 96,
        "intermediate_size": 200,
        "num_hidden_layers": 2,
        "num_attention_heads": 6,
        "num_key_value_heads": 2,
        "head_dim": 32,
    },
    "qwen3_moe": {
        "hidden_size": 64,
        "intermediate_size": 160,
        "moe_intermediate_size": 48,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "num_experts": 8,
        "num_experts_per_tok": 2,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [2],
    },
    # hybrids of Gated DeltaNet and gated attention: key and value head dims unlike each other and the attention's
    "qwen3_next": {
        **dict(hidden_size=64, intermediate_size=96, moe_intermediate_size=24, shared_expert_intermediate_size=32),
        **dict(num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_experts=6),
        **dict(num_experts_per_tok=2, decoder_sparse_step=1, mlp_only_layers=[1], full_attention_interval=2),
        **dict(linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=8, linear_value_head_dim=12),
        "linear_conv_kernel_dim": 3,
    },
    "gemma": {**_DENSE, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 40},
    "gemma2": {
        "hidden_size": 96,
        "intermediate_size": 200,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 40,
    },
    "phi3": {
        "hidden_size": 96,
        "intermediate_size": 200,
        "num_hidden_layers": 2,
        "num_attention_heads": 6,
        "num_key_value_heads": 2,
        "pad_token_id": 0,
    },
    "gpt_oss": {
        "hidden_size": 72,
        "intermediate_size": 56,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 24,
        "num_local_experts": 5,
        "num_experts_per_tok": 2,
        "sliding_window": 16,
        "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
    },
    # Llama 4 Maverick's arrangement: MoE in every second block (a shared expert beside top-1 of the routed ones),
    # dense MLPs of another width between them, chunked attention but in every fourth block
    "llama4_text": {
        "hidden_size": 96,
        "intermediate_size": 40,
        "intermediate_size_mlp": 200,
        "num_hidden_layers": 8,
        "num_attention_heads": 6,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "num_local_experts": 5,
        "num_experts_per_tok": 1,
        "interleave_moe_layer_step": 2,
        "attention_chunk_size": 32,
    },
    "glm4": {
        **_DENSE,
        "num_hidden_layers": 3,
        "num_attention_heads": 6,
        "num_key_value_heads": 2,
        "head_dim": 20,
        "pad_token_id": None,  # its default lies beyond the tiny vocabulary
    },
    "cohere": {
        **_DENSE,
        **dict(num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2, use_qk_norm=True),  # Command R+'s
    },
    "cohere2": {
        **_DENSE,
        "num_hidden_layers": 4,
        "num_attention_heads": 6,
        "num_key_value_heads": 2,
        "sliding_window": 16,
        "layer_types": ["sliding_attention"] * 3 + ["full_attention"],
    },
    # Command A's MoE: Cohere 2's attention, a leading dense block of its own width, DeepSeek's layout of experts
    "cohere2_moe": {
        **dict(hidden_size=96, intermediate_size=40, prefix_dense_intermediate_size=200, first_k_dense_replace=1),
        **dict(num_hidden_layers=4, num_attention_heads=6, num_key_value_heads=2, sliding_window=16),
        **dict(num_experts=6, num_experts_per_tok=2, num_shared_experts=1, attention_bias=True),
    },
    # Granite 4's sliding-window models: Granite's and Granite MoE's blocks with an attention sink per head
    "granite_swa": {**_DENSE, "num_hidden_layers": 2, "num_attention_heads": 6, "num_key_value_heads": 2}
    | {"sliding_window": 16, "layer_types": ["full_attention", "sliding_attention"]},
    "granitemoe_swa": {**_DENSE, "num_hidden_layers": 2, "num_attention_heads": 6, "num_key_value_heads": 2}
    | {"sliding_window": 16, "layer_types": ["sliding_attention", "full_attention"], "num_local_experts": 5},
    "glm": {**_DENSE, "num_hidden_layers": 2, "num_attention_heads": 6, "num_key_value_heads": 2, "head_dim": 20}
    | {"pad_token_id": None},  # its default lies beyond the tiny vocabulary
    "starcoder2": {**_DENSE, "num_hidden_layers": 3, "num_attention_heads": 6, "num_key_value_heads": 2},
    "nemotron": {**_DENSE, "num_hidden_layers": 2, "num_attention_heads": 6, "num_key_value_heads": 2, "head_dim": 16},
    "deepseek_v3": {
        "hidden_size": 96,
        "intermediate_size": 200,
        "moe_intermediate_size": 40,
        "num_hidden_layers": 3,
        "num_attention_heads": 6,
        "num_key_value_heads": 6,
        "n_routed_experts": 5,
        "n_shared_experts": 1,
        "num_experts_per_tok": 2,
        "first_k_dense_replace": 1,
        "q_lora_rank": 40,
        "kv_lora_rank": 24,
        "qk_nope_head_dim": 16,
        "qk_rope_head_dim": 8,
        "v_head_dim": 12,
        "attention_bias": True,
        "n_group": 1,
        "topk_group": 1,
    },
    "gemma3_text": {
        **_DENSE,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 40,
        "sliding_window": 16,
        "layer_types": ["sliding_attention", "sliding_attention", "full_attention"],
    },
    "granite": {
        **_DENSE,
        "num_hidden_layers": 2,
        "num_attention_heads": 6,
        "num_key_value_heads": 2,
        "attention_bias": True,
        "tie_word_embeddings": True,
    },
    "smollm3": {
        **_DENSE,
        "num_hidden_layers": 4,
        "num_attention_heads": 6,
        "num_key_value_heads": 3,
        "pad_token_id": 0,
    },
    "ministral": {
        **_DENSE,
        "num_hidden_layers": 2,
        "num_attention_heads": 6,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "sliding_window": 32,
        "layer_types": ["sliding_attention", "full_attention"],
    },
    "olmo2": {
        **_DENSE,
        "num_hidden_layers": 2,
        "num_attention_heads": 6,
        "num_key_value_heads": 2,
    },
    "olmo3": {
        **_DENSE,
        "num_hidden_layers": 4,
        "num_attention_heads": 6,
        "num_key_value_heads": 3,
        "sliding_window": 16,
        "layer_types": ["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"],
    },
    "olmoe": {
        "hidden_size": 64,
        "intermediate_size": 40,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "num_experts": 6,
        "num_experts_per_tok": 2,
    },
    "glm4_moe": {
        "hidden_size": 64,
        "intermediate_size": 160,
        "moe_intermediate_size": 24,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 24,
        "n_routed_experts": 6,
        "n_shared_experts": 2,
        "num_experts_per_tok": 2,
        "first_k_dense_replace": 1,
        "n_group": 2,
        "topk_group": 1,
        "attention_bias": True,
        "use_qk_norm": True,
    },
    "seed_oss": {
        **_DENSE,
        "num_hidden_layers": 2,
        "num_attention_heads": 6,
        "num_key_value_heads": 2,
        "head_dim": 24,
        "attention_bias": True,
    },
    "exaone4": {
        **_DENSE,
        "num_hidden_layers": 4,
        "num_attention_heads": 6,
        "num_key_value_heads": 2,
        "sliding_window": 16,
        "layer_types": ["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"],
    },
    "ernie4_5": {
        **_DENSE,
        "num_hidden_layers": 2,
        "num_attention_heads": 6,
        "num_key_value_heads": 2,
        "head_dim": 16,
    },
    "ernie4_5_moe": {
        **_DENSE,
        **dict(num_hidden_layers=5, num_attention_heads=6, num_key_value_heads=2, head_dim=16),
        # routed blocks 1 and 3 (every second from index 1 to 3), two shared experts of the routed width
        **dict(moe_intermediate_size=24, moe_num_experts=6, moe_k=2, moe_num_shared_experts=2),
        **dict(moe_layer_start_index=1, moe_layer_end_index=3, moe_layer_interval=2),
    },
    "dots1": {
        **dict(hidden_size=64, intermediate_size=160, moe_intermediate_size=24, num_hidden_layers=3),
        **dict(num_attention_heads=4, num_key_value_heads=2, head_dim=24, n_routed_experts=6, n_shared_experts=2),
        **dict(num_experts_per_tok=2, first_k_dense_replace=1, n_group=2, topk_group=1, attention_bias=True),
    },
    "arcee": {
        **_DENSE,
        "num_hidden_layers": 2,
        "num_attention_heads": 6,
        "num_key_value_heads": 3,
    },
    "apertus": {
        **_DENSE,
        "num_hidden_layers": 3,
        "num_attention_heads": 6,
        "num_key_value_heads": 2,
    },
    "gpt2": {"n_embd": 96, "n_layer": 3, "n_head": 6, "n_positions": 256},
    "gpt_neox": {"hidden_size": 96, "intermediate_size": 300, "num_hidden_layers": 2, "num_attention_heads": 6},
    "gptj": {"n_embd": 96, "n_layer": 3, "n_head": 6, "n_inner": 200, "rotary_dim": 8, "n_positions": 256},
    "codegen": {"n_embd": 96, "n_layer": 2, "n_head": 6, "rotary_dim": 8, "n_positions": 256, "n_ctx": 256},
    "gpt_neo": {"hidden_size": 96, "num_layers": 3, "num_heads": 6, "window_size": 16}
    | {"attention_types": [[["local", "global", "local"], 1]]},
    "gpt_bigcode": {"n_embd": 96, "n_layer": 2, "n_head": 6, "n_inner": 200, "n_positions": 256},
    "opt": {**_DENSE, "ffn_dim": 200, "num_hidden_layers": 2, "num_attention_heads": 6, "word_embed_proj_dim": 96},
    "bloom": {"hidden_size": 96, "n_layer": 3, "n_head": 6},
    "falcon": {"hidden_size": 96, "num_hidden_layers": 2, "num_attention_heads": 6, "ffn_hidden_size": 200}
    | {"new_decoder_architecture": True, "num_kv_heads": 2},
    "mpt": {"d_model": 96, "n_layers": 3, "n_heads": 6, "max_seq_len": 256},
    "phi": {**_DENSE, "num_hidden_layers": 2, "num_attention_heads": 6, "num_key_value_heads": 3},
    "stablelm": {**_DENSE, "num_hidden_layers": 2, "num_attention_heads": 6, "num_key_value_heads": 2},
    "persimmon": {**_DENSE, "num_hidden_layers": 2, "num_attention_heads": 6},
    "nanochat": {**_DENSE, "num_hidden_layers": 3, "num_attention_heads": 6, "num_key_value_heads": 2},
}
# DeepSeek-V2 as V3 but with no query latent (V2-Lite's), two shared experts and biased dense and shared MLPs
TINY["deepseek_v2"] = TINY["deepseek_v3"] | {"q_lora_rank": None, "n_shared_experts": 2, "attention_bias": False}
TINY["deepseek_v2"]["mlp_bias"] = True
TINY["phimoe"] = TINY["mixtral"] | {"lm_head_bias": True}  # Mixtral's blocks with LayerNorms (weight and bias)
TINY["olmo"] = dict(TINY["llama"])  # Llama's blocks with LayerNorms that have no weights
# EXAONE 4's attention (q and k norms per head, sliding blocks) with DeepSeek's layout of experts, by mlp_layer_types
TINY["exaone_moe"] = TINY["exaone4"] | {
    **dict(moe_intermediate_size=24, num_hidden_layers=4, num_experts=6, num_experts_per_tok=2, num_shared_experts=1),
    "layer_types": ["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"],
    "mlp_layer_types": ["dense", "sparse", "sparse", "sparse"],
}
# Qwen3.5: Qwen3-Next's blocks, its linear attention's projections unfused, and no dense MLP in the MoE one
TINY["qwen3_5_text"] = {key: v for key, v in TINY["qwen3_next"].items() if "expert" not in key and "mlp" not in key}
TINY["qwen3_5_text"]["layer_types"] = ["linear_attention", "full_attention", "full_attention", "linear_attention"]
TINY["qwen3_5_moe_text"] = {key: v for key, v in TINY["qwen3_next"].items() if key != "intermediate_size"}
# OLMo Hybrid: OLMo 3's attention blocks (no output gate) among Gated DeltaNet ones, a dense MLP in each
TINY["olmo_hybrid"] = {k: v for k, v in TINY["qwen3_5_text"].items() if k != "full_attention_interval"} | {
    "pad_token_id": 0,
    "eos_token_id": 1,
}


def _hf(model_type: str, **overrides):
    cfg = transformers.AutoConfig.for_model(model_type, **{**_COMMON, **TINY[model_type], **overrides})
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(cfg)
    return cfg, model


def test_every_supported_type_has_a_tiny_config():
    assert set(TINY) == set(SUPPORTED)


@pytest.mark.parametrize("model_type", SUPPORTED)
def test_param_count_equals_transformers(model_type):
    cfg, model = _hf(model_type)
    spec = spec_from_config(cfg.to_dict(), f"{model_type}.json")
    assert spec.num_params == sum(p.numel() for p in model.parameters())


def test_olmo_hybrid_has_gated_deltanet_blocks_and_ungated_attention():
    """OLMo Hybrid: Gated DeltaNet blocks where `layer_types` says (here the first and last of four), OLMo 3's softmax
    attention in the others, whose output is not gated (Qwen3-Next's and Qwen3.5's is: q_proj twice as wide)."""
    olmo = spec_from_config(_hf("olmo_hybrid")[0].to_dict(), "olmo_hybrid.json")
    qwen = spec_from_config(_hf("qwen3_5_text")[0].to_dict(), "qwen3_5_text.json")
    assert (olmo.num_linear_layers, olmo.mixers) == (2, ((0.5, "attention"), (0.5, "gated_delta")))
    assert not olmo.attention_gate and qwen.attention_gate
    assert olmo.gated_delta == qwen.gated_delta


@pytest.mark.parametrize(
    ("model_type", "overrides"),
    [
        ("falcon", {"new_decoder_architecture": False}),  # Falcon-7B: one key and value head, one LayerNorm
        ("falcon", {"new_decoder_architecture": False, "multi_query": False, "parallel_attn": False, "bias": True}),
        ("falcon", {"num_ln_in_parallel_attn": 1, "alibi": True}),  # Falcon-11B's one norm
        ("opt", {"enable_bias": False, "layer_norm_elementwise_affine": False}),
        ("opt", {"do_layer_norm_before": False}),  # no final LayerNorm
        ("stablelm", {"use_parallel_residual": True, "qk_layernorm": True, "use_qkv_bias": True}),
        ("phi", {"qk_layernorm": True}),
        ("gpt_bigcode", {"multi_query": False}),
        ("bloom", {"tie_word_embeddings": False}),
        ("gptj", {"tie_word_embeddings": True}),
        ("persimmon", {"qk_layernorm": False}),
        ("nanochat", {"attention_bias": True}),
    ],
)
def test_gpt_family_variants_count_as_transformers(model_type, overrides):
    """The options of the GPT family's configs that change which parameters its modelling code builds."""
    cfg, model = _hf(model_type, **overrides)
    spec = spec_from_config(cfg.to_dict(), f"{model_type}.json")
    assert spec.num_params == sum(p.numel() for p in model.parameters())


def test_gpt_neo_local_blocks_attend_within_their_window():
    spec = spec_from_config(_hf("gpt_neo")[0].to_dict(), "gpt_neo.json")
    blocks = [layer for layer in spec.layers if layer.kind == "block"]
    assert [(b.count, b.attention_window) for b in blocks] == [(2, 16), (1, None)]
    assert spec.block_order == (0, 1, 0)
    bad = {**_hf("gpt_neo")[0].to_dict(), "attention_types": [[["global", "local"], 2]]}
    with pytest.raises(ModelSpecError, match=r"gpt_neo.json: attention_types: expected .* covering 3 num_layers"):
        spec_from_config(bad, "gpt_neo.json")


def test_opt_with_projected_embeddings_is_refused_by_name():
    cfg = {**_hf("opt")[0].to_dict(), "word_embed_proj_dim": 48}
    with pytest.raises(ModelSpecError, match=r"opt\.json: word_embed_proj_dim: 48 differs from hidden_size 96"):
        spec_from_config(cfg, "opt.json")


def test_starcoder2_without_linear_biases_keeps_its_layernorm_biases():
    cfg, model = _hf("starcoder2", use_bias=False)
    assert spec_from_config(cfg.to_dict(), "starcoder2.json").num_params == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("model_type", ["ernie4_5", "ernie4_5_moe"])
def test_ernie_use_bias_biases_every_linear_but_the_routed_experts(model_type):
    cfg, model = _hf(model_type, use_bias=True)
    spec = spec_from_config(cfg.to_dict(), f"{model_type}.json")
    assert spec.num_params == sum(p.numel() for p in model.parameters())
    unbiased = spec_from_config({**cfg.to_dict(), "use_bias": False}, f"{model_type}.json")
    assert spec.num_params > unbiased.num_params


@pytest.mark.parametrize(
    "model_type",
    [
        *("llama", "gpt2", "gpt_neox", "phi3", "qwen3", "deepseek_v3", "granite", "smollm3", "olmo2", "seed_oss"),
        *("arcee", "glm4", "starcoder2", "gemma", "cohere", "nemotron", "olmo"),
        *("gptj", "codegen", "gpt_bigcode", "opt", "bloom", "falcon", "mpt", "phi", "stablelm", "persimmon"),
        *("nanochat", "glm"),
    ],
)
def test_flops_per_token_match_flop_counter(model_type):
    # deepseek_v3 with dense MLPs alone (routing cannot run on the meta device): MLA's QK^T at the query-key head
    # dim, AV at the value head dim
    dense = {"first_k_dense_replace": 3} if model_type == "deepseek_v3" else {}
    cfg, model = _hf(model_type, _attn_implementation="eager", **dense)
    spec = spec_from_config(cfg.to_dict(), f"{model_type}.json")
    from torch.utils.flop_counter import FlopCounterMode

    s = 128
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(input_ids=torch.zeros(1, s, dtype=torch.long, device="meta"))
    assert spec.flops_per_token(s) == pytest.approx(counter.get_total_flops() / s, rel=0.01)


_QWEN_VISION = {"depth": 1, "hidden_size": 32, "num_heads": 2, "out_hidden_size": 96, "intermediate_size": 64}
_QWEN3_MOE_TEXT = {**TINY["qwen3_moe"], "model_type": "qwen3_vl_moe_text"}


@pytest.mark.parametrize(
    ("wrapper", "text", "vision"),
    [
        ("gemma3", {"model_type": "gemma3_text", **TINY["gemma3_text"]}, None),
        ("mistral3", {"model_type": "mistral", **TINY["mistral"]}, None),
        ("llama4", {"model_type": "llama4_text", **TINY["llama4_text"]}, None),
        ("qwen2_5_vl", {"model_type": "qwen2_5_vl_text", **TINY["qwen2"]}, _QWEN_VISION),
        ("qwen3_vl", {"model_type": "qwen3_vl_text", **TINY["qwen3"]}, _QWEN_VISION),
        ("qwen3_vl_moe", _QWEN3_MOE_TEXT, _QWEN_VISION),
    ],
)
def test_a_vision_language_config_gives_its_language_model(wrapper, text, vision):
    """Gemma 3, Mistral 3, Llama 4 and Qwen-VL configs wrap their language model's in `text_config` (Qwen-VL's text
    types are Qwen2's and Qwen3's under other names): the spec counts that model and its output head, tied or not
    as transformers ties it (the wrapper's setting where the head is the wrapper's, the text config's in Llama 4,
    whose language model holds its own), and none of the vision encoder's or projector's parameters."""
    vision = vision or {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    vision = {**vision, **({"image_size": 32, "patch_size": 8} if wrapper in ("gemma3", "mistral3", "llama4") else {})}
    for tied in (True, False):
        cfg = transformers.AutoConfig.for_model(wrapper, text_config={**_COMMON, **text}, vision_config=vision)
        cfg.tie_word_embeddings = tied
        with torch.device("meta"):
            model = transformers.AutoModelForImageTextToText.from_config(cfg)
        language = {id(p): p for n, p in model.named_parameters() if "language_model" in n or n.startswith("lm_head")}
        spec = spec_from_config(cfg.to_dict(), f"{wrapper}.json")
        assert spec.num_params == sum(p.numel() for p in language.values()), tied
        assert spec.name == f"{wrapper} language model"
    with pytest.raises(ModelSpecError, match=r"vlm.json: text_config: model_type: 'mamba' is not supported"):
        spec_from_config({"model_type": "llava", "text_config": {"model_type": "mamba"}}, "vlm.json")


def test_a_config_wide_sliding_window_bounds_every_block():
    """Mistral 7B v0.1 (the mistral-7b preset's config) sets `sliding_window` 4096 without `layer_types`, as
    Mixtral and StarCoder2 configs may: transformers then masks every block's attention to the window. Mistral's
    later configs set it to null."""
    spec = load_model("mistral-7b")
    assert {ly.attention_window for ly in spec.layers if ly.kind == "block"} == {4096}
    assert spec.flops_per_token(8192) == spec.flops_per_token(4096)  # no query sees more than 4,096 keys
    cfg, _ = _hf("mistral", sliding_window=None)
    assert {ly.attention_window for ly in spec_from_config(cfg.to_dict(), "m.json").layers} == {None}


def test_chunked_attention_blocks_attend_within_their_chunk():
    """llama4_text: blocks that `layer_types` names "chunked_attention" attend causally within chunks of
    `attention_chunk_size` (every fourth block attends to all): FLOPs of s x c, timed as a causal sequence of c.
    The published Llama 4 Scout and Maverick configs give 107.8 B and 400.7 B text parameters, 17.2 B active
    (Meta: 109 B and 400 B with the vision encoder, 17 B active)."""
    cfg, _ = _hf("llama4_text")
    spec = spec_from_config(cfg.to_dict(), "llama4_text.json")
    chunked = [ly for ly in spec.layers if ly.attention_chunk]
    assert [(ly.name, ly.count) for ly in chunked] == [("dense block (chunked attention)", 4), ("moe block (chunked "
                                                      "attention)", 2)]  # fmt: skip
    assert all(ly.attended(128) == 32 and ly.attended(16) == 16 for ly in chunked)
    assert spec.causal_spans(128) == ((0.75, 32), (0.25, 128))
    scout = transformers.AutoConfig.for_model("llama4_text")
    maverick = transformers.AutoConfig.for_model("llama4_text", num_local_experts=128, interleave_moe_layer_step=2)
    for config, total in ((scout, 107.77), (maverick, 400.71)):
        spec = spec_from_config(config.to_dict(), "llama4_text.json")
        assert round(spec.num_params / 1e9, 2) == total
        assert round(spec.num_active_params / 1e9, 1) == 17.2


def test_sliding_window_blocks_attend_within_their_window():
    """gpt_oss: blocks named "sliding_attention" in `layer_types` attend to at most `sliding_window` keys, so their
    attention FLOPs stop growing with the sequence there; the published 120B counts 116.8 B parameters."""
    cfg, _ = _hf("gpt_oss")
    spec = spec_from_config(cfg.to_dict(), "gpt_oss.json")
    q = 4 * 24
    assert [(ly.count, ly.attention_window) for ly in spec.layers if ly.kind == "block"] == [(2, 16), (1, None)]
    # beyond the window, 2 of the 3 blocks count s x 16 where the full block counts s x s (4 q FLOPs a key)
    assert spec.flops_per_token(128) == spec.flops_per_token(16) + 4 * q * (128 - 16)
    windowed, full = (ly for ly in spec.layers if ly.kind == "block")
    assert windowed.flops_per_token(128) == full.flops_per_token(128) - 4 * q * (128 - 16)
    # a query i sees min(i + 1, 16) keys: on average as many as a causal sequence of 2 x 16 - 16 x 15 / 128 sees
    assert spec.causal_spans(128) == ((2 / 3, round(32 - 16 * 15 / 128)), (1 / 3, 128))
    assert spec.causal_spans(16) == ((1.0, 16),)
    big = load_model("gpt-oss-120b")
    assert big.num_params == 116_829_156_672 and big.moe is not None and big.moe.top_k == 4


def test_a_window_costs_what_causal_attention_over_its_span_costs():
    """benchmarks/results/h100-gpt-oss (an H100, GPT-OSS's 64 heads of 64 at 4 x 4,096 tokens): a sliding window's
    forward + backward time over full causal attention's, with flex_attention's block-sparse kernel, equals within
    10% that of SDPA over sequences of the span `causal_spans` gives the window, against SDPA at full length."""
    run = json.loads((Path(__file__).parents[1] / "benchmarks/results/h100-gpt-oss/attention-window.json").read_text())
    ms = {
        (c["kind"], c["window"]): c["forward_s"] + c["backward_s"]
        for c in run["cases"]
        if c["head_dim"] == 64 and "error" not in c
    }
    spec = load_model("gpt-oss-120b")
    for window in (128, 512, 2048):
        short = next(c["seq"] for c in run["cases"] if c["kind"] == "sdpa_short" and c["window"] == window)
        windowed = spec.model_copy(
            update={"layers": tuple(ly.model_copy(update={"attention_window": window}) for ly in spec.layers)}
        )
        assert windowed.causal_spans(run["seq"]) == ((1.0, short),)
        flex = ms["flex", window] / ms["flex", None]
        sdpa = ms["sdpa_short", window] / ms["sdpa", None]
        assert flex == pytest.approx(sdpa, rel=0.1), window


def test_llama3_exact_counts_and_analytic_flops():
    m8, m70 = load_model("llama3-8b"), load_model("llama3-70b")
    assert m8.num_params == 8_030_261_248
    assert m70.num_params == 70_553_706_496
    # Forward FLOPs per token, factor by factor (Llama-3-8B, s = 8192):
    h, f, L, V, kv = 4096, 14336, 32, 128256, 8 * 128
    matmul_per_layer = 2 * (h * h + 2 * h * kv + h * h + 3 * h * f)  # q, k+v, o, gate+up+down: 2 FLOPs per weight
    attention_per_layer = 4 * h * 8192  # QK^T and AV over s = 8192: 2 * s * h each
    head = 2 * h * V  # output projection; the embedding lookup costs no matmul
    assert m8.flops_per_token(8192) == L * (matmul_per_layer + attention_per_layer) + head
    # 6N rule of thumb: training = 3 * forward, forward matmul = 2 * (N - embedding - norms)
    n_matmul = m8.num_params - V * h - (2 * L + 1) * h
    assert 3 * m8.flops_per_token(1) == pytest.approx(6 * n_matmul, rel=0.001)


def test_model_from_module_agrees_with_config():
    cfg, model = _hf("llama")
    from_module = model_from_module(model, seq_len=128)
    from_config = spec_from_config(cfg.to_dict(), "llama.json")
    assert from_module.num_params == from_config.num_params
    assert from_module.flops_per_token(128) == pytest.approx(from_config.flops_per_token(128), rel=0.01)
    assert (from_module.num_heads, from_module.num_kv_heads, from_module.mlp) == (6, 2, "swiglu")
    _, tied = _hf("qwen2")
    assert model_from_module(tied, seq_len=64).tied_embeddings


def test_model_from_module_reads_mla_from_the_modules_config():
    # a DeepSeek-V3 of dense blocks alone (a module's blocks must match): its config's head_dim is the RoPE part
    cfg, model = _hf("deepseek_v3", first_k_dense_replace=3)
    from_module = model_from_module(model, seq_len=128)
    from_config = spec_from_config(cfg.to_dict(), "deepseek_v3.json")
    assert from_module.mla == from_config.mla and from_module.mla is not None
    assert (from_module.head_dim, from_module.v_head_dim) == (16 + 8, 12) == (from_config.head_dim, 12)
    assert from_module.flops_per_token(128) == pytest.approx(from_config.flops_per_token(128), rel=0.01)


@pytest.mark.parametrize("model_type", ["qwen3_moe", "qwen3_next"])
def test_model_from_module_that_cannot_run_on_meta_says_so(model_type):
    """Routing to experts (and Qwen3-Next's grouped GEMMs) needs real tensors: one line naming the module and the
    way round, not torch's traceback."""
    _, model = _hf(model_type)
    with pytest.raises(ModelSpecError, match=r"its forward could not run without real tensors \(.*load_model"):
        model_from_module(model, seq_len=64)


def test_moe_total_and_active():
    mixtral = load_model("mixtral-8x7b")
    assert mixtral.num_params == 46_702_792_704  # Mixtral-8x7B as built by transformers (46.7B)
    assert mixtral.moe is not None and mixtral.moe.top_k == 2
    # active = total - 6 of 8 experts per layer (3 matrices of h x f each)
    assert mixtral.num_active_params == mixtral.num_params - 32 * 6 * 3 * 4096 * 14336


def _paper_model(h: int, a: int) -> object:
    """A GPT of the paper's Table 3 shape: MHA, GeLU with f = 4h, dropout, s = 2048."""
    return spec_from_config(
        {"model_type": "gpt2", "n_embd": h, "n_head": a, "n_layer": 2, "vocab_size": 51200, "n_positions": 2048},
        "korthikanti",
    )


def _csv_rows(path: Path) -> list[dict[str, str]]:
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    return list(csv.DictReader(lines))


@pytest.mark.parametrize(
    "row", _csv_rows(DATA / "validation" / "korthikanti2022_activation_memory_pct.csv"), ids=lambda r: r["model"]
)
def test_activation_memory_matches_korthikanti_figure7(row):
    # Table 3 of arXiv:2205.05198: 22B h=6144 a=64; 175B h=12288 a=96; 1T h=25600 a=160; all t=8, s=2048.
    h, a = {"22B": (6144, 64), "175B (GPT-3)": (12288, 96), "1T": (25600, 160)}[row["model"]]
    m = _paper_model(h, a)

    def act(sp: bool, recompute: str) -> float:
        return m.activation_bytes_per_token(tp=8, sequence_parallel=sp, recompute=recompute, flash_attention=False)

    base = act(False, "none")  # the paper's eq. 2: sbh(10 + 24/t + 5as/(ht))
    assert base == pytest.approx(h * (10 + 24 / 8 + 5 * a * 2048 / (h * 8)))
    # The fixture is Calculon's reading of the Figure 7 bar chart; it differs from the paper's formula
    # by up to 0.14 points (1T selective: 13/21 = 61.90% vs 62.04%), so the tolerance is 0.2 points.
    assert 100 * act(True, "none") / base == pytest.approx(float(row["seq_pct"]), abs=0.2)
    assert 100 * act(False, "selective") / base == pytest.approx(float(row["sel_pct"]), abs=0.2)
    assert 100 * act(True, "selective") / base == pytest.approx(float(row["seqsel_pct"]), abs=0.2)
    assert 100 * m.activation_bytes_per_token(tp=8, sequence_parallel=False, recompute="full") / base == (
        pytest.approx(float(row["full_pct"]), abs=0.2)
    )


def test_activation_memory_gqa_swiglu_flash():
    m = load_model("llama3-8b")
    h, f, kv = 4096, 14336, 1024
    # sharded: Q 2h + K 2kv + V 2kv + out-proj input 2h + SwiGLU 8f; replicated: 2h + 2h + 4h (no dropout)
    expect = (2 * h + 2 * kv + 2 * kv + 2 * h + 8 * f) / 4 + (8 * h) / 4
    assert m.activation_bytes_per_token(tp=4, sequence_parallel=True) == expect
    assert m.activation_bytes_per_token(tp=4, recompute="full") == 2 * h / 4
    # Megatron-Core's SwiGLUFunction keeps its input (gate and up outputs, 4f) and recomputes SiLU: 6f in all
    fused = m.activation_bytes_per_token(tp=4, sequence_parallel=True, fused_swiglu=True)
    assert fused == expect - 2 * f / 4
    # Transformer Engine's FP8 linears keep their inputs' FP8 casts: the two LN outputs (h each) and the
    # down-projection's input (f) in 1 B; the out-projection's FP8 copy (1 B x h) beside attention's bf16 output
    fp8 = m.activation_bytes_per_token(tp=4, sequence_parallel=True, fused_swiglu=True, fp8_inputs=True)
    assert fp8 == fused - (2 * h + f) / 4 + h / 4


_MLA_MOE = {
    **dict(hidden_size=64, intermediate_size=160, moe_intermediate_size=24, num_hidden_layers=3),
    **dict(num_attention_heads=4, num_key_value_heads=4, n_routed_experts=6, n_shared_experts=1),
    **dict(num_experts_per_tok=2, kv_lora_rank=16, q_lora_rank=24, qk_rope_head_dim=8, qk_nope_head_dim=16),
    **dict(v_head_dim=20, n_group=2, topk_group=1),
}


_MLA_DENSE = {key: v for key, v in _MLA_MOE.items() if "expert" not in key and "group" not in key}
_DBRX = {
    **dict(d_model=64, n_heads=4, n_layers=2, max_seq_len=128),
    "attn_config": {"kv_n_heads": 2, "clip_qkv": 8, "rope_theta": 10000.0},
    "ffn_config": {"ffn_hidden_size": 48, "moe_num_experts": 4, "moe_top_k": 2},
}


@pytest.mark.parametrize(
    ("model_type", "config"),
    [
        ("ministral3", {**TINY["mistral"], "sliding_window": 16}),
        ("helium", {**TINY["llama"], "head_dim": 16}),  # o_proj takes h: heads x head_dim = h, as in Helium 1
        ("hunyuan_v1_dense", {**TINY["qwen3"], "attention_bias": True}),
        ("minimax_m2", {**TINY["olmoe"], "num_local_experts": 6, "head_dim": 16}),
        ("granitemoe", {**TINY["mixtral"]}),
        ("granitemoeshared", {**TINY["mixtral"], "shared_intermediate_size": 80}),
        # its moe_intermediate_size unread: experts and the shared one are intermediate_size wide in transformers
        ("hunyuan_v1_moe", {**TINY["qwen3"], "num_experts": 4, "moe_topk": 2, "moe_intermediate_size": 8}),
        ("internlm3", {**TINY["llama"], "head_dim": 16, "qkv_bias": True, "bias": True}),  # its config's names
        ("glm4_moe_lite", {**_MLA_MOE, "mlp_layer_types": ["dense", "sparse", "sparse"]}),
        ("mistral4", {**_MLA_MOE, "first_k_dense_replace": 1}),
        # its own names, some nested (transformers' DbrxConfig takes attn_config and ffn_config as dicts)
        ("dbrx", _DBRX),
        ("exaone", TINY["llama"]),
        ("iquestcoder", TINY["llama"]),
        ("cwm", {**TINY["llama"], "sliding_window": 16}),
        ("sarvam_mla", _MLA_MOE),
        ("sarvam_moe", TINY["glm4_moe"]),
        ("param2moe", TINY["glm4_moe"]),
        ("vaultgemma", TINY["gemma"]),
        ("mellum", {**TINY["qwen3_moe"], "num_hidden_layers": 3, "mlp_layer_types": ["dense", "sparse", "sparse"]}),
        ("flex_olmo", {**TINY["olmoe"], "pad_token_id": 0}),
        ("apertus1p5_text", TINY["apertus"]),
        ("jais2", TINY["nemotron"]),
        ("youtu", _MLA_DENSE),
        ("minicpm3", _MLA_DENSE),
        ("solar_open", {**TINY["glm4_moe"], "first_k_dense_replace": 0, "use_qk_norm": False}),  # Llama attention
    ],
)
def test_types_built_as_another_count_what_transformers_builds(model_type, config):
    """Ministral 3, Helium, Hunyuan (dense and MoE), MiniMax-M2, Granite MoE (with its shared expert), InternLM3,
    GLM-4.7-Flash, Mistral 4, DBRX and the others listed are read as the supported
    type whose parameters transformers builds for them (`_SAME_AS`); Mistral 4 is a language model inside
    Mistral 3's vision-language wrapper, without an output head of its own in transformers."""
    cfg = transformers.AutoConfig.for_model(model_type, **{**_COMMON, **config})
    auto = transformers.AutoModel if model_type == "mistral4" else transformers.AutoModelForCausalLM
    with torch.device("meta"):
        model = auto.from_config(cfg)
    spec = spec_from_config(cfg.to_dict(), f"{model_type}.json")
    head = cfg.vocab_size * cfg.hidden_size if model_type == "mistral4" else 0
    assert spec.num_params - head == sum(p.numel() for p in model.parameters())
    assert spec.name == model_type


def test_dbrx_reads_the_fields_of_its_attn_config_and_ffn_config():
    """DBRX's config.json (databricks/dbrx-base) keeps its key-value heads and experts in two sub-objects: 131.6 B
    parameters, 36.5 B active (the model card's 132B and 36B); a sub-object that is not one is named."""
    dbrx = {
        **dict(model_type="dbrx", d_model=6144, n_heads=48, n_layers=40, max_seq_len=32768, vocab_size=100352),
        "attn_config": {"clip_qkv": 8, "kv_n_heads": 8, "rope_theta": 500000},
        "ffn_config": {"ffn_hidden_size": 10752, "moe_num_experts": 16, "moe_top_k": 4, "ffn_act_fn": {"name": "silu"}},
        "tie_word_embeddings": False,
    }
    m = spec_from_config(dbrx, "config.json")
    assert (m.num_layers, m.moe.num_experts, m.moe.top_k) == (40, 16, 4)
    assert (m.num_params, m.num_active_params) == (131_596_523_520, 36_469_708_800)
    with pytest.raises(ModelSpecError, match=r"^dbrx.json: ffn_config: expected an object of fields, found \[4\]$"):
        spec_from_config({**dbrx, "ffn_config": [4]}, "dbrx.json")


def test_a_type_read_as_another_names_its_fields_as_its_config_does():
    """DBRX's fields under its own names, in its sub-objects where it keeps them; InternLM 3's; Solar Open's expert
    width, which it reads as the dense one."""
    dbrx = {"model_type": "dbrx", "n_heads": 48, "n_layers": 40, "vocab_size": 100352}
    dbrx |= {"attn_config": {"kv_n_heads": 8}}
    dbrx |= {"ffn_config": {"ffn_hidden_size": 64, "moe_num_experts": 4, "moe_top_k": 0}}
    with pytest.raises(ModelSpecError, match=r"^dbrx\.json: d_model: missing"):
        spec_from_config(dbrx, "dbrx.json")
    with pytest.raises(ModelSpecError, match=r"^dbrx\.json: ffn_config\.moe_top_k: expected a positive integer"):
        spec_from_config({**dbrx, "d_model": 6144}, "dbrx.json")
    internlm3 = {**_COMMON, **_DENSE, "model_type": "internlm3", "num_hidden_layers": 2, "num_attention_heads": 6}
    with pytest.raises(ModelSpecError, match=r"^i\.json: qkv_bias: expected true or false, found 'yes'$"):
        spec_from_config({**internlm3, "qkv_bias": "yes"}, "i.json")
    solar = {**_COMMON, "model_type": "solar_open", "hidden_size": 96, "num_hidden_layers": 2}
    solar |= {"num_attention_heads": 6, "moe_intermediate_size": -3, "n_routed_experts": 4, "num_experts_per_tok": 2}
    with pytest.raises(ModelSpecError, match=r"^s\.json: moe_intermediate_size: expected a positive integer"):
        spec_from_config(solar, "s.json")


def test_mlp_layer_types_must_open_with_the_dense_blocks():
    config = {**_COMMON, **_MLA_MOE, "model_type": "glm4_moe_lite"}
    spec = spec_from_config({**config, "mlp_layer_types": ["dense", "dense", "sparse"]}, "glm.json")
    assert [(ly.name, ly.count) for ly in spec.layers if ly.kind == "block"] == [("dense block", 2), ("moe block", 1)]
    with pytest.raises(ModelSpecError, match=r"glm.json: mlp_layer_types: block 2 is dense after a sparse one"):
        spec_from_config({**config, "mlp_layer_types": ["dense", "sparse", "dense"]}, "glm.json")
    with pytest.raises(ModelSpecError, match=r"glm.json: mlp_layer_types: expected \"dense\" or \"sparse\" for each"):
        spec_from_config({**config, "mlp_layer_types": ["dense", "moe", "sparse"]}, "glm.json")


def test_kimi_k2_is_read_as_the_deepseek_v3_architecture_it_reuses():
    """Kimi K2's config.json (moonshotai/Kimi-K2-Instruct) names model_type kimi_k2 for DeepseekV3ForCausalLM: its
    1.03 T parameters and 32.9 B active are the model card's "1T" and "32B"; Kimi K2.5 wraps it in text_config."""
    k2 = {
        **dict(model_type="kimi_k2", vocab_size=163840, hidden_size=7168, intermediate_size=18432),
        **dict(moe_intermediate_size=2048, num_hidden_layers=61, num_attention_heads=64, num_key_value_heads=64),
        **dict(n_shared_experts=1, n_routed_experts=384, num_experts_per_tok=8, first_k_dense_replace=1),
        **dict(q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128),
        **dict(n_group=1, topk_group=1, tie_word_embeddings=False),
    }
    m = spec_from_config(k2, "config.json")
    assert (m.name, m.attention, m.num_layers) == ("kimi_k2", "mla", 61)
    assert (m.num_params, m.num_active_params) == (1_026_408_209_408, 32_861_477_888)
    assert spec_from_config({"model_type": "kimi_k25", "text_config": k2}, "k25.json").num_params == m.num_params


def test_mla_matmuls_and_activations():
    """DeepSeek-V3 (deepseek-ai/DeepSeek-V3 config.json): 671.0 B parameters, 37.6 B active (the paper's 671 B and
    37 B, arXiv:2412.19437); MLA's matmuls in forward order, TP splitting the up-projections and the
    out-projection while every rank keeps the down-projections whole (Megatron-Core's "duplicated" TELinear)."""
    m = load_model("deepseek-v3")
    assert (m.num_params, m.num_active_params) == (671_026_404_352, 37_552_282_624)
    assert m.attention == "mla" and (m.head_dim, m.v_head_dim, m.rope_widths) == (192, 128, (128 * 64, 64))
    h, f, heads = 7168, 18432, 128
    matmuls = m.block_matmuls(ffn=f)
    assert [(mm.name, mm.split) for mm in matmuls] == [
        ("q_down", "duplicated"),
        ("q_up", "column"),
        ("kv_down", "duplicated"),
        ("kv_up", "column"),
        ("o", "row"),
        ("w1", "column"),
        ("w3", "column"),
        ("w2", "row"),
    ]
    dense = next(ly for ly in m.layers if ly.name == "dense block")
    assert 2 * sum(mm.width * mm.inner for mm in matmuls) == dense.matmul_flops_per_token
    assert dense.attn_flops_per_token_per_seq == 2 * heads * (192 + 128)
    q_down = matmuls[0]
    assert q_down.per_gpu(4096, 8, True) == (512, 1536, h) and q_down.per_gpu(4096, 8, False) == (4096, 1536, h)
    # sharded: Q and K (192 per head), V and the out-proj input (128 per head), SwiGLU 8f; replicated without SP:
    # two LN outputs and two norm inputs (8h), and the latents (query 1536 before and after its norm, key-value
    # 512 + the 64 RoPE key before its norm, 512 after); and in the 58 MoE blocks of 61 the top-8 permuted tokens
    sharded = 2 * heads * 192 * 2 + 2 * heads * 128 * 2 + 8 * f
    replicated = 8 * h + 2 * (2 * 1536 + 2 * 512 + 64)
    permuted = 2 * 8 * h * 58 / 61
    sp = m.activation_bytes_per_token(tp=4, sequence_parallel=True)
    assert sp == pytest.approx(sharded / 4 + replicated / 4 + permuted)
    assert m.activation_bytes_per_token(tp=4, sequence_parallel=False) == pytest.approx(sp + replicated * 3 / 4)


def test_activation_memory_torchtitan_selective_recompute():
    m = load_model("llama3-8b")
    h, f, kv, heads = 4096, 14336, 1024, 32
    # per-op: matmuls q, k, v, o, w1, w3, w2 in forward order, the 1st, 3rd, 5th, 7th kept (q, v, w1,
    # w2), plus the block input and the attention output (bf16) and its log-sum-exp (fp32 per head)
    per_op = 2 * (h + kv + f + h) + 2 * h + 2 * h + 4 * heads
    assert m.activation_bytes_per_token(tp=1, recompute="selective-op") == per_op
    # with TP 2 and SP: column-parallel outputs halve, the row-parallel w2 output is a full partial
    # sum, the block input is sequence-sharded, and the two reduce-scatter outputs are kept
    tp2 = 2 * (h / 2 + kv / 2 + f / 2 + h) + 2 * h / 2 + 2 * h / 2 + 4 * heads / 2 + 2 * 2 * h / 2
    assert m.activation_bytes_per_token(tp=2, recompute="selective-op") == tp2
    none, full = (m.activation_bytes_per_token(tp=1, recompute=r) for r in ("none", "full"))
    assert m.activation_bytes_per_token(tp=1, recompute="selective-layer") == (none + full) / 2
    assert full < per_op < none


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"model_type": "llama", "hidden_size": 4096}, "vocab_size: missing"),
        (
            {
                "model_type": "llama",
                "hidden_size": 100,
                "vocab_size": 10,
                "num_hidden_layers": 2,
                "num_attention_heads": 3,
                "intermediate_size": 8,
            },
            "num_attention_heads: 3 does not divide hidden_size 100",
        ),
        ({"model_type": "llama", "hidden_size": -4, "vocab_size": 10}, "hidden_size: expected a positive integer"),
        ({"model_type": "bert"}, "model_type: 'bert' is not supported"),
        (
            {**TINY["qwen3_next"], **_COMMON, "model_type": "qwen3_next", "linear_num_value_heads": 3},
            "linear_num_value_heads: 3 is not a multiple of linear_num_key_heads 2",
        ),
        ({**TINY["qwen3"], **_COMMON, "model_type": "hunyuan_v1_moe", "num_experts": 4, "moe_topk": [2]}, "moe_topk: "),
        ({"model_type": "kimi_linear"}, "'kimi_linear' is not supported: its Kimi Delta Attention .* cost model"),
        ({"model_type": "jamba"}, "'jamba' is not supported: its Mamba blocks are not in the cost model yet"),
        ({"model_type": "deepseek_v4"}, "'deepseek_v4' is not supported: its compressed sparse attention blocks"),
        (
            {
                "model_type": "llama",
                "hidden_size": 64,
                "vocab_size": 10,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 3,
                "intermediate_size": 8,
            },
            "num_key_value_heads: 3 does not divide",
        ),
        # each of these once raised a TypeError (a fuzzed preset config)
        ({"model_type": ["llama"]}, r"model_type: expected a name such as \"llama\", found \['llama'\]"),
        ({"hidden_size": 64}, r"model_type: expected a name such as \"llama\", found none"),
        (
            {**read_model_preset("qwen3-30b-a3b")[0], "num_experts": 4, "num_experts_per_tok": 8},
            "each token's 8 experts \\(top_k\\) exceed the 4 it can reach",
        ),
        (
            {**read_model_preset("gpt-oss-20b")[0], "layer_types": 24},
            "layer_types: expected a list of attention kinds, one per block, found 24",
        ),
        (
            {**read_model_preset("qwen3-30b-a3b")[0], "mlp_only_layers": 3},
            "mlp_only_layers: expected a list of block indexes below 48, found 3",
        ),
    ],
)
def test_bad_config_names_file_and_field(tmp_path: Path, config: dict, message: str):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    with pytest.raises(ModelSpecError, match=message) as info:
        load_model(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_not_json_and_directory_source(tmp_path: Path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelSpecError, match=r"config.json: line 1: not valid JSON"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 100})
    )
    assert load_model(tmp_path).num_layers == 2


def test_a_config_in_another_encoding_reads_as_in_utf8(tmp_path: Path):
    """config.json saved as UTF-16 with a byte-order mark (Windows PowerShell's `>`), or with a Latin-1 byte in a
    string: the same model, not a UnicodeDecodeError; a folder without config.json is a one-line error."""
    config = {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 100}
    utf16, latin1 = tmp_path / "utf16.json", tmp_path / "latin1.json"
    utf16.write_text(json.dumps(config, indent=1).replace("\n", "\r\n"), encoding="utf-16", newline="")
    latin1.write_bytes(json.dumps({**config, "_name_or_path": "caf\u00e9"}).encode("latin-1"))
    assert load_model(utf16).num_params == load_model(latin1).num_params == spec_from_config(config, "c").num_params
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelSpecError, match=r"empty/config.json: no such file$"):
        load_model(tmp_path / "empty")


def test_preset_configs_build_the_same_model_in_transformers():
    for name in ("llama3-8b", "qwen2.5-7b", "mixtral-8x7b", "gpt-oss-20b", "deepseek-v3", "deepseek-v2-lite", "gpt2"):
        from shardplan.model.presets import read_model_preset

        data, _ = read_model_preset(name)
        cfg = transformers.AutoConfig.for_model(**data)
        with torch.device("meta"):
            model = transformers.AutoModelForCausalLM.from_config(cfg)
        assert load_model(name).num_params == sum(p.numel() for p in model.parameters()), name


class _TinyGPT(torch.nn.Module):
    """A hand-written GPT with real (CPU) weights: exercises the fake-tensor path of model_from_module."""

    def __init__(self, vocab: int = 300, h: int = 48, heads: int = 4, layers: int = 3) -> None:
        super().__init__()
        self.num_heads = heads
        self.embed = torch.nn.Embedding(vocab, h)
        self.blocks = torch.nn.ModuleList(
            torch.nn.TransformerEncoderLayer(h, heads, 4 * h, dropout=0.0, batch_first=True) for _ in range(layers)
        )
        self.norm = torch.nn.LayerNorm(h)
        self.head = torch.nn.Linear(h, vocab, bias=False)

    def forward(self, tokens):
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def test_model_from_module_with_real_weights_runs_no_real_compute():
    model = _TinyGPT()
    spec = model_from_module(model, seq_len=64)
    assert spec.num_params == sum(p.numel() for p in model.parameters())
    assert (spec.num_layers, spec.num_heads, spec.hidden_size, spec.vocab_size) == (3, 4, 48, 300)
    # per block: in-proj 3h*h, out-proj h*h, linear1 h*4h, linear2 4h*h -> 2 FLOPs per weight
    h = 48
    assert spec.layers[1].matmul_flops_per_token == 2 * (3 * h * h + h * h + 8 * h * h)
    assert spec.layers[-1].matmul_flops_per_token == 2 * h * 300
