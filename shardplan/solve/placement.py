"""Ranks onto GPUs with CP-SAT: which GPU holds mesh position (p, d, t).

The model: a one-hot `x[i, pos]` puts GPU i at mesh position pos. Two GPUs are in the same group
of an axis (tp: same p and d; dp: same p and t) or are pipeline neighbours (same d and t, stages p
and p + 1). Each such pair pays the pair's link cost, 1 / (achievable GB/s), and each axis also
pays its worst pair once per ring edge of every group, since a ring runs at its slowest link. Axes
are weighted by the bytes each moves per step (`cost.traffic.traffic_bytes`). The objective is a
proxy: the solutions the solver finds are scored again by the cost model, which decides.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from shardplan.solve.space import divisors
from shardplan.topology.schema import Topology

Layout = list[list[list[int]]]
Shape = tuple[int, int, int]  # (pp, dp, tp)
AXES = ("pp", "dp", "tp")
COST_SCALE = 10_000  # pair cost = round(COST_SCALE / GB/s): 27 on NVSwitch H100, 183 on PCIe Gen5
WEIGHT_SCALE = 100  # the heaviest axis weighs 100


@dataclass(frozen=True)
class Placement:
    """The solver's answer over the GPUs it was given."""

    layouts: list[Layout]  # every distinct layout found, the solver's best first
    optimal: bool  # proved optimal for the proxy objective
    gap: float  # (objective - bound) / objective, 0 when optimal
    status: str = field(default="OPTIMAL")


def positions(shape: Shape) -> list[tuple[int, int, int]]:
    """Mesh positions (p, d, t) in row-major order: position k holds GPU k in the default layout."""
    pp, dp, tp = shape
    return list(itertools.product(range(pp), range(dp), range(tp)))


def to_layout(shape: Shape, gpu_at: Sequence[int]) -> Layout:
    """Nested layout[p][d][t] from the GPU at each row-major position."""
    pp, dp, tp = shape
    return [[[gpu_at[(p * dp + d) * tp + t] for t in range(tp)] for d in range(dp)] for p in range(pp)]


def pair_costs(topology: Topology, gpus: Sequence[int]) -> dict[tuple[int, int], int]:
    """Integer link cost of each pair (local indexes a < b): 1 / the pair's bandwidth when every GPU
    behind the highest PCIe uplink it crosses sends through that uplink too (the contention the cost
    model charges when groups run at once), less the cheapest pair's cost (a constant per pair)."""
    raw = {
        (a, b): round(COST_SCALE * _sharers(topology, gpus[a], gpus[b]) / topology.bandwidth_gbps(gpus[a], gpus[b]))
        for a, b in itertools.combinations(range(len(gpus)), 2)
    }
    floor = min(raw.values(), default=0)
    return {pair: c - floor for pair, c in raw.items()}


def _sharers(topology: Topology, i: int, j: int) -> int:
    """GPUs behind the highest shared PCIe uplink that a transfer i -> j crosses (1: none)."""
    kind = topology.path_kind(i, j)
    a = topology.gpus[i]
    level = {"pxb": "switch", "phb": "switch_group", "node": "host_bridge", "sys": "socket"}.get(kind)
    if level is None or getattr(a, level) is None:
        return 1
    return sum(1 for g in topology.gpus_by_node[a.node] if getattr(topology.gpus[g], level) == getattr(a, level))


def place(
    topology: Topology,
    gpus: Sequence[int],
    shape: Shape,
    traffic: dict[str, float],
    *,
    time_limit_s: float = 1.0,
    seed: int = 0,
) -> Placement:
    """Place mesh `shape` (pp, dp, tp) on `gpus` (as many as positions), cheapest communication first.

    >>> from shardplan import load_topology
    >>> t = load_topology("a100-pcie-8gpu-bridged")
    >>> best = place(t, range(8), (1, 4, 2), {"tp": 10.0, "dp": 1.0, "pp": 0.0}).layouts[0]
    >>> all(t.path_kind(*pair) == "nvlink" for pair in best[0])
    True
    """
    gpus = list(gpus)
    default = to_layout(shape, gpus)
    costs = pair_costs(topology, gpus)
    heaviest = max(traffic.values(), default=0.0)
    weights = {a: round(WEIGHT_SCALE * traffic.get(a, 0.0) / heaviest) if heaviest else 0 for a in AXES}
    busy = [a for a, n in zip(AXES, shape, strict=True) if n > 1 and weights[a]]
    one_group = busy in (["dp"], ["tp"]) and shape[AXES.index(busy[0])] == len(gpus)  # a ring of every GPU
    if not any(costs.values()) or not busy or one_group:
        return Placement(layouts=[default], optimal=True, gap=0.0)  # every layout costs the same
    from ortools.sat.python import cp_model  # here: a third of a second, which the cases above never pay

    m = cp_model.CpModel()
    v = _Vars(m, len(gpus), shape)
    objective = []
    for axis, degree in zip(AXES, shape, strict=True):
        if degree > 1 and weights[axis]:
            objective.append(weights[axis] * _axis_cost(m, v, axis, costs))
    _break_symmetry(m, v)
    for i, pos in enumerate(positions(shape)):  # hint: the default row-major layout
        for g in range(len(gpus)):
            m.add_hint(v.x[g, pos], g == i)
    m.minimize(sum(objective))

    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1  # one worker and a deterministic limit: same input, same layout
    solver.parameters.random_seed = seed
    solver.parameters.max_deterministic_time = time_limit_s
    found = _collector(v, gpus)
    status = solver.solve(m, found)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return Placement(layouts=[default], optimal=False, gap=1.0, status=solver.status_name(status))
    obj, bound = solver.objective_value, solver.best_objective_bound
    gap = 0.0 if status == cp_model.OPTIMAL or obj <= 0 else max(0.0, (obj - bound) / obj)
    layouts = [to_layout(shape, g) for g in reversed(found.solutions)]  # best first
    return Placement(
        layouts=[*layouts, default], optimal=status == cp_model.OPTIMAL, gap=gap, status=solver.status_name(status)
    )


class _Vars:
    """x[g, (p, d, t)]: GPU g (local index) sits at mesh position (p, d, t)."""

    def __init__(self, m: object, num_gpus: int, shape: Shape) -> None:
        self.shape = shape
        self.positions = positions(shape)
        self.x = {(g, pos): m.new_bool_var(f"x{g}_{pos}") for g in range(num_gpus) for pos in self.positions}
        for g in range(num_gpus):  # each GPU holds one position
            m.add_exactly_one(self.x[g, pos] for pos in self.positions)
        for pos in self.positions:  # each position is held by one GPU
            m.add_exactly_one(self.x[g, pos] for g in range(num_gpus))
        self.num_gpus = num_gpus

    def gpu_of(self, pos: tuple[int, int, int], values: object) -> int:
        """The GPU at `pos` in a solution (`values(var) -> bool`)."""
        return next(g for g in range(self.num_gpus) if values(self.x[g, pos]))

    def groups(self, axis: str) -> list[list[tuple[int, int, int]]]:
        """The positions of each group along `axis` (ring members for tp/dp)."""
        k = AXES.index(axis)
        out: dict[tuple[int, ...], list[tuple[int, int, int]]] = {}
        for pos in self.positions:
            out.setdefault(pos[:k] + pos[k + 1 :], []).append(pos)
        return list(out.values())


def _axis_cost(m: object, v: _Vars, axis: str, costs: dict[tuple[int, int], int]) -> object:
    """Sum of pair costs inside the axis's groups (pp: between neighbouring stages) plus the worst
    pair once per ring edge of every group: a ring runs at its slowest link."""
    groups = v.groups(axis)
    if axis == "pp":  # a chain: stage p talks to p + 1 only
        links = [(grp[k], grp[k + 1]) for grp in groups for k in range(len(grp) - 1)]
    else:
        links = [(a, b) for grp in groups for a, b in itertools.combinations(grp, 2)]
    worst = m.new_int_var(0, max(costs.values()), f"worst_{axis}")
    total = []
    for (a, b), c in costs.items():
        if c == 0:
            continue
        together = m.new_bool_var(f"{axis}_{a}_{b}")
        # minimisation keeps `together` at 0 unless GPUs a and b do fill two linked positions
        for pa, pb in links:
            m.add(together >= v.x[a, pa] + v.x[b, pb] - 1)
            m.add(together >= v.x[b, pa] + v.x[a, pb] - 1)
        m.add(worst >= c * together)
        total.append(c * together)
    ring_edges = len(groups) * (len(groups[0]) - 1)
    return sum(total) + ring_edges * worst


def _break_symmetry(m: object, v: _Vars) -> None:
    """GPU 0 is replica 0 and tensor rank 0. Reason: renumbering replicas, or tensor ranks, the same
    way in every stage maps any layout to one with this property and changes no group."""
    m.add_exactly_one(v.x[0, pos] for pos in v.positions if pos[1] == 0 and pos[2] == 0)


def _collector(v: _Vars, gpus: list[int]) -> object:
    """A solution callback recording each improving solution as the GPU at every position."""
    from ortools.sat.python import cp_model

    class Collector(cp_model.CpSolverSolutionCallback):
        def __init__(self) -> None:
            super().__init__()
            self.solutions: list[list[int]] = []

        def on_solution_callback(self) -> None:
            at = [gpus[v.gpu_of(pos, self.boolean_value)] for pos in v.positions]
            if at not in self.solutions:
                self.solutions.append(at)

    return Collector()


def layouts_for(topology: Topology, shape: Shape, traffic: dict[str, float], *, time_limit_s: float = 1.0) -> Placement:
    """Candidate layouts of `shape` over the whole topology, best by the proxy first.

    Nodes of one size are solved one pattern of links at a time (`Topology.link_patterns`: identical
    nodes, nodes of other GPU models joined alike, and apart from them a node with a lost link): each
    node holds a block (a_pp, a_dp, a_tp) of the mesh, every way of cutting the mesh into such blocks is
    placed inside one node of each pattern by CP-SAT and repeated on the nodes of that pattern (node b
    holds block b in row-major order). Nodes of different sizes are placed as one problem when small (up
    to MAX_JOINT_GPUS), else left in the default order (not optimal, gap unknown).
    """
    n = topology.num_gpus
    per_node = [list(gpus) for gpus in topology.gpus_by_node]
    one_size = len({len(gpus) for gpus in per_node}) == 1
    if topology.num_nodes == 1 or not one_size:
        if n <= MAX_JOINT_GPUS:
            return place(topology, range(n), shape, traffic, time_limit_s=time_limit_s)
        return Placement(layouts=[to_layout(shape, list(range(n)))], optimal=False, gap=1.0, status="UNSOLVED")
    patterns = [0] * len(per_node) if topology.identical_nodes else list(topology.link_patterns)
    first_of = {pattern: b for b, pattern in reversed(list(enumerate(patterns)))}  # a node of each pattern
    layouts, optimal, gap = [], True, 0.0
    for block in _blocks(shape, len(per_node[0])):
        local = {}  # each pattern's layouts of the block, as local indexes of its nodes' GPUs
        for pattern, b in first_of.items():
            solved = place(topology, per_node[b], block, traffic, time_limit_s=time_limit_s)
            optimal, gap = optimal and solved.optimal, max(gap, solved.gap)
            index = {g: k for k, g in enumerate(per_node[b])}
            local[pattern] = [[[[index[g] for g in row] for row in stage] for stage in lay] for lay in solved.layouts]
        for k in range(max(len(found) for found in local.values())):  # the k-th best of each pattern together
            on_node = [local[pattern][min(k, len(local[pattern]) - 1)] for pattern in patterns]
            tiled = _tile(shape, block, on_node, per_node)
            if tiled not in layouts:
                layouts.append(tiled)
    return Placement(layouts=layouts, optimal=optimal, gap=gap)


MAX_JOINT_GPUS = 16  # CP-SAT places up to this many GPUs of different nodes in one model


def _blocks(shape: Shape, size: int) -> list[Shape]:
    """Ways to cut mesh `shape` into blocks of `size` positions, one per node: (a_pp, a_dp, a_tp)
    with each a dividing its degree. Inner axes first (TP inside nodes is the usual best)."""
    pp, dp, tp = shape
    out = [
        (a, b, c)
        for c in reversed(divisors(tp))
        for b in reversed(divisors(dp))
        for a in reversed(divisors(pp))
        if a * b * c == size
    ]
    return out or [shape]


def _tile(shape: Shape, block: Shape, on_node: list[Layout], per_node: list[list[int]]) -> Layout:
    """Lay blocks of the mesh on the nodes: node b holds block b (row-major over blocks), its GPUs where
    `on_node[b]` (a layout of the block in local GPU indexes) puts them."""
    import numpy as np  # here, not at start-up

    bp, bd, bt = block
    p, d, t = np.indices(shape)
    node = ((p // bp) * (shape[1] // bd) + d // bd) * (shape[2] // bt) + t // bt
    local = np.asarray(on_node)[node, p % bp, d % bd, t % bt]
    return np.asarray(per_node)[node, local].tolist()
