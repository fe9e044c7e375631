"""NCCL's rings over GPUs that NVLink bundles join pair by pair, without a switch (a DGX-1's cube mesh, an HGX
4-GPU board, bridged pairs): which ring it builds first, and how many NVLinks of each GPU its rings use together.

NCCL's ring search (src/graph/search.cc, ncclTopoCompute) looks for as many rings (channels) as the links carry,
each taking its speed off every directed link it uses (a link's two directions are counted apart), and keeps the
set that moves the most (nChannels x speed), trying speeds down to about half the first it finds. On four V100s
with two NVLinks between every pair it found six rings at one link's speed each, every direction of every link
used once (the graph NCCL dumped, github.com/NVIDIA/nccl/issues/713): three times what one ring over the bundles
moves. The functions here work on a matrix of NVLink counts between a group's GPUs, in the group's order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import cache

# The most GPUs whose rings are searched (NVLink meshes without a switch have 8 at most).
RING_SEARCH_MAX_GPUS = 8


@cache
def widest_ring(links: tuple[tuple[int, ...], ...]) -> tuple[int, ...]:
    """The order (indexes into `links`) of the ring whose fewest-linked hop has the most NVLinks, as NCCL builds
    its first ring from the NVLinks alone where it can: on a DGX-1 cube mesh 0-3-2-1-5-6-7-4 over NV2 bundles only,
    where PCIe order crosses between the quads without NVLink. Of the rings as wide, the first in the given order
    (the given order itself where no ring is wider).

    >>> widest_ring(((0, 0, 2, 2), (0, 0, 2, 2), (2, 2, 0, 0), (2, 2, 0, 0)))  # no NVLink joins 0-1 nor 2-3
    (0, 2, 1, 3)
    """
    n = len(links)
    if 3 <= n <= RING_SEARCH_MAX_GPUS:
        for least in sorted({c for row in links for c in row} - {0}, reverse=True):
            if ring := next(_rings(n, lambda a, b, least=least: links[a][b] >= least), None):
                return tuple(ring)
    return tuple(range(n))


def _rings(n: int, room: Callable[[int, int], int]) -> Iterator[list[int]]:
    """Every ring through GPUs 0..n-1, from the first, whose every hop a -> b has `room(a, b)` > 0: depth first, each
    hop to the GPU with the most room towards it first (then the lowest index)."""
    path = [0]

    def extend() -> Iterator[list[int]]:
        last = path[-1]
        if len(path) == n:
            if room(last, 0) > 0:
                yield list(path)
            return
        for nxt in sorted((b for b in range(n) if b not in path and room(last, b) > 0), key=lambda b: -room(last, b)):
            path.append(nxt)
            yield from extend()
            path.pop()

    yield from extend()


# Steps of the exhaustive search over sets of rings (`_best_ring_set`) before CP-SAT takes over (`_most_rings`):
# on every group of a DGX-1's GPUs, and on all 8 with one bundle a link short, it ends within 2,000, so planning
# there needs no OR-Tools import (0.3 s of the CLI's time); with two bundles short some need millions.
RING_SET_SEARCH_STEPS = 5_000


@cache
def ring_links(links: tuple[tuple[int, ...], ...]) -> float:
    """NVLinks of each GPU, per direction, that NCCL's rings over these GPUs use together (`links`: NVLinks between
    each pair): rings at half a link's speed each (NCCL's speed steps go below one link's rate), packed into the
    links' two directions, as many as fit, exactly: so a link more never packs fewer rings. Greedily first
    (`_rings`' first ring, again and again); where that falls short of what the links could carry (`_cut_bound`),
    the most that fit, by a search over sets of rings or, where that runs long, CP-SAT. Two GPUs: their bundle;
    four GPUs with two links between every pair: all six, as NCCL found.

    >>> ring_links(((0, 4), (4, 0)))
    4.0
    >>> ring_links(((0, 2, 2, 2), (2, 0, 2, 2), (2, 2, 0, 2), (2, 2, 2, 0)))
    6.0
    >>> ring_links(((0, 2, 0, 1), (2, 0, 1, 0), (0, 1, 0, 2), (1, 0, 2, 0)))  # a square: its thinnest hops bound it
    2.0
    """
    left = [[2 * c for c in row] for row in links]  # half-link rings each direction carries
    rings, bound = 0, _cut_bound(links)
    while rings < bound and (ring := next(_rings(len(left), lambda a, b: left[a][b]), None)) is not None:
        _take(left, _hops(ring), 1)
        rings += 1
    if rings < bound:
        found = _best_ring_set([[2 * c for c in row] for row in links], rings, bound)
        rings = _most_rings(links) if found is None else found
    return rings / 2


def _room(left: list[list[int]]) -> int:
    """The most rings that could still fit: the fewest any GPU can still send or receive."""
    return min(min(sum(left[a]), sum(row[a] for row in left)) for a in range(len(left)))


def _hops(ring: list[int]) -> list[tuple[int, int]]:
    """The ring's hops, the last back to the first."""
    return list(zip(ring, ring[1:] + ring[:1], strict=True))


def _take(left: list[list[int]], hops: list[tuple[int, int]], k: int) -> None:
    for a, b in hops:
        left[a][b] -= k


def _best_ring_set(left: list[list[int]], best: int, bound: int) -> int | None:
    """The most rings that fit `left`, by depth-first search over multisets of the rings through all GPUs (from the
    first), from `best` found before, up to `bound`; None where it has not ended in `RING_SET_SEARCH_STEPS` steps."""
    rings, steps = [_hops(ring) for ring in _rings(len(left), lambda a, b: left[a][b])], 0

    def search(first: int, count: int) -> None:
        nonlocal best, steps
        best = max(best, count)
        if best == bound or count + _room(left) <= best:
            return
        for k in range(first, len(rings)):
            hops = rings[k]
            steps += 1
            if steps > RING_SET_SEARCH_STEPS:
                return
            if all(left[a][b] > 0 for a, b in hops):
                _take(left, hops, 1)
                search(k, count + 1)
                _take(left, hops, -1)

    search(0, 0)
    return best if steps <= RING_SET_SEARCH_STEPS else None


def _cut_bound(links: tuple[tuple[int, ...], ...]) -> int:
    """The most half-link rings the links could carry: every ring leaves each set of the GPUs at least once, so no
    more than the half-links out of the set that has fewest."""
    n = len(links)
    return min(
        (
            2 * sum(links[a][b] for a in range(n) for b in range(n) if mask >> a & 1 and not mask >> b & 1)
            for mask in range(1, 2**n - 1)
        ),
        default=0,
    )


def _most_rings(links: tuple[tuple[int, ...], ...]) -> int:
    """The most half-link rings that fit the links: CP-SAT's integer program over every ring through the GPUs (from
    the first), a count per ring, the rings over each direction of each pair within its half-links. On random link
    counts between 4 and 8 GPUs, 2 ms on average and 41 ms at most (one worker: the same answer every time)."""
    from ortools.sat.python import cp_model

    rings = list(_rings(len(links), lambda a, b: links[a][b]))
    model = cp_model.CpModel()
    counts = [model.new_int_var(0, 2 * max(map(max, links)), f"ring{k}") for k in range(len(rings))]
    over: dict[tuple[int, int], list[cp_model.IntVar]] = {}
    for count, ring in zip(counts, rings, strict=True):
        for hop in _hops(ring):
            over.setdefault(hop, []).append(count)
    for (a, b), using in over.items():
        model.add(sum(using) <= 2 * links[a][b])
    model.maximize(sum(counts))
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.solve(model)
    return round(solver.objective_value)
