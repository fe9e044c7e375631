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
    text = subprocess.run([exe, "topo", "-m"], capture_output=True, text=True, check=True).stdout
    from shardplan.topology.cluster import build

    smi = build(parse_topo(text, "nvidia-smi topo -m"))
    assert smi.num_gpus == live.num_gpus
    for i in range(live.num_gpus):
        for j in range(live.num_gpus):
            assert smi.nvlink_count(i, j) == live.nvlink_count(i, j)


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
