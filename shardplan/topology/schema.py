"""`Topology`: every GPU of a machine or cluster, where it sits, and the links between GPUs.

Indexes are global (0..num_gpus-1, node by node). PCIe position is stored as coordinates inside
the node (socket, host bridge, switch group, switch); two GPUs' `path_kind` is the level at which
their coordinates first agree, exactly as the `nvidia-smi topo -m` legend defines it.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Hashable
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shardplan.errors import TopologyError
from shardplan.topology import links as L
from shardplan.topology.catalog import GpuModel, gpu_model

PathKind = Literal["self", "nvlink", "pix", "pxb", "phb", "node", "sys", "net"]
PATH_KINDS: tuple[str, ...] = ("self", "nvlink", "pix", "pxb", "phb", "node", "sys", "net")
SCHEMA_VERSION = 1


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Gpu(_Frozen):
    """One GPU and its place in its node."""

    index: int = Field(ge=0, description="Global index, 0..num_gpus-1.")
    node: int = Field(ge=0, description="Node index.")
    local_index: int = Field(ge=0, description="Index inside its node (NVML / nvidia-smi order).")
    name: str | None = Field(None, description="Product name, where the source says it.")
    model: str | None = Field(None, description="Catalogue key (e.g. 'h100-sxm'), None if unknown.")
    memory_bytes: int | None = Field(None, description="Device memory, bytes, None if unknown.")
    pci_bus_id: str | None = None
    numa_node: int | None = None
    socket: int = Field(description="CPU socket / NUMA domain group inside the node.")
    host_bridge: int = Field(description="PCIe host bridge group inside the node.")
    switch_group: int | None = Field(description="Top PCIe switch group (PXB reach), None: none.")
    switch: int | None = Field(description="Leaf PCIe switch (PIX reach), None: on a root port.")
    pcie_gen: int | None = Field(None, description="PCIe generation of the GPU's link.")
    pcie_width: int = Field(16, description="PCIe lanes of the GPU's link.")


class NvLinkBundle(_Frozen):
    """Direct bonded NVLinks between two GPUs (global indexes, a < b)."""

    a: int
    b: int
    links: int = Field(gt=0)
    gbps_per_link: float | None = Field(description="Per link per direction, GB/s; None: unknown.")


class NvSwitchDomain(_Frozen):
    """GPUs joined all-to-all through NVSwitches (one node, or a rack such as NVL72)."""

    gpus: tuple[int, ...]
    links_per_gpu: int = Field(gt=0)
    gbps_per_link: float | None
    nvls: bool = Field(False, description="NVLink SHARP in-switch reduction.")


class Nic(_Frozen):
    """A network adapter."""

    node: int
    name: str
    gbit: float | None = Field(description="Line rate, Gb/s.")
    socket: int | None
    near: tuple[int, ...] = Field(description="Global GPU indexes sharing its PCIe switch or bridge.")


class Node(_Frozen):
    """One machine."""

    index: int
    name: str
    socket_link_gbps: float | None = Field(None, description="Socket interconnect GB/s per direction.")
    p2p: bool = Field(True, description="PCIe peer-to-peer between GPUs works.")
    cpu: str | None = Field(None, description="The host CPU's maker: intel, amd, arm, other (None: not known).")


class Network(_Frozen):
    """The fabric between nodes."""

    name: str = "network"
    gbit_per_nic: float | None = None


class LinkScale(_Frozen):
    """Each link class's measured bus bandwidth over the one the catalogue's and `links.py`'s rates give
    (`cost.link_scale.calibrated_links`, from `shardplan calibrate` under torchrun); 1: nothing measured."""

    nvlink: float = Field(1.0, gt=0)
    pcie: float = Field(1.0, gt=0)
    net: float = Field(1.0, gt=0)


class Topology(_Frozen):
    """A machine or cluster: GPUs, NVLink bundles and fabrics, PCIe positions, NICs, network."""

    name: str
    source: str | None = None
    caveats: tuple[str, ...] = Field((), description="What the source could not tell (`TopologySpec.caveats`).")
    gpus: tuple[Gpu, ...]
    nodes: tuple[Node, ...]
    nvlinks: tuple[NvLinkBundle, ...] = ()
    nvswitch_domains: tuple[NvSwitchDomain, ...] = ()
    nics: tuple[Nic, ...] = ()
    network: Network = Field(default_factory=Network)
    link_scale: LinkScale = Field(
        default_factory=LinkScale, description="Measured over modelled bandwidth per link class (achievable rates)."
    )

    def with_link_scale(self, scale: LinkScale) -> Topology:
        """The same machine with its achievable link rates scaled by `scale` (lookups built afresh)."""
        return type(self).model_construct(
            **{name: getattr(self, name) for name in type(self).model_fields} | {"link_scale": scale}
        )

    # ----- lookups, built once ------------------------------------------------------------------
    @cached_property
    def _bundles(self) -> dict[tuple[int, int], NvLinkBundle]:
        return {(b.a, b.b): b for b in self.nvlinks}

    @cached_property
    def _bundle_partners(self) -> dict[int, frozenset[int]]:
        """The GPUs each GPU has an NVLink bundle to (none through a switch)."""
        out: dict[int, set[int]] = {}
        for a, b in self._bundles:
            out.setdefault(a, set()).add(b)
            out.setdefault(b, set()).add(a)
        return {g: frozenset(p) for g, p in out.items()}

    @cached_property
    def _domain_of(self) -> dict[int, NvSwitchDomain]:
        return {g: d for d in self.nvswitch_domains for g in d.gpus}

    @cached_property
    def _nics_of_node(self) -> dict[int, list[Nic]]:
        out: dict[int, list[Nic]] = {}
        for nic in self.nics:
            out.setdefault(nic.node, []).append(nic)
        return out

    @cached_property
    def node_of(self) -> tuple[int, ...]:
        """Node of each GPU."""
        return tuple(g.node for g in self.gpus)

    @cached_property
    def local_of(self) -> tuple[int, ...]:
        """Index inside its node of each GPU."""
        return tuple(g.local_index for g in self.gpus)

    @cached_property
    def gpu_arrays(self) -> tuple[Any, Any]:
        """`node_of` and `local_of` as int64 numpy arrays, for the cost model's bookkeeping on arrays."""
        import numpy as np  # here, not at start-up: `shardplan topo` needs no arrays

        return np.asarray(self.node_of, dtype=np.int64), np.asarray(self.local_of, dtype=np.int64)

    @cached_property
    def island_of(self) -> tuple[Hashable, ...]:
        """NVLink island of each GPU: its NVSwitch domain (which may span nodes, as in an NVL72
        rack), else its node. Traffic between islands goes through NICs."""
        return tuple(
            ("domain", id(self._domain_of[g.index])) if g.index in self._domain_of else ("node", g.node)
            for g in self.gpus
        )

    @cached_property
    def smallest_memory_bytes(self) -> int | None:
        """Memory of the smallest GPU, None where no GPU states its memory."""
        return min((g.memory_bytes or 0) for g in self.gpus) or None

    @cached_property
    def peak_bf16_flops(self) -> float:
        """Dense bf16 FLOP/s of all GPUs together (datasheet peaks): what MFU is measured against."""
        unknown = next((g.index for g in self.gpus if g.model is None), None)
        if unknown is not None:
            self.gpu_spec(unknown)  # the error that says to pass --gpu
        counts = Counter(g.model for g in self.gpus)
        return sum(n * gpu_model(key).bf16_dense_tflops for key, n in counts.items() if key) * 1e12

    @cached_property
    def gpu_model_ids(self) -> tuple[tuple[str, ...], Any]:
        """The distinct GPU models (catalogue keys, sorted) and each GPU's index among them as an int64 numpy
        array: which models a group of GPUs holds, on arrays."""
        import numpy as np  # here, not at start-up

        keys = tuple(sorted({self.gpu_spec(g.index).key for g in self.gpus}))
        return keys, np.asarray([keys.index(g.model) for g in self.gpus], dtype=np.int64)

    @cached_property
    def gpu_model_counts(self) -> dict[str, int]:
        """GPUs of each model (catalogue keys)."""
        import numpy as np  # here, not at start-up

        keys, model_ids = self.gpu_model_ids
        return dict(zip(keys, np.bincount(model_ids, minlength=len(keys)).tolist(), strict=True))

    @cached_property
    def slowest_gpu_model(self) -> str:
        """The catalogue key of the GPU model with the lowest dense bf16 peak (of one model: that one)."""
        return min(self.gpu_model_ids[0], key=lambda key: (gpu_model(key).bf16_dense_tflops, key))

    @cached_property
    def gpus_by_node(self) -> tuple[tuple[int, ...], ...]:
        """Global GPU indexes of each node, in local order."""
        out: list[list[int]] = [[] for _ in self.nodes]
        for g in self.gpus:
            out[g.node].append(g.index)
        return tuple(map(tuple, out))

    @cached_property
    def identical_nodes(self) -> bool:
        """Every node alike GPU for GPU (models, memory, PCIe positions, NIC speeds, NVLinks, by
        local index): what one node of the cluster shows holds for all."""
        first = self.gpus_by_node[0]
        for gpus in self.gpus_by_node[1:]:
            if len(gpus) != len(first):
                return False
            for a, b in zip(first, gpus, strict=True):
                ga, gb = self.gpus[a], self.gpus[b]
                here = (ga.model, ga.memory_bytes, ga.socket, ga.host_bridge, ga.switch_group, ga.switch)
                there = (gb.model, gb.memory_bytes, gb.socket, gb.host_bridge, gb.switch_group, gb.switch)
                if here != there or self.nic_gbit(a) != self.nic_gbit(b):
                    return False
            # each pair of local positions: its NVLinks on the first node and on this one
            for (a1, b1), (a2, b2) in itertools.combinations(zip(first, gpus, strict=True), 2):
                if self.nvlink_count(a1, a2) != self.nvlink_count(b1, b2):
                    return False
        return True

    @cached_property
    def link_patterns(self) -> tuple[Hashable, ...]:
        """How each node's GPUs are joined: link kind and bandwidth (in proportion to the node's slowest pair)
        of every pair of local positions. Nodes of one pattern take the same placement of ranks."""

        def pattern(gpus: tuple[int, ...]) -> Hashable:
            pairs = list(itertools.combinations(gpus, 2))
            gbps = [self.bandwidth_gbps(a, b) for a, b in pairs]
            low = min(gbps, default=1.0)
            return len(gpus), tuple(self.path_kind(a, b) for a, b in pairs), tuple(round(g / low, 2) for g in gbps)

        return tuple(pattern(gpus) for gpus in self.gpus_by_node)

    @cached_property
    def nvlink_spans_nodes(self) -> bool:
        """Whether an NVSwitch domain spans several nodes, as an NVL72 rack's trays."""
        return any(len({self.node_of[g] for g in d.gpus}) > 1 for d in self.nvswitch_domains)

    @cached_property
    def nodes_interchangeable(self) -> bool:
        """Identical nodes whose NVLink fabrics stay inside the node (no NVL72-style domain across
        nodes): renumbering the nodes changes no link, so no collective's time."""
        return not self.nvlink_spans_nodes and self.identical_nodes

    # ----- the public queries -------------------------------------------------------------------
    @property
    def num_gpus(self) -> int:
        """Number of GPUs in the whole topology."""
        return len(self.gpus)

    @property
    def num_nodes(self) -> int:
        """Number of nodes."""
        return len(self.nodes)

    def _pair(self, i: int, j: int) -> tuple[Gpu, Gpu]:
        n = self.num_gpus
        if not (0 <= i < n and 0 <= j < n):
            raise TopologyError(f"GPU index out of range: ({i}, {j}); this topology has {n} GPUs")
        return self.gpus[i], self.gpus[j]

    def nvlink_count(self, i: int, j: int) -> int:
        """Bonded NVLinks between GPU i and j as `NV#` shows them (through an NVSwitch: the
        GPU's links into the fabric), 0 if none."""
        self._pair(i, j)
        if i == j:
            return 0
        bundle = self._bundles.get((min(i, j), max(i, j)))
        if bundle is not None:
            return bundle.links
        d = self._domain_of.get(i)
        if d is not None and self._domain_of.get(j) is d:
            return d.links_per_gpu
        return 0

    def path_kind(self, i: int, j: int) -> PathKind:
        """How GPU i reaches GPU j: `self`, `nvlink`, `pix`, `pxb`, `phb`, `node`, `sys` or `net`."""
        a, b = self._pair(i, j)
        if i == j:
            return "self"
        if (min(i, j), max(i, j)) in self._bundles:
            return "nvlink"
        d = self._domain_of.get(i)
        if d is not None and self._domain_of.get(j) is d:
            return "nvlink"
        if a.node != b.node:
            return "net"
        if a.socket != b.socket:
            return "sys"
        if a.host_bridge != b.host_bridge:
            return "node"
        if a.switch is not None and a.switch == b.switch:
            return "pix"
        if a.switch_group is not None and a.switch_group == b.switch_group:
            return "pxb"
        return "phb"

    def gpu_spec(self, i: int) -> GpuModel:
        """Catalogue facts of GPU i; a `TopologyError` saying to pass `--gpu` when unknown."""
        key = self.gpus[i].model
        if key is None:
            from shardplan.topology.catalog import candidates_for_links

            links = sum(b.links for b in self.nvlinks if i in (b.a, b.b))
            links += self._domain_of[i].links_per_gpu if i in self._domain_of else 0
            fits = candidates_for_links(links) if links else []
            hint = f"its {links} NVLinks fit {', '.join(fits)}" if fits else "e.g. h100-sxm, a100-sxm-80gb"
            raise TopologyError(
                f"{self.name}: the GPU model of GPU {i} is unknown ({self.gpus[i].name or 'no name'}); "
                f"pass --gpu NAME ({hint})"
            )
        return gpu_model(key)

    def _nvlink_per_link(self, i: int, j: int, given: float | None) -> float:
        if given is not None:
            return given
        per_link = self.gpu_spec(i).nvlink_gbps_per_link
        if per_link <= 0:
            raise TopologyError(f"{self.name}: GPU {i} is NVLinked but its model has no NVLink speed")
        return per_link

    def _pcie_gbps(self, i: int, achievable: bool, through_host: bool = False) -> float:
        g = self.gpus[i]
        gen = g.pcie_gen or self.gpu_spec(i).pcie_gen
        scale = self.link_scale.pcie if achievable else 1.0
        return scale * L.pcie_gbps(gen, g.pcie_width, achievable=achievable, through_host=through_host)

    def nearest_nics(self, i: int) -> list[Nic]:
        """The NICs of known speed that GPU i leaves its node through: those sharing its PCIe switch
        or bridge, else those on its socket, else any; all equally near ones, by name (NCCL spreads
        its channels over them)."""
        hit = self._nearest_nics_memo.get(i)
        if hit is None:
            hit = self._nearest_nics_memo[i] = self._find_nearest_nics(i)
        return hit

    @cached_property
    def _nearest_nics_memo(self) -> dict[int, list[Nic]]:
        return {}

    def nic_links(self, i: int) -> tuple[tuple[tuple[str, int, str], float], ...]:
        """The NICs GPU i leaves its node through, each as (("nic", node, name), achievable GB/s); on a
        node that lists no NIC of known speed, ("nic", node, "default") at `nic_gbit`."""
        hit = self._nic_links_memo.get(i)
        if hit is None:
            node, nearest, scale = self.gpus[i].node, self.nearest_nics(i), self.link_scale.net
            hit = tuple((("nic", node, nic.name), scale * L.net_gbps(nic.gbit or 0)) for nic in nearest) or (
                (("nic", node, "default"), scale * L.net_gbps(self.nic_gbit(i))),
            )
            self._nic_links_memo[i] = hit
        return hit

    @cached_property
    def _nic_links_memo(self) -> dict[int, tuple[tuple[tuple[str, int, str], float], ...]]:
        return {}

    def _find_nearest_nics(self, i: int) -> list[Nic]:
        gpu = self.gpus[i]
        nics = [nic for nic in self._nics_of_node.get(gpu.node, []) if nic.gbit]
        if not nics:
            return []
        rank = {nic.name: (i not in nic.near, nic.socket != gpu.socket) for nic in nics}
        best = min(rank.values())
        return sorted((nic for nic in nics if rank[nic.name] == best), key=lambda nic: nic.name)

    def nic_gbit(self, i: int) -> float:
        """Line rate in Gb/s of the NIC that GPU i uses to leave its node (the nearest one)."""
        nearest = self.nearest_nics(i)
        if nearest:
            return float(nearest[0].gbit or 0)
        if self.network.gbit_per_nic:
            return self.network.gbit_per_nic
        why = (
            "no RDMA port, and its Ethernet driver states none"
            if (self.source or "").startswith("NVML")
            else "the topology declares no NICs with a speed and no network.gbit_per_nic"
        )
        raise TopologyError(
            f"{self.name}: node {self.gpus[i].node} has no NIC speed ({why}); pass --nic-gbit (nic_gbit=) with "
            "its NICs' line rate, or declare nics with gbit or network.gbit_per_nic in a .yaml topology"
        )

    def bandwidth_gbps(self, i: int, j: int, *, achievable: bool = True) -> float:
        """Best point-to-point bandwidth from GPU i to GPU j, GB/s per direction.

        `achievable=True` (what planning uses) applies measured efficiencies (see `links.py`);
        False gives the datasheet rate. Same GPU: its memory bandwidth.
        """
        kind = self.path_kind(i, j)
        if kind == "self":
            return self.gpu_spec(i).hbm_gbps
        if kind == "nvlink":
            scale = self.link_scale.nvlink if achievable else 1.0
            bundle = self._bundles.get((min(i, j), max(i, j)))
            if bundle is not None:
                per_link = self._nvlink_per_link(i, j, bundle.gbps_per_link)
                return scale * L.nvlink_gbps(bundle.links, per_link, switched=False, achievable=achievable)
            d = self._domain_of[i]
            per_link = self._nvlink_per_link(i, j, d.gbps_per_link)
            return scale * L.nvlink_gbps(d.links_per_gpu, per_link, switched=True, achievable=achievable)
        if kind == "net":
            scale = self.link_scale.net if achievable else 1.0
            return scale * min(L.net_gbps(self.nic_gbit(k), achievable=achievable) for k in (i, j))
        staged = self.copies_through_host(i, j, local_gpus=2)  # the best: a group of these two GPUs
        bw = min(self._pcie_gbps(k, achievable, staged) for k in (i, j))
        socket_link = self.nodes[self.gpus[i].node].socket_link_gbps
        if kind == "sys" and socket_link:
            bw = min(bw, socket_link)
        return bw

    def copies_through_host(self, i: int, j: int, *, local_gpus: int) -> bool:
        """Whether NCCL copies between GPUs i and j of one node through host memory (its SHM transport) rather than
        peer-to-peer over PCIe, in a communicator with `local_gpus` GPUs on that node: wherever the driver refuses
        P2P (`Node.p2p`), and, as NCCL 2.23 and later decide (src/graph/paths.cc, ncclTopoCheckP2p: "By default
        don't use P2P across CPU Host Bridges and further apart"), on any path that leaves the PCIe switches
        (PHB, NODE, SYS) unless the host CPU is AMD's and the communicator has at most two GPUs on the node."""
        kind = self.path_kind(i, j)
        if kind in ("self", "nvlink", "net"):
            return False
        node = self.nodes[self.gpus[i].node]
        return not node.p2p or (kind in ("phb", "node", "sys") and not (node.cpu == "amd" and local_gpus <= 2))

    def nvlink_islands(self) -> list[list[int]]:
        """GPUs connected by NVLink (directly or through NVSwitches), as sorted groups."""
        return [list(island) for island in self._nvlink_islands]

    @cached_property
    def _nvlink_islands(self) -> tuple[tuple[int, ...], ...]:
        from shardplan.topology.graph import nvlink_islands

        return tuple(map(tuple, nvlink_islands(self)))

    def to_dict(self) -> dict[str, Any]:
        """Plain data with a schema version; `num_gpus` included for readers of the JSON."""
        data = self.model_dump(mode="json")
        return {"schema_version": SCHEMA_VERSION, "num_gpus": self.num_gpus, **data}

    def to_json(self) -> str:
        """One JSON document (see `to_dict`)."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Topology:
        """Read what `to_json` wrote."""
        data = json.loads(text)
        data.pop("schema_version", None)
        data.pop("num_gpus", None)
        # written before 2026-11-25: a network latency nothing read (collectives take NCCL's own figures)
        data.get("network", {}).pop("latency_us", None)
        return cls.model_validate(data)
