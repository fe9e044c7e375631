"""Memory of one GPU: weights, gradients, optimizer states, activations in flight, logits, and an
allowance for what the framework itself holds. Bytes throughout."""

from __future__ import annotations

from collections.abc import Sequence

from shardplan.cost.stage_blocks import stage_models
from shardplan.model.schema import ModelSpec
from shardplan.training import Training

# Mixed precision (DESIGN.md): bf16 weights for compute (2 B), fp32 master weights (4 B), fp32
# gradients (4 B; 2 B with `Training.grad_dtype` half), Adam's two fp32 moments (8 B; SGD keeps none).
# Under ZeRO-3 the layout is FSDP's (PyTorch FSDP1/FSDP2, as torchtitan and llm-foundry run it): the
# fp32 shard is master and compute source at once; bf16 copies exist only while gathered.
BF16_WEIGHT, FP32_MASTER, FP32_GRAD = 2, 4, 4
# A Transformer Engine FP8 weight kept across a step's micro-batches (`Training.fp8_weight_cache`): e4m3 row-major
# for the forward GEMM and transposed for the input-gradient one, 1 B each per element.
FP8_CACHED_WEIGHT = 1 + 1
ADAM_STATES = 8
# Logits of the output layer per element at the loss, with the loss in fp32 as torchtitan and Hugging
# Face compute it (cross_entropy(logits.float(), labels)). Forward: bf16 logits (2 B), fp32 copy (4 B)
# and the saved fp32 log-softmax (4 B) = 10 B. Backward, counted per autograd node: the saved
# log-softmax (4 B), the incoming fp32 gradient from nll_loss (4 B) and the outgoing fp32 gradient
# of log_softmax (4 B) are alive together = 12 B, the larger, with all activations still held.
LOGIT_BYTES = 4 + 4 + 4
# torch's loss_parallel (DTensor TP over the vocabulary, torchtitan's default with TP), in fp32 over each
# rank's shard of the logits: its backward (_nll_loss_and_log_softmax_backward) builds zeros_like(x), exp(x)
# and their sum beside the saved log-softmax x, 16 B; forward, x - max and its exp beside the fp32 input
# and the bf16 logits, 14 B (torch/distributed/tensor/parallel/loss.py).
LOSS_PARALLEL_LOGIT_BYTES = 4 + 4 + 4 + 4
# The bf16 logits' block, freed before backward, is too small for any of the fp32 requests that follow,
# so the caching allocator keeps it in its cache: 2 B per logit. Measured: the bf16 request and each
# of the three fp32 ones needed fresh memory (benchmarks/results/torchtitan-step-memory.json).
CACHED_LOGIT_BYTES = 2
# Under torch's loss_parallel, eagerly or compiled, the cache holds more: 0.92, 0.96 and 0.93 B per local logit beyond
# the estimate without it over three eager torchtitan-style steps at FSDP 32 x TP 8 that halve the logits (16 or 8
# sequences of 8,192 tokens) and, apart, the kept block inputs (40 or 20 of Llama 3.1 70B's blocks), so it follows
# the logits alone; 0.92 and 0.96 with the loss compiled (16 or 8 sequences). The median of the five
# (benchmarks/results/h100-torchao-float8/traced.jsonl; derived in tests/test_step_memory.py).
LOSS_PARALLEL_CACHED_BYTES = 0.93
# A fused cross-entropy (flash-attn's CrossEntropyLoss) keeps the bf16 logits and a log-sum-exp per
# token; its backward writes a bf16 gradient next to them: 2 + 2 B. Mist's copy of Megatron's vocab-parallel
# cross-entropy on fp16 logits (mist/modules/losses.py, as with --fp16-lm-cross-entropy) holds as much: forward,
# the logits and their max-shifted copy (2 + 2 B), which it exponentiates in place and saves as the softmax;
# backward turns that into the gradient in place. (Megatron-Core's own upcasts to fp32 first:
# MEGATRON_LOGIT_BYTES.)
FUSED_LOGIT_BYTES = 2 + 2
# The cross-entropy compiled under torch's loss_parallel (torchtitan from 2025 with TP: it compiles its loss whenever
# it compiles, and TP runs the loss inside loss_parallel) does not fuse so far: at the peak the bf16 logits, which
# the compiled graph keeps for its backward, and two fp32 tensors of their size beside them, 2 + 4 + 4 B. Measured:
# 3.91 + 7.83 + 7.83 GiB live for 2.1 billion local logits, half that for half of them (benchmarks/results/
# h100-torchao-float8/traced.jsonl, tp-bf16-cl and tp-bf16-cl-b8).
COMPILED_LOSS_PARALLEL_LOGIT_BYTES = 2 + 4 + 4
# Megatron-LM's vocab-parallel cross-entropy (megatron/core/tensor_parallel/cross_entropy.py, its default) on bf16
# logits. Forward: the logits beside their fp32 copy (2 + 4 B), shifted, exponentiated and normalised in place and
# saved as the softmax; the logits are freed once the loss has them. Backward: the softmax turned into the fp32
# gradient in place, and its bf16 cast (4 + 2 B), which takes the freed logits' block. Measured: benchmarks/results/
# h100-loss-memory, where its "native" --cross-entropy-loss-fusion (the same steps compiled) held 10 B: a plan for
# it takes the fp32 loss's 14.
MEGATRON_LOGIT_BYTES = 2 + 4
# Per token at the loss on the last stage: the final norm's bf16 input and output (2 + 2 B per element
# of h, the output saved by the head) and its fp32 upcast (4 B). Measured with the rest of the peak. Under
# sequence parallelism these are sequence shards; DTensor's ColwiseParallel head then all-gathers its input
# and keeps the whole of it for the weight gradient (2 B more per element of h), where Megatron's
# column-parallel linear keeps its shard and gathers again in backward.
HEAD_INPUT_BYTES = 2 + 2 + 4
# DTensor's sequence parallelism (torchtitan's TP plan: PrepareModuleInput all-gathers each norm's output to
# Replicate once for the column-parallel linears after it) keeps the two gathered norm outputs of a block for
# the weight gradients, 2 B per element of h each, where Megatron's column-parallel linear keeps the 1/tp shard
# and gathers again in backward (Korthikanti et al.'s 2h/t). Measured: torchtitan's 405B arrangement under
# full recompute (benchmarks/results/h200-pp-tp-fsdp-405b, "two gathered copies inside the recomputed block").
DTENSOR_GATHERED_INPUTS = 2
# Of a block's activations kept under each recompute mode, the share that holds those gathered inputs: all
# blocks without recompute or with Megatron's selective one, half under torchtitan's per-layer policy; its
# per-op policy recomputes the all-gathers (not in its save list), full recompute keeps only the block input.
KEPT_GATHERED = {"none": 1.0, "selective": 1.0, "selective-layer": 0.5}
# torch.compile'd blocks under op-level SAC keep one bf16 h-wide tensor fewer per block and token than
# eager: 55,424 against 63,616 B for Llama 3 8B blocks on an H100 (benchmarks/results/
# h100-eager-vs-compiled-sac.txt).
COMPILED_SAC_SAVING = 2
# Freed forward temporaries that later requests cannot use, as a share of the activations kept:
# 1.3-10.0% over six torchtitan-style Llama 3 8B steps (32 blocks; eager and compiled; expandable and
# default allocator settings; FSDP over 8 and 128 ranks): the measured reserve less the measured
# allocated peak, the cached bf16 logits and FSDP's pools on its own streams (gradient shards; the
# all-gather stream's buffers, `stage_memory`), over the activations (benchmarks/results/
# torchtitan-step-memory.json; derived in tests/test_step_memory.py). The median.
FRAGMENTATION = 0.034
# Parts of the peak that the caching allocator holds as cache: it frees cached blocks and retries
# before it reports out of memory (torch.cuda.memory_stats: num_alloc_retries), so they count in the
# peak a run reports (max_memory_reserved) but not in whether it fits.
CACHE_PART = "allocator_cache"


# Megatron-FSDP (what Megatron-LM runs for ZeRO-2 and 3: --use-megatron-fsdp with the optim_grads and
# optim_grads_params sharding) in every micro-batch, pipeline or not: under optim_grads_params it releases each
# unit's gathered weights after its forward and again after its backward, and under both it reduce-scatters every
# backward's gradients, no_sync or not (megatron/core/distributed/fsdp/src/megatron_fsdp/megatron_fsdp.py
# `_register_fsdp_hooks`: `_post_forward`, `_post_backward`'s `grad_reduce_every_bprop`; its `no_sync`: "for grads
# shard mode there will actually always be gradient sync happening").


def reduces_every_micro_batch(training: Training, pp: int) -> bool:
    """Whether ZeRO-2 keeps only gradient shards, reduce-scattering every micro-batch's gradients: without a pipeline
    (DeepSpeed refuses no_sync with partitioned gradients, runtime/engine.py; FSDP's SHARD_GRAD_OP and
    Megatron-FSDP's optim_grads alike), and under Megatron's pipeline too (Megatron-FSDP reduces every backward's
    gradients whatever the schedule asks: the comment above). Under torch's pipelines the stages turn the sync off
    until the last micro-batch, so the gradients stay whole through the step, as ZeRO-1's do; DeepSpeed refuses
    ZeRO-2 under a pipeline."""
    return training.zero_stage == 2 and (pp == 1 or training.pipeline_runtime == "megatron")


def gathered_across_micro_batches(training: Training, pp: int) -> bool:
    """Whether ZeRO-3 keeps a stage's weights gathered and its gradients unsharded from the first
    micro-batch to the last: under pipeline parallelism, as torchtitan runs FSDP2 with
    torch.distributed.pipelining. torchtitan does not reshard after forward when PP is on ("to avoid
    per-microbatch all-gathers", parallelize_llama.py apply_fsdp), and the pipeline stage turns off
    resharding after backward and gradient sync for every backward but the last
    (torch/distributed/pipelining/stage.py backward_maybe_with_nosync), so FSDP2 accumulates the
    unsharded gradients in the reduce dtype (fp32; _fsdp_param.py to_accumulated_grad_if_needed) and
    reduce-scatters them once. Megatron's schedules with Megatron-FSDP gather and reduce per micro-batch, as
    without a pipeline (the comment above)."""
    return training.zero_stage == 3 and pp > 1 and training.pipeline_runtime == "torch"


def reduces_chunks_as_they_finish(training: Training, pp: int, virtual_stages: int) -> bool:
    """Whether, in one round of micro-batches (fewer than 2 pp), the pipeline reduces each model chunk's unsharded
    gradients after the chunk's last backward: torch's multi-stage schedules (_PipelineScheduleRuntime: interleaved
    1F1B, the zero-bubble ones) unshard and reduce each stage themselves, for FSDP2 under ZeRO-3. A larger
    micro-batch, leaving fewer micro-batches, can then lower the peak."""
    return gathered_across_micro_batches(training, pp) and virtual_stages > 1 and training.fsdp_version == 2


def required_bytes(memory: dict[str, float]) -> float:
    """What must fit on the GPU: the peak less what the caching allocator would give back."""
    return sum(memory.values()) - memory.get(CACHE_PART, 0.0)


def param_counts(model: ModelSpec, *, layers: int, first: bool, last: bool, mtp: int = 0) -> int:
    """Parameters held by one pipeline stage before tensor parallelism; the last also holds `mtp`
    multi-token-prediction layers (`ModelSpec.mtp_layer_params`) and the embedding they share."""
    per_layer, embed, head, norm = model.params_by_part
    out = per_layer * layers
    if first:
        out += embed
    if last:
        # a tied head needs its own copy of the embedding when it sits on another stage, as MTP layers do
        # (Megatron-Core's GPTModel builds the embedding where `pre_process or mtp_process`)
        out += norm + head + (embed if not first and (mtp or not head) else 0) + mtp * model.mtp_layer_params[0]
    return int(out)


def expert_param_counts(model: ModelSpec, *, layers: int, mtp: int = 0) -> float:
    """Of `param_counts`, the routed experts' parameters of a stage of `layers` blocks (the model's average
    per block, as `param_counts` takes it) and `mtp` multi-token-prediction layers."""
    return model.num_expert_params / model.num_layers * layers + mtp * model.mtp_layer_params[1]


def local_params(
    model: ModelSpec, *, layers: int, first: bool, last: bool, tp: int, ep: int = 1, mtp: int = 0
) -> tuple[float, float]:
    """Parameters one GPU of a stage holds before ZeRO sharding, as (dense, experts): TP splits the dense layers,
    and the experts spread over ep x tp GPUs either way, each split by TP (Megatron-Core's default) or whole
    (`Training.expert_tensor_parallel` off). The last stage holds `mtp` multi-token-prediction layers too."""
    mtp = mtp if last else 0
    total = param_counts(model, layers=layers, first=first, last=last, mtp=mtp)
    experts = expert_param_counts(model, layers=layers, mtp=mtp)
    return (total - experts) / tp, experts / (tp * ep)


def block_weights(model: ModelSpec, training: Training, *, layers: int, last: bool, tp: int, ep: int = 1) -> float:
    """Weights of a stage's blocks (its multi-token-prediction layers counted as blocks) that one GPU holds before
    ZeRO sharding: what its FP8 linears cast."""
    return training.stage_blocks(layers, last) * sum(
        local_params(model, layers=1, first=False, last=False, tp=tp, ep=ep)
    )


def state_bytes(
    params_local: float, *, dp: int, zero_stage: int, optimizer: str, grad_bytes: int = FP32_GRAD
) -> dict[str, float]:
    """Weights, gradients (`grad_bytes` each) and optimizer states of `params_local` parameters,
    sharded by ZeRO stage.
    FSDP's gradient shards count whole although they appear only in backward: FSDP makes them on its
    reduce-scatter stream, and the caching allocator serves each stream from its own pool."""
    states = ADAM_STATES if optimizer == "adam" else 0
    shard = {k: (dp if zero_stage >= s else 1) for k, s in (("opt", 1), ("grad", 2))}
    return {
        "weights": 0.0 if zero_stage == 3 else params_local * BF16_WEIGHT,  # FSDP: gathered_weights
        "master_and_optimizer": params_local * (FP32_MASTER + states) / shard["opt"],
        "gradients": params_local * grad_bytes / shard["grad"],
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
    cp: int = 1,
    ep: int = 1,
) -> dict[str, float]:
    """Activations pipeline stage `stage` keeps at its peak under 1F1B (interleaved when
    `virtual_stages` > 1): stage p holds min(pp - p, num_micro) micro-batches, or when interleaved
    the model chunks its warm-up runs (on stage 0 Narayanan et al. 2021's 1 + (pp - 1) / (pp * v)
    times pp, Sec. 2.2.2), at most all num_micro. On top of them, the
    larger of what the loss holds (last stage) and one block rebuilt for its backward under
    recompute: the loss comes before any block's backward, so the two never meet. Under context
    parallelism (`cp`) a GPU holds 1/cp of every sequence's tokens, and while a block's attention runs,
    the keys and values it gathers and their gradients (`cp_buffers`), beside the rebuilt block, not the loss."""
    first, last = stage == 0, stage == pp - 1
    tokens = micro_batch * training.seq_len // cp
    sp = training.sequence_parallel and tp > 1
    shape = {
        "tp": tp,
        "sequence_parallel": sp,
        "seq_len": training.seq_len,
        "flash_attention": training.attention != "unfused",
        # torch.compile fuses SiLU(gate) x up and recomputes the SiLU in backward, as Megatron's fused SwiGLU does:
        # compiled blocks without recompute allocated 2 B per element of the MLP width per token and block less than
        # eager (1.2B, 2.7B and 7B-wide Llamas on two H100s, 0.86-1.00 of it: h100-recheck, h100-recheck-4)
        "fused_swiglu": training.fused_swiglu or training.compiled,
        "fp8_inputs": training.fp8_saved_inputs and training.dtype == "fp8",
        "fp8_recast_inputs": training.compiled and training.dtype == "fp8" and not training.fp8_saved_inputs,
        "experts_whole": training.expert_group(ep, tp) > ep,
    }
    per_layer = model.activation_bytes_per_token(
        **shape, recompute=training.recompute, recompute_modules=training.recompute_modules
    )
    gathered = 0.0  # per token of a block, beyond Megatron's shards
    if sp and training.tp_impl == "dtensor":
        gathered = DTENSOR_GATHERED_INPUTS * BF16_WEIGHT * model.hidden_size * (1 - 1 / tp)
        per_layer += gathered * KEPT_GATHERED.get(training.recompute, 0.0)
    if training.compiled and training.recompute == "selective-op":
        per_layer -= COMPILED_SAC_SAVING * model.hidden_size / (tp if sp else 1)
    if pp > 1 and virtual_stages > 1:
        # interleaved: stage p runs 2 (pp - p - 1) + (v - 1) pp warm-up forwards of model chunks (1/v of
        # its layers each) and one more before its first backward, and never more than all of them
        # (Megatron-LM schedules.py forward_backward_pipelining_with_interleaving; torch's
        # ScheduleInterleaved1F1B the same); on stage 0 that is Narayanan's 1 + (pp - 1) / (pp v) times pp
        chunks = 2 * (pp - stage - 1) + (virtual_stages - 1) * pp + 1
        in_flight = min(chunks, num_micro * virtual_stages) / virtual_stages
    else:
        in_flight = min(pp - stage, num_micro)
    logits = tokens * model.vocab_size / tp if last else 0.0
    out = {"activations": per_layer * tokens * training.stage_blocks(layers, last) * in_flight}
    dtensor = training.tp_impl == "dtensor" and tp > 1
    loss_parallel = dtensor and training.loss != "megatron"  # torch's own losses over DTensor's vocabulary shards
    per_cached = (CACHED_LOGIT_BYTES if training.loss == "fp32" else 0.0) + loss_parallel * LOSS_PARALLEL_CACHED_BYTES
    cached = logits * per_cached
    out[CACHE_PART] = FRAGMENTATION * out["activations"] + cached
    if first:
        out["embedding_output"] = tokens * model.hidden_size * 2 / (tp if sp else 1)
    if pp > 1 and training.pipeline_runtime == "torch":
        # each of the stage's chunks receives every micro-batch's input (but on stage 0) and output gradient
        # (but on the last stage) into buffers of its own; an input buffer of a micro-batch in flight is the
        # first block's input, counted above
        last_chunk = pp * virtual_stages - 1
        own = range(stage, last_chunk + 1, pp)
        buffers = sum((c > 0) * max(0.0, num_micro - in_flight) + (c < last_chunk) * num_micro for c in own)
        out["pipeline_buffers"] = buffers * tokens * model.hidden_size * 2 / (tp if sp else 1)
    rebuilt = 0.0
    if training.recompute in ("full", "selective-op", "selective-layer"):
        # what the block keeps without recompute, bf16's where its linears are FP8 that cast again in backward: a
        # compiled block's backward re-materialises those inputs and their casts (four 7B-wide blocks checkpointed
        # around their compiled selves peaked 0.23 GiB higher with FP8 linears than without, where the kept count
        # is 0.59 GiB lower: benchmarks/results/h100-compiled-block/checkpointed)
        rebuilt = (model.activation_bytes_per_token(**shape | {"fp8_recast_inputs": False}) + gathered) * tokens
    loss = 0.0
    if last:
        per_logit = {
            "fused": COMPILED_LOSS_PARALLEL_LOGIT_BYTES if dtensor else FUSED_LOGIT_BYTES,
            "megatron": MEGATRON_LOGIT_BYTES,
            "fp32": LOSS_PARALLEL_LOGIT_BYTES if dtensor else LOGIT_BYTES,
        }
        head_input = HEAD_INPUT_BYTES / (tp if sp else 1) + (BF16_WEIGHT if sp and dtensor else 0)
        loss = logits * per_logit[training.loss] + tokens * model.hidden_size * head_input
    # a block's attention under context parallelism: the keys and values it gathers and their gradients, beside
    # the block rebuilt for its backward, and never beside the loss either
    gathering = cp_kv_buffer_bytes(model, training, tokens=tokens, tp=tp, cp=cp) if cp > 1 else 0.0
    if loss and loss >= rebuilt + gathering:
        out["logits"] = loss
    else:
        out |= {part: b for part, b in (("recomputed_block", rebuilt), ("cp_buffers", gathering)) if b}
    return out


def cp_kv_buffer_bytes(model: ModelSpec, training: Training, *, tokens: int, tp: int, cp: int) -> float:
    """Keys and values a block's attention holds beyond its own under context parallelism, and their
    gradients: with `all_gather` the whole sequence's (torch's context_parallel gathers them for its
    sub-SDPAs and reduce-scatters their gradients), with `p2p` the chunk in flight beside the one in hand
    (Transformer Engine's ring keeps a send and a receive buffer)."""
    return 2 * kv_bytes(model, training, tokens, tp) * ((cp - 1) if training.cp_comm == "all_gather" else 1)


def kv_bytes(model: ModelSpec, training: Training, tokens: float, tp: int) -> float:
    """One block's bf16 keys and values of `tokens` on one TP rank as context parallelism moves them: its share
    of the key/value heads, or one head replicated where there are fewer than TP ranks (Transformer Engine's
    ring); under torch's context_parallel (`all_gather`) its share of the query heads, as torchtitan's attention
    repeats each key/value head for its query heads before the SDPA call whose inputs CP gathers
    (torchtitan/models/llama/model.py: `repeat_kv`, a copy)."""
    heads = model.num_heads if training.cp_comm == "all_gather" else model.num_kv_heads
    return tokens * -(-heads // tp) * (model.head_dim + model.v_head_dim) * BF16_WEIGHT


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
    cp: int = 1,
    ep: int = 1,
) -> dict[str, float]:
    """Bytes per part on one GPU of pipeline stage `stage` holding `layers` blocks, with
    `context_bytes` for what the process holds outside PyTorch's allocator (`Rates.context_bytes`).
    It does not depend on where ranks sit, so the search prunes by it before placing anything. Under
    context parallelism the dp x `cp` GPUs that hold the same weights share their ZeRO shards
    (Megatron-LM's data-parallel group with context parallelism, torchtitan's dp_shard_cp mesh). Under
    expert parallelism (`ep`) a GPU holds 1/ep of the experts, sharded over the dp x cp GPUs that hold the same
    ones, and the dense layers' shards spread over all dp x cp x ep (Megatron-Core's expert and dense
    data-parallel groups)."""
    first, last = stage == 0, stage == pp - 1
    dense, experts = local_params(model, layers=layers, first=first, last=last, tp=tp, ep=ep, mtp=training.mtp_layers)
    params = dense + experts
    num_micro = training.global_batch // (dp * ep * micro_batch)
    shards = dp * cp * ep
    options = dict(zero_stage=training.zero_stage, optimizer=training.optimizer, grad_bytes=training.grad_bytes)
    mem = state_bytes(dense, dp=shards, **options)
    for part, held in state_bytes(experts, dp=dp * cp, **options).items():
        mem[part] += held
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
            cp=cp,
            ep=ep,
        )
    )
    if training.zero_stage == 2 and not reduces_every_micro_batch(training, pp):
        mem["gradients"] = training.grad_bytes * params  # reduced once, after the last micro-batch
    if gathered_across_micro_batches(training, pp):
        # the whole stage gathered in bf16, and its gradients unsharded in the reduce dtype, for the whole step
        mem["gathered_weights"] = BF16_WEIGHT * params
        mem["gradients"] = training.grad_bytes * params
        # torch's multi-stage schedules unshard and reduce each stage themselves; its single-stage ones (1F1B,
        # GPipe) leave both to FSDP2's hooks
        runtime_drives_fsdp = training.pipeline_runtime == "torch" and virtual_stages > 1
        fsdp2 = training.fsdp_version == 2
        if reduces_chunks_as_they_finish(training, pp, virtual_stages) and num_micro < 2 * pp:
            # torch's interleaved 1F1B in one round (max(1, micro-batches // pp) rounds) runs each chunk's
            # backwards one after another, last chunk first, and reduces a chunk's gradients right after its
            # last backward (REDUCE_GRAD, torch/distributed/pipelining/schedules.py _add_reduce_grad, which
            # calls FSDP2's post-backward): at the peak, when every activation is still held, only the last
            # chunk's gradients are unsharded (measured: benchmarks/results/h200-pp-tp-fsdp-405b)
            chunk = sum(local_params(model, layers=-(-layers // virtual_stages), first=False, last=last, tp=tp, ep=ep))
            mem["gradients"] = training.grad_bytes * chunk
        # each block's bf16 weight gradient, made in backward and freed into the accumulated one, leaves a
        # hole the caching allocator keeps: one per block of the stage (measured 1.13 per block at h 4096,
        # h200-pp-fsdp-reserved; but about 0.36 at 405B shapes under TP 8, h200-pp-tp-fsdp-405b: over-counted there)
        block = sum(local_params(model, layers=1, first=False, last=False, tp=tp, ep=ep))
        mem[CACHE_PART] = mem.get(CACHE_PART, 0.0) + BF16_WEIGHT * block * layers
        if fsdp2 and not runtime_drives_fsdp:
            # FSDP2's forward hooks gather on its own copy-in and all-gather streams (`get_all_gather_streams`:
            # not async, in forward; implicit prefetch keeps the current block's all-gather output until the
            # next block's copy-out), so two blocks' bf16 all-gather outputs and one bf16 cast of a block's
            # shard stay in that stream's pool, which no other stream can use: 0.91 + 0.23 GiB measured at h
            # 4096 and dp 2 in every 1F1B shape (benchmarks/results/h200-pp-fsdp-reserved), 1.84 against 1.83
            # at 405B shapes (h200-pp-tp-fsdp-405b). The runtime's `unshard(async_op=True)` gathers on the
            # current stream, whose pool the compute reuses: none when interleaved.
            mem[CACHE_PART] += BF16_WEIGHT * block * (2 + 1 / shards)
    elif training.zero_stage == 3:
        # FSDP: the current and the prefetched block, gathered in bf16; and the embedding, final norm
        # and head, which FSDP2 keeps gathered from forward to backward (the root module is not
        # resharded after forward: torch.distributed.fsdp.fully_shard docs, reshard_after_forward).
        block = sum(local_params(model, layers=1, first=False, last=False, tp=tp, ep=ep))
        ends = param_counts(model, layers=0, first=first, last=last) / tp
        # a block's weights in bf16, or its FP8 linears' in float8, 1 B each (`fp8_gathered`: the benchmarks/
        # results/h100-torchao-float8 steps held 0.10-0.45 GiB less than bf16 with them)
        block_bytes = block * (1 if training.fp8_gathered else BF16_WEIGHT)
        mem["gathered_weights"] = 2 * block_bytes + BF16_WEIGHT * ends
        if training.fsdp2:
            # FSDP2 gathers into a flat buffer on its all-gather stream and copies the weights out of it on the
            # compute stream; that stream's pool, which no other stream can use, keeps the root's flat buffer
            # (embedding, norm and head), the first block's gathered beside it, and their inputs' bf16 casts:
            # 2.62 and 2.40 GiB measured for Llama 3 8B at FSDP 8 and 64, against 2.61 and 2.40 here
            # (benchmarks/results/h100-torchao-float8, traced.jsonl: the all-gather stream's reserve)
            mem[CACHE_PART] += (BF16_WEIGHT * ends + block_bytes) * (1 + 1 / shards)
    if training.dtype == "fp8" and training.fp8_weight_cache:
        # each FP8 linear keeps its weight's casts, row-major and transposed, from the step's first micro-batch on
        mem["fp8_weights"] = FP8_CACHED_WEIGHT * block_weights(model, training, layers=layers, last=last, tp=tp, ep=ep)
    mem["framework"] = context_bytes
    return mem


def stage_memories(
    model: ModelSpec,
    training: Training,
    *,
    layers: tuple[int, ...],
    tp: int,
    dp: int,
    micro_batch: int,
    virtual_stages: int,
    context_bytes: float,
    cp: int = 1,
    ep: int = 1,
    stages: Sequence[int] | None = None,
) -> list[dict[str, float]]:
    """`stage_memory` of every pipeline stage (`layers`: blocks per stage; which blocks: `stage_models`), or of those
    `stages` only."""
    pp = len(layers)
    views = stage_models(model, layers, virtual_stages)
    return [
        stage_memory(
            views[p],
            training,
            stage=p,
            layers=layers[p],
            tp=tp,
            pp=pp,
            dp=dp,
            micro_batch=micro_batch,
            virtual_stages=virtual_stages,
            context_bytes=context_bytes,
            cp=cp,
            ep=ep,
        )
        for p in (range(pp) if stages is None else stages)
    ]


def fullest_stages(model: ModelSpec, layers: tuple[int, ...], training: Training, virtual_stages: int) -> list[int]:
    """The pipeline stages one of which requires the most memory: the first (embedding) and the last (loss),
    and of the middle stages the first holding each number and kind of blocks (`stage_models`), since the
    micro-batches a stage keeps in flight fall with its index and all else is alike; every stage under torch's
    runtime, whose receive buffers grow with the index (`activation_bytes`)."""
    pp = len(layers)
    if training.pipeline_runtime == "torch":
        return list(range(pp))
    views = stage_models(model, layers, virtual_stages)
    first_of: dict[tuple[int, int], int] = {}
    for p in range(1, pp - 1):
        first_of.setdefault((layers[p], id(views[p])), p)
    return sorted({0, pp - 1, *first_of.values()})


def peak_memory(stages: list[dict[str, float]], hbm: float | None) -> tuple[float, dict[str, float]]:
    """What must fit on the fullest GPU (the most any stage requires), and the parts of the peak a run
    reports (the largest over stages): where everything fits, each GPU's allocator keeps as much cache as
    its GPU has room for. The stage that requires the most need not be the one with the most cache."""
    need = max(map(required_bytes, stages))
    if hbm is not None and need <= hbm:
        stages = [{**m, CACHE_PART: min(m.get(CACHE_PART, 0.0), hbm - required_bytes(m))} for m in stages]
    return need, max(stages, key=lambda m: sum(m.values()))
