"""Connected groups with networkx: NVLink islands of a topology, and groups of items that pairs link (the
readers' NVLink groups). networkx is imported where it is used: it costs the CLI a tenth of a second to start."""

from __future__ import annotations

from collections.abc import Hashable, Iterable

from shardplan.topology.schema import Topology


def groups_from_pairs(items: list[Hashable], pairs: Iterable[tuple[Hashable, Hashable]]) -> list[list[Hashable]]:
    """Connected groups (of two or more) that `pairs` make among `items`, in `items` order."""
    import networkx as nx

    g = nx.Graph()
    g.add_nodes_from(items)
    g.add_edges_from(pairs)
    order = {item: k for k, item in enumerate(items)}
    comps = [sorted(c, key=order.__getitem__) for c in nx.connected_components(g) if len(c) > 1]
    return sorted(comps, key=lambda c: order[c[0]])


def alone_in_the_rest(groups: list[list[int]], n: int) -> list[list[int]]:
    """`groups` of indexes 0..n-1 and each index in none of them as a group of its own, in order of their first.

    >>> alone_in_the_rest([[1, 3]], 4)
    [[0], [1, 3], [2]]
    """
    grouped = {k for group in groups for k in group}
    return sorted(groups + [[k] for k in range(n) if k not in grouped])


def nvlink_islands(topology: Topology) -> list[list[int]]:
    """GPUs that reach each other over NVLink only, largest first (singletons included)."""
    import networkx as nx

    g = nx.Graph()
    g.add_nodes_from(range(topology.num_gpus))
    g.add_edges_from((b.a, b.b) for b in topology.nvlinks)
    for d in topology.nvswitch_domains:
        g.add_edges_from(zip(d.gpus, d.gpus[1:], strict=False))
    return sorted((sorted(c) for c in nx.connected_components(g)), key=lambda c: (-len(c), c[0]))
