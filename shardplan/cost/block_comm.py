"""One transformer block's tensor- and context-parallel collectives per micro-batch: which run in each pass
(forward, recomputed forward, backward), and how much of each hides under the GEMMs or the attention beside it."""

from __future__ import annotations

from collections.abc import Callable

from shardplan.cost.overlap import Overlap
from shardplan.training import Training


def tp_passes(training: Training) -> float:
    """Passes that run the blocks' TP collectives: forward and backward, plus a recomputed forward
    (full; half the blocks for selective-layer), or its all-gathers alone (selective-op keeps the
    reduce-scatter outputs)."""
    return {"full": 3.0, "selective-op": 2.5, "selective-layer": 2.5}.get(training.recompute, 2.0)


def tp_layer_s(
    training: Training,
    sp: bool,
    time_of: Callable[[str, int], float],
    col: tuple[float, ...],
    widths: tuple[tuple[int, ...], int],
    mlp_share: float,
    beside: Callable[[str, int], Overlap],
) -> tuple[float, float, float]:
    """One block's TP collectives, seconds: (forward, backward exposed, backward in all), `time_of(op, width)`
    timing one collective of `width` elements per token on the stage's TP groups. Attention and the MLP each
    run a column-parallel GEMM (`col`: each one's time; `widths`: what each takes in,
    `ModelSpec.column_input_widths`, and the hidden size) and a row-parallel one; the MLP's collectives run in
    `mlp_share` of the blocks (`mlp_tp_share`). Forward: an all-reduce after each row-parallel GEMM, or under
    SP an all-gather before each column-parallel GEMM and a reduce-scatter after each row-parallel one.
    Backward: the column-parallel GEMMs' input gradients all-reduced (SP: reduce-scattered, after the input is
    all-gathered again for the weight gradient) and, under SP, the row-parallel outputs' gradients
    all-gathered. With `tp_async_backward` (Megatron's LinearWithGradAccumulationAndAsyncCommunication) the
    re-gather runs under the input-gradient GEMM and the reduction under the weight-gradient GEMM of the same
    linear (both gradient GEMMs take as long as the forward one), the two slowing each other as `beside(op, width)`
    says."""
    columns, hidden_size = widths
    totals = [0.0] * 3  # forward; backward moved, exposed
    for width, gemm, share in zip(columns, col, (1.0, mlp_share), strict=True):
        if sp:
            ag, rs = time_of("all_gather", width), time_of("reduce_scatter", width)
            row_out, row_grad = time_of("reduce_scatter", hidden_size), time_of("all_gather", hidden_size)
            hidden = beside("all_gather", width).added_s(ag, gemm) + beside("reduce_scatter", width).added_s(rs, gemm)
            side = (ag + row_out, ag + rs + row_grad, hidden + row_grad)
        else:
            ar = time_of("all_reduce", width)
            side = (time_of("all_reduce", hidden_size), ar, beside("all_reduce", width).added_s(ar, gemm))
        totals = [total + share * part for total, part in zip(totals, side, strict=True)]
    forward, moved, exposed = totals
    return forward, exposed if training.tp_async_backward else moved, moved


def cp_block_s(
    training: Training,
    time_of: Callable[[str], float],
    attention: tuple[float, float],
    cp: int,
    beside: Callable[[str], Overlap],
) -> tuple[float, float]:
    """One block's context-parallel traffic per micro-batch, seconds: (exposed, moved); `time_of(op)`
    times one collective of the whole sequence's K and V on the stage's CP groups, `attention` is the
    block's (forward, backward). Forward gathers K and V (again where recompute re-runs the attention),
    backward gathers them and reduce-scatters their gradients. Each pass hides under the share of its
    attention that runs beside it, the two slowing each other as `beside(op)` says: all but the local
    chunk's with the p2p ring, the local chunk's with the all-gather (`Training.cp_comm`)."""
    gather, scatter = time_of("all_gather"), time_of("reduce_scatter")
    share = (cp - 1) / cp if training.cp_comm == "p2p" else 1 / cp
    forward_passes = attention_forward_passes(training)

    on_gather = beside("all_gather")
    on_both = Overlap.merged([(gather, on_gather), (scatter, beside("reduce_scatter"))])
    return (
        forward_passes * on_gather.added_s(gather, share * attention[0])
        + on_both.added_s(gather + scatter, share * attention[1]),
        forward_passes * gather + gather + scatter,
    )


def attention_forward_passes(training: Training) -> float:
    """Forward passes of a block's attention per micro-batch: one, and again where recompute re-runs it
    (full, Megatron's selective, half the blocks under selective-layer; torchtitan's per-op policy keeps
    the attention's output)."""
    return 1 + {"full": 1.0, "selective": 1.0, "selective-layer": 0.5}.get(training.recompute, 0.0)
