"""Readers other than `topo -m`: `nvlink -s`, declared files, presets, NVML facts, clusters."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import DATA, fixture_body

from shardplan import Training, load_topology, suggest
from shardplan.cost.collectives import collective_time_s
from shardplan.errors import PlanError, ShardplanError, TopologyError
from shardplan.topology import Topology, TopologySpec, preset_names, read_spec
from shardplan.topology.cluster import build
from shardplan.topology.links import net_gbps, pcie_gbps
from shardplan.topology.sources.nvidia_smi import parse_nvlink_status
from shardplan.topology.sources.nvml import spec_from_facts, with_nic_speeds
from shardplan.topology.sources.sysfs import gpu_pci_path, read_nic_facts


def test_nvlink_status_speeds_and_inactive_links():
    a6000 = parse_nvlink_status(fixture_body(DATA / "nvlink" / "nvidia-smi-nvlink-s-a6000-3gpu-bridge-1.txt"))
    assert a6000 == {0: [14.062] * 4, 1: [14.062] * 4, 2: []}
    h100 = parse_nvlink_status(fixture_body(DATA / "nvlink" / "nvidia-smi-nvlink-s-h100-pcie-2gpu-bridge-1.txt"))
    assert sum(1 for s in h100[0] if s) == 12 and h100[0].count(None) == 6
    cut = parse_nvlink_status(
        fixture_body(DATA / "nvlink" / "nvidia-smi-nvlink-status-h100-gcp-a3-4gpu-pod-truncated-1.txt")
    )
    assert len(cut[0]) == 18 and 3 in cut


def test_nvlink_status_gives_speed_without_gpu_model(body_file):
    topo = load_topology(
        body_file(DATA / "topo" / "nvidia-smi-topo-a6000-3gpu-nvlink-bridge-ansi-1.txt"),
        nvlink_status=body_file(DATA / "nvlink" / "nvidia-smi-nvlink-s-a6000-3gpu-bridge-1.txt"),
    )
    assert topo.bandwidth_gbps(0, 1, achievable=False) == pytest.approx(4 * 14.062)


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_loads_and_cites_a_source(name):
    topo = load_topology(name)
    assert topo.source and len(topo.source) > 40
    assert all(g.model for g in topo.gpus)
    for j in range(min(topo.num_gpus, 8)):
        assert topo.bandwidth_gbps(0, j) > 0


def test_preset_sizes_and_links():
    assert load_topology("dgx-gh200").nvlink_count(0, 255) == 18
    nvl72 = load_topology("gb200-nvl72")
    assert nvl72.num_gpus == 72 and nvl72.num_nodes == 18 and nvl72.path_kind(0, 71) == "nvlink"
    bridged = load_topology("a100-pcie-8gpu-bridged")
    assert bridged.nvlink_islands()[:4] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert bridged.path_kind(1, 2) == "pxb" or bridged.path_kind(1, 2) == "phb"
    assert bridged.path_kind(0, 4) == "sys"
    server = load_topology("pcie-8gpu-2socket")
    assert [server.path_kind(0, j) for j in (1, 2, 4)] == ["pix", "pxb", "sys"]


def test_product_names_find_their_catalogue_entry():
    from shardplan.topology.catalog import gpu_models, match_product_name

    names = {
        "NVIDIA B200": "b200",
        "NVIDIA GB200": "gb200",
        "NVIDIA B300 SXM6 AC": "b300",
        "NVIDIA GB300": "gb300",  # the Grace Blackwell Ultra superchip, not the B300 entry
        "NVIDIA H100 80GB HBM3": "h100-sxm",
        "NVIDIA H200": "h200-sxm",
        # the PCIe cards with NVLink bridges are parts of their own (H100 / H200 datasheets' NVL columns)
        "NVIDIA H100 NVL": "h100-nvl",
        "NVIDIA H200 NVL": "h200-nvl",
        "NVIDIA GH200 480GB": "gh200",  # not the H200
        "NVIDIA H800": "h800-sxm",
        "NVIDIA H800 PCIe": None,  # not the SXM part, and not in the catalogue
        "NVIDIA H20": "h20",
        "NVIDIA A800-SXM4-80GB": "a800-sxm-80gb",
        "NVIDIA A40": "a40",
        "NVIDIA A30": "a30",
        "NVIDIA A10": "a10",
        "NVIDIA L40": "l40",
        "NVIDIA L40S": "l40s",
        "Tesla V100-PCIE-32GB": "v100-pcie-32gb",
        "Tesla V100-SXM2-32GB": "v100-sxm2-32gb",
        "Tesla V100-SXM3-32GB": "v100-sxm3-32gb",  # DGX-2's, on NVSwitch
        "NVIDIA GeForce RTX 5090": "rtx-5090",
        # as p2pBandwidthLatencyTest names it (fixtures/p2p, rtx5090x8-rtxpro6000); the 300 W Max-Q is not the entry
        "NVIDIA RTX PRO 6000 Blackwell Workstation Edition": "rtx-pro-6000",
        "NVIDIA RTX PRO 6000 Blackwell Server Edition": "rtx-pro-6000",
        "NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition": None,
        "NVIDIA RTX 6000 Ada Generation": "rtx-6000-ada",
    }
    assert {name: match_product_name(name) for name in names} == names
    ids = [device for model in gpu_models().values() for device in model.pci_device_ids]  # NCCL XML's way in
    assert len(ids) == len(set(ids)) == 21
    dgx = load_topology("dgx-b200")
    assert dgx.gpus[0].model == "b200" and dgx.path_kind(0, 7) == "nvlink" and dgx.nvswitch_domains[0].nvls
    ultra = load_topology("dgx-b300", nodes=2)  # DGX B300 datasheet: 288 GB each, one 800 Gb/s ConnectX-8 per GPU
    assert ultra.gpus[0].model == "b300" and ultra.smallest_memory_bytes == 288e9 and ultra.nvswitch_domains[0].nvls
    assert {nic.gbit for nic in ultra.nics} == {800} and ultra.path_kind(0, 8) == "net"
    rack = load_topology("gb300-nvl72")  # GB300 NVL72 datasheet: 72 GPUs in one NVLink domain, 800 Gb/s NIC each
    assert rack.gpus[0].model == "gb300" and rack.num_gpus == 72 and rack.path_kind(0, 71) == "nvlink"
    assert {nic.gbit for nic in rack.nics} == {800}


def test_bandwidth_by_link_class_hand_checked():
    dgx = load_topology("dgx-h100")
    # 18 NVLink4 links x 25 GB/s each way (H100 datasheet), NVSwitch efficiency 376/450 measured.
    assert dgx.bandwidth_gbps(0, 5, achievable=False) == 18 * 25.0
    assert dgx.bandwidth_gbps(0, 5) == pytest.approx(18 * 25.0 * 376.0 / 450.0)
    server = load_topology("pcie-8gpu-2socket")
    assert server.bandwidth_gbps(0, 4, achievable=False) == 31.5  # PCIe Gen4 x16
    assert server.bandwidth_gbps(0, 2) == 26.32  # measured Gen4 P2P (fixtures/p2p rtx6000ada), under one switch tree
    # across sockets NCCL 2.23+ copies through host memory unless the CPU is AMD's (this preset does not say)
    assert server.bandwidth_gbps(0, 4) == pcie_gbps(4, through_host=True)
    # a file that lists PCIe switches but no host bridges: GPUs under one switch share its bridge (PIX)
    assert load_topology(DATA / "machines" / "autodl-2080ti.yaml").path_kind(0, 1) == "pix"


def test_cluster_of_nodes_joined_by_nics():
    two = load_topology("dgx-h100", nodes=2)
    assert two.num_gpus == 16 and two.num_nodes == 2
    assert [g.node for g in two.gpus] == [0] * 8 + [1] * 8
    assert two.path_kind(3, 11) == "net" and two.nvlink_count(3, 11) == 0
    assert two.bandwidth_gbps(3, 11, achievable=False) == 400 / 8


@pytest.mark.parametrize(("gpu", "slot", "link"), [("a100-pcie-80gb", 5, 4), ("h100-pcie", 5, 5), ("h100-pcie", 3, 3)])
def test_a_link_runs_at_the_older_generation_of_slot_and_gpu(gpu: str, slot: int, link: int, tmp_path: Path):
    """A declared node's PCIe generation is its slots'; each GPU's link trains to the older of that and the GPU's
    own (the catalogue's: A100 PCIe Gen4, H100 PCIe Gen5), and its peer copies run at that generation's rate."""
    declared = tmp_path / "node.json"
    declared.write_text(json.dumps({"nodes": [{"gpu": gpu, "gpus": 2, "pcie": {"gen": slot, "switches": [[0, 1]]}}]}))
    topo = load_topology(declared)
    assert [g.pcie_gen for g in topo.gpus] == [link, link]
    assert topo.bandwidth_gbps(0, 1) == pcie_gbps(link)


@pytest.mark.parametrize(
    ("node", "field"),
    [
        ({"gpu": "l40s", "gpus": 4, "nvlink": [[0, 1, 4]]}, "nvlink \\[0, 1, 4\\]: GPU 0's model, l40s,"),
        ({"gpu": "rtx-4090", "gpus": 8, "nvswitch": {"links_per_gpu": 18}}, "nvswitch: GPU 0's model, rtx-4090,"),
        (  # one GPU of the node another model: the bundle that reaches it is named
            {"gpu": "a100-pcie-80gb", "gpus": 2, "nvlink": [[0, 1, 12]], "gpu_info": [{}, {"model": "l40s"}]},
            "nvlink \\[0, 1, 12\\]: GPU 1's model, l40s,",
        ),
    ],
)
def test_nvlink_on_a_gpu_without_it_is_refused_on_load(node: dict, field: str, tmp_path: Path):
    """A declared NVLink that reaches a GPU whose model has none is refused when the file is read, on one line
    naming the node, the field and the GPU (it used to load, and fail only when a plan timed the link); with a
    speed of its own it loads."""
    declared = tmp_path / "node.json"
    declared.write_text(json.dumps({"name": "bad", "nodes": [node]}))
    with pytest.raises(TopologyError, match=f"^bad: node 'node': {field} has no NVLink;") as raised:
        load_topology(declared)
    assert "\n" not in str(raised.value)
    declared.write_text(json.dumps({"nodes": [{**node, "nvlink_gbps_per_link": 14.0625}]}))
    assert load_topology(declared).nvlinks or load_topology(declared).nvswitch_domains


def test_a_pair_bonded_by_more_nvlinks_than_its_gpu_has_is_refused(tmp_path: Path):
    """NV99 between two H100s (18 links each) loaded and priced the pair at 2,475 GB/s; it is refused on one line
    naming the file (an unnamed file goes by its file name), the node, the bundle and the GPU's own count; so is an
    NVSwitch said to take 18 links of a V100, which has 6."""
    declared = tmp_path / "box.yaml"
    declared.write_text("nodes:\n  - {gpus: 4, gpu: h100-sxm, nvlink: [[0, 1, 18], [2, 3, 99]]}\n")
    with pytest.raises(TopologyError, match=r"^box.yaml: node 'node': nvlink \[2, 3, 99\]: GPU 2's model, h100-sxm, "):
        load_topology(declared)
    declared.write_text("nodes:\n  - {gpus: 8, gpu: v100-sxm2-32gb, nvswitch: {links_per_gpu: 18}}\n")
    six = r"nvswitch: GPU 0's model, v100-sxm2-32gb, has 6 NVLinks, fewer than the 18 stated"
    with pytest.raises(TopologyError, match=six):
        load_topology(declared)
    declared.write_text("nodes:\n  - {gpus: 4, gpu: h100-sxm, nvlink: [[0, 1, 18], [2, 3, 18]]}\n")
    assert load_topology(declared).name == "box.yaml" and load_topology(declared).nvlink_count(2, 3) == 18


def test_a_cluster_too_large_to_hold_is_refused_before_it_is_built(tmp_path: Path):
    """A mistyped node count (--nodes 1000000 made 72 million GB200s and ran out of memory) is refused at once, on
    one line, whether it comes from nodes= or from a declared node's count."""
    with pytest.raises(TopologyError, match="1000000 x 72 GPUs = 72,000,000 GPUs; shardplan plans clusters of up to"):
        load_topology("gb200-nvl72", nodes=1_000_000)
    declared = tmp_path / "big.json"
    declared.write_text(json.dumps({"nodes": [{"gpu": "h100-sxm", "gpus": 8, "count": 20_000}]}))
    with pytest.raises(TopologyError, match="160,000 GPUs"):
        load_topology(declared)


def test_heterogeneous_cluster_with_broken_link(tmp_path: Path):
    doc = {
        "name": "mixed",
        "nodes": [
            {"name": "a", "gpu": "h100-sxm", "gpus": 8, "nvswitch": {"links_per_gpu": 18}},
            # one V100 cube mesh whose 0-3 bundle lost a link (NV2 -> NV1)
            {
                "name": "b",
                "gpu": "v100-sxm2-32gb",
                "gpus": 4,
                "nvlink": [[0, 1, 1], [0, 2, 1], [0, 3, 1], [1, 2, 2], [1, 3, 1], [2, 3, 2]],
            },
        ],
        "network": {"gbit_per_nic": 100},
    }
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(doc))
    topo = load_topology(path)
    assert topo.num_gpus == 12
    assert topo.gpus[8].model == "v100-sxm2-32gb" and topo.nvlink_count(8, 11) == 1
    assert topo.bandwidth_gbps(0, 1) > topo.bandwidth_gbps(8, 11)
    assert topo.path_kind(0, 8) == "net"
    assert not topo.identical_nodes and load_topology("dgx1-v100", nodes=2).identical_nodes


def test_nodes_alike_but_for_one_degraded_nvlink_are_not_identical(tmp_path: Path):
    node = "{gpu: a100-sxm-80gb, gpus: 2, nvlink: [[0, 1, %d]]}"
    path = tmp_path / "degraded.yaml"
    path.write_text(f"nodes: [{node % 12}, {node % 11}]\nnetwork: {{gbit_per_nic: 200}}")
    assert not load_topology(path).identical_nodes
    path.write_text(f"nodes: [{node % 12}, {node % 12}]\nnetwork: {{gbit_per_nic: 200}}")
    assert load_topology(path).identical_nodes


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nodes: [{gpus: 0}]", "nodes.0.gpus"),
        ("nodes: [{gpus: 2, nvlink: [[0, 2, 4]]}]", "outside 0..1"),
        ("nodes: [{gpus: 2, gpu: b100-imaginary}]", "unknown GPU model"),
        ("nodes: [{gpus: 2, colour: red}]", "nodes.0.colour"),
        ("nodes: [{gpus: 2}\n  bad: [", "not valid YAML"),
        ("- just a list", "expected a mapping"),
    ],
)
def test_declared_file_errors_name_file_and_field(tmp_path: Path, text: str, message: str):
    path = tmp_path / "box.yaml"
    path.write_text(text)
    with pytest.raises(ShardplanError, match=message) as info:
        load_topology(path)
    assert str(info.value).startswith(str(path)) or "unknown GPU model" in str(info.value)
    assert "\n" not in str(info.value)


def test_json_round_trip():
    topo = load_topology("dgx1-v100", nodes=2)
    again = Topology.from_json(topo.to_json())
    assert again == topo
    assert json.loads(topo.to_json())["schema_version"] == 1


def test_nvml_facts_recorded_on_real_h100():
    """Facts that read_nvml_facts() returned on the real H100 (tests/data/nvml), turned into a spec."""
    facts = json.loads((DATA / "nvml" / "h100-single.json").read_text())
    topo = build(spec_from_facts(facts["nvml_facts"]))
    assert topo.num_gpus == 1
    assert topo.gpus[0].model == "h100-sxm"
    assert topo.gpus[0].memory_bytes == 85520809984
    assert topo.gpus[0].pcie_gen == 5
    # the topology the same run wrote out (with a network field since dropped) reads back as the same
    written = Topology.from_json(json.dumps(facts["topology"]))
    assert written == topo


def test_nvml_facts_recorded_on_real_two_h200():
    """Facts read_nvml_facts() returned on the lent 2x H200 (NV18 in `nvidia-smi topo -m`), whose
    pynvml lacks nvmlDeviceGetNvLinkRemotePciInfo_v2: 18 links between the two GPUs."""
    facts = json.loads((DATA / "nvml" / "h200-x2-nvlink.json").read_text())
    assert "NV18" in facts["nvidia_smi_topo_m"]
    topo = build(spec_from_facts(facts["nvml_facts"]))
    assert topo.num_gpus == 2 and topo.nvlink_count(0, 1) == 18
    assert [g.model for g in topo.gpus] == ["h200-sxm", "h200-sxm"]


def test_nvml_facts_two_gpus_with_bridge_and_pcie_ancestor():
    """Hand-written facts in the shape NVML reports: two GPUs, 12 direct links, PHB between them."""
    gpu = {"name": "NVIDIA H100 PCIe", "memory_bytes": 85520809984, "pcie_gen_max": 5, "numa_node": 1}
    facts = {
        "gpus": [
            {**gpu, "pci_bus_id": "00000000:4A:00.0", "nvlinks": [{"link": k, "remote": 1} for k in range(12)]},
            {**gpu, "pci_bus_id": "00000000:61:00.0", "nvlinks": [{"link": k, "remote": 0} for k in range(12)]},
        ],
        "pcie_ancestor": {"0,1": "phb"},
    }
    topo = build(spec_from_facts(facts))
    assert topo.nvlink_count(0, 1) == 12 and topo.gpus[0].model == "h100-pcie"
    assert topo.nvswitch_domains == ()


def test_nvml_p2p_status_decides_whether_pcie_copies_go_through_host_memory():
    """NVML's peer-to-peer status of each pair NVLink does not join (read and write, `nvidia-smi topo -p2p rw`):
    one refused sends the node's PCIe copies through host memory, at the share of the P2P rate NCCL's SHM transport
    reached on 2x RTX 2080 Ti. The statuses are those the fixtures show: GNS on two stock-driver RTX 5090s, CNS on
    an L4 pair, OK elsewhere. Without statuses (older recordings) the GPU model's catalogue entry decides."""
    for token, fixture in (("GNS", "rtx5090-2gpu-gns"), ("CNS", "l4-2gpu-cns")):
        assert token in fixture_body(next((DATA / "topo").glob(f"*p2p*{fixture}*"))).split()

    def pair(name: str, memory: int, status: str | None, links: int = 0) -> Topology:
        gpus = [
            {"name": name, "memory_bytes": memory, "pcie_gen_max": 5, "pci_bus_id": f"00000000:{bus}:00.0"}
            for bus in ("01", "81")
        ]
        for k, gpu in enumerate(gpus):
            gpu["nvlinks"] = [{"link": n, "remote": 1 - k} for n in range(links)]
        facts = {"gpus": gpus, "pcie_ancestor": {"0,1": "phb"}} | ({"p2p": {"0,1": status}} if status else {})
        return build(spec_from_facts(facts))

    geforce, h100 = ("NVIDIA GeForce RTX 5090", 34190917632), ("NVIDIA H100 PCIe", 85520809984)
    assert not pair(*geforce, "GNS").nodes[0].p2p and not pair(*geforce, None).nodes[0].p2p
    assert pair(*h100, "OK").nodes[0].p2p and pair(*h100, None).nodes[0].p2p
    refused = pair(*h100, "CNS")
    assert not refused.nodes[0].p2p
    assert refused.bandwidth_gbps(0, 1) == pcie_gbps(5, through_host=True)
    assert refused.bandwidth_gbps(0, 1, achievable=False) == pcie_gbps(5, achievable=False)
    # an NVLink-bridged pair's status is NVLink's, so it says nothing of PCIe: the catalogue's (H100 PCIe: yes)
    assert pair(*h100, "OK", links=12).nodes[0].p2p
    # four GPUs in two switch pairs on two sockets, the driver refusing P2P across them (TNS): the pairs under a
    # switch copy peer-to-peer; across sockets NCCL copies through host memory anyway
    gpu = {"name": h100[0], "memory_bytes": h100[1], "pcie_gen_max": 5, "nvlinks": []}
    gpus = [{**gpu, "pci_bus_id": f"00000000:{bus}:00.0"} for bus in ("01", "02", "81", "82")]
    kinds = {"0,1": "pix", "2,3": "pix", "0,2": "sys", "0,3": "sys", "1,2": "sys", "1,3": "sys"}
    status = {key: "OK" if kind == "pix" else "TNS" for key, kind in kinds.items()}
    two_sockets = build(spec_from_facts({"gpus": gpus, "pcie_ancestor": kinds, "p2p": status}))
    assert two_sockets.nodes[0].p2p and two_sockets.path_kind(0, 1) == "pix"
    assert not two_sockets.copies_through_host(0, 1, local_gpus=4)
    assert two_sockets.copies_through_host(0, 2, local_gpus=4)


def test_nvml_link_width_of_each_gpu_as_its_slot_allows():
    """NVML's maximum PCIe link "possible with this device and system" is per GPU: an L4 (Gen4 x16) in an x8 slot
    reports 8, and copies to and from it run at half the x16 rate; one that reports nothing keeps the default."""
    gpu = {"name": "NVIDIA L4", "memory_bytes": 24152899584, "pcie_gen_max": 4, "nvlinks": []}
    widths = (16, 8, None)
    facts = {
        "gpus": [{**gpu, "pci_bus_id": f"00000000:0{k}:00.0", "pcie_width_max": w} for k, w in enumerate(widths)],
        "pcie_ancestor": {"0,1": "pix", "0,2": "pix", "1,2": "pix"},
        "p2p": {"0,1": "OK", "0,2": "OK", "1,2": "OK"},
    }
    topo = build(spec_from_facts(facts))
    assert [g.pcie_width for g in topo.gpus] == [16, 8, 16] and {g.pcie_gen for g in topo.gpus} == {4}
    assert topo.bandwidth_gbps(0, 1) == topo.bandwidth_gbps(1, 2) == pcie_gbps(4, 8)
    assert topo.bandwidth_gbps(0, 2) == pcie_gbps(4, 16)


def test_geforce_cards_have_no_pcie_p2p_unless_the_source_says_so(tmp_path: Path):
    """NVIDIA's stock driver gives GeForce RTX 4090s and 5090s no peer-to-peer (catalogue): a saved `topo -m` of
    two 5090s and the 4090 workstation preset copy through host memory, and all-reduce at that rate; two of them on
    an AMD host declared `p2p: true` (a patched driver) get the PCIe rate back. `topo -p2p` matrices say it
    themselves."""

    def p2p(saved: str, gpu: str) -> bool:
        return load_topology(DATA / "topo" / f"nvidia-smi-topo-{saved}-1.txt", gpu=gpu).nodes[0].p2p

    assert not p2p("rtx5090-2gpu-phb", "rtx-5090") and not p2p("p2p-rw-rtx5090-2gpu-gns", "rtx-5090")
    assert p2p("h100-pcie-2gpu-nvlink-bridge", "h100-pcie")
    workstation = load_topology("rtx4090-4x-pcie")
    assert not workstation.nodes[0].p2p
    declared = tmp_path / "patched.yaml"
    declared.write_text(
        "name: patched\nnodes:\n  - {gpu: rtx-4090, gpus: 4, cpu: amd, p2p: true,\n"
        "     pcie: {gen: 4, host_bridges: [[0, 1, 2, 3]]}}\n"
    )
    patched = load_topology(declared)
    assert patched.nodes[0].p2p
    times = [collective_time_s(t, "all_reduce", [0, 1], 2**30) for t in (workstation, patched)]
    assert times[0] / times[1] == pytest.approx(pcie_gbps(4) / pcie_gbps(4, through_host=True), rel=0.05)


def _sysfs_tree(snapshot: dict, root: Path) -> Path:
    """The part of /sys a recording kept (scripts/record_live_topology.py), rebuilt under `root`: links first,
    to directories standing for the devices they resolve to, then the files."""
    for path, value in snapshot.items():
        if isinstance(value, dict):
            (root / value["link"]).mkdir(parents=True, exist_ok=True)
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).symlink_to(root / value["link"])
    for path, value in snapshot.items():
        if isinstance(value, str):
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_text(value)
    return root


def test_cpu_maker_read_as_nccl_tells_them_apart(tmp_path: Path):
    """/proc/cpuinfo's vendor_id (x86) or CPU implementer (ARM) gives the host CPU's maker, on which NCCL's P2P
    level turns; this machine's own file reads too."""
    from shardplan.topology.sources.sysfs import read_cpu_vendor

    cases = {
        "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\n": "intel",
        "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n": "amd",
        "processor\t: 0\nvendor_id\t: HygonGenuine\n": "other",
        "processor\t: 0\nBogoMIPS\t: 2000.00\nCPU implementer\t: 0x41\nCPU architecture: 8\n": "arm",
    }
    for k, (text, vendor) in enumerate(cases.items()):
        (tmp_path / f"cpuinfo{k}").write_text(text)
        assert read_cpu_vendor(tmp_path / f"cpuinfo{k}") == vendor
    assert read_cpu_vendor(tmp_path / "absent") is None
    here = Path("/proc/cpuinfo")
    if here.exists():
        assert read_cpu_vendor(here) in {"intel", "amd", "arm", "other"}


def test_sysfs_nics_recorded_on_real_h100(tmp_path: Path):
    """The lent H100 (a VM: no RDMA device, one virtio Ethernet interface of unstated speed beside the GPU on
    root complex pci0000:00): its /sys as recorded, read again, gives what the live reader returned there."""
    record = json.loads((DATA / "nvml" / "live-h100-sysfs.json").read_text())
    facts, root = record["nvml_facts"], _sysfs_tree(record["sysfs"], tmp_path)
    assert (
        read_nic_facts(root)
        == facts["nics"]
        == [
            {
                "name": "eth0",
                "gbit": None,
                "transport": "socket",
                "pci_path": ["pci0000:00", "0000:00:03.0"],
                "numa_node": None,
            }
        ]
    )
    assert gpu_pci_path(facts["gpus"][0]["pci_bus_id"], root) == facts["gpus"][0]["pci_path"]
    topo = build(spec_from_facts(facts))
    assert [(n.name, n.gbit, n.near) for n in topo.nics] == [("eth0", None, (0,))]


def test_nics_placed_by_pci_path_and_a_live_cluster_plans():
    """Hand-written facts in the shape the live readers give (paths as sysfs resolves them): two GPUs each under
    its own PCIe switch with a 400 Gb/s InfiniBand port, on two NUMA nodes. Each port is near its switch's GPU; two
    such nodes (what the hook assembles from every node's reading) plan with the ports' speed, where a reading
    without NICs leaves the network unknown."""
    gpu = {"name": "NVIDIA H100 80GB HBM3", "memory_bytes": 85520809984, "pcie_gen_max": 5, "nvlinks": []}
    switch = [["pci0000:15", "0000:15:01.0", "0000:16:00.0"], ["pci0000:97", "0000:97:01.0", "0000:98:00.0"]]
    facts = {
        "gpus": [
            {**gpu, "pci_bus_id": f"00000000:{bus}:00.0", "numa_node": k, "pci_path": [*switch[k], f"0000:{bus}:00.0"]}
            for k, bus in enumerate(("18", "9a"))
        ],
        "pcie_ancestor": {"0,1": "sys"},
        "nics": [
            {"name": f"mlx5_{k}", "gbit": 400.0, "transport": "ib", "numa_node": k, "pci_path": [*switch[k], bus]}
            for k, bus in enumerate(("0000:19:00.0", "0000:9b:00.0"))
        ],
    }
    spec = spec_from_facts(facts)
    assert [(n.name, n.near, n.socket) for n in spec.nodes[0].nics] == [("mlx5_0", [0], 0), ("mlx5_1", [1], 1)]
    train = Training(global_batch=16, seq_len=4096)
    plan = suggest("llama3-8b", build(spec, nodes=2), train, top_k=1)[0]
    assert plan.num_gpus == 4 and plan.comm_time_by_link["net"] > 0
    without = spec_from_facts({**facts, "nics": []})
    with pytest.raises(TopologyError, match="no NIC speed \\(no RDMA port"):
        suggest("llama3-8b", build(without, nodes=2), train, top_k=1)


def test_a_declared_topology_without_nic_speeds_says_so():
    """Two nodes of a preset that declares no NICs: the error names what the file lacks, not a live reading's
    reasons."""
    with pytest.raises(TopologyError, match="no NIC speed") as raised:
        suggest("gpt-tiny", load_topology("rtx4090-4x-pcie", nodes=2), Training(global_batch=16, seq_len=512))
    assert "declares no NICs with a speed" in str(raised.value) and "RDMA" not in str(raised.value)


def test_nic_gbit_gives_a_saved_topo_m_its_network():
    """A saved `nvidia-smi topo -m` names NICs but not their speed: `nic_gbit` gives them one, so copies of it plan
    over the network; a node that lists no NICs leaves through one NIC of that rate. A speed that contradicts the
    source's, or one that is no line rate, is refused; one that agrees changes nothing."""
    saved, train = (
        DATA / "topo" / "nvidia-smi-topo-h100-hgx4gpu-nv6-4nic-1.txt",
        Training(global_batch=16, seq_len=4096),
    )
    with pytest.raises(TopologyError, match=r"no NIC speed.*pass --nic-gbit"):
        suggest("llama3-8b", load_topology(saved, gpu="h100-sxm", nodes=2), train, top_k=1)
    fast, slow = (load_topology(saved, gpu="h100-sxm", nodes=2, nic_gbit=gbit) for gbit in (400, 100))
    assert [(nic.node, nic.gbit, nic.near) for nic in fast.nics[3:5]] == [(0, 400.0, (3,)), (1, 400.0, (4,))]
    assert [rate for _, rate in fast.nic_links(4)] == [net_gbps(400)]
    across = [collective_time_s(t, "all_reduce", range(8), 2**30) for t in (fast, slow)]
    assert across[1] > 2 * across[0]
    plan = suggest("llama3-8b", fast, train, top_k=1)[0]
    assert plan.num_gpus == 8 and plan.comm_time_by_link["net"] > 0
    bare = load_topology(DATA / "topo" / "nvidia-smi-topo-l4-2gpu-sys-1.txt", gpu="l4", nodes=2, nic_gbit=100)
    assert not bare.nics and bare.nic_links(2) == ((("nic", 1, "default"), net_gbps(100)),)
    assert load_topology("dgx-h100", nic_gbit=400).nic_links(0) == load_topology("dgx-h100").nic_links(0)
    with pytest.raises(TopologyError, match="dgx-h100: the source states NICs of 400 Gb/s, not 200: --nic-gbit"):
        load_topology("dgx-h100", nic_gbit=200)
    for bad in (0, -400, math.nan, math.inf):
        with pytest.raises(TopologyError, match="must be a positive line rate in Gb/s"):
            load_topology(saved, gpu="h100-sxm", nodes=2, nic_gbit=bad)


def test_the_hook_plans_nodes_whose_readings_state_no_nic_speed_at_nic_gbit():
    """Rank 0 of `auto_device_mesh` assembles two nodes' readings that name NICs without a speed (as a saved
    `nvidia-smi topo -m` does): it plans them only with `nic_gbit`, over NICs of that rate."""
    from shardplan.hook import _plan

    spec = read_spec(DATA / "topo" / "nvidia-smi-topo-h100-hgx4gpu-nv6-4nic-1.txt")
    reading = spec.model_copy(
        update={"nodes": [spec.nodes[0].model_copy(update={"gpu": "h100-sxm"})]}
    ).model_dump_json()
    everyone = [
        {"node": r // 4, "local_world": 4, "fingerprint": "same", "reading": reading if r % 4 == 0 else None}
        for r in range(8)
    ]
    train = Training(global_batch=16, seq_len=4096)
    with pytest.raises(TopologyError, match="no NIC speed"):
        _plan(everyone, "llama3-8b", train, "live", None, {"zero_stages": (3,)})
    plan = _plan(everyone, "llama3-8b", train, "live", 400, {"zero_stages": (3,)})
    assert plan.num_gpus == 8 and plan.comm_time_by_link["net"] > 0


def test_nic_speeds_from_sysfs_complete_nvidia_smi():
    """`nvidia-smi topo -m` names NICs (mlx5_0..11 on this Hopper box) but not their speed; sysfs facts of the
    same names give it, and names sysfs does not know stay unknown."""
    spec = read_spec(DATA / "topo" / "nvidia-smi-topo-hopper-8gpu-nv18-12nic-1.txt")
    done = with_nic_speeds(spec, [{"name": "mlx5_0", "gbit": 400.0}, {"name": "mlx5_3", "gbit": 400.0}])
    speeds = {nic.name: nic.gbit for nic in done.nodes[0].nics}
    assert speeds["mlx5_0"] == speeds["mlx5_3"] == 400.0 and speeds["mlx5_1"] is None and len(speeds) == 12


def test_bad_sources():
    with pytest.raises(TopologyError, match="not a file, 'live', or a preset"):
        load_topology("no-such-thing")
    with pytest.raises(TopologyError, match="nodes must be at least 1"):
        load_topology("dgx-h100", nodes=0)
    assert math.isclose(load_topology("rtx3090-2x-nvlink").bandwidth_gbps(0, 1, achievable=False), 56.25)


def test_trays_of_one_nvlink_clique_join_one_domain():
    """GB200 NVL72 trays read live, four GPUs each with 18 NVLinks into the switches: NVML's fabric info puts the
    trays of one rack in one clique (cluster UUID / clique id, as NCCL groups them), so the hook joins their nodes'
    NVSwitch domains; trays of two racks stay two domains, and nodes without fabric info stay one each."""
    from shardplan.hook import nvlink_domain_nodes

    def tray(clique: str | None) -> TopologySpec:
        gpu = {"name": "NVIDIA GB200", "memory_bytes": 199715979264, "numa_node": 0, "fabric": clique}
        links = [{"link": k, "remote": "switch"} for k in range(18)]
        facts = {"gpus": [{**gpu, "pci_bus_id": f"00000008:0{k}:00.0", "nvlinks": links} for k in range(4)]}
        return spec_from_facts(facts)

    racks = [tray("00ff" * 8 + "/7"), tray("00ff" * 8 + "/7"), tray("00ff" * 8 + "/9"), tray("00ff" * 8 + "/9")]
    assert nvlink_domain_nodes(racks) == 2
    topo = build(racks[0].model_copy(update={"nodes": [s.nodes[0] for s in racks], "nvlink_domain_nodes": 2}))
    assert [d.gpus for d in topo.nvswitch_domains] == [tuple(range(8)), tuple(range(8, 16))]
    assert topo.path_kind(0, 7) == "nvlink" and topo.path_kind(0, 8) == "net"
    assert nvlink_domain_nodes([tray(None), tray(None)]) == 1
    assert nvlink_domain_nodes([racks[0], racks[2], racks[1]]) == 1  # a clique split by another: not consecutive


def test_a_topology_already_built_takes_no_source_options():
    """`load_topology` of a `Topology` returns it as it is: `nodes`, `gpu`, `nvlink_status` and `nic_gbit` shape a
    source, so with one it is an error where they were ignored. The hook copies a source (a preset) once per node,
    not a `Topology`: torchrun over two nodes with a one-node `Topology` says to pass the source."""
    from shardplan.hook import _plan

    topo = load_topology("dgx-h100")
    assert load_topology(topo) is topo
    with pytest.raises(TopologyError, match=r"^nodes and nic_gbit apply to a topology's source .*dgx-h100 is built"):
        load_topology(topo, nodes=2, nic_gbit=400)
    with pytest.raises(TopologyError, match=r"^gpu applies to"):
        load_topology(topo, gpu="h100-sxm")
    everyone = [{"node": r // 8, "local_world": 8, "fingerprint": "same", "reading": None} for r in range(16)]
    train = Training(global_batch=64, seq_len=4096)
    with pytest.raises(PlanError, match="8 GPUs but torchrun runs 16 processes: pass its source"):
        _plan(everyone, "llama3-8b", train, topo, None, {})
    assert _plan(everyone, "llama3-8b", train, "dgx-h100", None, {}).num_gpus == 16
