"""Read NCCL's own topology XML: a file given to NCCL as `NCCL_TOPO_FILE` (cloud images ship one per
VM type, since a VM hides the real PCIe tree) or one NCCL wrote under `NCCL_TOPO_DUMP_FILE`.

The XML nests what NCCL sees of one host: `<cpu numaid>` (a NUMA domain), under it `<pci>` bridges
(class 0x0604xx: PCIe switches and root ports) down to GPUs (class 0x03xxxx, with a `<gpu>` child whose
`<nvlink target count tclass>` lists bonded links to another GPU or to an NVSwitch, tclass 0x068000) and
NICs (class 0x02xxxx, or `<nic>` right under a CPU, with `<net name speed>` in Mb/s). Mapped as NCCL
maps paths: GPUs under one CPU element share a socket and a host bridge (NCCL's PHB), under one top-level
bridge a switch group (PXB), under one bridge a switch (PIX). A copy cut off at the end is read up to the
cut; that, and a file without the NVLinks, are the topology's caveats.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass

from pydantic import ValidationError

from shardplan.errors import ParseError, describe_validation
from shardplan.topology.catalog import gpu_models
from shardplan.topology.sources import cpu_maker, decimal
from shardplan.topology.sources.sysfs import bus_id
from shardplan.topology.spec import GpuInfo, NicSpec, NodeSpec, NvSwitchSpec, PcieSpec, TopologySpec

_START = re.compile(r"^\s*<(system|graphs)\b", re.MULTILINE)
# PCIe transfer rate per lane -> generation (PCI-SIG: 2.5, 5, 8, 16, 32, 64 GT/s for Gen1-6)
_GEN_BY_GTS = {2.5: 1, 5.0: 2, 8.0: 3, 16.0: 4, 32.0: 5, 64.0: 6}
_NVSWITCH_CLASS = "0x068000"  # what NCCL writes as an NVLink's tclass when the far end is an NVSwitch


def looks_like_nccl_xml(text: str) -> bool:
    """True if `text` holds an NCCL topology (`<system>`) or graph (`<graphs>`) document."""
    return _START.search(text) is not None


@dataclass(frozen=True)
class _Device:
    """A `<pci>` or `<nic>` element, the index of the `<cpu>` it hangs off and the PCIe bridges between them."""

    cpu: int
    element: ET.Element
    bridges: tuple[ET.Element, ...]


def parse_nccl_xml(text: str, source: str = "<text>") -> TopologySpec:
    """A one-node `TopologySpec` from NCCL topology XML."""
    start = _START.search(text)
    if start is None:
        raise ParseError(source, None, "no NCCL topology found (expected a <system> element)")
    if start.group(1) == "graphs":
        raise ParseError(
            source,
            None,
            "an NCCL graph file (the rings and trees NCCL_GRAPH_FILE fixes), not a topology: "
            "give the machine's NCCL_TOPO_FILE or an NCCL_TOPO_DUMP_FILE",
        )
    first_line = text.count("\n", 0, start.start()) + 1
    end = text.find("</system>", start.start())  # a shell prompt may follow the document
    body = text[start.start() : end + len("</system>")] if end >= 0 else text[start.start() :]
    root, cut_at = _parse_prefix(body, source, first_line)
    hosts = {cpu.get("host_hash") for cpu in root.findall("cpu")} - {None}
    if len(hosts) > 1:  # NCCL fuses the hosts of a multi-node NVLink domain into one system
        raise ParseError(
            source, None, f"{len(hosts)} hosts (host_hash) in one file: give one host's topology and --nodes"
        )
    devices = [d for k, cpu in enumerate(root.findall("cpu")) for d in _walk(k, cpu, ())]
    gpus = sorted((d for d in devices if _is_gpu(d.element)), key=lambda d: _gpu_order(d.element))
    if not gpus:
        raise ParseError(source, None, 'no GPU in the NCCL topology (expected <pci class="0x03...">)')
    numa = {k: decimal(cpu.get("numaid", "")) for k, cpu in enumerate(root.findall("cpu"))}
    node = _node(gpus, devices, numa, source).model_copy(update={"cpu": _cpu_vendor(root)})
    caveats = []
    if not any(d.element.find("gpu") is not None for d in gpus):
        caveats.append("NVLinks unknown: the file has no <gpu> elements (NCCL reads NVLinks from the driver); "
                       "an NCCL_TOPO_DUMP_FILE has them")  # fmt: skip
    if cut_at:
        caveats.append(f"{source} is cut off at line {cut_at}: what followed is missing")
    name = source.rsplit("/", 1)[-1]
    return TopologySpec(name=name, source=f"{source} (NCCL topology XML)", caveats=caveats, nodes=[node])


def _cpu_vendor(root: ET.Element) -> str | None:
    """The host CPU's maker from NCCL's `<cpu arch vendor>` (its CPUID vendor string on x86), as `NodeSpec.cpu`."""
    cpu = root.find("cpu")
    if cpu is None or not cpu.get("arch"):
        return None
    if cpu.get("arch") != "x86_64":
        return "arm" if cpu.get("arch") in ("arm64", "aarch64") else "other"
    return cpu_maker(cpu.get("vendor", ""))


def _parse_prefix(text: str, source: str, first_line: int) -> tuple[ET.Element, int | None]:
    """The document's root element, and the line where a cut-off copy ends (None if it is whole). Other
    malformed XML is a `ParseError` at its line."""
    parser = ET.XMLPullParser(events=("start",))
    root: ET.Element | None = None
    try:
        parser.feed(text)
        for _event, element in parser.read_events():
            root = element if root is None else root
        parser.close()
    except ET.ParseError as exc:
        line = exc.position[0] + first_line - 1
        for _event, element in parser.read_events():
            root = element if root is None else root
        if root is None or text[_offset(text, exc.position) :].strip():
            raise ParseError(source, line, f"malformed XML ({str(exc).split(':')[0]})") from None
        return root, line
    if root is None:
        raise ParseError(source, None, "empty NCCL topology")
    return root, None


def _offset(text: str, position: tuple[int, int]) -> int:
    """Character offset of an expat (line, column) position in `text`."""
    line, column = position
    lines = text.split("\n")
    return sum(len(lines[k]) + 1 for k in range(min(line - 1, len(lines)))) + column


def _walk(cpu: int, element: ET.Element, bridges: tuple[ET.Element, ...]) -> Iterator[_Device]:
    """Every `<pci>` and `<nic>` below `element`, with the PCIe bridges above it (top first)."""
    for child in element:
        if child.tag in ("pci", "nic"):
            yield _Device(cpu, child, bridges)
        if child.tag == "pci" and child.get("class", "").startswith("0x0604"):
            yield from _walk(cpu, child, (*bridges, child))


def _is_gpu(element: ET.Element) -> bool:
    """An NVIDIA display-class device (vendor 0x10de where the file names one), or one with a `<gpu>` child."""
    if element.tag != "pci":
        return False
    nvidia = element.get("vendor", "0x10de").lower() in ("0x10de", "0x0000", "")
    return element.find("gpu") is not None or (nvidia and element.get("class", "").startswith("0x03"))


def _gpu_order(element: ET.Element) -> tuple[int, str]:
    """CUDA's order: NCCL's `dev` where the file gives it, else PCI bus id order (nvidia-smi's)."""
    gpu = element.find("gpu")
    dev = decimal(gpu.get("dev", "")) if gpu is not None else None
    return (1 << 30 if dev is None else dev, _bus(element))


def _bus(element: ET.Element) -> str:
    return element.get("busid", "").lower()


def _gen(element: ET.Element) -> int | None:
    m = re.match(r"\s*([0-9]+(?:\.[0-9]+)?)\s*GT/s", element.get("link_speed", ""))
    return _GEN_BY_GTS.get(float(m.group(1))) if m else None


def _groups(gpus: list[_Device], key: Callable[[_Device], Hashable | None]) -> list[list[int]]:
    """GPU indexes grouped by `key` (None: in no group), in order of first appearance."""
    out: dict[Hashable, list[int]] = {}
    for k, gpu in enumerate(gpus):
        group = key(gpu)
        if group is not None:
            out.setdefault(group, []).append(k)
    return list(out.values())


def _nvlinks(gpus: list[_Device]) -> tuple[list[tuple[int, int, int]], NvSwitchSpec | None]:
    """Bundles between GPUs of the file, and the NVSwitch fabric of those with links to a switch."""
    index = {_bus(d.element): k for k, d in enumerate(gpus)}
    bundles: dict[tuple[int, int], int] = {}
    to_switch: dict[int, int] = {}
    for k, gpu in enumerate(gpus):
        for link in gpu.element.iterfind("gpu/nvlink"):
            count, peer = decimal(link.get("count", "")) or 0, index.get(link.get("target", "").lower(), k)
            if count and link.get("tclass") == _NVSWITCH_CLASS:
                to_switch[k] = to_switch.get(k, 0) + count
            elif count and peer != k:  # each end lists the bundle: a link counts where both see it
                pair = (min(k, peer), max(k, peer))
                bundles[pair] = min(bundles.get(pair, count), count)
    members = None if len(to_switch) == len(gpus) else sorted(to_switch)
    switch = NvSwitchSpec(links_per_gpu=min(to_switch.values()), gpus=members) if to_switch else None
    return sorted((a, b, n) for (a, b), n in bundles.items()), switch


def _node(gpus: list[_Device], devices: list[_Device], numa: dict[int, int | None], source: str) -> NodeSpec:
    gens = [g for d in gpus if (g := _gen(d.element))]
    widths = [w for d in gpus if (w := decimal(d.element.get("link_width", "")))]
    sockets = _groups(gpus, lambda d: d.cpu)
    socket_of_cpu = {gpus[group[0]].cpu: s for s, group in enumerate(sockets)}
    models = {device.lower(): m.key for m in gpu_models().values() for device in m.pci_device_ids}
    try:
        nvlink, nvswitch = _nvlinks(gpus)
        return NodeSpec(
            gpus=len(gpus),
            gpu_info=[
                GpuInfo(
                    pci_bus_id=_bus(d.element) or None,
                    numa_node=numa[d.cpu],
                    model=models.get(d.element.get("device", "").lower()),
                    # NCCL writes the lesser of the GPU's and its port's maximum (xml.cc, ncclTopoGetXmlFromSys)
                    pcie_gen=_gen(d.element),
                    pcie_width=decimal(d.element.get("link_width", "")) or None,
                )
                for d in gpus
            ],
            nvlink=nvlink,
            nvswitch=nvswitch,
            pcie=PcieSpec(
                gen=max(gens) if gens else None,
                width=Counter(widths).most_common(1)[0][0] if widths else 16,
                sockets=sockets,
                host_bridges=sockets,  # NCCL's PHB: any path through the CPU
                switch_groups=_groups(gpus, lambda d: id(d.bridges[0]) if d.bridges else None),
                switches=_groups(gpus, lambda d: id(d.bridges[-1]) if d.bridges else None),
            ),
            nics=[nic for d in devices for nic in _nics(d, gpus, socket_of_cpu.get(d.cpu))],
        )
    except ValidationError as err:
        raise ParseError(source, None, describe_validation(err)) from None


def _nics(device: _Device, gpus: list[_Device], socket: int | None) -> list[NicSpec]:
    """The NICs of a `<nic>`, or of a NIC-class `<pci>` (its `<net>` ports, or itself where it has none), with
    the GPUs nearest them: under the same bridge, else under the same top-level bridge, else none."""
    element = device.element
    nets = element.findall("net" if element.tag == "nic" else "nic/net")
    if element.tag == "pci" and not nets and not element.get("class", "").startswith("0x02"):
        return []
    near: list[int] = []
    for level in (-1, 0):
        if device.bridges and not near:
            near = [k for k, g in enumerate(gpus) if g.bridges and g.bridges[level] is device.bridges[level]]
    out = []
    for net in nets or [element]:
        speed = decimal(net.get("speed", ""))  # NCCL writes Mb/s
        bus = _bus(element) or None
        out.append(NicSpec(name=net.get("name") or bus or "nic", gbit=speed / 1000 if speed else None, near=near,
                           socket=socket, pci_bus_id=bus))  # fmt: skip
    return out


def placed_by_nccl_topo(spec: TopologySpec, text: str, source: str) -> TopologySpec:
    """A live one-node `spec` whose NICs sit where NCCL topology XML (`NCCL_TOPO_FILE`) puts them: near the GPUs of
    the same PCIe switch, matched by PCI bus id. Cloud VMs hide the real PCIe tree from sysfs (Azure's ND-series put
    every device on its own virtual bus), and their images ship this file so that NCCL pairs each GPU with its NIC."""
    declared = parse_nccl_xml(text, source).nodes[0]
    node = spec.nodes[0]
    live_gpu = {bus_id(info.pci_bus_id): k for k, info in enumerate(node.gpu_info) if info.pci_bus_id}
    xml_gpu = [bus_id(info.pci_bus_id or "") for info in declared.gpu_info]
    near = {
        bus_id(nic.pci_bus_id): [live_gpu[xml_gpu[k]] for k in nic.near if xml_gpu[k] in live_gpu]
        for nic in declared.nics
        if nic.pci_bus_id
    }
    nics = [
        nic.model_copy(update={"near": near[bus_id(nic.pci_bus_id)]})
        if nic.pci_bus_id and bus_id(nic.pci_bus_id) in near
        else nic
        for nic in node.nics
    ]
    placed = node.model_copy(update={"nics": nics})
    return spec.model_copy(update={"nodes": [placed], "source": f"{spec.source}; NICs placed by {source}"})
