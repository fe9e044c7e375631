"""This machine's network adapters, read from Linux sysfs as NCCL reads them (NVML knows no NICs).

NCCL's IB transport takes every active port of every RDMA device (/sys/class/infiniband: InfiniBand, or RoCE
where the port's link layer is Ethernet); only where there is none does it fall back to sockets over the host's
Ethernet interfaces. So do these readers: `read_nic_facts()` returns plain JSON-able facts (name, line rate, the
PCI addresses from the root port down to the adapter, NUMA node), which `nic_specs()` places beside the GPUs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from shardplan.topology.sources import cpu_maker, decimal
from shardplan.topology.spec import NicSpec

# a PCI root complex (sysfs 'pci0000:17') or a device address ('0000:18:00.0')
_PCI_PART = re.compile(r"^(pci[0-9a-f]{4,8}:[0-9a-f]{2}|[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7])$")


def read_cpu_vendor(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """This host's CPU maker: 'intel', 'amd', 'arm' (an ARM CPU, as /proc/cpuinfo lists one by its 'CPU
    implementer'), 'other', or None where /proc/cpuinfo cannot be read."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return None
    vendor = re.search(r"^vendor_id\s*:\s*(\S+)", text, re.MULTILINE)
    if vendor:
        return cpu_maker(vendor.group(1))
    return "arm" if re.search(r"^CPU implementer", text, re.MULTILINE) else "other"


def read_nic_facts(root: Path = Path("/sys")) -> list[dict[str, Any]]:
    """Every active RDMA port (its rate file: '400 Gb/sec (4X NDR)'), or failing any, every physical Ethernet
    interface that is up (its speed file: Mb/s, -1 where the driver does not say)."""
    out = []
    rdma = root / "class" / "infiniband"
    for device in _entries(rdma):
        ports = _entries(device / "ports")
        for port in ports:
            if "ACTIVE" not in _read(port / "state"):
                continue
            rate = re.match(r"\s*([0-9]+(?:\.[0-9]+)?)\s*Gb/sec", _read(port / "rate"))
            out.append(
                {
                    "name": device.name if len(ports) == 1 else f"{device.name}:{port.name}",
                    "gbit": float(rate.group(1)) if rate else None,
                    "transport": "roce" if _read(port / "link_layer") == "Ethernet" else "ib",
                    **_placement(device / "device"),
                }
            )
    if out:
        return out
    net = root / "class" / "net"
    for iface in _entries(net):
        if not (iface / "device").exists() or _read(iface / "operstate") != "up":
            continue  # virtual interfaces (lo, bridges, veth) have no device
        speed = _read(iface / "speed")
        mbit = decimal(speed)  # Mb/s
        out.append(
            {
                "name": iface.name,
                "gbit": mbit / 1000 if mbit else None,
                "transport": "socket",
                **_placement(iface / "device"),
            }
        )
    return out


def _entries(folder: Path) -> list[Path]:
    """What `folder` holds, by name; nothing where it is missing or unreadable (not Linux, a locked container)."""
    try:
        return sorted(folder.iterdir())
    except OSError:
        return []


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _placement(device: Path) -> dict[str, Any]:
    return {"pci_path": pci_path(device), "numa_node": decimal(_read(device / "numa_node"))}


def pci_path(device: Path) -> list[str]:
    """The PCI root complex and the addresses below it down to `device` (a sysfs device directory or a link to
    one): what lies between it and the CPU; none where sysfs has no such device."""
    if not device.exists():
        return []
    return [part for part in device.resolve().parts if _PCI_PART.match(part)]


def bus_id(text: str) -> str:
    """A PCI bus id as sysfs and NCCL write it: NVML's '00000000:18:00.0' is '0000:18:00.0'."""
    domain, _, rest = text.lower().partition(":")
    return f"{int(domain or '0', 16):04x}:{rest}" if rest else text.lower()


def gpu_pci_path(bus: str, root: Path = Path("/sys")) -> list[str]:
    """`pci_path` of the GPU NVML names by bus id."""
    return pci_path(root / "bus" / "pci" / "devices" / bus_id(bus))


def nic_specs(nics: list[dict[str, Any]], gpus: list[dict[str, Any]], sockets: list[list[int]]) -> list[NicSpec]:
    """`NicSpec`s of `read_nic_facts()` output beside GPUs with `pci_path` and `numa_node` facts: near the GPUs
    whose path to the CPU shares most with its own, where they share at least the root complex (nvidia-smi's
    PIX, PXB or PHB; none where they meet only in the CPU), and on the socket group whose GPUs share its NUMA
    node."""
    out = []
    for nic in nics:
        shared = [_shared_bridges(nic.get("pci_path") or [], g.get("pci_path") or []) for g in gpus]
        deepest = max(shared, default=0)
        near = [k for k, n in enumerate(shared) if n == deepest and deepest >= 1]
        numa = nic.get("numa_node")
        socket = next(
            (s for s, group in enumerate(sockets) if numa is not None and gpus[group[0]].get("numa_node") == numa), None
        )
        bus = (nic.get("pci_path") or [None])[-1]
        out.append(NicSpec(name=nic["name"], gbit=nic.get("gbit"), near=near, socket=socket, pci_bus_id=bus))
    return out


def _shared_bridges(a: list[str], b: list[str]) -> int:
    """What two paths share from the top: the root complex, then the root port and the switch ports below it."""
    count = 0
    for x, y in zip(a[:-1], b[:-1], strict=False):  # the devices themselves never match
        if x != y:
            break
        count += 1
    return count
