"""Live NVML reading, for real: runs only where an NVIDIA GPU and driver are present."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from shardplan import load_topology
from shardplan.topology.sources.nvidia_smi import parse_topo
from shardplan.topology.sources.nvml import read_nvml_facts

pytestmark = pytest.mark.gpu


def test_live_topology_agrees_with_nvidia_smi():
    live = load_topology("live")
    facts = read_nvml_facts()
    assert live.num_gpus == len(facts["gpus"]) >= 1
    # NVML's fabric info: a clique only on multi-node NVLink systems (GB200 NVL72), None elsewhere
    assert all(g["fabric"] is None or "/" in g["fabric"] for g in facts["gpus"])
    assert all(g.memory_bytes and g.memory_bytes > 10**9 for g in live.gpus)
    exe = shutil.which("nvidia-smi")
    if exe is None:
        pytest.skip("nvidia-smi not on PATH")
    query = ["--query-gpu=pcie.link.gen.max,pcie.link.width.max", "--format=csv,noheader"]
    links = subprocess.run([exe, *query], capture_output=True, text=True, check=True).stdout.split("\n")
    assert [(g.pcie_gen, g.pcie_width) for g in live.gpus] == [
        tuple(map(int, line.split(","))) for line in links if line.strip()
    ]
    text = subprocess.run([exe, "topo", "-m"], capture_output=True, text=True, check=True).stdout
    from shardplan.topology.cluster import build

    smi = build(parse_topo(text, "nvidia-smi topo -m"))
    assert smi.num_gpus == live.num_gpus
    for i in range(live.num_gpus):
        for j in range(live.num_gpus):
            assert smi.nvlink_count(i, j) == live.nvlink_count(i, j)


def test_live_p2p_statuses_agree_with_nvidia_smi():
    """NVML's peer-to-peer status of every GPU pair (read and write) is the one `nvidia-smi topo -p2p r` and `-p2p w`
    print, and the live node has P2P exactly when every pair NVLink does not join says OK; the host CPU's maker is
    read. One GPU has no pair: then NVML's answer for the GPU with itself shows the call works on this driver."""
    import pynvml as nv

    from shardplan.topology.sources.nvml import _P2P_TOKENS

    facts, live = read_nvml_facts(), load_topology("live")
    assert live.nodes[0].cpu == facts["cpu_vendor"] in {"intel", "amd", "arm", "other"}
    n = len(facts["gpus"])
    assert sorted(facts["p2p"]) == [f"{a},{b}" for a in range(n) for b in range(a + 1, n)]
    assert set(facts["p2p"].values()) <= set(_P2P_TOKENS)
    pcie = [s == "OK" for key, s in facts["p2p"].items() if live.path_kind(*map(int, key.split(","))) != "nvlink"]
    if pcie:
        assert live.nodes[0].p2p == all(pcie)
    nv.nvmlInit()
    try:
        handle = nv.nvmlDeviceGetHandleByIndex(0)
        assert nv.nvmlDeviceGetP2PStatus(handle, handle, 0) in range(len(_P2P_TOKENS))
    finally:
        nv.nvmlShutdown()
    exe = shutil.which("nvidia-smi")
    if exe is None or n < 2:
        return
    smi: dict[str, list[str]] = {key: [] for key in facts["p2p"]}
    for flag in ("r", "w"):
        text = subprocess.run([exe, "topo", "-p2p", flag], capture_output=True, text=True, check=True).stdout
        rows = {cells[0]: cells[1:] for cells in map(str.split, text.splitlines()) if cells and "X" in cells}
        for key in smi:
            a, b = map(int, key.split(","))
            smi[key].append(rows[f"GPU{a}"][b])
    for key, status in facts["p2p"].items():
        assert (status == "OK") == (smi[key] == ["OK", "OK"]) and (status == "OK" or status in smi[key]), key


def test_live_nics_are_the_rdma_ports_nvidia_smi_names():
    """Every NIC `nvidia-smi topo -m` names (its RDMA devices) is read live with its line rate, near the same GPUs
    (those of its PCIe switch or host bridge)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        pytest.skip("nvidia-smi not on PATH")
    from shardplan.topology.cluster import build

    smi = build(parse_topo(subprocess.run([exe, "topo", "-m"], capture_output=True, text=True, check=True).stdout))
    live = load_topology("live")
    named = {nic.name.split(":")[0]: nic for nic in live.nics}
    for nic in smi.nics:
        assert nic.name in named and named[nic.name].gbit, nic.name
        assert named[nic.name].near == nic.near, nic.name


# torch.compile's own imports warn of torch.jit's deprecation (torch 2.11 on the lent H100s)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_compiled_block_rate_of_this_gpu():
    """calibrate's compiled Llama block (`block_kernels`: Llama-3-8B widths, 8,192 tokens, bf16) has GEMM, attention
    and other kernels, and the rate derived from the rest is within 25% of what shardplan uses for this GPU (on an
    H100 the shipped measurement; elsewhere it scaled by the datasheets' memory bandwidth)."""
    import torch

    from shardplan.calibrate import _gpu_key
    from shardplan.cost.calibration import rates_for
    from shardplan.profiled_block import block_kernels, compiled_block_rates, kernels_by_kind

    device, width, tokens = torch.device("cuda", 0), (4096, 4096, 4096, 14336), 8192
    kinds = kernels_by_kind(block_kernels(device, tokens, width))
    assert min(kinds.values()) > 0
    rate = compiled_block_rates(width, tokens, kinds["other"])["compiled_block_gbps"] * 1e9
    assert rate == pytest.approx(rates_for(_gpu_key(device)).compiled_block_bytes_per_s, rel=0.25)
