"""Memory of one GPU: weights, gradients, optimizer states, activations in flight, logits, and an
allowance for what the framework itself holds. Bytes throughout."""

from __future__ import annotations

from shardplan.model.schema import ModelSpec
from shardplan.training import Training

# Mixed precision (DESIGN.md): bf16 weights for compute (2 B), fp32 master weights (4 B), fp32
# gradients (4 B), Adam's two fp32 moments (8 B; SGD keeps none).
BF16_WEIGHT, FP32_MASTER, FP32_GRAD = 2, 4, 4
ADAM_STATES = 8
# Logits of the output layer per element at the loss, with the loss in fp32 as torchtitan and Hugging
# Face compute it (cross_entropy(logits.float(), labels)). Forward: bf16 logits (2 B), fp32 copy (4 B)
# and the saved fp32 log-softmax (4 B) = 10 B. Backward, counted per autograd node: the saved
# log-softmax (4 B), the incoming fp32 gradient from nll_loss (4 B) and the outgoing fp32 gradient
# of log_softmax (4 B) are alive together = 12 B, the larger, with all activations still held.
LOGIT_BYTES = 4 + 4 + 4
# A fused cross-entropy (flash-attn's CrossEntropyLoss) keeps the bf16 logits and a log-sum-exp per
# token; its backward writes a bf16 gradient next to them: 2 + 2 B.
FUSED_LOGIT_BYTES = 2 + 2


def param_counts(model: ModelSpec, *, layers: int, first: bool, last: bool) -> int:
    """Parameters held by one pipeline stage before tensor parallelism."""
    block = next(ly for ly in model.layers if ly.kind == "block")
    blocks = sum(ly.params * ly.count for ly in model.layers if ly.kind == "block")
    per_layer = blocks / model.num_layers if model.num_layers else block.params
    out = per_layer * layers
    embed = model.layers[0].params
    if first:
        out += embed
    if last:
        head = next(ly.params for ly in model.layers if ly.kind == "head")
        norm = next(ly.params for ly in model.layers if ly.kind == "norm")
        # a tied head needs its own copy of the embedding when it sits on another stage
        out += norm + (head if head else (embed if not first else 0))
    return int(out)


def state_bytes(params_local: float, *, dp: int, zero_stage: int, optimizer: str) -> dict[str, float]:
    """Weights, gradients and optimizer states of `params_local` parameters, sharded by ZeRO stage."""
    states = ADAM_STATES if optimizer == "adam" else 0
    shard = {k: (dp if zero_stage >= s else 1) for k, s in (("opt", 1), ("grad", 2), ("weight", 3))}
    return {
        "weights": params_local * BF16_WEIGHT / shard["weight"],
        "master_and_optimizer": params_local * (FP32_MASTER + states) / shard["opt"],
        "gradients": params_local * FP32_GRAD / shard["grad"],
    }


def activation_bytes(
    model: ModelSpec,
    training: Training,
    *,
    stage: int,
    layers: int,
    tp: int,
    pp: int,
    micro_batch: int,
    num_micro: int,
    virtual_stages: int,
) -> dict[str, float]:
    """Activations pipeline stage `stage` keeps at its peak under 1F1B (interleaved when
    `virtual_stages` > 1): stage p holds min(pp - p, num_micro) micro-batches, scaled by
    1 + (pp - 1) / (pp * v) when interleaved (Narayanan et al. 2021, Sec. 2.2.2)."""
    first, last = stage == 0, stage == pp - 1
    tokens = micro_batch * training.seq_len
    sp = training.sequence_parallel and tp > 1
    shape = {
        "tp": tp,
        "sequence_parallel": sp,
        "seq_len": training.seq_len,
        "flash_attention": training.attention != "unfused",
    }
    per_layer = model.activation_bytes_per_token(**shape, recompute=training.recompute)
    in_flight = min(pp - stage, num_micro)
    if pp > 1 and virtual_stages > 1:
        in_flight *= 1 + (pp - 1) / (pp * virtual_stages)
    acts = per_layer * tokens * layers * in_flight
    if training.recompute in ("full", "selective-op", "selective-layer"):  # a block rebuilt in full for its backward
        acts += model.activation_bytes_per_token(**shape) * tokens
    out = {"activations": acts}
    if last:
        per_logit = FUSED_LOGIT_BYTES if training.loss == "fused" else LOGIT_BYTES
        out["logits"] = tokens * model.vocab_size / tp * per_logit
    if first:
        out["embedding_output"] = tokens * model.hidden_size * 2 / (tp if sp else 1)
    return out


def stage_memory(
    model: ModelSpec,
    training: Training,
    *,
    stage: int,
    layers: int,
    tp: int,
    pp: int,
    dp: int,
    micro_batch: int,
    virtual_stages: int,
    context_bytes: float,
) -> dict[str, float]:
    """Bytes per part on one GPU of pipeline stage `stage` holding `layers` blocks, with
    `context_bytes` for what the process holds outside PyTorch's allocator (`Rates.context_bytes`).
    It does not depend on where ranks sit, so the search prunes by it before placing anything."""
    first, last = stage == 0, stage == pp - 1
    params = param_counts(model, layers=layers, first=first, last=last) / tp
    mem = state_bytes(params, dp=dp, zero_stage=training.zero_stage, optimizer=training.optimizer)
    num_micro = training.global_batch // (dp * micro_batch)
    mem.update(
        activation_bytes(
            model,
            training,
            stage=stage,
            layers=layers,
            tp=tp,
            pp=pp,
            micro_batch=micro_batch,
            num_micro=num_micro,
            virtual_stages=virtual_stages,
        )
    )
    if training.zero_stage == 3:
        # FSDP: the current and the prefetched block, gathered in bf16; and the embedding, final norm
        # and head, which FSDP2 keeps gathered from forward to backward (the root module is not
        # resharded after forward: torch.distributed.fsdp.fully_shard docs, reshard_after_forward)
        block = param_counts(model, layers=1, first=False, last=False)
        ends = param_counts(model, layers=0, first=first, last=last)
        mem["gathered_weights"] = BF16_WEIGHT * (2 * block + ends) / tp
    mem["framework"] = context_bytes
    return mem


def fullest_stage_memory(
    model: ModelSpec,
    training: Training,
    *,
    layers: tuple[int, ...],
    tp: int,
    dp: int,
    micro_batch: int,
    virtual_stages: int,
    context_bytes: float,
) -> dict[str, float]:
    """`stage_memory` of the pipeline stage that needs the most bytes (`layers`: blocks per stage)."""
    pp = len(layers)
    return max(
        (
            stage_memory(
                model,
                training,
                stage=p,
                layers=layers[p],
                tp=tp,
                pp=pp,
                dp=dp,
                micro_batch=micro_batch,
                virtual_stages=virtual_stages,
                context_bytes=context_bytes,
            )
            for p in range(pp)
        ),
        key=lambda mem: sum(mem.values()),
    )
