"""Record what the live topology readers see on this machine (run on a GPU box).

Writes, into the folder given (default: tests/data/nvml):
  <name>.json   {"nvml_facts": read_nvml_facts(), "topology": Topology.to_dict(),
                 "nvidia_smi_topo_m": text, "nvidia_smi_nvlink_s": text, "sysfs": {path: text or {"link": target}}}
so tests on machines without a GPU can replay the NVML reading, and rebuild the part of /sys that the NIC reader
walks (`sysfs`: each RDMA device and network interface with the files read, every link as the path it resolves to,
and the GPUs' PCI devices).

    python scripts/record_live_topology.py OUT_DIR NAME
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

from shardplan.topology import load_topology
from shardplan.topology.sources.nvml import read_nvml_facts
from shardplan.topology.sources.sysfs import bus_id


def _run(*args: str) -> str | None:
    exe = shutil.which(args[0])
    if exe is None:
        return None
    done = subprocess.run([exe, *args[1:]], capture_output=True, text=True, timeout=60, check=False)
    return done.stdout + done.stderr


def snapshot_sysfs(bus_ids: list[str], root: Path = Path("/sys")) -> dict[str, object]:
    """The files and links under `root` that `read_nic_facts` and `gpu_pci_path` read, as paths relative to it."""
    out: dict[str, object] = {}

    def link(path: Path) -> None:
        if path.exists():
            out[str(path.relative_to(root))] = {"link": str(path.resolve().relative_to(root.resolve()))}

    def text(path: Path) -> None:
        with contextlib.suppress(OSError):
            out[str(path.relative_to(root))] = path.read_text()

    for cls in ("infiniband", "net"):
        folder = root / "class" / cls
        for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
            link(entry / "device")
            text(entry / "device" / "numa_node")
            for name in ("operstate", "speed"):
                text(entry / name)
            ports = entry / "ports"
            for port in sorted(ports.iterdir()) if ports.is_dir() else []:
                for name in ("state", "rate", "link_layer"):
                    text(port / name)
    for bus in bus_ids:
        link(root / "bus" / "pci" / "devices" / bus_id(bus))
    return out


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/data/nvml")
    name = sys.argv[2] if len(sys.argv) > 2 else "live"
    out.mkdir(parents=True, exist_ok=True)
    facts = read_nvml_facts()
    record = {
        "nvml_facts": facts,
        "topology": load_topology("live").to_dict(),
        "nvidia_smi_topo_m": _run("nvidia-smi", "topo", "-m"),
        "nvidia_smi_nvlink_s": _run("nvidia-smi", "nvlink", "-s"),
        "sysfs": snapshot_sysfs([g["pci_bus_id"] for g in facts["gpus"]]),
    }
    (out / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record["nvml_facts"], indent=2))


if __name__ == "__main__":
    main()
