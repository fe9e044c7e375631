"""Times of collectives on every group of one mesh axis at once (all TP groups, all DP groups, all
pipeline neighbour pairs), each group under the load of the axis's other groups on its nodes.

Groups that sit alike are timed once: on interchangeable nodes a group's time depends only on where
its GPUs sit inside their nodes and on what the axis's other groups do on those nodes (which GPUs they
hold there, and whether they leave the node). There every link, switch and NIC belongs to one node, so
a group's rings are put together node by node, and what its GPUs on a node get is worked out once per
way of sitting there. The search costs thousands of layouts of up to tens of thousands of GPUs, so that
bookkeeping runs on arrays.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Any

import numpy as np

from shardplan.cost.collectives import (
    FLOOR_LATENCY_S,
    IslandShare,
    Rings,
    _link_class,
    _resources_used,
    island_resources,
    island_share,
    nccl_channels,
    rings_of_islands,
    rings_time_parts,
    rings_under_load,
)
from shardplan.cost.overlap import Overlap
from shardplan.topology.schema import Topology


@dataclass(frozen=True)
class _Index:
    """What one axis's groups do, row by row (one row per group, stage after stage)."""

    keys: np.ndarray  # (groups, w) int64: where the group sits and the company on its nodes (a view)
    company: np.ndarray  # the company's id on each node
    # the groups on node n, node_groups[node_ptr[n]:node_ptr[n + 1]]: kept where nodes are not interchangeable
    # (empty elsewhere, where `_rings_by_node` needs them not)
    node_ptr: np.ndarray
    node_groups: np.ndarray
    alike_ptr: np.ndarray  # one group of stage s per way of sitting: alike[alike_ptr[s]:alike_ptr[s + 1]]
    alike: np.ndarray


class AxisTimes:
    """Times of collectives on the groups of one mesh axis, all of which run at the same time (every
    pipeline stage's too): groups with a GPU on one of a group's nodes contend with it, since links,
    PCIe switches, sockets and NICs belong to one node. No GPU is in two groups of an axis.

    `groups` has shape (stages, groups per stage, group size). Times are kept in `memo` (the search
    shares it over the layouts it costs): per axis and stage, and below that per group in its company,
    so that groups of every stage, replica and layout that sit alike are timed once."""

    def __init__(self, topology: Topology, groups: np.ndarray, memo: dict[Hashable, Any]) -> None:
        self.topology, self.memo = topology, memo
        self.groups = np.ascontiguousarray(groups, dtype=np.int64)
        self.by_node = topology.num_nodes > 1 and topology.nodes_interchangeable  # rings put together node by node
        self._ways_of: dict[int, tuple[int, list[tuple[bytes, int]]]] = {}

    @cached_property
    def axis_id(self) -> int:
        """The axis's groups interned in the memo, on first use (axes of degree 1 are never timed)."""
        return self.memo.setdefault(("axis", self.groups.shape, self.groups.tobytes()), len(self.memo))

    def time_s(self, op: str, stage: int, size_bytes: float) -> float:
        """Seconds for `op` on all groups of `stage` at once: the slowest group's."""
        return self._slowest(op, stage, size_bytes)[0]

    def _slowest(self, op: str, stage: int, size_bytes: float) -> tuple[float, float, float]:
        """`rings_time_parts` of the slowest group for `op` on `stage`: kept per axis and stage (the search meets the
        same axes in many layouts) and, below that, per way the stage's groups sit (stages that sit alike)."""
        key = ("times", op, size_bytes, self.axis_id, stage)
        if key not in self.memo:
            ways, alike = self._ways(stage)
            alike_key = ("times", op, size_bytes, ways)
            if alike_key not in self.memo:
                self.memo[alike_key] = max(self._one(op, where, row, size_bytes) for where, row in alike)
            self.memo[key] = self.memo[alike_key]
        return self.memo[key]

    def sitting(self, stage: int) -> int:
        """An id of how the groups of `stage` sit, interned in the memo: stages of any axis and layout with the same
        id have the same times, overlaps and links."""
        key = ("sitting", self.axis_id, stage)  # the search meets the same axes in many layouts
        if key not in self.memo:
            index = self._index
            rows = index.alike[index.alike_ptr[stage] : index.alike_ptr[stage + 1]]
            self.memo[key] = self.memo.setdefault(("ways", index.keys[rows].tobytes()), len(self.memo))
        return self.memo[key]

    def link_class(self, stage: int) -> str:
        """ "nvlink", "pcie" or "net": the links the first group of `stage` runs over."""
        row = self._index.keys[stage * self.groups.shape[1]]
        key = ("link", row.tobytes())
        if key not in self.memo:
            self.memo[key] = _link_class(self.topology, self.groups[stage, 0].tolist())
        return self.memo[key]

    def overlap(self, stage: int, op: str, size_bytes: float) -> Overlap:
        """How `op` on `stage`'s groups and the compute beside them slow each other (`Overlap.of`). Each group's
        GPUs lose compute to its own channels (the SMs they hold) while its own collective runs beside it, its bytes
        at the pace its channels copy them and its latency at its own (`Overlap.of_collective`). The stage takes
        the slowest group's time, at that group's speed, and loses the compute of the group that loses most, spread
        over that time: a group of more NVLinks holds more SMs for a shorter while, and a slower link does not
        lighten the stage's loss by making another group the slowest. Groups of one GPU run none."""
        if self.groups.shape[2] <= 1:
            return Overlap()
        key = ("overlap", op, size_bytes, self.axis_id, stage)
        if key not in self.memo:
            ways, alike = self._ways(stage)
            alike_key = ("overlap", op, size_bytes, ways)
            if alike_key not in self.memo:
                groups = []
                for where, row in alike:
                    seconds, latency, pace = self._one(op, where, row, size_bytes)
                    overlap = Overlap.of(self._channels(where, row), pace).of_collective(seconds, latency)
                    groups.append((seconds, overlap.lost * seconds / overlap.speed, overlap))
                seconds, _, slowest = max(groups, key=lambda group: group[0])
                # the most compute a group loses, as a share of the slowest group's time beside compute: never more
                # than the largest share any group loses while its own collective runs
                worst = max(loss for _, loss, _ in groups) * slowest.speed / seconds if seconds > 0 else slowest.lost
                self.memo[alike_key] = Overlap(min(worst, max(o.lost for *_, o in groups)), slowest.speed)
            self.memo[key] = self.memo[alike_key]
        return self.memo[key]

    def _channels(self, where: bytes, row: int) -> int:
        key = ("channels", where)
        if key not in self.memo:
            self.memo[key] = nccl_channels(self.topology, self._flat[row].tolist())
        return self.memo[key]

    def _ways(self, stage: int) -> tuple[int, list[tuple[bytes, int]]]:
        """One group (its row) of `stage` for each way of sitting, with its key; and their id (`sitting`)."""
        if stage not in self._ways_of:
            index = self._index
            rows = index.alike[index.alike_ptr[stage] : index.alike_ptr[stage + 1]]
            self._ways_of[stage] = self.sitting(stage), [(index.keys[i].tobytes(), i) for i in rows.tolist()]
        return self._ways_of[stage]

    def _one(self, op: str, where: bytes, row: int, size_bytes: float) -> tuple[float, float, float]:
        key = ("group", op, size_bytes, where)
        if key not in self.memo:
            if self.groups.shape[2] <= 1 or size_bytes <= 0:
                self.memo[key] = 0.0, 0.0, math.inf
            else:
                self.memo[key] = rings_time_parts(self._rings(where, row), op, size_bytes, FLOOR_LATENCY_S)
        return self.memo[key]

    def _rings(self, where: bytes, row: int) -> Rings:
        """The rings of the group in `row` under the load of its company; one per way of sitting."""
        key = ("rings", where)
        if key not in self.memo:
            self.memo[key] = self._rings_by_node(row) if self.by_node else self._rings_in_company(self._flat[row])
        return self.memo[key]

    def _rings_by_node(self, row: int) -> Rings:
        """On interchangeable nodes: each of the group's nodes is one island, whose share depends only
        on the group's GPUs there and the company there; each such pair is worked out once, on node 0.
        The group's key says both for each of its GPUs: a node where it holds c GPUs appears c times."""
        size = self.groups.shape[2]
        key = self._index.keys[row]
        held = Counter(zip(key[:size].view(np.uint64).tolist(), key[size:].tolist(), strict=True))
        islands = [self._island(mask, company, size) for mask, company in held]
        return rings_of_islands(islands, hosts=True, counts=[n // mask.bit_count() for (mask, _), n in held.items()])

    def _island(self, mask: int, company: int, size: int) -> IslandShare:
        """The share of the GPUs `mask` of a group of `size` on a node where the axis's groups hold
        the GPUs of the `company`'s masks (a group with fewer GPUs there than `size` leaves the node)."""
        key = ("island", mask, company, size)
        if key not in self.memo:
            mine = _on_node_0(self.topology, mask)
            self.memo[key] = island_share(self.topology, mine, self._load(company, size), leaves=len(mine) < size)
        return self.memo[key]

    def _load(self, company: int, size: int) -> Counter[Hashable]:
        """How many ring flows of the axis's groups (each of `size`) use each link, switch and NIC of
        node 0 when they hold the GPUs of the `company`'s masks there."""
        key = ("load", company, size)
        if key not in self.memo:
            load: Counter[Hashable] = Counter()
            for held in self.memo[("company-masks", company)]:
                load.update(self._island_used(held, size))
            self.memo[key] = load
        return self.memo[key]

    def _island_used(self, mask: int, size: int) -> list[Hashable]:
        """`island_resources` of the GPUs `mask` of node 0 held by a group of `size`."""
        key = ("island-used", mask, size)
        if key not in self.memo:
            members = _on_node_0(self.topology, mask)
            self.memo[key] = island_resources(self.topology, members, leaves=len(members) < size)
        return self.memo[key]

    def _rings_in_company(self, mine: np.ndarray) -> Rings:
        """Elsewhere: the load of every group of the company, wherever they run."""
        index, flat = self._index, self._flat
        ptr, on_node = index.node_ptr, index.node_groups
        nodes = np.unique(self.topology.gpu_arrays[0][mine])
        company = np.unique(np.concatenate([on_node[ptr[n] : ptr[n + 1]] for n in nodes]))
        load: Counter[Hashable] = Counter()
        for g in company:
            load.update(self._used(flat[g]))
        return rings_under_load(self.topology, mine.tolist(), load)

    def _used(self, group: np.ndarray) -> list[Hashable]:
        """`_resources_used`, kept in the memo: the search meets the same groups in many layouts."""
        key = ("used", group.tobytes())
        if key not in self.memo:
            self.memo[key] = _resources_used(self.topology, group.tolist())
        return self.memo[key]

    @cached_property
    def _flat(self) -> np.ndarray:
        return self.groups.reshape(-1, self.groups.shape[2])

    @cached_property
    def _index(self) -> _Index:
        """Each group's key: for each of its GPUs, on interchangeable nodes the mask of the group's GPUs
        on that GPU's node (their indexes there) and the company there, else the GPU itself and the
        company on its node. Kept in the memo per axis."""
        key = ("index", self.axis_id)
        if key not in self.memo:
            self.memo[key] = self._build_index()
        return self.memo[key]

    def _build_index(self) -> _Index:
        node_of, local_of = self.topology.gpu_arrays
        flat = self._flat
        m = len(flat)
        nodes = node_of[flat]
        node_ptr = node_groups = np.empty(0, dtype=np.int64)
        if self.by_node:
            local = local_of[flat]
            on_node = _masks_on_node(nodes, local)
            company = _company_by_node(self.memo, nodes, local, on_node, self.topology.num_nodes)
            # the islands a group's GPUs make and their companies, whatever their order and their nodes
            where = on_node.view(np.int64)
        else:
            pairs = np.unique(nodes * m + np.arange(m)[:, None])  # (node, group), node-major
            node_groups = pairs % m
            node_ptr = np.searchsorted(pairs // m, np.arange(self.topology.num_nodes + 1))
            company = np.empty(self.topology.num_nodes, dtype=np.int64)
            for n in range(self.topology.num_nodes):
                what = tuple(flat[g].tobytes() for g in node_groups[node_ptr[n] : node_ptr[n + 1]])
                company[n] = self.memo.setdefault(("company", n, what), len(self.memo))
            where = flat
        stages, per_stage = self.groups.shape[:2]
        rows = np.concatenate([where, company[nodes], np.arange(m)[:, None] // per_stage], axis=1)
        alike = np.sort(_distinct_rows(rows))  # per stage, the first group of each key
        alike_ptr = np.searchsorted(alike // per_stage, np.arange(stages + 1))
        return _Index(rows[:, :-1], company, node_ptr, node_groups, alike_ptr, alike)


def _on_node_0(topology: Topology, mask: int) -> list[int]:
    """The GPUs of node 0 whose indexes inside the node are the bits set in `mask`."""
    gpus = topology.gpus_by_node[0]
    return [gpus[b] for b in range(mask.bit_length()) if mask >> b & 1]


def _masks_on_node(nodes: np.ndarray, local: np.ndarray) -> np.ndarray:
    """For each GPU of each row (`nodes` and `local`: its node and index there, shape (rows, k)), the
    bit mask of the row's GPUs on its node, by their indexes there."""
    m, k = nodes.shape
    if k == 2:  # pipeline neighbours: compared directly, three times faster than sorting each row
        bits = np.left_shift(np.uint64(1), local.astype(np.uint64))
        both = (bits[:, 0] | bits[:, 1])[:, None]
        return np.where((nodes[:, 0] == nodes[:, 1])[:, None], both, bits)
    order = (np.argsort(nodes, axis=1) + np.arange(0, m * k, k)[:, None]).ravel()  # runs of one node per row
    ordered = nodes.ravel()[order]
    starts = np.ones(m * k, dtype=bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    starts[::k] = True
    bits = np.left_shift(np.uint64(1), local.ravel()[order].astype(np.uint64))
    out = np.empty(m * k, dtype=np.uint64)
    out[order] = np.bitwise_or.reduceat(bits, np.flatnonzero(starts))[np.cumsum(starts) - 1]
    return out.reshape(m, k)


def _company_by_node(
    memo: dict[Hashable, Any], nodes: np.ndarray, local: np.ndarray, on_node: np.ndarray, num_nodes: int
) -> np.ndarray:
    """An id per node of what the axis's groups do there, interned in `memo`: the `on_node` mask of
    each GPU there, at its `local` index. A group with c GPUs on a node fills c slots with its mask
    there, so the memo also keeps the multiset of the groups' masks (whether a group leaves the node
    follows: its GPUs there are fewer than the group's size)."""
    table = np.zeros((num_nodes, int(local.max()) + 1), dtype=np.uint64)
    table[nodes, local] = on_node
    first, inverse = _distinct_rows(table, inverse=True)
    ids = []
    for row in table[first]:
        key = ("company", row.tobytes())
        if key not in memo:
            memo[key] = len(memo)
            filled = Counter(int(v) for v in row if v)
            memo[("company-masks", memo[key])] = [
                v for v, c in sorted(filled.items()) for _ in range(c // v.bit_count())
            ]
        ids.append(memo[key])
    return np.array(ids, dtype=np.int64)[inverse]


def _row_hashes(rows: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row (random odd weights, fixed seed): equal rows hash alike."""
    return rows.astype(np.uint64) @ _hash_weights(rows.shape[1])


@cache
def _hash_weights(width: int) -> np.ndarray:
    return np.random.default_rng(width).integers(0, 2**63, size=width, dtype=np.uint64) * 2 + 1


def _first_of_runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the first of each distinct value, and each value's distinct one (numbered in the order
    of the values). A stable sort puts each value's first index first in its run (and on numpy 2 it is
    faster than quicksort on these 64-bit hashes)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    first = order[starts]
    which = np.empty(len(order), dtype=np.int64)
    which[order] = np.cumsum(starts) - 1
    return first, which


def _distinct_rows(rows: np.ndarray, *, inverse: bool = False) -> Any:
    """Index of the first of each distinct row (and, with `inverse`, each row's distinct one), found
    by hash (`_row_hashes`) and checked; on a collision, by sorting the rows."""
    first, which = _first_of_runs(_row_hashes(rows))
    if not (rows == rows[first[which]]).all():
        _, first, which = np.unique(rows, axis=0, return_index=True, return_inverse=True)
        which = which.ravel()
    return (first, which) if inverse else first
