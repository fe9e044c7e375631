"""Which blocks each pipeline stage holds, where a model's blocks are not all alike (DeepSeek-V3's first three
dense MLP blocks before 58 MoE ones, GPT-OSS's sliding-window blocks between full-attention ones)."""

from __future__ import annotations

from collections.abc import Sequence

from shardplan.model.schema import ModelSpec


def chunk_sizes(blocks: int, virtual_stages: int, *, first: bool) -> list[int]:
    """A stage's `blocks` in its `virtual_stages` model chunks, as even as they split: the smaller chunks first on
    the first stage, whose first chunk also holds the embedding, and last elsewhere (the last stage's last chunk
    holds the output head; Llama 3's interleaved split, arXiv:2407.21783 Sec. 3.3.2, takes a block off each).

    >>> chunk_sizes(7, 2, first=True), chunk_sizes(7, 2, first=False)
    ([3, 4], [4, 3])
    """
    base, extra = divmod(blocks, virtual_stages)
    return [base + (j >= virtual_stages - extra if first else j < extra) for j in range(virtual_stages)]


def stages_differ(model: ModelSpec) -> bool:
    """Whether pipeline stages of as many blocks may differ in what they hold: where dense MLP blocks and MoE blocks
    both occur, as runs (DeepSeek-V3's first three dense) or interleaved. Kinds of attention alone are left to the
    model's average: GPT-OSS, Gemma and Llama 4 repeat theirs every few blocks, so a stage holds the model's share
    of each to within a block (Qwen2's sliding window past `max_window_layers`, where a config turns it on, comes
    as a run, and is averaged too)."""
    return 0 < model.num_moe_layers < model.num_layers


def stage_models(model: ModelSpec, layers: Sequence[int], virtual_stages: int = 1) -> tuple[ModelSpec, ...]:
    """Each pipeline stage's blocks as a model of its own (`ModelSpec.with_blocks`), stage p holding `layers[p]`
    blocks: chunk j of every stage in turn, stage by stage (Megatron-Core's and torch's interleaved schedules give
    stage p the model chunks p, p + pp, ...), the blocks in model order (`ModelSpec.block_kinds`). Where stages do
    not differ (`stages_differ`), or one stage holds every block, the model itself.

    >>> from shardplan import load_model
    >>> [m.num_moe_layers for m in stage_models(load_model("deepseek-v3"), (5, 20, 20, 16))]
    [2, 20, 20, 16]
    """
    if len(layers) == 1 or not stages_differ(model):
        return (model,) * len(layers)
    kinds = model.block_kinds
    counts = [[0] * (max(kinds) + 1) for _ in layers]
    chunks = [chunk_sizes(n, virtual_stages, first=p == 0) for p, n in enumerate(layers)]
    start = 0
    for j in range(virtual_stages):
        for p, sizes in enumerate(chunks):
            for kind in kinds[start : start + sizes[j]]:
                counts[p][kind] += 1
            start += sizes[j]
    return tuple(model.with_blocks(tuple(c)) for c in counts)
