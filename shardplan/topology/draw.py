"""A picture of a topology: GPUs grouped by node and socket, edges coloured by link class and
labelled with achievable GB/s. Written to PNG or SVG with matplotlib (Agg, no display needed)."""

from __future__ import annotations

import math
from pathlib import Path

from shardplan.errors import ShardplanError
from shardplan.files import check_new_file, new_file
from shardplan.topology.schema import Topology

_COLOURS = {
    "nvlink": "#2a9d3f",
    "pix": "#1f77b4",
    "pxb": "#1f77b4",
    "phb": "#6a8fb8",
    "node": "#9467bd",
    "sys": "#d62728",
    "net": "#7f7f7f",
}
MAX_DRAWN_GPUS = 64


def draw(topology: Topology, path: str | Path) -> Path:
    """Write the picture to a new file (never over one that exists); the format follows the suffix (.png or .svg).
    Large topologies are drawn for their first nodes only (at most MAX_DRAWN_GPUS GPUs), and the title says so."""
    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg"):
        raise ShardplanError(f"{path}: --draw needs a .png or .svg file name")
    check_new_file(path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gpus = [g for g in topology.gpus if g.index < MAX_DRAWN_GPUS]
    pos: dict[int, tuple[float, float]] = {}
    for g in gpus:
        peers = [p for p in gpus if p.node == g.node and p.socket == g.socket]
        slot = peers.index(g)
        pos[g.index] = (g.node * 6 + g.socket * 2.5 + (slot % 2) * 1.2, -(slot // 2) * 1.2)
    fig, ax = plt.subplots(figsize=(max(6, 2 + len({g.node for g in gpus}) * 6), 5))
    labelled = len(gpus) <= 16
    for a in gpus:
        for b in gpus:
            if b.index <= a.index:
                continue
            kind = topology.path_kind(a.index, b.index)
            if kind in ("net", "phb", "node", "pxb") and not labelled:
                continue
            (x1, y1), (x2, y2) = pos[a.index], pos[b.index]
            ax.plot(
                [x1, x2],
                [y1, y2],
                color=_COLOURS[kind],
                lw=2.5 if kind == "nvlink" else 0.8,
                alpha=0.8 if kind == "nvlink" else 0.35,
                zorder=1,
            )
            if labelled and kind in ("nvlink", "pix", "sys"):
                try:
                    bw = topology.bandwidth_gbps(a.index, b.index)
                except ShardplanError:
                    bw = math.nan
                if not math.isnan(bw):
                    ax.text((x1 + x2) / 2, (y1 + y2) / 2, f"{bw:.0f}", fontsize=6, color=_COLOURS[kind])
    for g in gpus:
        x, y = pos[g.index]
        ax.scatter([x], [y], s=500, color="white", edgecolors="black", zorder=2)
        ax.text(x, y, str(g.index), ha="center", va="center", fontsize=8, zorder=3)
    for kind, colour in _COLOURS.items():
        ax.plot([], [], color=colour, label=kind)
    ax.legend(loc="upper right", fontsize=7, title="link (GB/s)")
    shown = f" (first {len(gpus)} of {topology.num_gpus} GPUs)" if len(gpus) < topology.num_gpus else ""
    ax.set_title(f"{topology.name}: {topology.num_gpus} GPUs, {topology.num_nodes} node(s){shown}")
    ax.set_axis_off()
    fig.tight_layout()
    try:
        with new_file(path, "xb") as out:
            fig.savefig(out, format=path.suffix.lower()[1:])
    finally:
        plt.close(fig)
    return path
