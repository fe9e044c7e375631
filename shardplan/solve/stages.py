"""Layers onto pipeline stages: the slowest stage as fast as it can be, every stage within memory.

Stage p holding k_p chunks (k_p blocks without interleaving) takes T_p(k_p) seconds per micro-batch:
GPU work a_p + n_p * b (a_p: the embedding on the first stage, the output head and loss on the last;
b: one block), or the host's dispatch time where that is longer; T_p never drops as blocks are added.
Memory is m_p + n_p * c_p bytes (m_p: embedding, head, logits, framework; c_p: one block's states and
the activations stage p keeps in flight), linear, read off at one and two chunks; where dense and MoE blocks
both occur, which a stage holds depends on the split, so c_p is the largest of any kind of block's.

A one-dimensional min-max split needs no solver: for a bound X on the slowest stage, stage p holds at
most K_p(X) chunks (T_p and memory within bounds), and X is reachable when every K_p(X) >= 1 and they
add up to the chunks there are. The least such X among the values the T_p take is the optimum, found
by bisection; among its splits, the most even one (the fewest chunks on the fullest stage).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from shardplan.cost.calibration import Rates
from shardplan.cost.compute import host_wrappers, stage_times
from shardplan.cost.memory import required_bytes, stage_memory
from shardplan.cost.stage_blocks import stages_differ
from shardplan.model.schema import ModelSpec
from shardplan.training import Training

TIME_UNIT_S = 1e-6  # stage times compared in whole microseconds
MEMORY_UNIT = 2**20  # and memory in MiB


def balance_stages(
    model: ModelSpec,
    training: Training,
    rates: Rates | Sequence[Rates],
    *,
    tp: int,
    pp: int,
    dp: int,
    micro_batch: int,
    virtual_stages: int,
    memory_bytes: float | None,
    cp: int = 1,
    ep: int = 1,
    memo: dict[tuple, int] | None = None,
) -> tuple[int, ...] | None:
    """Blocks per stage minimising the slowest stage's time, each stage within `memory_bytes`
    (None: unbounded); among equally fast splits the most even (`cp`, `ep`: context- and expert-parallel
    degrees). None
    when no split fits. `rates`: of the GPUs, or of each stage's (mixed clusters: its slowest GPU model).
    `memo` keeps stage times between calls of one search (its candidates differ in degrees, micro-batch,
    ZeRO stage and recompute only; the `Rates` objects are held by the caller).

    >>> from shardplan import Training, load_model
    >>> from shardplan.cost.calibration import rates_for
    >>> m, t = load_model("llama3-8b"), Training(global_batch=8, seq_len=4096)
    >>> balance_stages(m, t, rates_for("h100-sxm"), tp=1, pp=4, dp=1, micro_batch=1, virtual_stages=1,
    ...                memory_bytes=80e9)
    (8, 9, 9, 6)
    """
    if pp == 1:
        return (model.num_layers,)
    layers = model.num_layers
    # Interleaved stages hold v chunks of equal size: a stage's blocks are a multiple of v, or, where the
    # blocks do not split so, its blocks plus the embedding (first stage) and head (last) are (Llama 3's
    # split, arXiv:2407.21783 Sec. 3.3.2). k[p] counts stage p's chunks-worth of slots.
    chunk = virtual_stages
    ends = chunk > 1 and layers % (pp * chunk) != 0
    off = [((p == 0) + (p == pp - 1)) * ends for p in range(pp)]
    total = (layers + sum(off)) // chunk
    most = total - (pp - 1)  # every other stage holds at least one chunk
    # times[p][j]: stage p's time holding j + 1 chunks (first, middle and last stages computed once)
    of_stage = [rates] * pp if isinstance(rates, Rates) else list(rates)
    memo = {} if memo is None else memo
    wrapped = (training.recompute, host_wrappers(training, tp), tp, micro_batch, cp, ep)
    times = []
    for p in range(pp):
        row = []
        for j in range(1, most + 1):
            blocks = j * chunk - off[p]
            key = ("stage time", id(of_stage[p]), p == 0, p == pp - 1, blocks, *wrapped)
            if key not in memo:
                memo[key] = _time_us(model, training, of_stage[p], p, pp, tp, micro_batch, blocks, cp=cp, ep=ep)
            row.append(memo[key])
        times.append(row)
    cap = [most] * pp  # chunks each stage can hold within memory
    if memory_bytes is not None:
        limit = int(memory_bytes // MEMORY_UNIT)
        # which blocks a stage holds depends on the split (`stage_models`): where stages differ, each stage is taken
        # to hold one chunk's worth at the most any kind of block takes, and to grow by the most any kind adds
        kinds = range(max(model.block_kinds) + 1) if stages_differ(model) else ()
        alike = [model.with_blocks(tuple(int(i == k) for i in kinds)) for k in kinds] or [model]
        for p in range(pp):
            shape = (training, of_stage[p], p, pp, tp, dp, micro_batch, virtual_stages)
            one_two = [[_mem_mib(kind, *shape, j * chunk - off[p], cp=cp, ep=ep) for j in (1, 2)] for kind in alike]
            m1, grow = max(m1 for m1, _ in one_two), max(m2 - m1 for m1, m2 in one_two)
            cap[p] = min(most, 1 + (limit - m1) // grow) if grow > 0 else (most if m1 <= limit else 0)

    def fullest(bound: int) -> list[int]:
        """Chunks each stage can hold with its time within `bound` (0: not even one)."""
        return [min(cap[p], bisect.bisect_right(times[p], bound)) for p in range(pp)]

    def reachable(bound: int) -> bool:
        k = fullest(bound)
        return min(k) >= 1 and sum(k) >= total

    bounds = sorted({t for row in times for t in row})
    at = bisect.bisect_left(range(len(bounds)), True, key=lambda i: reachable(bounds[i]))
    if at == len(bounds):
        return None
    k = fullest(bounds[at])
    # the most even split: the least M with sum(min(k_p, M)) >= total, then the surplus taken off the
    # stages that run longest (the later one on a tie)
    even = next(m for m in range(1, most + 1) if sum(min(x, m) for x in k) >= total)
    k = [min(x, even) for x in k]
    for _ in range(sum(k) - total):
        p = max((p for p in range(pp) if k[p] > 1), key=lambda p: (times[p][k[p] - 1], p))
        k[p] -= 1
    return tuple(x * chunk - o for x, o in zip(k, off, strict=True))


def _time_us(
    model: ModelSpec,
    training: Training,
    rates: Rates,
    p: int,
    pp: int,
    tp: int,
    micro_batch: int,
    blocks: int,
    *,
    cp: int = 1,
    ep: int = 1,
) -> int:
    times = stage_times(
        model,
        training,
        layers=blocks,
        first=p == 0,
        last=p == pp - 1,
        micro_batch=micro_batch,
        tp=tp,
        cp=cp,
        ep=ep,
        rates=rates,
    )
    return round(times.total_s / TIME_UNIT_S)


def _mem_mib(
    model: ModelSpec,
    training: Training,
    rates: Rates,
    p: int,
    pp: int,
    tp: int,
    dp: int,
    micro_batch: int,
    v: int,
    blocks: int,
    *,
    cp: int = 1,
    ep: int = 1,
) -> int:
    mem = stage_memory(
        model,
        training,
        stage=p,
        layers=blocks,
        tp=tp,
        pp=pp,
        dp=dp,
        cp=cp,
        ep=ep,
        micro_batch=micro_batch,
        virtual_stages=v,
        context_bytes=rates.context_bytes,
    )
    return int(-(-required_bytes(mem) // MEMORY_UNIT))
