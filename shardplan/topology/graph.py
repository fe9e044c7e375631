"""The topology as a networkx graph: GPUs, PCIe switches, host bridges, sockets, NVSwitch fabrics,
NICs and the network, with each edge's link class and bandwidth. Used for islands, summaries and
pictures. networkx is imported where it is used: it costs the CLI a tenth of a second to start."""

from __future__ import annotations

import itertools
import math
from collections.abc import Hashable, Iterable
from typing import TYPE_CHECKING

from shardplan.errors import TopologyError
from shardplan.topology import links as L
from shardplan.topology.schema import Topology

if TYPE_CHECKING:
    import networkx as nx


def groups_from_pairs(items: list[Hashable], pairs: Iterable[tuple[Hashable, Hashable]]) -> list[list[Hashable]]:
    """Connected groups (of two or more) that `pairs` make among `items`, in `items` order."""
    import networkx as nx

    g = nx.Graph()
    g.add_nodes_from(items)
    g.add_edges_from(pairs)
    order = {item: k for k, item in enumerate(items)}
    comps = [sorted(c, key=order.__getitem__) for c in nx.connected_components(g) if len(c) > 1]
    return sorted(comps, key=lambda c: order[c[0]])


def nvlink_islands(topology: Topology) -> list[list[int]]:
    """GPUs that reach each other over NVLink only, largest first (singletons included)."""
    import networkx as nx

    g = nx.Graph()
    g.add_nodes_from(range(topology.num_gpus))
    g.add_edges_from((b.a, b.b) for b in topology.nvlinks)
    for d in topology.nvswitch_domains:
        g.add_edges_from(zip(d.gpus, d.gpus[1:], strict=False))
    return sorted((sorted(c) for c in nx.connected_components(g)), key=lambda c: (-len(c), c[0]))


def _gbps_or_nan(fn, *args, **kwargs) -> float:  # type: ignore[no-untyped-def]
    try:
        return fn(*args, **kwargs)
    except TopologyError:
        return math.nan


def to_graph(topology: Topology) -> nx.Graph:
    """Vertices `gpu:i`, `sw:n.s`, `hb:n.h`, `cpu:n.s`, `nvs:k`, `nic:n.name`, `net`; edges carry
    `kind` (nvlink, pcie, smp, net) and `gbps` (achievable, NaN where unknown)."""
    import networkx as nx

    g = nx.Graph()
    for gpu in topology.gpus:
        n = gpu.node
        g.add_node(f"gpu:{gpu.index}", kind="gpu", node=n, socket=gpu.socket)
        g.add_node(f"cpu:{n}.{gpu.socket}", kind="socket", node=n)
        g.add_node(f"hb:{n}.{gpu.host_bridge}", kind="host_bridge", node=n)
        g.add_edge(f"hb:{n}.{gpu.host_bridge}", f"cpu:{n}.{gpu.socket}", kind="pcie", gbps=math.nan)
        gen = gpu.pcie_gen or (topology.gpu_spec(gpu.index).pcie_gen if gpu.model else None)
        pcie = L.pcie_gbps(gen, gpu.pcie_width) if gen else math.nan
        up = f"hb:{n}.{gpu.host_bridge}"
        if gpu.switch_group is not None:
            g.add_node(f"swg:{n}.{gpu.switch_group}", kind="switch", node=n)
            g.add_edge(f"swg:{n}.{gpu.switch_group}", up, kind="pcie", gbps=pcie)
            up = f"swg:{n}.{gpu.switch_group}"
        if gpu.switch is not None and gpu.switch != gpu.switch_group:
            g.add_node(f"sw:{n}.{gpu.switch}", kind="switch", node=n)
            g.add_edge(f"sw:{n}.{gpu.switch}", up, kind="pcie", gbps=pcie)
            up = f"sw:{n}.{gpu.switch}"
        g.add_edge(f"gpu:{gpu.index}", up, kind="pcie", gbps=pcie)
    for node in topology.nodes:
        sockets = sorted({gp.socket for gp in topology.gpus if gp.node == node.index})
        for s, t in itertools.pairwise(sockets):
            g.add_edge(
                f"cpu:{node.index}.{s}", f"cpu:{node.index}.{t}", kind="smp", gbps=node.socket_link_gbps or math.nan
            )
    for b in topology.nvlinks:
        g.add_edge(
            f"gpu:{b.a}",
            f"gpu:{b.b}",
            kind="nvlink",
            links=b.links,
            gbps=_gbps_or_nan(topology.bandwidth_gbps, b.a, b.b),
        )
    for k, d in enumerate(topology.nvswitch_domains):
        g.add_node(f"nvs:{k}", kind="nvswitch")
        for i in d.gpus:
            per = d.gbps_per_link or (topology.gpu_spec(i).nvlink_gbps_per_link if topology.gpus[i].model else 0)
            bw = L.nvlink_gbps(d.links_per_gpu, per, switched=True) if per else math.nan
            g.add_edge(f"gpu:{i}", f"nvs:{k}", kind="nvlink", links=d.links_per_gpu, gbps=bw)
    for nic in topology.nics:
        v = f"nic:{nic.node}.{nic.name}"
        g.add_node(v, kind="nic", node=nic.node)
        anchor = f"gpu:{nic.near[0]}" if nic.near else None
        if anchor is not None:
            up = next(u for u in g.neighbors(anchor) if g.edges[anchor, u]["kind"] == "pcie")
            g.add_edge(v, up, kind="pcie", gbps=math.nan)
        elif nic.socket is not None:
            g.add_edge(v, f"cpu:{nic.node}.{nic.socket}", kind="pcie", gbps=math.nan)
        if topology.num_nodes > 1:
            g.add_edge(v, "net", kind="net", gbps=L.net_gbps(nic.gbit) if nic.gbit else math.nan)
    if topology.num_nodes > 1 and not topology.nics:
        for node in topology.nodes:
            g.add_edge(f"cpu:{node.index}.0", "net", kind="net", gbps=math.nan)
    return g
