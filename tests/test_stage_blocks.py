"""Pipeline stages costed by the blocks they hold, where a model's blocks are not all alike."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shardplan import Training, estimate, load_model, load_topology
from shardplan.cost.calibration import rates_for
from shardplan.cost.memory import local_params, required_bytes, stage_memories
from shardplan.cost.stage_blocks import stage_models
from shardplan.cost.step import split_layers
from shardplan.solve.stages import balance_stages


def test_a_stage_is_costed_by_the_blocks_it_holds():
    """DeepSeek-V3's first three blocks are dense, the other 58 MoE. Split 3 / 29 / 29, the two later stages hold
    MoE blocks alone: their all-to-alls, compute and memory, and so the whole step, are those of the same stages
    of a model whose 61 blocks are all MoE (not 58/61 of a MoE block each, the model's average). The first stage
    holds no experts."""
    model = load_model("deepseek-v3")
    all_moe = model.with_blocks((0, 61))
    topology = load_topology("dgx-h100", nodes=3)
    train = Training(global_batch=64, seq_len=4096, zero_stage=1)
    shape = dict(tp=1, pp=3, dp=1, ep=8, layers_per_stage=(3, 29, 29))
    plan, moe_plan = (estimate(m, topology, train, **shape) for m in (model, all_moe))
    assert plan.breakdown["ep"] > 0
    for part in ("compute", "ep", "bubble", "dp", "optimizer"):
        assert plan.breakdown[part] == pytest.approx(moe_plan.breakdown[part], rel=1e-12), part
    assert plan.step_time_s == pytest.approx(moe_plan.step_time_s, rel=1e-12)
    assert plan.memory_per_gpu_bytes == pytest.approx(moe_plan.memory_per_gpu_bytes, rel=1e-12)
    first = stage_models(model, (3, 29, 29))[0]
    assert first.num_moe_layers == 0
    assert local_params(first, layers=3, first=True, last=False, tp=1, ep=8)[1] == 0


def test_interleaved_stages_take_their_blocks_chunk_by_chunk():
    """Under an interleaved schedule stage p holds model chunks p, p + pp, ...: with two chunks a stage, DeepSeek-V3's
    three dense blocks fall in the first chunks of the first two stages (the first stage's first chunk the smaller,
    beside the embedding)."""
    model = load_model("deepseek-v3")
    assert [m.num_moe_layers for m in stage_models(model, (2, 20, 20, 19), 2)] == [1, 18, 20, 19]
    assert [m.num_moe_layers for m in stage_models(model, (2, 20, 20, 19), 1)] == [0, 19, 20, 19]
    assert [m.num_layers for m in stage_models(model, (2, 20, 20, 19), 2)] == [2, 20, 20, 19]


def test_interleaved_kinds_of_block_keep_their_order(tmp_path):
    """GPT-OSS alternates sliding-window and full-attention blocks: its order is kept, and each stage holds the
    model's share of each to within a block, so stages take the model's average. Llama 4 Maverick interleaves dense
    and MoE blocks (interleave_moe_layer_step 2): each stage holds its own."""
    gpt_oss = load_model("gpt-oss-20b")
    assert gpt_oss.block_order[:4] == (0, 1, 0, 1)
    assert all(m is gpt_oss for m in stage_models(gpt_oss, (5, 5, 5, 9)))
    config = tmp_path / "config.json"
    config.write_text(
        '{"model_type": "llama4_text", "hidden_size": 512, "num_hidden_layers": 8, "num_attention_heads": 8, '
        '"num_key_value_heads": 2, "head_dim": 64, "intermediate_size": 256, "intermediate_size_mlp": 1024, '
        '"vocab_size": 1000, "num_local_experts": 4, "num_experts_per_tok": 1, "interleave_moe_layer_step": 2}'
    )
    maverick_like = load_model(config)
    assert maverick_like.block_order == (0, 1) * 4
    assert [m.num_moe_layers for m in stage_models(maverick_like, (3, 3, 2))] == [1, 2, 1]


def test_a_block_order_must_count_each_kind_as_listed():
    model = load_model("deepseek-v3")
    fields = {name: getattr(model, name) for name in type(model).model_fields}
    with pytest.raises(ValidationError, match="block_order"):
        type(model)(**fields | {"block_order": (0,) * 61})
    assert type(model)(**fields | {"block_order": (1,) * 58 + (0,) * 3}).block_kinds[0] == 1


def test_a_split_balanced_within_memory_fits_whichever_blocks_each_stage_holds():
    """`balance_stages` splits DeepSeek-V3 within a memory bound taking each block at the most any kind of block
    needs, so the split fits with each stage's own blocks. With the model's average block (58/61 of a MoE block) it
    gave (6, 6, 7, 8, 8, 9, 9, 8) for 85% of the even split's peak, whose all-MoE stages need 85.8%."""
    model = load_model("deepseek-v3")
    train = Training(global_batch=256, seq_len=4096, zero_stage=1)
    shape = dict(tp=1, dp=4, micro_batch=1, virtual_stages=1, ep=8)
    rates = rates_for("h100-sxm")
    even = stage_memories(model, train, layers=split_layers(61, 8), **shape, context_bytes=rates.context_bytes)
    for share in (0.85, 0.9, 0.95, 1.0):
        bound = share * max(map(required_bytes, even))
        layers = balance_stages(model, train, rates, pp=8, memory_bytes=bound, **shape)
        assert layers is not None
        mems = stage_memories(model, train, layers=layers, **shape, context_bytes=rates.context_bytes)
        assert max(map(required_bytes, mems)) <= bound, (share, layers)


def test_a_copy_of_a_model_makes_its_own_stage_views():
    """`model_copy` copies a model's cached properties, the views of its blocks among them: a changed copy must not
    be handed the original's views."""
    model = load_model("deepseek-v3")
    assert model.with_blocks((0, 4)) is model.with_blocks((0, 4))
    wider = model.model_copy(update={"hidden_size": 8192})
    assert wider.with_blocks((0, 4)).hidden_size == 8192
    assert model.with_blocks((0, 4)).hidden_size == 7168
