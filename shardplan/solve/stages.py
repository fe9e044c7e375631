"""Layers onto pipeline stages with CP-SAT: the slowest stage as fast as it can be, every stage
within memory.

Stage p holding n_p blocks takes T_p(n_p) seconds per micro-batch: GPU work a_p + n_p * b (a_p: the
embedding on the first stage, the output head and loss on the last; b: one block), or the host's
dispatch time where that is longer. T_p is convex and piecewise linear in n_p, so "slowest >= T_p"
is exact as one line per segment, read off the cost model at every block count. Memory is
m_p + n_p * c_p bytes (m_p: embedding, head, logits, framework; c_p: one block's states and the
activations stage p keeps in flight), linear, read off at 0 and 1 blocks.
"""

from __future__ import annotations

from shardplan.cost.calibration import Rates
from shardplan.cost.compute import stage_times
from shardplan.cost.memory import required_bytes, stage_memory
from shardplan.model.schema import ModelSpec
from shardplan.training import Training

TIME_UNIT_S = 1e-6  # the solver counts microseconds
MEMORY_UNIT = 2**20  # and MiB


def balance_stages(
    model: ModelSpec,
    training: Training,
    rates: Rates,
    *,
    tp: int,
    pp: int,
    dp: int,
    micro_batch: int,
    virtual_stages: int,
    memory_bytes: float | None,
    time_limit_s: float = 1.0,
) -> tuple[int, ...] | None:
    """Blocks per stage minimising the slowest stage's time, each stage within `memory_bytes`
    (None: unbounded). None when no split fits.

    >>> from shardplan import Training, load_model
    >>> from shardplan.cost.calibration import rates_for
    >>> m, t = load_model("llama3-8b"), Training(global_batch=8, seq_len=4096)
    >>> balance_stages(m, t, rates_for("h100-sxm"), tp=1, pp=4, dp=1, micro_batch=1, virtual_stages=1,
    ...                memory_bytes=80e9)
    (8, 9, 9, 6)
    """
    from ortools.sat.python import cp_model

    if pp == 1:
        return (model.num_layers,)
    layers = model.num_layers
    # Interleaved stages hold v chunks of equal size: a stage's blocks are a multiple of v, or, where the
    # blocks do not split so, its blocks plus the embedding (first stage) and head (last) are (Llama 3's
    # split, arXiv:2407.21783 Sec. 3.3.2). k[p] counts stage p's chunks-worth of slots.
    chunk = virtual_stages
    ends = chunk > 1 and layers % (pp * chunk) != 0
    off = [((p == 0) + (p == pp - 1)) * ends for p in range(pp)]
    slots = layers + sum(off)
    m = cp_model.CpModel()
    k = [m.new_int_var(1, slots // chunk, f"chunks{p}") for p in range(pp)]
    m.add(sum(k) * chunk == slots)
    slowest = m.new_int_var(0, 10**12, "slowest_us")
    segments: dict[tuple[bool, bool], list[tuple[int, int]]] = {}
    for p in range(pp):
        kind = (p == 0, p == pp - 1)
        blocks = [max(j * chunk - off[p], 0) for j in range(slots // chunk + 1)]
        if kind not in segments:
            ts = [_time_us(model, training, rates, p, pp, tp, micro_batch, b) for b in blocks]
            lines = [(ts[j] - (ts[j + 1] - ts[j]) * j, ts[j + 1] - ts[j]) for j in range(len(ts) - 1)]
            segments[kind] = list(dict.fromkeys(lines))  # (intercept, slope) of each segment
        for intercept, slope in segments[kind]:
            m.add(slowest >= intercept + slope * k[p])
        if memory_bytes is not None:  # linear in the blocks: read off at one and two chunks
            m1, m2 = (
                _mem_mib(model, training, rates, p, pp, tp, dp, micro_batch, virtual_stages, b) for b in blocks[1:3]
            )
            m.add(m1 + (m2 - m1) * (k[p] - 1) <= int(memory_bytes // MEMORY_UNIT))
    # among equally fast splits, the most even one (a stable tie-break, and less memory at the edges)
    spread = m.new_int_var(0, slots, "spread")
    m.add_max_equality(spread, k)
    m.minimize(slowest * (slots + 1) + spread)
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.max_deterministic_time = time_limit_s
    status = solver.solve(m)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    return tuple(solver.value(x) * chunk - o for x, o in zip(k, off, strict=True))


def _time_us(
    model: ModelSpec, training: Training, rates: Rates, p: int, pp: int, tp: int, micro_batch: int, blocks: int
) -> int:
    times = stage_times(
        model,
        training,
        layers=blocks,
        first=p == 0,
        last=p == pp - 1,
        micro_batch=micro_batch,
        tp=tp,
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
) -> int:
    mem = stage_memory(
        model,
        training,
        stage=p,
        layers=blocks,
        tp=tp,
        pp=pp,
        dp=dp,
        micro_batch=micro_batch,
        virtual_stages=v,
        context_bytes=rates.context_bytes,
    )
    return int(-(-required_bytes(mem) // MEMORY_UNIT))
