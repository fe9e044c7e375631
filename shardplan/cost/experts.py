"""What expert parallelism moves and spares: the all-to-alls of mixture-of-experts blocks, their buffers, the
copies a deduplicating dispatcher saves, and the TP collectives MoE blocks skip where experts stay whole."""

from __future__ import annotations

import math

from shardplan.cost.overlap import Overlap
from shardplan.model.schema import ModelSpec
from shardplan.training import Training


def ep_passes(training: Training) -> float:
    """All-to-alls per MoE block per micro-batch: dispatch and combine forward, their gradients backward, and
    forward's again where recompute re-runs the MLP (full; half the blocks under selective-layer)."""
    return 4 + {"full": 2.0, "selective-layer": 1.0}.get(training.recompute, 0.0)


def overlapped_all_to_alls_s(one_s: float, parts: tuple[float, float, float], beside: Overlap) -> float:
    """Seconds a MoE block's four all-to-alls (each `one_s`) add to a micro-batch under Megatron's
    --overlap-moe-expert-parallel-comm, which runs a layer's forward of one micro-batch with its backward of another
    (megatron/core/models/common/model_chunk_schedule_plan.py, TransformerLayerSchedulePlan.run): "comm_stream:
    combine_bwd | dispatch_fwd->dispatch_bwd | combine_fwd; comp_stream: attn_fwd | mlp_bwd->mlp_bwd_dw->mlp_fwd |
    attn_bwd". `parts`: the block's attention forward, its MLP's GEMMs forward (their data and weight gradients each
    as long) and its attention backward (`StageTimes.block_parts_s`). Each of the three steps ends with the later of
    its two streams, the forward MLP waiting for its dispatch and the backward dispatch for the MLP's data gradient;
    compute and all-to-alls slow each other as `beside` says while both run (`Overlap.streams_s`)."""
    attention_fwd, mlp, attention_bwd = parts
    alone = attention_fwd + 3 * mlp + attention_bwd
    paired = (
        beside.streams_s([(attention_fwd, None)], [(one_s, None)])
        + beside.streams_s([(mlp, None), (mlp, None), (mlp, 0)], [(one_s, None), (one_s, 0)])
        + beside.streams_s([(attention_bwd, None)], [(one_s, None)])
    )
    return paired - alone


def unpaired_share(pp: int, stage: int, virtual_stages: int, num_micro: int) -> float:
    """Of a stage's forward (and backward) passes of model chunks, the share that runs with no other micro-batch's
    pass beside it under --overlap-moe-expert-parallel-comm: the pipeline schedule's warm-up forwards (and as many
    cool-down backwards). Megatron-Core's schedules.py counts (pp - stage - 1) x 2 + (vp - 1) x pp with interleaving
    (microbatch_group_size_per_vp_stage: pp), pp - stage - 1 without, "one extra micro-batch forward step before the
    1f1b stages" with the overlap, "to ensure the forward and backward computations are independent"."""
    warmup = (pp - stage - 1) * 2 + (virtual_stages - 1) * pp if virtual_stages > 1 else pp - stage - 1
    return min(1.0, (warmup + 1) / (num_micro * virtual_stages))


def mlp_tp_share(model: ModelSpec, training: Training, ep: int, tp: int) -> float:
    """The share of blocks whose MLP runs TP collectives: all, but the dense ones alone where a MoE block's
    experts stay whole on a GPU (`Training.expert_tensor_parallel` off)."""
    if training.expert_group(ep, tp) == ep:
        return 1.0
    return 1 - model.num_moe_layers / model.num_layers


def dispatch_bytes(model: ModelSpec, training: Training, tokens: float, tp: int) -> float:
    """One all-to-all's buffer per rank: each of the GPU's tokens (its sequence shard under SP) sent to its top-k
    experts, h wide in bf16 (Megatron-Core's alltoall dispatcher; its flex dispatcher moves the same tokens)."""
    if model.moe is None:
        return 0.0
    sp = training.sequence_parallel and tp > 1
    return tokens / (tp if sp else 1) * model.moe.top_k * model.hidden_size * 2


def remote_copies_share(model: ModelSpec, domains: int) -> float:
    """Of the copies of a token an all-to-all dispatcher sends to other NVLink domains (top-k x (n - 1) / n, experts
    spread evenly over `domains` in order), the share a deduplicating one sends: one per other domain that holds any
    of the token's experts, (n - 1) x P(a domain holds none of them), with routing uniform (as force-balanced routing
    makes it): without groups C(E - E/n, k) / C(E, k). With group-limited routing (`MoeSpec.groups`) the token draws
    its groups first, then its experts from theirs (DeepSeek-V3's node-limited routing, arXiv:2412.19437 Sec.
    2.1.2, "each token will be sent to at most M nodes" where groups are nodes).

    A domain is what the dispatcher reaches over NVLink: a node, or a whole NVL72 rack, which HybridEP (the
    deduplicating dispatcher for NVL72 racks) takes as one node of up to 72 ranks (deepseek-ai/DeepEP
    csrc/hybrid_ep/config.cuh: "up to 72(GB200) ranks per node"), sending over its NVLink what crosses trays."""
    moe = model.moe
    if domains < 2 or moe is None:
        return 1.0
    e, k, g, m = moe.num_experts, moe.top_k, moe.groups, moe.top_groups
    if g % domains and domains % g:  # groups and domains do not line up: taken as ungrouped
        g = m = 1
    size = e // g  # experts per group
    drawn = math.comb(m * size, k)  # the token's experts come from the m groups it drew

    def missed_given(held: int) -> float:
        """P(the domain holds none of the token's experts | `held` of them sit among its drawn groups' experts)."""
        return math.comb(m * size - held, k) / drawn

    if g >= domains:  # each domain holds g / n whole groups, x of which the token drew (hypergeometric)
        per_domain = g // domains
        missed = sum(
            math.comb(per_domain, x) * math.comb(g - per_domain, m - x) / math.comb(g, m) * missed_given(x * size)
            for x in range(min(per_domain, m) + 1)
        )
    else:  # each group spans n / g domains: the domain's group drawn or not
        missed = 1 - m / g + m / g * missed_given(e // domains)
    return (domains - 1) * (1 - missed) / (k * (domains - 1) / domains)
