"""Read this machine's GPUs through NVML (nvidia-ml-py); fall back to running `nvidia-smi topo -m`.

Two steps, so that recorded readings can stand in for a GPU in tests:
`read_nvml_facts()` asks NVML (and sysfs, for the NICs and each GPU's PCI path) and returns plain JSON-able
facts; `spec_from_facts()` turns facts into a `TopologySpec`. GPUs are listed in CUDA order restricted to
`CUDA_VISIBLE_DEVICES` (NVML lists every GPU by PCI bus id; CUDA's default order ties on bus id among identical
GPUs).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from shardplan.errors import TopologyError
from shardplan.textfile import read_text
from shardplan.topology.catalog import match_product_name
from shardplan.topology.graph import alone_in_the_rest, groups_from_pairs
from shardplan.topology.sources.nccl_xml import placed_by_nccl_topo
from shardplan.topology.sources.nvidia_smi import parse_topo
from shardplan.topology.sources.sysfs import gpu_pci_path, nic_specs, read_cpu_vendor, read_nic_facts
from shardplan.topology.spec import GpuInfo, NodeSpec, NvSwitchSpec, PcieSpec, TopologySpec

# nvmlGpuTopologyLevel_t (nvml.h): INTERNAL 0, SINGLE 10, MULTIPLE 20, HOSTBRIDGE 30, NODE 40, SYSTEM 50.
_ANCESTOR_KIND = {0: "pix", 10: "pix", 20: "pxb", 30: "phb", 40: "node", 50: "sys"}
_NVLINK_MAX_LINKS = 18  # NVML_NVLINK_MAX_LINKS in nvml.h (r535+)
_FABRIC_COMPLETED = 3  # NVML_GPU_FABRIC_STATE_COMPLETED in nvml.h
# nvmlGpuP2PCapsIndex_t (nvml.h): READ 0, WRITE 1 (pynvml spells READ as a one-element tuple); nvmlGpuP2PStatus_t
# in nvidia-smi's `topo -p2p` tokens: OK, chipset / GPU / IOH topology not supported, disabled by regkey, not
# supported, unknown
_P2P_READ, _P2P_WRITE = 0, 1
_P2P_TOKENS = ("OK", "CNS", "GNS", "TNS", "DR", "NS", "U")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _visible(count: int, uuids: list[str]) -> list[int]:
    """NVML indexes of the GPUs this process sees, in CUDA order (CUDA_VISIBLE_DEVICES)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is None or env.strip() == "":
        return list(range(count)) if env is None else []
    out: list[int] = []
    for item in (x.strip() for x in env.split(",")):
        if item.isdigit() and int(item) < count:
            out.append(int(item))
        elif item.startswith(("GPU-", "MIG-")):
            hits = [k for k, u in enumerate(uuids) if u.startswith(item)]
            if len(hits) != 1:
                break  # CUDA stops at the first entry it cannot resolve
            out.append(hits[0])
        else:
            break
    return out


def read_nvml_facts() -> dict[str, Any]:
    """Ask NVML for every visible GPU: name, memory, PCI id and link, NUMA node, NVLink ends, and
    of each pair the PCIe common ancestor and whether they reach each other's memory (peer-to-peer reads and
    writes, as `nvidia-smi topo -p2p rw`). Raises `TopologyError` when NVML cannot be used."""
    try:
        import pynvml as nv
    except ImportError as exc:  # pragma: no cover - a dependency
        raise TopologyError("NVML unavailable: install nvidia-ml-py") from exc
    try:
        nv.nvmlInit()
    except nv.NVMLError as exc:
        raise TopologyError(f"NVML unavailable ({exc}); is an NVIDIA driver installed?") from None
    try:
        count = nv.nvmlDeviceGetCount()
        handles = [nv.nvmlDeviceGetHandleByIndex(k) for k in range(count)]
        uuids = [_text(nv.nvmlDeviceGetUUID(h)) for h in handles]
        visible = _visible(count, uuids)
        gpus = [_gpu_facts(nv, handles[k], k) for k in visible]
        bus_to_pos = {g["pci_bus_id"].lower(): pos for pos, g in enumerate(gpus)}
        for g, k in zip(gpus, visible, strict=True):
            g["nvlinks"] = _nvlink_facts(nv, handles[k], bus_to_pos)
        ancestors, p2p = {}, {}
        p2p_status = getattr(nv, "nvmlDeviceGetP2PStatus", _missing)
        for a, ka in enumerate(visible):
            for b in range(a + 1, len(visible)):
                ha, hb = handles[ka], handles[visible[b]]
                try:
                    level = nv.nvmlDeviceGetTopologyCommonAncestor(ha, hb)
                    ancestors[f"{a},{b}"] = _ANCESTOR_KIND.get(int(level), "sys")
                except nv.NVMLError:
                    pass
                statuses = [_try(p2p_status, ha, hb, index) for index in (_P2P_READ, _P2P_WRITE)]
                if None not in statuses:
                    p2p[f"{a},{b}"] = _P2P_TOKENS[min(max(statuses), len(_P2P_TOKENS) - 1)]
        return {
            "driver": _text(nv.nvmlSystemGetDriverVersion()),
            "nvml_count": count,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "gpus": gpus,
            "pcie_ancestor": ancestors,
            "p2p": p2p,
            "cpu_vendor": read_cpu_vendor(),
            "nics": read_nic_facts(),
        }
    finally:
        nv.nvmlShutdown()


def _missing(*_: Any) -> None:
    """Stands in for an NVML call this pynvml does not have."""


def _try(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:  # NVMLError_NotSupported and friends: the fact is simply not known
        return None


def _fabric(nv: Any, h: Any) -> str | None:
    """'<cluster uuid>/<clique id>' of a GPU whose NVLinks reach other hosts' GPUs (GB200 NVL72): GPUs alike share
    one NVLink domain, as NCCL groups its multi-node NVLink cliques (src/init.cc: fabric state completed, the
    same non-zero cluster UUID and clique id). None where the fabric is not supported or not set up."""
    info_type, call = getattr(nv, "c_nvmlGpuFabricInfo_t", None), getattr(nv, "nvmlDeviceGetGpuFabricInfo", None)
    if info_type is None or call is None:
        return None
    info = info_type()
    if _try(call, h, ctypes.byref(info)) is None or info.state != _FABRIC_COMPLETED or info.status != 0:
        return None
    uuid = bytes(info.clusterUuid).hex()
    return f"{uuid}/{info.cliqueId}" if int(uuid, 16) else None


def _gpu_facts(nv: Any, h: Any, nvml_index: int) -> dict[str, Any]:
    numa = _try(getattr(nv, "nvmlDeviceGetNumaNodeId", _missing), h)
    bus = _text(nv.nvmlDeviceGetPciInfo(h).busId)
    return {
        "nvml_index": nvml_index,
        "name": _text(nv.nvmlDeviceGetName(h)),
        "uuid": _text(nv.nvmlDeviceGetUUID(h)),
        "memory_bytes": int(nv.nvmlDeviceGetMemoryInfo(h).total),
        "pci_bus_id": bus,
        "pci_path": gpu_pci_path(bus),  # sysfs: what lies between it and the CPU, to place the NICs
        "pcie_gen_max": _try(nv.nvmlDeviceGetMaxPcieLinkGeneration, h),
        "pcie_width_max": _try(nv.nvmlDeviceGetMaxPcieLinkWidth, h),
        "pcie_gen": _try(nv.nvmlDeviceGetCurrPcieLinkGeneration, h),
        "pcie_width": _try(nv.nvmlDeviceGetCurrPcieLinkWidth, h),
        "numa_node": numa if isinstance(numa, int) and numa >= 0 else None,
        "fabric": _fabric(nv, h),
    }


def _nvlink_facts(nv: Any, h: Any, bus_to_pos: dict[str, int]) -> list[dict[str, Any]]:
    """Each active link: its remote end (a GPU position, 'switch', or 'other')."""
    switch_type = getattr(nv, "NVML_NVLINK_DEVICE_TYPE_SWITCH", 2)
    out = []
    for link in range(_NVLINK_MAX_LINKS):
        state = _try(nv.nvmlDeviceGetNvLinkState, h, link)
        if state != 1:
            continue
        # the _v2 call is missing from older pynvml packages (the one in the lent H200 image, for one)
        remote = _try(getattr(nv, "nvmlDeviceGetNvLinkRemotePciInfo_v2", _missing), h, link) or _try(
            nv.nvmlDeviceGetNvLinkRemotePciInfo, h, link
        )
        bus = _text(remote.busId).lower() if remote is not None else ""
        kind = _try(getattr(nv, "nvmlDeviceGetNvLinkRemoteDeviceType", _missing), h, link)
        if bus in bus_to_pos:
            end: Any = bus_to_pos[bus]
        elif kind == switch_type:
            end = "switch"
        else:
            end = "other"
        out.append({"link": link, "remote": end, "remote_bus_id": bus or None})
    return out


def _pair(key: str) -> tuple[int, ...]:
    """A GPU pair of the facts' 'a,b' keys."""
    return tuple(int(x) for x in key.split(","))


def spec_from_facts(facts: dict[str, Any], name: str = "live") -> TopologySpec:
    """A one-node `TopologySpec` from `read_nvml_facts()` output (live or recorded)."""
    gpus = facts["gpus"]
    if not gpus:
        raise TopologyError("NVML sees no GPU (check CUDA_VISIBLE_DEVICES)")
    n = len(gpus)
    pair_links: dict[tuple[int, int], int] = {}
    switch_links = [sum(1 for lk in g["nvlinks"] if lk["remote"] == "switch") for g in gpus]
    for a, g in enumerate(gpus):
        for lk in g["nvlinks"]:
            b = lk["remote"]
            if isinstance(b, int) and b != a:
                key = (min(a, b), max(a, b))
                pair_links[key] = pair_links.get(key, 0) + 1
    # Each direct link is seen from both ends; count it once.
    nvlink = [(a, b, (c + 1) // 2) for (a, b), c in sorted(pair_links.items())]
    on_switch = [k for k in range(n) if switch_links[k]]
    nvswitch = (
        NvSwitchSpec(links_per_gpu=min(switch_links[k] for k in on_switch), gpus=on_switch)
        if len(on_switch) > 1
        else None
    )
    kinds = {_pair(key): kind for key, kind in facts.get("pcie_ancestor", {}).items()}

    def groups(levels: set[str]) -> list[list[int]]:
        pairs = [(a, b) for (a, b), kind in kinds.items() if kind in levels]
        return [[int(x) for x in g] for g in groups_from_pairs(list(range(n)), pairs)]

    # PCIe peer-to-peer between the GPUs NVLink does not join: a pair refused sends the node's PCIe copies through
    # host memory, as NCCL then does (its SHM transport). Where some pairs share a PCIe switch, those decide: NCCL
    # copies the others (through a CPU) through host memory by its own choice (`Topology.copies_through_host`), so
    # a driver refusing P2P across sockets only changes nothing. Unknown where NVML gave no status (older recordings).
    linked = {(a, b) for a, b, _ in nvlink} | {(a, b) for a in on_switch for b in on_switch if a < b}
    statuses = {pair: s for key, s in facts.get("p2p", {}).items() if (pair := _pair(key)) not in linked}
    under_switch = [s for pair, s in statuses.items() if kinds.get(pair) in ("pix", "pxb")]
    pcie_p2p = [s == "OK" for s in under_switch or statuses.values()]
    numa = [g.get("numa_node") for g in gpus]
    sockets = groups({"pix", "pxb", "phb", "node"})
    if kinds:  # a GPU NVML puts across the SMP link from every other is alone on its socket
        sockets = alone_in_the_rest(sockets, n)
    gens = {g.get("pcie_gen_max") for g in gpus} - {None}
    infos = [
        GpuInfo(
            name=g["name"],
            memory_bytes=g["memory_bytes"],
            pci_bus_id=g["pci_bus_id"],
            numa_node=numa[k],
            model=match_product_name(g["name"], g["memory_bytes"]),
            fabric=g.get("fabric"),
            # NVML's maximum link "possible with this device and system": a GPU in an x8 slot reports 8
            pcie_gen=g.get("pcie_gen_max"),
            pcie_width=g.get("pcie_width_max"),
        )
        for k, g in enumerate(gpus)
    ]
    return TopologySpec(
        name=name,
        source=f"NVML, driver {facts.get('driver', '?')}",
        nodes=[
            NodeSpec(
                name=name,
                gpus=n,
                gpu_info=infos,
                nvlink=nvlink,
                nvswitch=nvswitch,
                pcie=PcieSpec(
                    gen=max(gens) if gens else None,
                    sockets=sockets,
                    host_bridges=groups({"pix", "pxb", "phb"}),
                    switch_groups=groups({"pix", "pxb"}),
                    switches=groups({"pix"}),
                ),
                nics=nic_specs(facts.get("nics", []), gpus, sockets),
                p2p=all(pcie_p2p) if pcie_p2p else None,
                cpu=facts.get("cpu_vendor"),
            )
        ],
    )


def read_live() -> TopologySpec:
    """This machine through NVML, or through `nvidia-smi topo -m` when NVML fails; where `NCCL_TOPO_FILE` names
    NCCL topology XML (as cloud VM images set it), its NICs sit where that file puts them."""
    try:
        spec = spec_from_facts(read_nvml_facts())
    except TopologyError as nvml_error:
        exe = shutil.which("nvidia-smi")
        if exe is None:
            raise TopologyError(f"cannot read live topology: {nvml_error} (nvidia-smi is not on PATH either)") from None
        run = subprocess.run([exe, "topo", "-m"], capture_output=True, text=True, timeout=60, check=False)
        if run.returncode != 0:
            raise TopologyError(f"cannot read live topology: {nvml_error}; nvidia-smi topo -m failed") from None
        spec = with_nic_speeds(parse_topo(run.stdout, "nvidia-smi topo -m"), read_nic_facts())
        node = spec.nodes[0].model_copy(update={"cpu": read_cpu_vendor()})
        return spec.model_copy(update={"nodes": [node]})
    declared = os.environ.get("NCCL_TOPO_FILE")
    if declared:  # what NCCL itself will read for the PCIe tree on this machine
        text = read_text(Path(declared), TopologyError, what="NCCL topology file (NCCL_TOPO_FILE)")
        spec = placed_by_nccl_topo(spec, text, declared)
    return spec


def with_nic_speeds(spec: TopologySpec, nics: list[dict[str, Any]]) -> TopologySpec:
    """`spec` (one node, from `nvidia-smi topo -m`, which names NICs without their speed) with the line rate
    sysfs gives each NIC of the same name."""
    gbit = {nic["name"]: nic.get("gbit") for nic in nics}
    node = spec.nodes[0]
    named = [nic.model_copy(update={"gbit": nic.gbit or gbit.get(nic.name)}) for nic in node.nics]
    return spec.model_copy(update={"nodes": [node.model_copy(update={"nics": named}), *spec.nodes[1:]]})
