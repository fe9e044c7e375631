"""Bandwidth of each link class: theoretical (spec) and achievable (measured), each with its source.

Units: GB/s (10^9 bytes per second) per direction. Planning uses the achievable figures; the
theoretical ones are kept so a user can see the gap.
"""

from __future__ import annotations

# PCIe x16, per direction, after 128b/130b encoding (PCI-SIG base specs 3.0/4.0/5.0: 8/16/32 GT/s
# per lane): 8e9 * 16 lanes * 128/130 / 8 bits = 15.75 GB/s for Gen3; doubling each generation.
# Gen6 (64 GT/s PAM4, FLIT mode, PCIe 6.0 spec): 128 GB/s raw x 242/256 FLIT efficiency = 121 GB/s.
PCIE_X16_THEORETICAL_GBPS: dict[int, float] = {3: 15.75, 4: 31.5, 5: 63.0, 6: 121.0}

# Achievable PCIe x16 bandwidth, measured:
#   Gen5: 54.79 GB/s host-to-device, pinned 1 GiB copy on a real H100 (fixtures/device-h100/facts.json,
#         h2d_pinned_1024MiB_GBps); GPU-to-GPU P2P on Gen5 reached 56.6 GB/s same socket, 55.6 GB/s across
#         sockets (fixtures/p2p/p2pBandwidthLatencyTest-rtx5090x8-rtxpro6000-9gpu-2socket-p2pdriver-1.txt).
#   Gen4: 26.32 GB/s GPU-to-GPU P2P under one host bridge
#         (fixtures/p2p/p2pBandwidthLatencyTest-rtx6000ada-2gpu-workstation-1.txt).
#   Gen3, Gen6: no measurement here; assumed at the measured Gen4 and Gen5 efficiency respectively
#         (26.32/31.5 = 0.836, 54.79/63.0 = 0.870).
PCIE_X16_ACHIEVABLE_GBPS: dict[int, float] = {
    3: 15.75 * 26.32 / 31.5,  # assumption: Gen4's measured efficiency
    4: 26.32,  # measured, fixture above
    5: 54.79,  # measured, fixture above
    6: 121.0 * 54.79 / 63.0,  # assumption: Gen5's measured efficiency
}

# Where GPUs do not copy peer-to-peer, NCCL stages every PCIe copy through host memory (its SHM transport), whose ring
# all-reduce bus bandwidth was measured at
#   Gen3: 4.00 GB/s on 2x RTX 2080 Ti whose driver refuses P2P
#         (fixtures/nccl/nccl-tests-all_reduce-2080ti-2gpu-pcie-nop2p-1.txt); broadcast and reduce there, one copy at
#         a time, ran at 11.1 GB/s (their fixtures), which the model, charging every flow alike, does not give;
#   Gen5: 37.64 GB/s at 128 MiB on 4x RTX PRO 6000 under one AMD EPYC 9575F host bridge, where NCCL 2.29.7 copies
#         through host memory by default (tests/data/nccl/nccl-pr2080-all_reduce-shm-vs-p2p-rtxpro6000-4gpu.txt);
#         corroborated by 35 GB/s on 4 of 8 RTX 5090s (no P2P on GeForce) under two Xeon 8480+
#         (github.com/NVIDIA/nccl/issues/1639).
#   Gen4, Gen6: no measurement; assumed at the mean of the two measured shares of the P2P rate (Gen4) and at
#         Gen5's share (Gen6).
# That is each flow's own pace (its GPU's link). Staged copies also climb through every PCIe switch above their GPUs,
# even one they share, whose uplink carries them together at the P2P rate above (cost/collectives.py): the 2080 Ti
# pair's two flows under one switch had room for 6.6 GB/s each there, so their 4.00 is the host-memory pace.
_SHM_SHARES = (4.00 / PCIE_X16_ACHIEVABLE_GBPS[3], 37.64 / PCIE_X16_ACHIEVABLE_GBPS[5])
PCIE_X16_THROUGH_HOST_GBPS: dict[int, float] = {
    3: 4.00,  # measured
    4: PCIE_X16_ACHIEVABLE_GBPS[4] * sum(_SHM_SHARES) / 2,  # assumption
    5: 37.64,  # measured
    6: PCIE_X16_ACHIEVABLE_GBPS[6] * _SHM_SHARES[1],  # assumption
}

# NVLink achievable / theoretical, measured with p2pBandwidthLatencyTest (unidirectional P2P writes):
#   through NVSwitch: H100 SXM x8, ~376 GB/s of 18 x 25 = 450 GB/s
#     (fixtures/p2p/p2pBandwidthLatencyTest-h100-8gpu-nvswitch-partial-1.txt) -> 0.835
#   direct bonded links: H100 PCIe NV12 bridge, 256.6 GB/s of 12 x 25 = 300 GB/s
#     (fixtures/p2p/p2pBandwidthLatencyTest-h100-pcie-2gpu-nvlink-bridge-1.txt) -> 0.855
NVLINK_SWITCH_EFFICIENCY = 376.0 / 450.0
NVLINK_DIRECT_EFFICIENCY = 256.6 / 300.0

# Network between nodes: NIC line rate in Gb/s / 8, times an achievable fraction. No fixture here
# isolates one NIC, so 0.9 is an assumption (NVIDIA's GPUDirect RDMA guidance for InfiniBand NDR
# quotes ~90% of line rate); `shardplan calibrate` under torchrun on several nodes measures it: with
# its file, each link class runs at the rate its collectives measured (`Topology.link_scale`).
NET_EFFICIENCY = 0.9


def pcie_gbps(gen: int, width: int = 16, *, achievable: bool = True, through_host: bool = False) -> float:
    """Per-direction bandwidth of one PCIe link of this generation and lane count, in GB/s; `through_host`: what
    NCCL's copies staged through host memory reach over it (achievable only).

    >>> round(pcie_gbps(5, 16, achievable=False), 1)
    63.0
    >>> round(pcie_gbps(4, 8), 2)
    13.16
    >>> round(pcie_gbps(5, through_host=True), 2)
    37.64
    """
    table = PCIE_X16_ACHIEVABLE_GBPS if achievable else PCIE_X16_THEORETICAL_GBPS
    if through_host and achievable:
        table = PCIE_X16_THROUGH_HOST_GBPS
    if gen not in table:
        gen = min(table, key=lambda g: abs(g - gen))
    return table[gen] * width / 16


def nvlink_gbps(links: int, gbps_per_link: float, *, switched: bool, achievable: bool = True) -> float:
    """Per-direction bandwidth of a bonded set of NVLinks (or a GPU's links into an NVSwitch), GB/s."""
    raw = links * gbps_per_link
    if not achievable:
        return raw
    return raw * (NVLINK_SWITCH_EFFICIENCY if switched else NVLINK_DIRECT_EFFICIENCY)


def net_gbps(nic_gbit: float, *, achievable: bool = True) -> float:
    """Per-direction bandwidth of one NIC of `nic_gbit` Gb/s line rate, in GB/s."""
    return nic_gbit / 8 * (NET_EFFICIENCY if achievable else 1.0)
