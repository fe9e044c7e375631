"""The declared form of a topology: what every reader returns and what YAML/JSON files contain.

Readers (nvidia-smi text, NVML, files, presets) produce this plain structure; `cluster.build`
turns it into a `Topology`. GPU indexes here are local to their node.

Example (a two-socket PCIe box, 4 GPUs, two NVLink bridge pairs)::

    name: my-box
    nodes:
      - gpu: a100-pcie-80gb
        gpus: 4
        nvlink: [[0, 1, 12], [2, 3, 12]]
        pcie: {gen: 4, sockets: [[0, 1], [2, 3]]}
        nics: [{name: mlx5_0, gbit: 200, near: [0, 1]}]
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# The host CPU's maker as NCCL tells them apart (src/graph/topo.cc, ncclTopoCpuType): its P2P level differs by it
CpuVendor = Literal["intel", "amd", "arm", "other"]


class GpuInfo(_Spec):
    """What a reader knows of one GPU beyond its position."""

    name: str | None = Field(None, description="Product name as NVML prints it.")
    memory_bytes: int | None = Field(None, gt=0, description="Device memory, bytes.")
    pci_bus_id: str | None = Field(None, description="PCI bus id, e.g. 00000000:1B:00.0.")
    numa_node: int | None = Field(None, ge=0, description="NUMA node of the GPU's CPU side.")
    model: str | None = Field(None, description="Catalogue key, where this GPU differs from the node's.")
    fabric: str | None = Field(
        None, description="Multi-node NVLink clique ('<cluster uuid>/<clique id>', NVML's fabric info), if any."
    )
    pcie_gen: int | None = Field(
        None, ge=1, le=7, description="PCIe generation of this GPU's link as its slot allows (default: the node's)."
    )
    pcie_width: int | None = Field(
        None, ge=1, le=32, description="Lanes of this GPU's link as its slot allows (default: the node's)."
    )


class PcieSpec(_Spec):
    """The PCIe tree of one node, as groups of local GPU indexes (a GPU in no group is alone)."""

    gen: int | None = Field(
        None,
        ge=1,
        le=7,
        description="PCIe generation of the GPUs' slots (each link runs at the older of this and its GPU's own).",
    )
    width: int = Field(16, description="Lanes per GPU link.")
    sockets: list[list[int]] = Field(default_factory=list, description="GPUs per CPU socket / NUMA domain.")
    host_bridges: list[list[int]] = Field(default_factory=list, description="GPUs per PCIe host bridge.")
    switch_groups: list[list[int]] = Field(
        default_factory=list, description="GPUs under one top-level PCIe switch (PXB reach)."
    )
    switches: list[list[int]] = Field(default_factory=list, description="GPUs under one leaf switch (PIX).")
    socket_link_gbps: float | None = Field(
        None, gt=0, description="Socket-to-socket (UPI / Infinity Fabric) GB/s per direction, if known."
    )


class NvSwitchSpec(_Spec):
    """An NVSwitch fabric joining GPUs of this node (all of them unless `gpus` says otherwise)."""

    links_per_gpu: int = Field(gt=0, description="NVLinks from each GPU into the switches.")
    gpus: list[int] | None = Field(None, description="Local GPU indexes on the fabric; None: all.")
    nvls: bool | None = Field(
        None, description="NVLink SHARP (in-switch reductions); None: yes for Hopper/Blackwell SXM GPUs."
    )


class NicSpec(_Spec):
    """A network adapter of the node."""

    name: str
    gbit: float | None = Field(None, gt=0, description="Line rate, Gb/s (None: not known).")
    near: list[int] = Field(default_factory=list, description="Local GPUs sharing its PCIe switch or bridge.")
    socket: int | None = Field(None, ge=0, description="Socket group index it hangs off, if known.")
    pci_bus_id: str | None = Field(None, description="PCI bus id, e.g. 0000:19:00.0, where a reader knows it.")


class NodeSpec(_Spec):
    """One kind of node, repeated `count` times."""

    name: str = Field("node", description="Kind of node, e.g. 'dgx-h100'.")
    count: int = Field(1, ge=1, description="How many identical nodes of this kind.")
    gpu: str | None = Field(None, description="GPU model catalogue key (see `shardplan topo --help`).")
    gpus: int = Field(gt=0, le=64, description="GPUs in the node (one host), at most 64.")
    gpu_info: list[GpuInfo] = Field(default_factory=list, description="Per-GPU facts, by local index.")
    nvlink: list[tuple[int, int, int]] = Field(
        default_factory=list, description="Direct NVLink bundles: [gpu_a, gpu_b, bonded links]."
    )
    nvlink_gbps_per_link: float | None = Field(
        None, gt=0, description="GB/s per link per direction (default: the GPU model's)."
    )
    nvswitch: NvSwitchSpec | None = None
    pcie: PcieSpec = Field(default_factory=PcieSpec)
    nics: list[NicSpec] = Field(default_factory=list)
    p2p: bool | None = Field(
        None,
        description="GPU peer-to-peer over PCIe works (False: copies go through host memory); None: as the GPU "
        "model's catalogue entry says (GeForce RTX 4090 and 5090: no).",
    )
    cpu: CpuVendor | None = Field(
        None,
        description="The host CPU's maker (NCCL lets only AMD hosts' GPUs copy peer-to-peer through the CPU); None: "
        "not known.",
    )

    @model_validator(mode="after")
    def _indexes_in_range(self) -> NodeSpec:
        def check(where: str, idx: int) -> None:
            if not 0 <= idx < self.gpus:
                raise ValueError(f"{where}: GPU index {idx} outside 0..{self.gpus - 1}")

        for a, b, links in self.nvlink:
            check("nvlink", a)
            check("nvlink", b)
            if a == b or links <= 0:
                raise ValueError(f"nvlink: [{a}, {b}, {links}] needs two different GPUs and links > 0")
        for field in ("sockets", "host_bridges", "switch_groups", "switches"):
            seen: set[int] = set()
            for group in getattr(self.pcie, field):
                for idx in group:
                    check(f"pcie.{field}", idx)
                    if idx in seen:
                        raise ValueError(f"pcie.{field}: GPU {idx} is in two groups")
                    seen.add(idx)
        for nic in self.nics:
            for idx in nic.near:
                check(f"nics.{nic.name}.near", idx)
        if self.nvswitch and self.nvswitch.gpus:
            for idx in self.nvswitch.gpus:
                check("nvswitch.gpus", idx)
        if len(self.gpu_info) not in (0, self.gpus):
            raise ValueError(f"gpu_info: {len(self.gpu_info)} entries for {self.gpus} GPUs")
        return self


class NetworkSpec(_Spec):
    """How nodes are joined."""

    name: str = Field("network", description="E.g. 'InfiniBand NDR'.")
    gbit_per_nic: float | None = Field(None, gt=0, description="Default NIC line rate, Gb/s.")


class TopologySpec(_Spec):
    """A whole machine or cluster as declared or read."""

    name: str = Field("topology", description="Short name shown in summaries.")
    source: str | None = Field(None, description="Where these facts come from (datasheet, real output).")
    caveats: list[str] = Field(
        default_factory=list, description="What the source could not tell, shown beside every plan made on it."
    )
    nodes: list[NodeSpec] = Field(min_length=1)
    network: NetworkSpec = Field(default_factory=NetworkSpec)
    nvlink_domain_nodes: int = Field(
        1, ge=1, description="Consecutive nodes sharing one NVSwitch fabric (NVL72 rack: 18; GH200: 256)."
    )
