"""PCIe Gen5 vs NVLink 4, from the cost model: copy 80 GB between two GPUs, all-reduce 10 GB of
gradients over 8 GPUs, and the all-reduce's bus bandwidth as a share of the link's datasheet rate.

    python examples/pcie_vs_nvlink.py

The link rates behind it are measured, not nominal (sources in shardplan/topology/links.py):
PCIe Gen5 x16 54.79 GB/s (pinned 1 GiB host-to-device on a real H100; `shardplan calibrate`
measured 54.84 GB/s on another lease, benchmarks/results/h100-single-gpu/h100-calibration.json);
NVLink 4 through NVSwitch 376 of 450 GB/s per direction (p2pBandwidthLatencyTest on 8x H100 SXM).
The collective model adds NCCL's ring protocols and latencies (shardplan/cost/collectives.py),
checked against nccl-tests on 8x H100 NVSwitch within 13% from 1 MiB to 1 GiB but at 2 MiB (+19%)
(tests/test_collectives.py).
On NVSwitch, NVLS reduces inside the switch, so the all-reduce's bus bandwidth can pass the link rate.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from shardplan import collective_time_s, load_topology
from shardplan.topology.links import PCIE_X16_THEORETICAL_GBPS

GB = 1e9
MACHINES = {
    "PCIe Gen5 (8x H100 PCIe, 2 sockets)": (
        Path(__file__).with_name("h100-pcie-gen5-8gpu.yaml"),
        PCIE_X16_THEORETICAL_GBPS[5],
    ),
    "NVLink 4 (DGX H100, NVSwitch)": ("dgx-h100", 18 * 25.0),  # 18 links x 25 GB/s per direction
}


def rows() -> dict[str, dict[str, float]]:
    """Per machine: seconds to copy 80 GB GPU 0 -> 1, seconds to all-reduce 10 GB over 8 GPUs, and
    the all-reduce bus bandwidth (nccl-tests convention, 2(n-1)/n x size / time) over the datasheet rate."""
    out = {}
    for name, (source, datasheet) in MACHINES.items():
        topo = load_topology(source)
        copy = collective_time_s(topo, "send_recv", [0, 1], 80 * GB)
        reduce = collective_time_s(topo, "all_reduce", list(range(8)), 10 * GB)
        busbw = 10 * GB * 2 * 7 / 8 / reduce / GB
        out[name] = {
            "copy_80gb_s": copy,
            "allreduce_10gb_s": reduce,
            "busbw_gbps": busbw,
            "efficiency": busbw / datasheet,
        }
    return out


def main() -> None:
    table = Table(title="PCIe Gen5 vs NVLink 4 (shardplan cost model, measured link rates)")
    table.add_column("")
    for name in MACHINES:
        table.add_column(name, justify="right")
    data = rows()
    table.add_row("copy 80 GB GPU->GPU", *(f"{d['copy_80gb_s']:.2f} s" for d in data.values()))
    table.add_row("all-reduce 10 GB, 8 GPUs", *(f"{d['allreduce_10gb_s']:.3f} s" for d in data.values()))
    table.add_row("all-reduce bus bandwidth", *(f"{d['busbw_gbps']:.0f} GB/s" for d in data.values()))
    table.add_row("... of the datasheet link rate", *(f"{d['efficiency']:.0%}" for d in data.values()))
    Console().print(table)


if __name__ == "__main__":
    main()
