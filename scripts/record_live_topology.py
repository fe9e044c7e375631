"""Record what the live topology readers see on this machine (run on a GPU box).

Writes, into the folder given (default: tests/data/nvml):
  <name>.json   {"nvml_facts": read_nvml_facts(), "topology": Topology.to_dict(),
                 "nvidia_smi_topo_m": text, "nvidia_smi_nvlink_s": text}
so tests on machines without a GPU can replay the NVML reading.

    python scripts/record_live_topology.py OUT_DIR NAME
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from shardplan.topology import load_topology
from shardplan.topology.sources.nvml import read_nvml_facts


def _run(*args: str) -> str | None:
    exe = shutil.which(args[0])
    if exe is None:
        return None
    done = subprocess.run([exe, *args[1:]], capture_output=True, text=True, timeout=60, check=False)
    return done.stdout + done.stderr


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/data/nvml")
    name = sys.argv[2] if len(sys.argv) > 2 else "live"
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "nvml_facts": read_nvml_facts(),
        "topology": load_topology("live").to_dict(),
        "nvidia_smi_topo_m": _run("nvidia-smi", "topo", "-m"),
        "nvidia_smi_nvlink_s": _run("nvidia-smi", "nvlink", "-s"),
    }
    (out / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record["nvml_facts"], indent=2))


if __name__ == "__main__":
    main()
