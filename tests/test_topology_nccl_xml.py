"""NCCL's topology XML (NCCL_TOPO_FILE as Azure ships it, NCCL_TOPO_DUMP_FILE as NCCL writes it) read into a
Topology; other vendors' and NCCL's other files refused in one line. Expected values were written by reading
each file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATA

from shardplan import load_topology
from shardplan.errors import ParseError, TopologyError
from shardplan.topology.cluster import build
from shardplan.topology.sources.nccl_xml import placed_by_nccl_topo
from shardplan.topology.sources.nvml import spec_from_facts

XML = DATA / "nccl-xml"


def _nics(topo) -> list[tuple[str, float | None, tuple[int, ...], int | None]]:
    return [(n.name, n.gbit, n.near, n.socket) for n in topo.nics]


def test_azure_ndv5_h100_pcie_tree_and_nics():
    """Two CPUs of four bridges each; every bridge holds one GPU and one InfiniBand NIC (class 0x020700) at
    32 GT/s x16. The file has no <gpu> elements, so no NVLinks: a caveat says so; no device ids, so no model."""
    topo = load_topology(XML / "nccl-topo-azure-ndv5-h100-1.txt")
    assert topo.num_gpus == 8 and topo.nvlinks == () and topo.nvswitch_domains == ()
    assert [g.pci_bus_id for g in topo.gpus][:4] == ["0001:00:00.0", "0002:00:00.0", "0003:00:00.0", "0008:00:00.0"]
    assert [g.socket for g in topo.gpus] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert {g.pcie_gen for g in topo.gpus} == {5} and {g.model for g in topo.gpus} == {None}
    assert topo.path_kind(0, 1) == "phb" and topo.path_kind(3, 4) == "sys"
    # an Intel host (<cpu vendor="GenuineIntel">): NCCL copies between these PHB pairs through host memory
    assert topo.nodes[0].cpu == "intel" and topo.copies_through_host(0, 1, local_gpus=2)
    expected = [(f"01{k:02x}:00:00.0", None, (k - 1,), (k - 1) // 4) for k in range(1, 9)]
    assert _nics(topo) == expected
    assert [c.split(":")[0] for c in topo.caveats] == ["NVLinks unknown"]


def test_azure_ncv4_a100_pcie_one_gpu_per_numa_node():
    """Four NUMA domains of one GPU each (device 0x20b5: A100 PCIe 80GB); each GPU's NVLink names the GPU itself
    (no peer), so no bundle; one 100 Gb/s Ethernet NIC right under the first CPU."""
    topo = load_topology(XML / "nccl-topo-azure-ncv4-a100-pcie-1.txt")
    assert topo.num_gpus == 4 and topo.nvlinks == ()
    assert {g.model for g in topo.gpus} == {"a100-pcie-80gb"}
    assert [g.socket for g in topo.gpus] == [0, 1, 2, 3] and [g.numa_node for g in topo.gpus] == [0, 1, 2, 3]
    assert topo.path_kind(0, 1) == "sys"
    # an AMD host: a pair of these GPUs copies peer-to-peer across NUMA domains, all four through host memory
    assert topo.nodes[0].cpu == "amd"
    assert not topo.copies_through_host(0, 1, local_gpus=2) and topo.copies_through_host(0, 1, local_gpus=4)
    assert _nics(topo) == [("eth0", 100.0, (), 0)]


def test_azure_ndv2_v100_gen4_and_a_nic_by_bus_id():
    topo = load_topology(XML / "nccl-topo-azure-ndv2-v100-1.txt")
    assert topo.num_gpus == 8 and {g.pcie_gen for g in topo.gpus} == {4}
    assert [g.socket for g in topo.gpus] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert _nics(topo) == [("0101:00:00.0", None, (), 0)]


def test_h200_dump_cut_short_reads_what_is_there():
    """NCCL's own dump of an HGX H200 (device 0x2335), pasted up to the second CPU's first NIC: GPUs 0-2, each
    under a Broadcom switch beside a 400 Gb/s ConnectX-7, 4 + 5 + 5 + 4 = 18 NVLinks into the NVSwitches."""
    topo = load_topology(XML / "nccl-topo-dump-h200-8gpu-baremetal-partial-1.txt")
    assert topo.num_gpus == 3 and {g.model for g in topo.gpus} == {"h200-sxm"}
    (domain,) = topo.nvswitch_domains
    assert domain.gpus == (0, 1, 2) and domain.links_per_gpu == 18
    assert topo.path_kind(0, 2) == "nvlink"
    assert _nics(topo)[:3] == [(f"mlx5_{k}", 400.0, (k,), 0) for k in range(3)]
    assert len(topo.caveats) == 1 and "cut off at line 62" in topo.caveats[0]


def test_h200_dump_inside_a_vm():
    """The same host seen from a KVM guest: no switches or NUMA node (numaid -1), links at 16 GT/s, the NVSwitch
    an unknown bus id with all 18 links."""
    topo = load_topology(XML / "nccl-topo-dump-h200-8gpu-kvm-vm-partial-1.txt")
    assert topo.num_gpus == 1 and topo.gpus[0].pcie_gen == 4 and topo.gpus[0].numa_node is None
    assert topo.nvswitch_domains[0].links_per_gpu == 18
    assert _nics(topo) == [("mlx5_0", 400.0, (), 0)]


def test_nccl_graph_file_and_rocm_smi_are_refused_in_one_line(tmp_path: Path):
    with pytest.raises(ParseError, match="NCCL graph file"):
        load_topology(XML / "nccl-graph-azure-ncv4-a100-pcie-1.txt")
    rocm = DATA / "rocm" / "rocm-smi-showtopo-mi300-class-8gpu-xgmi-1.txt"
    with pytest.raises(TopologyError, match="rocm-smi --showtopo"):
        load_topology(rocm)
    run = subprocess.run(
        [sys.executable, "-m", "shardplan.cli", "topo", str(rocm)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "AMD GPUs" in run.stderr


def test_bundles_between_gpus(tmp_path: Path):
    """Two GPUs joined by an NVLink bridge of 12 links (tclass 0x030200: the far end is a GPU), each listing the
    bundle, on one PCIe switch; a shell prompt before and after the document."""
    pair = tmp_path / "pair.xml"
    gpu = (
        '<pci busid="0000:{bus}:00.0" class="0x030200" vendor="0x10de" device="0x2331" link_speed="32.0 GT/s PCIe" '
        'link_width="16"><gpu dev="{dev}" sm="90"><nvlink target="0000:{peer}:00.0" count="12" tclass="0x030200"/>'
        "</gpu></pci>"
    )
    pair.write_text(
        '$ cat dump.xml\n<system version="1">\n<cpu numaid="0">\n'
        '<pci busid="0000:10:00.0" class="0x060400" link_speed="32.0 GT/s PCIe" link_width="16">\n'
        + gpu.format(bus="11", dev=0, peer="12")
        + gpu.format(bus="12", dev=1, peer="11")
        + "\n</pci>\n</cpu>\n</system>\n$ \n"
    )
    topo = load_topology(pair)
    assert topo.nvlink_count(0, 1) == 12 and {g.model for g in topo.gpus} == {"h100-pcie"}
    assert topo.gpus[0].switch == topo.gpus[1].switch is not None and topo.source.endswith("(NCCL topology XML)")


def test_a_file_of_several_hosts_is_refused(tmp_path: Path):
    """NCCL fuses the hosts of a multi-node NVLink domain into one system, its CPUs told apart by host_hash."""
    two = tmp_path / "fused.xml"
    cpu = '<cpu host_hash="{h}" numaid="0"><pci busid="0000:18:00.0" class="0x030200"/></cpu>'
    two.write_text(f'<system version="1">{cpu.format(h="0x1")}{cpu.format(h="0x2")}</system>')
    with pytest.raises(ParseError, match="2 hosts"):
        load_topology(two)


def test_malformed_xml_names_its_line(tmp_path: Path):
    bad = tmp_path / "topo.xml"
    bad.write_text('<system version="1">\n  <cpu numaid="0">\n    <pci busid="0000:01:00.0" class="0x030200">\n'
                   "  </cpu>\n</system>\n")  # fmt: skip
    with pytest.raises(ParseError, match="line 4: malformed XML"):
        load_topology(bad)


def test_nccl_topo_file_places_the_nics_a_vm_hides():
    """Inside an Azure ND H100 v5 VM every device sits on its own virtual PCI bus, so sysfs pairs no NIC with a GPU
    and each GPU would count every NIC as its own. The image's NCCL_TOPO_FILE pairs them by bus id: GPU 0001:00:00.0
    with NIC 0101:00:00.0, GPU 0002:00:00.0 with 0102:00:00.0 (facts in the shape the live readers give, two of the
    eight GPUs)."""
    gpu = {"name": "NVIDIA H100 80GB HBM3", "memory_bytes": 85520809984, "nvlinks": [], "numa_node": None}
    facts = {
        "gpus": [{**gpu, "pci_bus_id": f"0000000{k}:00:00.0", "pci_path": [f"000{k}:00:00.0"]} for k in (1, 2)],
        "pcie_ancestor": {"0,1": "sys"},
        "nics": [
            {
                "name": f"mlx5_ib{k}",
                "gbit": 400.0,
                "transport": "ib",
                "numa_node": None,
                "pci_path": [f"010{k + 1}:00:00.0"],
            }
            for k in (0, 1)
        ],
    }
    live = spec_from_facts(facts)
    assert [nic.near for nic in live.nodes[0].nics] == [[], []]
    text = (XML / "nccl-topo-azure-ndv5-h100-1.txt").read_text()
    placed = placed_by_nccl_topo(live, text, "ndv5-topo.xml")
    assert [(nic.name, nic.near) for nic in placed.nodes[0].nics] == [("mlx5_ib0", [0]), ("mlx5_ib1", [1])]
    topo = build(placed)
    assert [[nic.name for nic in topo.nearest_nics(g)] for g in (0, 1)] == [["mlx5_ib0"], ["mlx5_ib1"]]
    assert placed.source.endswith("NICs placed by ndv5-topo.xml")
