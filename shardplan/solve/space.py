"""The search space as small pure generators: degrees, micro-batches, pipeline chunks, and the
memory-saving options. Each yields what is valid; the search composes them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from shardplan.model.schema import ModelSpec

ZERO_STAGES = (0, 1, 2, 3)
RECOMPUTE = ("none", "selective", "full")
MAX_VIRTUAL_STAGES = 4  # Megatron's interleaved schedule gains little past a few chunks per GPU


@dataclass(frozen=True, order=True)
class Candidate:
    """One point of the search space (ordering: a stable tie-break)."""

    tp: int
    pp: int
    dp: int
    micro_batch: int
    virtual_stages: int
    zero_stage: int
    recompute: str
    cp: int = 1
    ep: int = 1
    recompute_modules: tuple[str, ...] = ()


def divisors(n: int) -> list[int]:
    """Divisors of n, ascending.

    >>> divisors(12)
    [1, 2, 3, 4, 6, 12]
    """
    return [d for d in range(1, n + 1) if n % d == 0]


def tp_degrees(model: ModelSpec, num_gpus: int) -> list[int]:
    """TP degrees that split the attention heads, the KV heads (or replicate them evenly), the linear attention's
    key heads (hybrid models) and the hidden size, and divide the GPU count.

    >>> from shardplan import load_model
    >>> tp_degrees(load_model("llama3-8b"), 16)  # 32 heads, 8 KV heads
    [1, 2, 4, 8, 16]
    """
    kv, linear = model.num_kv_heads, model.gated_delta.key_heads if model.gated_delta else model.num_heads
    return [
        t
        for t in divisors(num_gpus)
        if model.num_heads % t == 0 and (kv % t == 0 or t % kv == 0) and model.hidden_size % t == 0 and linear % t == 0
    ]


def pp_degrees(model: ModelSpec, gpus_left: int) -> list[int]:
    """PP degrees that divide the GPUs left after TP, at most one block per stage."""
    return [p for p in divisors(gpus_left) if p <= model.num_layers]


def ep_degrees(model: ModelSpec, data_gpus: int, split_by: int = 1) -> list[int]:
    """Expert-parallel degrees: those that divide the GPUs left for data parallelism and, times `split_by` (the TP
    degree where each expert stays whole on a GPU), the experts (1 only for a dense model).

    >>> from shardplan import load_model
    >>> ep_degrees(load_model("mixtral-8x7b"), 32)  # 8 experts
    [1, 2, 4, 8]
    >>> ep_degrees(load_model("mixtral-8x7b"), 32, split_by=2)  # 8 experts, each whole on one of 2 TP ranks
    [1, 2, 4]
    """
    experts = model.moe.num_experts if model.moe else 1
    return [e for e in divisors(data_gpus) if e == 1 or experts % (e * split_by) == 0]


def micro_batches(per_replica: int) -> list[int]:
    """Micro-batch sizes (sequences) dividing one replica's share of the global batch."""
    return divisors(per_replica)


def virtual_stage_counts(model: ModelSpec, pp: int, num_micro: int, *, interleaved: bool = True) -> list[int]:
    """Interleaved chunks per GPU: 1, or v > 1 when the micro-batches fill whole rounds of pp (Megatron's
    interleaved 1F1B) and the blocks split into pp x v equal chunks, or do with the embedding and the
    head counted as a block each (Llama 3's split, 126 blocks on 16 x 8 chunks); 1 only where the
    runtime has no `interleaved` schedule."""
    if pp == 1 or not interleaved:
        return [1]
    return [
        v
        for v in range(1, MAX_VIRTUAL_STAGES + 1)
        if v == 1 or (num_micro % pp == 0 and 0 in (model.num_layers % (pp * v), (model.num_layers + 2) % (pp * v)))
    ]


def candidates(
    model: ModelSpec,
    num_gpus: int,
    global_batch: int,
    *,
    zero_stages: Sequence[int] = ZERO_STAGES,
    recompute: Sequence[str] = RECOMPUTE,
    micro_batch: Sequence[int] | None = None,
    pp: Sequence[int] | None = None,
    tp: Sequence[int] | None = None,
    interleaved: bool = True,
    pipeline_zero_stages: Sequence[int] = ZERO_STAGES,
    micro_batch_per_stage: bool = False,
    cp: Sequence[int] = (1,),
    ep: Sequence[int] | None = None,
    expert_tensor_parallel: bool = True,
    module_sets: Sequence[tuple[str, ...]] = ((),),
) -> Iterator[Candidate]:
    """Every valid combination, in a fixed order; the sequences given pin what they name; `cp`: the
    context-parallel degrees to try; `ep`: the expert-parallel ones (None: every one `ep_degrees` allows),
    each taken out of the data-parallel GPUs (times tp where each expert stays whole on a GPU, not
    `expert_tensor_parallel`, they must divide the experts). ZeRO stages above 0 only where weights are held
    more than once (there is nothing to shard over one copy); one model chunk per GPU where the pipeline runtime has
    no `interleaved` schedule, and with pp > 1 only the `pipeline_zero_stages` it runs, and at least a micro-batch
    per stage where it needs one (`micro_batch_per_stage`). `module_sets`: the sets of
    Megatron's `recompute_modules` tried beside recompute none and selective (other modes take none)."""
    for t in tp_degrees(model, num_gpus):
        if tp is not None and t not in tp:
            continue
        for p in pp_degrees(model, num_gpus // t):
            if pp is not None and p not in pp:
                continue
            for c in sorted(cp):
                if (num_gpus // (t * p)) % c:
                    continue
                data = num_gpus // (t * p * c)  # GPUs that take different sequences: dp x ep
                if global_batch % data:
                    continue
                for e in ep_degrees(model, data, 1 if expert_tensor_parallel else t):
                    if (ep is not None and e not in ep) or (e > 1 and c > 1):  # cp with ep: not modelled
                        continue
                    dp = data // e
                    for mb in micro_batches(global_batch // data):
                        if micro_batch is not None and mb not in micro_batch:
                            continue
                        num_micro = global_batch // (data * mb)
                        if micro_batch_per_stage and num_micro < p:
                            continue
                        for v in virtual_stage_counts(model, p, num_micro, interleaved=interleaved):
                            for z in zero_stages:
                                if (z and data * c == 1) or (p > 1 and z not in pipeline_zero_stages):
                                    continue
                                for r in recompute:
                                    for mods in module_sets if r in ("none", "selective") else ((),):
                                        yield Candidate(t, p, dp, mb, v, z, r, c, e, mods)
