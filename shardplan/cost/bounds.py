"""What no placement beats, for the search's lower bounds: the fastest any ring or all-to-all of n GPUs can move
bytes on a topology, and the least time a collective takes at such a rate (latency left out). Each holds for every
group the cost model times (`collectives.collective_time_s`), alone or beside others."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from shardplan.cost.collectives import NVLS_ALLREDUCE_SPEEDUP, _nics_of, _split_by_node, bus_factor
from shardplan.topology.schema import Topology


def transfer_lower_bound_s(op: str, n: int, size_bytes: float, ring_gbps: float) -> float:
    """No placement runs `op` over `n` GPUs in less than this when no ring of them moves bytes faster
    than `ring_gbps` (`ring_gbps_bound`): the ring's bus bytes at that rate; an all-reduce may take
    NVLS (its speed-up over the ring) or a tree (at least the buffer once), so it is charged the
    buffer once at the NVLS rate. Latency is left out."""
    if n <= 1 or size_bytes <= 0:
        return 0.0
    if op == "all_reduce":
        return size_bytes / (ring_gbps * 1e9 * NVLS_ALLREDUCE_SPEEDUP)
    return bus_factor(op, n) * size_bytes / (ring_gbps * 1e9)


@dataclass(frozen=True)
class _Fastest:
    """What no group of a topology beats, for the search's bounds (`ring_gbps_bound`, `all_to_all_gbps_bound`):
    inside a node, the fastest pair over NVLink (where NCCL runs several rings over NVLink bundles, all of a GPU's
    bundles together) and over anything else; the most GPUs one NVLink-connected component and one island
    (`Topology.island_of`: a node or an NVLink domain) hold; and the NICs (GB/s) that one GPU, one component's GPUs
    and one island's GPUs leave through together; and how many islands there are."""

    nvlink: float
    other: float
    component: int
    island: int
    gpu_nics: float
    component_nics: float
    island_nics: float
    islands: int

    @classmethod
    def of(cls, topology: Topology) -> _Fastest:
        alike = topology.identical_nodes  # what one node shows holds for all
        nodes = topology.gpus_by_node[:1] if alike else topology.gpus_by_node
        fastest = {True: 0.0, False: 0.0}  # over NVLink pairs, and over the others, inside a node
        bundled: Counter[int] = Counter()  # each GPU's NVLink bundles together, GB/s
        for gpus in nodes:
            for a, b in itertools.combinations(gpus, 2):
                on_nvlink = topology.path_kind(a, b) == "nvlink"
                fastest[on_nvlink] = max(fastest[on_nvlink], topology.bandwidth_gbps(a, b))
                if (a, b) in topology._bundles:
                    bundled.update(dict.fromkeys((a, b), topology.bandwidth_gbps(a, b)))
        components = topology.nvlink_islands()
        for component in components[:1] if alike else components:  # domains over nodes: a pair across two
            first = component[0]
            if across := next((b for b in component if topology.gpus[b].node != topology.gpus[first].node), None):
                fastest[True] = max(fastest[True], topology.bandwidth_gbps(first, across))
        islands = _split_by_node(topology, range(topology.num_gpus))
        sample = [islands[topology.island_of[0]]] if alike else list(islands.values())  # islands alike too
        shown = {g for gpus in sample for g in gpus}

        def nics(groups: Sequence[Sequence[int]]) -> float:
            """The most NICs any of `groups` leaves through together, GB/s (none where nothing leaves an island)."""
            return max(sum(dict(_nics_of(topology, gpus)).values()) for gpus in groups) if len(islands) > 1 else 0.0

        return cls(
            nvlink=max(fastest[True], *bundled.values(), 0.0),
            other=fastest[False],
            component=len(components[0]),
            island=max(map(len, islands.values())),
            gpu_nics=nics([[g] for g in sorted(shown)]),
            component_nics=nics([c for c in components if shown.intersection(c)]),
            island_nics=nics(sample),
            islands=len(islands),
        )

    def inside(self, n: int, crossing: bool) -> float:
        """The fastest a ring of `n` GPUs inside one island can run, GB/s (0 where none holds n): its slowest hop,
        over NVLink where its GPUs may all share a component (not `crossing`), else over PCIe."""
        if n > self.island:
            return 0.0
        return self.other if crossing or n > self.component else max(self.nvlink, self.other)


def ring_gbps_bound(topology: Topology, n: int, *, crossing: bool = False) -> float:
    """No ring of `n` GPUs runs faster than this, GB/s; with `crossing`, no ring whose GPUs are not all of one
    NVLink-connected component. Inside an island (a node, or an NVLink domain), the fastest its slowest hop can
    be: over NVLink (several rings at once over bundles) where all its GPUs may share a component, else over
    PCIe. Across islands, each island's part of the ring (at most n - 1 GPUs) is no faster than its own hops and
    the NICs its GPUs leave through: one GPU's own NICs; those of GPUs of one NVLink component at NVLink's pace;
    those of a whole island at PCIe's."""
    f = _Fastest.of(topology)
    if f.islands == 1:
        return f.inside(n, crossing)
    most = (n - 1) * f.gpu_nics  # an island's part holds at most n - 1 of the GPUs
    across = max(f.gpu_nics, min(f.nvlink, most, f.component_nics), min(f.other, most, f.island_nics))
    return max(f.inside(n, crossing), across)


def all_to_all_gbps_bound(topology: Topology, n: int, *, crossing: bool = False, groups: int = 1) -> float:
    """No all-to-all of `n` GPUs moves a rank's buffer faster than this, GB/s of the buffer (`crossing`: as
    `ring_gbps_bound`). Inside an island, a ring's bus bytes at `ring_gbps_bound`. Across islands, as
    `rings_time_s` times it: the K ranks of the island that holds most of them (every K that the islands allow is
    tried) send 1/n of their buffers to each other over their own hops, and (n - K)/n of them to other islands
    through the NICs that the group's island of fewest ranks (at most min(K, n - K)) leaves through, no faster than
    their own: at most K x one GPU's NICs, and no more than their component's (its ranks over NVLink) or island's.
    With `groups` such all-to-alls at once (a pipeline stage's EP groups), the slowest of them: where one stays in
    an island, no faster than inside one; where every one leaves its island, their bytes to other islands (each
    group at least what its largest parts in islands leave to send) share the NICs of all the groups' GPUs, and of
    all islands.

    >>> from shardplan import load_topology
    >>> t = load_topology("dgx-h100", nodes=2)
    >>> nic = sum(gbps for _, gbps in t.nic_links(0))
    >>> all_to_all_gbps_bound(t, 16) == nic * 2  # 8 ranks a node, each sending half its buffer through its NIC
    True
    """
    if n <= 1:
        return math.inf
    f = _Fastest.of(topology)
    bound = f.inside(n, crossing) / bus_factor("all_to_all", n)
    for k in range(-(-n // f.islands), min(n - 1, f.island) + 1) if f.islands > 1 else ():
        fewest = min(k, n - k) * f.gpu_nics  # at most K x one GPU's NICs too
        ways = [(f.other, f.island_nics)] + ([(f.nvlink, f.component_nics)] if k <= f.component else [])
        for hop, nics in ways:
            inside = n / (k - 1) * hop if k > 1 else math.inf
            bound = max(bound, min(inside, n / (k * (n - k)) * min(nics, fewest)))
    if groups > 1 and f.islands > 1 and not crossing:
        # a group split over islands in parts K_i sends sum K_i (n - K_i) / n buffers out of them: least with its
        # parts as large as islands allow, one of them short of n
        parts = [min(n - 1, f.island)]
        while left := n - sum(parts):
            parts.append(min(left, f.island))
        leaving = sum(k * (n - k) for k in parts) / n
        nics = min(groups * n * f.gpu_nics, f.islands * f.island_nics)
        one_inside = f.inside(n, False) / bus_factor("all_to_all", n)
        bound = min(bound, max(one_inside, nics / (groups * leaving)))
    return bound
