"""A plan's pipeline as model chunks in model order, for the launch configs that name each chunk's
modules (Megatron-LM's `--pipeline-model-parallel-layout`, torchtitan's `module_fqns_per_model_part`).

Chunk k runs on pipeline stage k % pp, in round k // pp: the looped order of Megatron's interleaved
schedule and torchtitan's Interleaved1F1B. Each stage splits its blocks into `virtual_stages` chunks as
evenly as it can, counting the embedding (first stage) and the output head (last stage) as one block
each, as Llama 3 did (arXiv:2407.21783 Sec. 3.3.2): 126 blocks on 16 stages x 8 chunks leave the first
chunk the embedding alone and the last the head alone.
"""

from __future__ import annotations

from typing import NamedTuple

from shardplan.plan import Plan


class Chunk(NamedTuple):
    embedding: bool
    first_layer: int
    num_layers: int
    head: bool


def model_chunks(plan: Plan) -> list[Chunk]:
    """The plan's chunks in model order (pp x virtual_stages of them)."""
    pp, v = plan.pp, plan.virtual_stages
    sizes = []  # sizes[p][j]: items (blocks, embedding, head) in stage p's chunk of round j
    for p, blocks in enumerate(plan.layers_per_stage):
        items = blocks + (p == 0) + (p == pp - 1)
        base, extra = divmod(items, v)
        row = [base + (j < extra) for j in range(v)]
        sizes.append(row[::-1] if p == pp - 1 and p > 0 else row)  # the head's chunk takes the extra
    chunks, layer = [], 0
    for k in range(pp * v):
        p, j = k % pp, k // pp
        embedding, head = k == 0, k == pp * v - 1
        n = sizes[p][j] - embedding - head
        chunks.append(Chunk(embedding, layer, n, head))
        layer += n
    return chunks
