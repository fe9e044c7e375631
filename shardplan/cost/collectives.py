"""Time of one NCCL collective over given GPUs, on the links it really uses.

Structure follows NCCL (src/graph/tuning.cc, NVIDIA/nccl): a ring moves `bus bytes` (all-reduce
2(n-1)/n x size, all-gather / reduce-scatter / all-to-all (n-1)/n x size, broadcast and send/recv
1 x size) at the ring's slowest link (over NVLink bundles without a switch, several rings at once: `rings.py`),
under one of three protocols (LL, LL128, Simple) each with
its own latency and share of the link; an all-reduce across hosts may also run NCCL's tree (a chain
inside each host, a double binary tree between them: latency in log2 of the hosts); NCCL picks the
fastest, and so does this model. Groups that
span nodes run hierarchically: inside nodes over NVLink/PCIe, between nodes through the NICs the
group's GPUs sit near. Links shared by groups that run at the same time (a PCIe switch uplink, the
socket link, a NIC) are divided between them.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from shardplan.cost.rings import RING_SEARCH_MAX_GPUS, ring_links, widest_ring
from shardplan.errors import PlanError
from shardplan.topology.catalog import gpu_models
from shardplan.topology.schema import Topology

OPS: tuple[str, ...] = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "broadcast", "send_recv")

# Protocols (NCCL src/graph/tuning.cc, 2.19+ tables, ring): base latency (us), per-step latency by link
# class (us), and the
# share of link bandwidth the protocol reaches. LL sends 8 data bytes per 16-byte line (0.5); LL128
# 120 of 128 bytes (tuning.cc: "0.92 /*120.0/128.0*/"); Simple the whole link.
_BASE_LAT_US = {"LL": 6.6, "LL128": 14.0, "Simple": 8.4}
_STEP_LAT_US = {  # hwLat[NVLINK | PCI | NET][Ring][LL, LL128, Simple]
    "nvlink": {"LL": 0.6, "LL128": 1.9, "Simple": 3.4},
    "pcie": {"LL": 1.0, "LL128": 2.5, "Simple": 5.7},
    "net": {"LL": 2.7, "LL128": 4.0, "Simple": 14.0},
}
# Tree all-reduce across islands (NCCL 2.28 src/graph/tuning.cc, ncclTunerConstantsDefaults and
# ncclTopoTuneModel): a chain inside each island and a double binary tree between them. Latency
# base + 2 x ((ranks per island - 1) x intra + log2(islands) x net) per protocol; bus bandwidth 0.92 of
# the ring's (LL: 1/3.8, LL128 x 120/128 across nodes) carried at half rate (each byte goes up and
# down the tree); and NCCL's own correction for mid-sized buffers (treeCorrectionFactor, powers of
# two from 64 B; 1 past its table), taken as it is at each power of two and in a straight line between them in
# log2(size), where NCCL steps at each (`_tree_correction`). NCCL's per-channel tree caps (perChMaxTreeBws) need
# its channel count: not modelled.
_TREE_BASE_LAT_US = {"LL": 6.8, "LL128": 14.0, "Simple": 8.4}
_TREE_STEP_LAT_US = {
    "nvlink": {"LL": 0.6, "LL128": 1.25, "Simple": 4.0},
    "pcie": {"LL": 1.0, "LL128": 1.9, "Simple": 4.0},
    "net": {"LL": 5.0, "LL128": 8.5, "Simple": 14.0},
}
_TREE_BUS_SHARE = {"LL": 0.92 / 3.8, "LL128": 0.92 * 120 / 128, "Simple": 0.92}
_TREE_CORRECTION = {
    "LL":     (1.0, 1.0, 1.0, 1.0, .9, .8, .7, .7, .7, .7, .6, .5, .4, .4, .5, .6, .7, .8, .9, 1.0, 1.0, 1.0, 1.0),
    "LL128":  (1.0, 1.0, 1.0, 1.0, 1.0, .9, .8, .8, .8, .7, .6, .6, .6, .6, .6, .6, .8, .9, .9, .9, .9, 1.0, 1.0),
    "Simple": (.9, .9, .9, .9, .9, .9, .9, .8, .7, .6, .6, .5, .5, .5, .5, .6, .7, .8, .7, .7, .8, .9, .9),
}  # fmt: skip

# NVLS is charged the ring Simple latency (base + steps x per-step). NCCL's own table gives NVLS a
# flat 25 us, but on 8x H100 that predicts 8-32 MiB all-reduces 22-24% faster than measured
# (fixtures/nccl gcp-a3): the switch path needs the same pipeline fill as a ring. Assumption.
_PROTO_SHARE = {"LL": 0.5, "LL128": 0.92, "Simple": 1.0}

# NVLink SHARP (in-switch reduction) lifts all-reduce bus bandwidth over the ring on NVLS hardware:
# 473.1 / 365.6 GB/s = NVLS vs NCCL_NVLS_ENABLE=0 (the ring) on 8x H200, NCCL 2.27.7, 8 GiB
# (fixtures/nccl/nccl-tests-summary-nvls-vs-ring-h200-b200-1.txt). The most any switch gives (lower bounds use it).
NVLS_ALLREDUCE_SPEEDUP = 473.1 / 365.6
# That gain grows with the GPUs reduced: on the same 8x H200 NCCL runs the ring at 4 GPUs and NVLS from 5, at 1.14,
# 1.19, 1.26 and 1.29x the ring on 5, 6, 7 and 8 GPUs, which is the ring's bus factor 2(n-1)/n times one constant
# within 4% (NVLS moves each GPU's buffer about once where the ring moves it 2(n-1)/n times, at 0.74 of the rate).
# NVIDIA's GB200 NVL partition guide, quoted there: groups of four GPUs or fewer gain nothing from multicast. Above 8
# GPUs the gain stays at 8's: NVIDIA's NVL72 figure in the same fixture is 850 / 680 = 1.25x on 72 GPUs.
NVLS_MIN_GPUS = 5
# Ring collectives over an NVSwitch run at the ring rate the same sweeps measured, below the P2P rate (links.py): on
# 8x A100 at 234.89 GB/s of 300 at 16 GiB (fixtures/nccl/nccl-tests-all_reduce-a100-8gpu-nvswitch-massaged-1.txt);
# 8x H200 the ring all-reduces at 365.6 GB/s bus bandwidth (367.2 at 16 GiB; all-gather 361.4, reduce-scatter
# 362.9) against 376 of 450 P2P on H100; on 8x B200 (NVLink 5) at 682.2 of 900, where GB200's P2P writes reach 747
# (fixtures/p2p/p2pBandwidthLatencyTest-gb200-nvl4-4gpu-partial-1.txt), and NVLS there at 838.0. Over NVLink bundles
# without a switch as well: NCCL's rings copy with SMs, whose 128-byte payloads carry about 20 of an NVLink's 25 GB/s
# where the copy engines that P2P tests use carry more (NCCL's maintainer, github.com/NVIDIA/nccl-tests/issues/149).
SWITCH_RING_SHARE = {"ampere": 234.89 / 300, "hopper": 365.6 / 450, "blackwell": 682.2 / 900}
NVLS_GAIN = {"hopper": NVLS_ALLREDUCE_SPEEDUP, "blackwell": 838.0 / 682.2}

# The floor of one collective call (kernel launch, proxy and synchronisation), measured as the flat
# part of nccl-tests all_reduce on 8x H100 SXM, 8 B to 64 KiB: 32-38 us, median 34 us
# (fixtures/nccl/nccl-tests-all_reduce-h100-8gpu-gcp-a3-1.txt). A calibration file replaces it.
FLOOR_LATENCY_S = 34e-6

# What a collective run under compute costs that compute: NCCL holds one SM per channel for as long as
# the collective runs. Channels: 16 on 8x H100 NVSwitch, inside and across nodes ("16 coll channels,
# 16 nvls channels", NCCL 2.22 debug log, fixtures/nccl-log/nccl-debug-topo-graph-h100-2node-gcp-a3-socket-
# partial-1.txt); 4 over PCIe (NCCL's ring graphs on Azure NC A100 v4, nchannels 2-4,
# fixtures/nccl-xml/nccl-graph-azure-ncv4-a100-pcie-1.txt).
NCCL_CHANNELS = {"nvlink": 16, "net": 16, "pcie": 4}
# Over NVLinks between GPUs (no switch) NCCL opens fewer: its ring search (src/graph/search.cc) builds
# rings at one NVLink's speed or so each (speedArrayIntra: 20-40 GB/s per ring on sm70/sm80; NVLink2 and 3
# carry 20-25 GB/s a link), as many as the slowest hop's bonded links carry, and connect.cc runs every
# ring twice (copyChannels, nChannels * 2): 2 channels per NVLink of the slowest hop, up to the 16 above,
# and no fewer than over PCIe (one or two bonded links run at PCIe's speeds, where the search gives 2-4).
CHANNELS_PER_NVLINK = 2


def nccl_channels(topology: Topology, group: Sequence[int]) -> int:
    """The channels (one SM each) NCCL runs a collective over `group` with (`NCCL_CHANNELS`,
    `CHANNELS_PER_NVLINK`)."""
    link = _link_class(topology, group)
    if link != "nvlink":
        return NCCL_CHANNELS[link]
    bonded = min(topology.nvlink_count(a, b) for a, b in ring_hops(topology, group))
    return min(NCCL_CHANNELS[link], max(NCCL_CHANNELS["pcie"], CHANNELS_PER_NVLINK * bonded))


def nvls_speedup(n: int, gain: float = NVLS_ALLREDUCE_SPEEDUP) -> float:
    """How much faster NVLS all-reduces than the ring over `n` GPUs of one NVSwitch domain whose switches give
    `gain` on 8 (`NVLS_GAIN`; 1: NCCL runs the ring).

    >>> [round(nvls_speedup(n), 2) for n in (4, 5, 8, 72)]
    [1.0, 1.18, 1.29, 1.29]
    """
    if n < NVLS_MIN_GPUS:
        return 1.0
    return max(1.0, gain * min(1.0, bus_factor("all_reduce", n) / bus_factor("all_reduce", 8)))


def bus_factor(op: str, n: int) -> float:
    """Bytes each GPU sends per byte of the per-rank buffer (nccl-tests' busbw / algbw)."""
    if op == "all_reduce":
        return 2 * (n - 1) / n
    if op in ("all_gather", "reduce_scatter", "all_to_all"):
        return (n - 1) / n
    return 1.0


def _steps(op: str, n: int) -> int:
    return 2 * (n - 1) if op == "all_reduce" else (1 if op == "send_recv" else n - 1)


def ring_order(topology: Topology, gpus: Sequence[int]) -> list[int]:
    """The ring NCCL would build: GPUs ordered by node, socket, host bridge and switch, so that each
    PCIe level is entered and left once; inside a node whose GPUs NVLinks join pair by pair, the order
    whose fewest-linked hop has the most links (`rings.widest_ring`)."""
    order = sorted(gpus, key=lambda i: _position(topology, i))
    if not topology._bundles:
        return order
    out = []
    partners = topology._bundle_partners
    for _, group in itertools.groupby(order, key=lambda i: topology.gpus[i].node):
        members = list(group)
        searched = 3 <= len(members) <= RING_SEARCH_MAX_GPUS
        if searched and any(partners.get(g, frozenset()).intersection(members) for g in members):
            members = [members[k] for k in widest_ring(_link_counts(topology, members))]
        out += members
    return out


def ring_hops(topology: Topology, gpus: Sequence[int]) -> list[tuple[int, int]]:
    """Each GPU of `ring_order` and the next, the last and the first included (none for one GPU)."""
    ring = ring_order(topology, gpus)
    return list(zip(ring, ring[1:] + ring[:1], strict=True)) if len(ring) > 1 else []


def _link_counts(topology: Topology, members: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    """NVLinks of the bundle between each two of `members`, 0 where none joins them."""
    bundles = topology._bundles
    return tuple(
        tuple(bundle.links if (bundle := bundles.get((min(a, b), max(a, b)))) else 0 for b in members) for a in members
    )


def _mesh_links(topology: Topology, members: Sequence[int], hops: Sequence[tuple[int, int]]) -> float | None:
    """NVLinks of each GPU, per direction, that NCCL's rings over `members` (of one node) use together where their
    ring (`hops`) runs over NVLink bundles alone (`rings.ring_links`); None where a hop crosses a switch or PCIe."""
    bundles = topology._bundles
    if not hops or len(members) > RING_SEARCH_MAX_GPUS or any((min(a, b), max(a, b)) not in bundles for a, b in hops):
        return None
    return ring_links(_link_counts(topology, members))


def _position(topology: Topology, i: int) -> tuple[int, ...]:
    g = topology.gpus[i]
    return (
        g.node,
        g.socket,
        g.host_bridge,
        -1 if g.switch_group is None else g.switch_group,
        -1 if g.switch is None else g.switch,
        i,
    )


def _flow_resources(topology: Topology, a: int, b: int, local_gpus: int) -> list[tuple[Hashable, float]]:
    """The shared resources a transfer a -> b inside one node occupies, each with its GB/s, in a group with
    `local_gpus` GPUs on that node (which decides whether NCCL copies through host memory)."""
    kind = topology.path_kind(a, b)
    if kind == "nvlink":
        share = SWITCH_RING_SHARE.get(_architecture(topology, a))
        if share is None:
            bw = topology.bandwidth_gbps(a, b)
        else:  # a ring's measured share of the datasheet rate, at what this machine was measured to reach
            bw = topology.bandwidth_gbps(a, b, achievable=False) * share * topology.link_scale.nvlink
        if (min(a, b), max(a, b)) in topology._bundles:
            return [(("nvlink", a, b), bw)]
        return [(("nvs-out", a), bw), (("nvs-in", b), bw)]
    ga, gb = topology.gpus[a], topology.gpus[b]
    node = topology.nodes[ga.node]
    staged = topology.copies_through_host(a, b, local_gpus=local_gpus)
    up, down = topology._pcie_gbps(a, True, staged), topology._pcie_gbps(b, True, staged)
    out: list[tuple[Hashable, float]] = [(("pcie-up", a), up), (("pcie-down", b), down)]
    # Peer-to-peer, a copy climbs only as far as the switches the two GPUs share; staged through host memory, it
    # climbs to the CPU and back down through every switch above each GPU, one both sit under included. A switch's
    # uplink carries the flows through it at the PCIe rate (links.py); a staged flow's own pace (its GPU's link, at
    # the host-memory rate) caps it below that.
    if staged:
        up, down = topology._pcie_gbps(a, True, False), topology._pcie_gbps(b, True, False)
    if staged or (kind in ("pxb", "phb", "node", "sys") and ga.switch != gb.switch):
        out += _uplinks("sw", ga.node, ga.switch, gb.switch, up, down)
    if staged or (kind in ("phb", "node", "sys") and ga.switch_group != gb.switch_group):
        out += _uplinks("swg", ga.node, ga.switch_group, gb.switch_group, up, down)
    if kind == "sys" and node.socket_link_gbps:
        out.append((("smp", ga.node, ga.socket, gb.socket), node.socket_link_gbps))
    return out


def _uplinks(
    level: str, node: int, above_a: int | None, above_b: int | None, up: float, down: float
) -> list[tuple[Hashable, float]]:
    """The uplink of the switch (`level` "sw") or switch group ("swg") above the sending GPU, going up, and above the
    receiving one, coming down; none where a GPU sits under none."""
    out: list[tuple[Hashable, float]] = []
    if above_a is not None:
        out.append(((f"{level}-up", node, above_a), up))
    if above_b is not None:
        out.append(((f"{level}-down", node, above_b), down))
    return out


def _ring_flows(topology: Topology, group: Sequence[int]) -> list[list[tuple[Hashable, float]]]:
    return [_flow_resources(topology, a, b, len(group)) for a, b in ring_hops(topology, group)]


def _nics_of(topology: Topology, gpus: Sequence[int]) -> list[tuple[Hashable, float]]:
    """The NICs a group's GPUs leave their node through (each GPU's nearest), with their GB/s."""
    seen: dict[Hashable, float] = {}
    for i in gpus:
        seen.update(topology.nic_links(i))
    return list(seen.items())


def _split_by_node(topology: Topology, group: Sequence[int]) -> dict[Hashable, list[int]]:
    """The group's GPUs per NVLink island: an NVSwitch domain (which may span nodes, as in an
    NVL72 rack), else a node. Traffic between islands goes through NICs."""
    out: dict[Hashable, list[int]] = {}
    island = topology.island_of
    for i in group:
        out.setdefault(island[i], []).append(i)
    return out


def _resources_used(topology: Topology, group: Sequence[int]) -> list[Hashable]:
    """Each resource one ring flow of `group` occupies, once per flow: its links, switches and sockets
    inside each NVLink island, and its NICs where it spans islands."""
    per_node = _split_by_node(topology, group)
    leaves = len(per_node) > 1
    return [key for members in per_node.values() for key in island_resources(topology, members, leaves=leaves)]


def island_resources(topology: Topology, members: Sequence[int], *, leaves: bool) -> list[Hashable]:
    """`_resources_used` of a group's `members` inside one NVLink island (their NICs if the group
    `leaves` it): every resource belongs to one island, so a group's load is the sum of its islands'."""
    used = [key for flow in _ring_flows(topology, members) for key, _ in flow]
    if leaves:
        used += [key for key, _ in _nics_of(topology, members)]
    return used


def _loads(topology: Topology, groups: Sequence[Sequence[int]]) -> Counter[Hashable]:
    load: Counter[Hashable] = Counter()
    for group in groups:
        load.update(_resources_used(topology, group))
    return load


def _link_class(topology: Topology, group: Sequence[int]) -> str:
    if len(_split_by_node(topology, group)) > 1:
        return "net"
    kinds = {topology.path_kind(a, b) for a, b in ring_hops(topology, group)}
    return "nvlink" if kinds <= {"nvlink"} else "pcie"


def collective_time_s(
    topology: Topology,
    op: str,
    gpus: Sequence[int],
    size_bytes: float,
    *,
    concurrent: Sequence[Sequence[int]] = (),
    floor_latency_s: float = FLOOR_LATENCY_S,
) -> float:
    """Seconds for `op` over `gpus` with a per-rank buffer of `size_bytes` (as nccl-tests counts it).

    `concurrent` lists other groups running the same collective at the same time (e.g. every TP
    group of the mesh), whose traffic shares links with this one.

    >>> from shardplan import load_topology
    >>> t = load_topology("dgx-h100")
    >>> round(collective_time_s(t, "all_reduce", range(8), 2**30) * 1e3, 2)
    4.03
    """
    if op not in OPS:
        raise PlanError(f"unknown collective {op!r}; one of {', '.join(OPS)}")
    group = list(dict.fromkeys(gpus))
    outside = [g for g in group if not 0 <= g < topology.num_gpus]
    if outside:
        raise PlanError(f"GPU {outside[0]} is not in {topology.name}, whose GPUs are 0..{topology.num_gpus - 1}")
    if len(group) <= 1 or size_bytes <= 0:
        return 0.0
    return rings_time_s(
        rings_under_load(topology, group, _loads(topology, [group, *concurrent])), op, size_bytes, floor_latency_s
    )


@dataclass(frozen=True)
class Rings:
    """What a group's rings run over under a load, whatever the collective and its size: `ranks`,
    at most `per_island` of them in one of `islands` NVLink islands; the bus bandwidth inside the
    islands and, across them, through the NICs (GB/s); the link class inside the largest island;
    what the switches' reductions gain on 8 GPUs (`NVLS_GAIN`, 1: none) and whether the islands are hosts (NCCL's
    tree)."""

    ranks: int
    per_island: int
    islands: int
    intra_gbps: float
    net_gbps: float
    intra_kind: str
    nvls_gain: float
    hosts: bool


@dataclass(frozen=True)
class IslandShare:
    """What a group's `members` GPUs inside one NVLink island get under a load: the slowest ring
    flow among them (GB/s, inf for one GPU), the NICs they leave through together (inf where the
    group stays in the island), the link class between them and what their switch's reductions gain (NVLS)."""

    members: int
    intra_gbps: float
    nic_gbps: float
    kind: str
    nvls_gain: float


def island_share(topology: Topology, members: Sequence[int], load: Counter[Hashable], *, leaves: bool) -> IslandShare:
    """`IslandShare` of `members` (GPUs of one island, of a group that `leaves` it or not) when `load`
    says how many ring flows use each link, switch, socket and NIC."""

    def share(resources: Sequence[tuple[Hashable, float]]) -> float:
        return min(cap / max(load[key], 1) for key, cap in resources)

    hops = ring_hops(topology, members)
    flows = [_flow_resources(topology, a, b, len(members)) for a, b in hops]
    intra = min(map(share, flows)) if flows else math.inf
    if (mesh := _mesh_links(topology, members, hops)) is not None:
        # NCCL runs several rings at once over the bundles (rings.py): together they move `mesh` NVLinks' worth
        intra = mesh * min(share(flow) / topology.nvlink_count(a, b) for flow, (a, b) in zip(flows, hops, strict=True))
    return IslandShare(
        members=len(members),
        intra_gbps=intra,
        # Each ring channel leaves every node once, through a different NIC: a node sends the whole bus
        # bytes through the NICs its GPUs use.
        nic_gbps=sum(share([nic]) for nic in _nics_of(topology, members)) if leaves else math.inf,
        kind=_link_class(topology, members),
        nvls_gain=_nvls_gain(topology, members),
    )


def rings_of_islands(islands: Sequence[IslandShare], *, hosts: bool, counts: Sequence[int] | None = None) -> Rings:
    """`Rings` of a group from its islands' shares, in any order (`counts`: how many islands share each; one
    each by default); `hosts`: each island is one host. Of the largest islands, one whose GPUs talk over PCIe
    sets the per-step latency if any does."""
    counts = counts or [1] * len(islands)
    largest = max(islands, key=lambda i: (i.members, i.kind == "pcie"))
    return Rings(
        ranks=sum(i.members * n for i, n in zip(islands, counts, strict=True)),
        per_island=largest.members,
        islands=sum(counts),
        intra_gbps=min(i.intra_gbps for i in islands),
        net_gbps=min(i.nic_gbps for i in islands),
        intra_kind=largest.kind,
        nvls_gain=min(i.nvls_gain for i in islands),
        hosts=hosts,
    )


def rings_under_load(topology: Topology, group: Sequence[int], load: Counter[Hashable]) -> Rings:
    """`Rings` of `group` when `load` says how many ring flows use each link, switch, socket and NIC."""
    per_node = _split_by_node(topology, group)
    leaves = len(per_node) > 1
    islands = [island_share(topology, members, load, leaves=leaves) for members in per_node.values()]
    return rings_of_islands(islands, hosts=_islands_are_hosts(topology, per_node))


def rings_time_s(rings: Rings, op: str, size_bytes: float, floor_latency_s: float) -> float:
    """Seconds for `op` with a per-rank buffer of `size_bytes` over `rings`: NCCL's fastest
    algorithm and protocol."""
    return rings_time_parts(rings, op, size_bytes, floor_latency_s)[0]


def rings_time_parts(rings: Rings, op: str, size_bytes: float, floor_latency_s: float) -> tuple[float, float, float]:
    """`rings_time_s`; of it the latency (what does not move bytes) of that algorithm and protocol; and the GB/s
    each GPU's channels copy meanwhile: the bus bytes over the ring's time (LL and LL128 copy their flags too, so
    as much as Simple per second; under NVLS the switch reduces, and the GPUs copy as the ring would)."""
    n = rings.ranks
    bus_bytes = bus_factor(op, n) * size_bytes
    ring_s = max(bus_bytes / (rings.intra_gbps * 1e9), bus_bytes / (rings.net_gbps * 1e9))
    if op == "all_to_all" and rings.islands > 1:
        # no ring: each rank sends 1/n of its buffer straight to every other rank, so the (n - k)/n bound for other
        # islands leaves through the NICs from all k ranks of an island at once, where a ring leaves each island
        # with its bus bytes once (k = per_island)
        k = rings.per_island
        ring_s = max(
            (k - 1) / n * size_bytes / (rings.intra_gbps * 1e9), k * (n - k) / n * size_bytes / (rings.net_gbps * 1e9)
        )
    transfer_s = {p: ring_s / _PROTO_SHARE[p] for p in _PROTO_SHARE}
    copy_s = dict.fromkeys(transfer_s, ring_s)  # the time the channels' copies take at the pace they copy
    speedup = nvls_speedup(rings.per_island, rings.nvls_gain) if op == "all_reduce" else 1.0
    if speedup > 1 and rings.islands == 1:  # NVLS (Simple protocol only) where the switch can reduce
        transfer_s["NVLS"], copy_s["NVLS"] = ring_s / speedup, ring_s
    elif speedup > 1:
        # NCCL reduces inside islands first (NVLS tree): an island sends only bus_factor(op, islands) x size.
        inside = bus_factor(op, rings.per_island) * size_bytes / (rings.intra_gbps * 1e9 * speedup)
        transfer_s["NVLS"] = max(inside, bus_factor(op, rings.islands) * size_bytes / (rings.net_gbps * 1e9))
        copy_s["NVLS"] = transfer_s["NVLS"] * speedup
    latency_us = _ring_latency_us(op, n, rings.islands, size_bytes, rings.intra_kind)
    latency_us["NVLS"] = latency_us["Simple"]
    parts = [(max(floor_latency_s, latency_us[p] * 1e-6), transfer_s[p], copy_s[p]) for p in transfer_s]
    if op == "all_reduce" and rings.islands > 1 and rings.hosts:
        bus_bw = min(rings.intra_gbps, rings.net_gbps) * 1e9  # what the ring's bus bytes move at
        trees = _tree_all_reduce(rings, size_bytes, bus_bw)
        parts += [(max(floor_latency_s, lat * 1e-6), t, bus_bytes / bus_bw) for lat, t in trees]
    latency, transfer, copying = min(parts, key=lambda part: part[0] + part[1])
    return latency + transfer, latency, bus_bytes / copying / 1e9 if copying > 0 else math.inf


def _islands_are_hosts(topology: Topology, per_node: dict[Hashable, list[int]]) -> bool:
    """NCCL's tree runs between hosts; across a multi-node NVLink domain (NVL72) NCCL runs NVLS trees,
    which the model does not have."""
    return all(len({topology.node_of[i] for i in members}) == 1 for members in per_node.values())


def _tree_all_reduce(rings: Rings, size_bytes: float, bus_bw: float) -> list[tuple[float, float]]:
    """(latency us, transfer s) of NCCL's tree all-reduce per protocol, across the rings' islands."""
    ppn, islands, intra_kind = rings.per_island, rings.islands, rings.intra_kind
    out = []
    for p, share in _TREE_BUS_SHARE.items():
        correction = _tree_correction(p, size_bytes)
        lat = _TREE_BASE_LAT_US[p] + 2 * (
            (ppn - 1) * _TREE_STEP_LAT_US[intra_kind][p] + int(math.log2(islands)) * _TREE_STEP_LAT_US["net"][p]
        )
        out.append((lat, size_bytes / (0.5 * share * correction * bus_bw)))
    return out


def _tree_correction(protocol: str, size_bytes: float) -> float:
    """NCCL's tree correction (`_TREE_CORRECTION`) at `size_bytes`: its figure at each power of two from 64 B, and
    between two of them in a straight line in log2(size). NCCL steps at each, so that a buffer just past a power of
    two, where the factor steps up, would be timed faster than one just short of it (16 GPUs on two DGX A100s:
    116 us for 4.02 MiB against 122 us for 3.91 MiB).

    >>> [round(_tree_correction("Simple", 64 * 2**k), 2) for k in (13, 14, 15)], _tree_correction("Simple", 2**30)
    ([0.5, 0.5, 0.6], 1.0)
    >>> round(_tree_correction("Simple", 64 * 2**14.5), 2)
    0.55
    """
    table = (*_TREE_CORRECTION[protocol], 1.0)
    x = math.log2(max(size_bytes, 64) / 64)
    k = int(x)
    if k >= len(table) - 1:
        return table[-1]
    return table[k] + (x - k) * (table[k + 1] - table[k])


def _ring_latency_us(op: str, n: int, islands: int, size_bytes: float, intra_kind: str) -> dict[str, float]:
    """Ring latency per protocol as NCCL's tuning model charges it (src/graph/tuning.cc,
    ncclTopoTuneModel and ncclTopoGetAlgoTime): the steps that cross between nodes (2 (nodes - 1)
    for all-reduce, nodes - 1 for all-gather / reduce-scatter) at the network's per-step latency, the
    rest at the intra-node link's; LL's intra-node latency x 1.8 on more than one node; and the ring
    Simple all-reduce's "plateau effect" (latency x 1.9) on more than one node once the buffer
    reaches ranks / 16 x 64 KiB. `intra_kind`: the link class inside the largest island."""
    steps, inter = _steps(op, n), (_steps(op, islands) if islands > 1 else 0)
    out = {}
    for p in _PROTO_SHARE:
        intra = _STEP_LAT_US[intra_kind][p] * (1.8 if p == "LL" and islands > 1 else 1.0)
        out[p] = _BASE_LAT_US[p] + (steps - inter) * intra + inter * _STEP_LAT_US["net"][p]
    if op == "all_reduce" and islands > 1 and size_bytes >= n / 16 * 65536:
        out["Simple"] *= 1.9
    return out


def _nvls_gain(topology: Topology, group: Sequence[int]) -> float:
    """NVLS's gain on 8 GPUs (`NVLS_GAIN`) where `group` shares one NVSwitch domain that can reduce, else 1."""
    domains = {id(topology._domain_of.get(i)) for i in group}
    d = topology._domain_of.get(group[0])
    if len(domains) > 1 or d is None or not d.nvls:
        return 1.0
    return NVLS_GAIN.get(_architecture(topology, group[0]) or "", NVLS_ALLREDUCE_SPEEDUP)


def _architecture(topology: Topology, gpu: int) -> str | None:
    model = topology.gpus[gpu].model
    return gpu_models()[model].architecture if model is not None else None
