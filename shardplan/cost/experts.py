"""What expert parallelism moves and spares: the all-to-alls of mixture-of-experts blocks, their buffers, the
copies a deduplicating dispatcher saves, and the TP collectives MoE blocks skip where experts stay whole."""

from __future__ import annotations

import math

from shardplan.model.schema import ModelSpec
from shardplan.training import Training


def ep_passes(training: Training) -> float:
    """All-to-alls per MoE block per micro-batch: dispatch and combine forward, their gradients backward, and
    forward's again where recompute re-runs the MLP (full; half the blocks under selective-layer)."""
    return 4 + {"full": 2.0, "selective-layer": 1.0}.get(training.recompute, 0.0)


def tp_block_share(model: ModelSpec, training: Training, ep: int, tp: int) -> float:
    """Of a block's TP collectives (attention's and the MLP's pairs), the share its blocks run on average: all, but
    only attention's in MoE blocks whose experts stay whole on a GPU (`Training.expert_tensor_parallel` off)."""
    if training.expert_group(ep, tp) == ep:
        return 1.0
    return 1 - model.num_moe_layers / model.num_layers / 2


def dispatch_bytes(model: ModelSpec, training: Training, tokens: float, tp: int) -> float:
    """One all-to-all's buffer per rank: each of the GPU's tokens (its sequence shard under SP) sent to its top-k
    experts, h wide in bf16 (Megatron-Core's alltoall dispatcher; its flex dispatcher moves the same tokens)."""
    if model.moe is None:
        return 0.0
    sp = training.sequence_parallel and tp > 1
    return tokens / (tp if sp else 1) * model.moe.top_k * model.hidden_size * 2


def remote_copies_share(model: ModelSpec, nodes: int) -> float:
    """Of the copies of a token an all-to-all dispatcher sends to other nodes (top-k x (n - 1) / n, experts spread
    evenly over `nodes`), the share a deduplicating one sends: one per other node that holds any of the token's
    experts, (n - 1)(1 - C(E - E/n, k) / C(E, k)) with routing uniform (as force-balanced routing makes it)."""
    if nodes < 2 or model.moe is None:
        return 1.0
    e, k = model.moe.num_experts, model.moe.top_k
    missed = math.comb(e - e // nodes, k) / math.comb(e, k)  # a node holds none of the token's experts
    return (nodes - 1) * (1 - missed) / (k * (nodes - 1) / nodes)
