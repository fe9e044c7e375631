"""The communication model against hand-checkable cases, invariants, and real nccl-tests runs."""

from __future__ import annotations

import itertools
import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, fixture_body

from shardplan import load_topology
from shardplan.cost.axis import AxisTimes
from shardplan.cost.bounds import ring_gbps_bound
from shardplan.cost.collectives import (
    NVLS_ALLREDUCE_SPEEDUP,
    bus_factor,
    collective_time_s,
    nvls_speedup,
    ring_hops,
    ring_order,
)
from shardplan.cost.rings import ring_links
from shardplan.errors import PlanError
from shardplan.solve.explain import axis_path


def test_bus_factors_as_nccl_tests_counts_them():
    assert bus_factor("all_reduce", 8) == 2 * (8 - 1) / 8
    assert bus_factor("all_gather", 8) == bus_factor("reduce_scatter", 8) == (8 - 1) / 8
    assert bus_factor("send_recv", 2) == 1.0


def test_large_all_reduce_on_pcie_pair_is_bytes_over_link():
    topo = load_topology("pcie-8gpu-2socket")
    size = 2**30
    # Two GPUs on one Gen4 switch: ring Simple, 2(n-1)/n * size over 26.32 GB/s measured P2P.
    expect = 2 * (2 - 1) / 2 * size / 26.32e9
    assert collective_time_s(topo, "all_reduce", [0, 1], size) == pytest.approx(expect, rel=0.01)


def test_placement_and_contention_invariants():
    server = load_topology("pcie-8gpu-2socket")
    size = 2**28
    # the same two GPUs' time never depends on which of them is listed first
    assert collective_time_s(server, "all_reduce", [0, 4], size) == collective_time_s(
        server, "all_reduce", [4, 0], size
    )
    bridged = load_topology("a100-pcie-8gpu-bridged")
    on_bridge = collective_time_s(bridged, "all_reduce", [0, 1], size)
    across_socket = collective_time_s(bridged, "all_reduce", [0, 4], size)
    assert on_bridge * 5 < across_socket  # NVLink bridge pair vs PCIe across sockets
    # four pairs crossing the same switch uplinks at once are slower than one pair alone
    alone = collective_time_s(server, "all_reduce", [0, 2], size)
    together = collective_time_s(server, "all_reduce", [0, 2], size, concurrent=[[1, 3]])
    assert together > alone
    # time never drops when bytes grow
    times = [collective_time_s(server, "all_reduce", range(8), s) for s in (2**k for k in range(10, 31))]
    assert times == sorted(times)


@pytest.mark.parametrize(("preset", "nodes"), [("dgx-a100", 2), ("dgx-h100", 4), ("pcie-8gpu-2socket", 2)])
def test_time_never_drops_as_the_buffer_grows(preset: str, nodes: int):
    """Every op over all GPUs and over one GPU of each node, at sizes 7% apart from 1 KiB to 4 GiB (not only at
    powers of two, where NCCL's tree correction steps: `_tree_correction`)."""
    topo = load_topology(preset, nodes=nodes)
    sizes = [1024 * 1.07**k for k in range(330)]
    for group in (range(topo.num_gpus), range(0, topo.num_gpus, topo.num_gpus // nodes)):
        for op in ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "broadcast", "send_recv"):
            times = [collective_time_s(topo, op, group, size) for size in sizes]
            assert times == sorted(times), (op, list(group))


def test_ring_follows_the_pcie_tree():
    server = load_topology("pcie-8gpu-2socket")
    assert ring_order(server, [4, 0, 5, 1]) == [0, 1, 4, 5]


@pytest.mark.parametrize(
    ("preset", "nodes"), [("a100-pcie-8gpu-bridged", 4), ("pcie-8gpu-2socket", 2), ("dgx-h100", 4)]
)
def test_axis_times_match_every_group_timed_beside_the_others(preset: str, nodes: int):
    """AxisTimes times one group per way of sitting; timing every group of a stage with all the
    axis's other groups running beside it (collective_time_s) must give the same slowest time, for
    random placements and for the same placement with its nodes renumbered; also for pipeline
    neighbours, every other boundary at once (step.py)."""
    topo = load_topology(preset, nodes=nodes)
    n, rng, memo = topo.num_gpus, random.Random(7), {}
    for size, shape in ((2**26, (2, n // 8, 4)), (2**20, (4, n // 8, 2)), (2**24, (1, 2, n // 2))):
        perm = list(range(n))
        rng.shuffle(perm)
        grid = np.array(perm).reshape(shape)
        renamed = np.array(rng.sample(range(nodes), nodes))[grid // 8] * 8 + grid % 8
        for layout in (grid, renamed):
            axis, everyone = AxisTimes(topo, layout, memo), layout.reshape(-1, shape[2]).tolist()
            for stage in range(shape[0]):
                slowest = max(
                    collective_time_s(topo, "all_gather", g, size, concurrent=[o for o in everyone if o != g])
                    for g in layout[stage].tolist()
                )
                assert axis.time_s("all_gather", stage, size) == pytest.approx(slowest, rel=1e-12)
            # pipeline neighbours over 4 stages, the even boundaries (0 -> 1 and 2 -> 3) at once
            stages = layout.reshape(4, -1)
            pairs = np.stack([stages[:-1], stages[1:]], axis=-1)[0::2]
            axis, everyone = AxisTimes(topo, pairs, memo), pairs.reshape(-1, 2).tolist()
            for boundary in range(2):
                slowest = max(
                    collective_time_s(topo, "send_recv", g, size, concurrent=[o for o in everyone if o != g])
                    for g in pairs[boundary].tolist()
                )
                assert axis.time_s("send_recv", boundary, size) == pytest.approx(slowest, rel=1e-12)


def test_axis_times_tell_groups_alike_apart_by_their_company():
    """(8, 10) and (0, 2) sit alike on their nodes (both cross a PCIe switch), but only (0, 2) shares
    its switch uplinks with a pair of the axis's other stage, (1, 3): the stage takes the slower one's
    time. The other pairs leave their node or stay on one switch."""
    topo = load_topology("pcie-8gpu-2socket", nodes=2)
    stages = [[[8, 10], [0, 2], [14, 15], [6, 7]], [[1, 3], [9, 4], [11, 5], [12, 13]]]
    crowded = collective_time_s(topo, "all_gather", [0, 2], 2**26, concurrent=[[1, 3]])
    assert crowded > collective_time_s(topo, "all_gather", [8, 10], 2**26)
    assert AxisTimes(topo, np.array(stages), {}).time_s("all_gather", 0, 2**26) == pytest.approx(crowded)


def test_unknown_op():
    with pytest.raises(PlanError, match="unknown collective"):
        collective_time_s(load_topology("dgx-h100"), "gossip", [0, 1], 1024)
    with pytest.raises(PlanError, match=r"^GPU 8 is not in dgx-h100, whose GPUs are 0\.\.7$"):  # was an IndexError
        collective_time_s(load_topology("dgx-h100"), "all_reduce", [0, 8], 1024)


_UNITS = {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30}


def _rows(name: str) -> list[tuple[int, float]]:
    """(size bytes, out-of-place time s) rows of an nccl-tests output; also of its condensed form
    (size with '_' separators, time, algbw, busbw), as one fixture was posted; and of two torch
    all_reduce sweeps: stas00's all_reduce_bench.py (| payload | busbw | algbw |, time = payload /
    algbw) and elideng-sg's allreduce_bench.py (label, fp32 count, time ms, algbw, busbw)."""
    out = []
    for line in fixture_body(DATA / "nccl" / name).splitlines():
        cells = line.split()
        if len(cells) >= 8 and cells[0].isdigit() and cells[2] in ("float", "half", "bfloat16"):
            out.append((int(cells[0]), float(cells[5]) * 1e-6))
        elif len(cells) == 4 and cells[0].replace("_", "").isdigit():
            out.append((int(cells[0].replace("_", "")), float(cells[1]) * 1e-6))
        elif len(cells) == 7 and cells[0] == "|" and cells[1][-3:] in _UNITS and cells[5].endswith("GBps"):
            size = int(cells[1][:-3]) * _UNITS[cells[1][-3:]]
            out.append((size, size / (float(cells[5].removesuffix("GBps")) * 1e9)))
        elif len(cells) == 5 and cells[1].isdigit():
            out.append((int(cells[1]) * 4, float(cells[2]) * 1e-3))
    return out


def _floor(rows: list[tuple[int, float]]) -> float:
    """The machine's per-call floor, measured as the median time of its 8 B - 64 KiB rows (outside
    the range checked); runs that print no small sizes keep the default."""
    small = sorted(t for s, t in rows if s <= 65536)
    return small[len(small) // 2] if small else 34e-6


def _a3_topology(tmp_path: Path):
    saved = tmp_path / "a3.txt"
    saved.write_text(fixture_body(DATA / "topo" / "nvidia-smi-topo-h100-gcp-a3-8gpu-1.txt"))
    return load_topology(saved, gpu="h100-sxm")


MACHINES = {
    # nccl-tests file -> (topology source, nodes, ranks, sizes checked)
    "nccl-tests-all_reduce-h100-8gpu-gcp-a3-1.txt": ("a3", 1, 8),
    "nccl-tests-all_reduce-2080ti-2gpu-pcie-nop2p-1.txt": ("autodl-2080ti.yaml", 1, 2),
    "nccl-tests-all_reduce-h100-2node-gcp-a3mega-tcpxo-1.txt": ("gcp-a3-mega.yaml", 2, 16),
    "nccl-tests-all_reduce-gb200-nvl72-1rack-1.txt": ("gb200-nvl72", 1, 72),
    "nccl-tests-all_reduce-a100-40gb-2node-roce-oci-1size-1.txt": ("oci-bm-gpu4-8.yaml", 2, 16),
    "nccl-tests-all_reduce-a100-8gpu-nvswitch-massaged-1.txt": ("dgx-a100", 1, 8),
    "nccl-tests-all_reduce-gb200-nvl72-20rack-1.txt": ("gb200-nvl72", 20, 1440),
    # torch.distributed all_reduce sweeps, timed on the GPU as nccl-tests times them
    "torch-all_reduce_bench-h200-8gpu-1.txt": ("dgx-h200", 1, 8),
    "torch-allreduce_bench-h100-8gpu-gcp-a3-1.txt": ("a3", 1, 8),
}
# Not checked: the two-node H200 runs inside KVM VMs (nccl-tests-all_reduce-h200-2node-kvm-vm*: GPUDirect RDMA
# broken by the VM, times not even monotonic in size, 84 ms for 96 MiB and 68 ms for 288 MiB), and GCP A3's
# two- and three-node sweeps over NCCL's socket transport through one host NIC (torch-allreduce_bench-h100-*node*:
# no GPUDirect; the model has no socket transport).
# Where the model is known to miss by more than 15% (measured errors in the closing note):
KNOWN_MISSES = {
    # H100 NVLS at 2 MiB: model +19% (NCCL picks an NVLS/LL128 path the protocol table does not have).
    ("nccl-tests-all_reduce-h100-8gpu-gcp-a3-1.txt", 2097152),
    # GPUDirect-TCPXO (Ethernet offload) ramps up far slower than NIC line rate up to 512 MiB (its
    # net plugin's per-step latency is not NCCL's InfiniBand figure): model -8% at 1 GiB, -15% at 512 MiB.
    *(("nccl-tests-all_reduce-h100-2node-gcp-a3mega-tcpxo-1.txt", 2**k) for k in range(20, 30)),
    # 8x A100 NVSwitch, one process driving all 8 GPUs (-g 8): below 512 MiB its bus bandwidth ramps
    # more slowly than the protocol model (model -15% to -46% at 1-256 MiB but for 8 MiB's -14%; -4% and -2% above).
    *(("nccl-tests-all_reduce-a100-8gpu-nvswitch-massaged-1.txt", 2**k) for k in range(20, 29) if k != 23),
    # The same NVLS gap on 8x H100 (GCP A3) in a torch sweep: 1-4 MiB at 37-53 us, barely above its 36 us
    # floor (nccl-tests on that machine: 40-56 us); model +24%, +29%, +18%.
    *(("torch-allreduce_bench-h100-8gpu-gcp-a3-1.txt", 2**k) for k in (20, 21, 22)),
    # 8x H200 NVLS at 32 MiB: model -15.4% (-11.6% and -10.2% at 16 and 64 MiB): NVLS's mid-size ramp is slower
    # than the ring Simple latency the model charges it.
    ("torch-all_reduce_bench-h200-8gpu-1.txt", 2**25),
}


def _cases():
    for name, (source, nodes, ranks) in MACHINES.items():
        rows = _rows(name)
        checked = [(s, t) for s, t in rows if 2**20 <= s <= 2**30] or rows  # one-size runs: their size
        for size, seconds in checked:
            marks = [pytest.mark.xfail(strict=True, reason="known gap")] if (name, size) in KNOWN_MISSES else []
            yield pytest.param(
                name,
                source,
                nodes,
                ranks,
                size,
                seconds,
                _floor(rows),
                marks=marks,
                id=f"{name.removeprefix('nccl-tests-all_reduce-')[:24]}-{size}",
            )


@pytest.mark.parametrize(("name", "source", "nodes", "ranks", "size", "seconds", "floor"), list(_cases()))
def test_all_reduce_within_15_percent_of_nccl_tests(name, source, nodes, ranks, size, seconds, floor, tmp_path):
    if source == "a3":
        topo = _a3_topology(tmp_path)
    elif source.endswith(".yaml"):
        topo = load_topology(DATA / "machines" / source, nodes=nodes)
    else:
        topo = load_topology(source, nodes=nodes)
    model = collective_time_s(topo, "all_reduce", range(ranks), size, floor_latency_s=floor)
    assert model == pytest.approx(seconds, rel=0.15)


# The other collectives nccl-tests ran on machines of the fixtures: file -> (op, topology source, ranks). Every size
# from 1 MiB to 1 GiB is checked against the same 15%.
OTHER_OPS = {
    "nccl-tests-alltoall-2080ti-2gpu-pcie-nop2p-1.txt": ("all_to_all", "autodl-2080ti.yaml", 2),
    "nccl-tests-broadcast-2080ti-2gpu-pcie-nop2p-1.txt": ("broadcast", "autodl-2080ti.yaml", 2),
    # sendrecv_perf -g 8: each GPU sends to the next and receives from the one before, a ring of single steps
    "nccl-tests-sendrecv-a100-8gpu-nvswitch-1.txt": ("send_recv", "dgx-a100", 8),
}
OTHER_MISSES = {
    # Through host memory (no P2P) a flow one way at a time, as a 2-GPU broadcast runs, reached 11.1 GB/s where
    # the all-reduce's two ways at once reached 4.0 each (topology/links.py): the model charges every flow the
    # all-reduce's rate, +160% to +177% here.
    *(("nccl-tests-broadcast-2080ti-2gpu-pcie-nop2p-1.txt", 2**k) for k in range(20, 31)),
    # 8x A100 NVSwitch, one process driving all 8 GPUs (-g 8): send/recv peaked at 195 GB/s, below the ring rate
    # the model uses, the all-reduce bus bandwidth of the same kind of machine (235, the massaged fixture):
    # model -50% at 128 MiB (measured 110 GB/s there), -16% to -17% from 256 MiB to 1 GiB.
    *(("nccl-tests-sendrecv-a100-8gpu-nvswitch-1.txt", 2**k) for k in range(27, 31)),
    # all-to-all on the same pair: measured 13% faster than half the all-reduce's time, which the model gives;
    # +15.2% at 1 GiB (+13% to +14.6% from 16 to 512 MiB)
    ("nccl-tests-alltoall-2080ti-2gpu-pcie-nop2p-1.txt", 2**30),
}


def _other_cases():
    for name, (op, source, ranks) in OTHER_OPS.items():
        for size, seconds in _rows(name):
            if 2**20 <= size <= 2**30:
                marks = [pytest.mark.xfail(strict=True, reason="known gap")] if (name, size) in OTHER_MISSES else []
                yield pytest.param(name, op, source, ranks, size, seconds, marks=marks, id=f"{op}-{ranks}-{size}")


@pytest.mark.parametrize(("name", "op", "source", "ranks", "size", "seconds"), list(_other_cases()))
def test_other_collectives_within_15_percent_of_nccl_tests(name, op, source, ranks, size, seconds):
    topo = load_topology(DATA / "machines" / source if source.endswith(".yaml") else source)
    model = collective_time_s(topo, op, range(ranks), size, floor_latency_s=_floor(_rows(name)))
    assert model == pytest.approx(seconds, rel=0.15)


def test_nccl_copies_through_host_memory_past_a_pcie_switch(tmp_path):
    """NCCL 2.23+ copies peer-to-peer only under a common PCIe switch, or anywhere on an AMD host whose
    communicator has at most two GPUs there (src/graph/paths.cc, ncclTopoCheckP2p); elsewhere through host memory.
    Four RTX PRO 6000s under one AMD EPYC host bridge did so with NCCL 2.29.7 (NVIDIA/nccl PR 2080): the model
    gives their measured bus bandwidth within 15% from 1 MiB to 128 MiB (the 128 MiB figure is the Gen5 rate it
    uses), and would give a pair of them (or two GPUs of a non-AMD host under one switch) the P2P rate."""
    declared = tmp_path / "epyc.yaml"
    declared.write_text("name: epyc\nnodes:\n  - {gpus: 4, cpu: amd, pcie: {gen: 5, host_bridges: [[0, 1, 2, 3]]}}\n")
    epyc = load_topology(declared)
    assert epyc.copies_through_host(0, 1, local_gpus=4) and not epyc.copies_through_host(0, 1, local_gpus=2)
    units = {"K": 2**10, "M": 2**20}
    table = fixture_body(DATA / "nccl" / "nccl-pr2080-all_reduce-shm-vs-p2p-rtxpro6000-4gpu.txt").splitlines()[2:]
    cells = [[c.strip() for c in line.split("|")] for line in table]
    rows = [(int(c[1][:-1]) * units[c[1][-1]], float(c[2].split()[0])) for c in cells]
    checked = [(size, busbw) for size, busbw in rows if size >= 2**20]
    assert len(checked) == 5
    for size, busbw in checked:
        model = bus_factor("all_reduce", 4) * size / collective_time_s(epyc, "all_reduce", range(4), size) / 1e9
        assert model == pytest.approx(busbw, rel=0.15), size
    pair = collective_time_s(epyc, "all_reduce", [0, 1], 2**27)
    assert pair < collective_time_s(epyc, "all_reduce", range(4), 2**27) / 2  # the pair's bus bytes are 2/3 of four's
    intel = load_topology("pcie-8gpu-2socket")  # CPU not declared: NCCL's default, P2P under a switch tree only
    assert not intel.copies_through_host(0, 3, local_gpus=8) and intel.copies_through_host(0, 4, local_gpus=2)


def _most_rings(links: list[list[int]]) -> float:
    """The exact most half-link rings `links` carry (CP-SAT over every ring through the GPUs), in links."""
    from ortools.sat.python import cp_model

    n = len(links)
    rings = [(0, *rest) for rest in itertools.permutations(range(1, n))]
    rings = [r for r in rings if all(links[a][b] for a, b in zip(r, r[1:] + r[:1], strict=True))]
    m = cp_model.CpModel()
    x = [m.new_int_var(0, 2 * 18, f"x{k}") for k in range(len(rings))]
    for a, b in itertools.permutations(range(n), 2):
        using = [x[k] for k, r in enumerate(rings) if (a, b) in zip(r, r[1:] + r[:1], strict=True)]
        if using:
            m.add(sum(using) <= 2 * links[a][b])
    m.maximize(sum(x))
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    assert solver.solve(m) == cp_model.OPTIMAL
    return solver.objective_value / 2


def _short(links: list[list[int]], *pairs: tuple[int, int]) -> list[list[int]]:
    """`links` with each bundle of `pairs` a link short."""
    out = [row[:] for row in links]
    for a, b in pairs:
        out[a][b] -= 1
        out[b][a] -= 1
    return out


def test_ring_packing_finds_the_most_rings_on_a_dgx1():
    """`ring_links` carries as many rings as the exact integer program does on every group of 3 to 8 of a DGX-1's
    GPUs, and on all 8 with any one or two bundles a link short (degraded links: with two, a search over sets of
    rings alone fell half a link short on 20 of the 120)."""
    dgx1 = load_topology("dgx1-v100")
    links = [[dgx1.nvlink_count(a, b) for b in range(8)] for a in range(8)]
    cases = [
        [[links[a][b] for b in group] for a in group]
        for k in range(3, 9)
        for group in itertools.combinations(range(8), k)
    ]
    bundles = [(a, b) for a, b in itertools.combinations(range(8), 2) if links[a][b]]
    cases += [_short(links, *pairs) for k in (1, 2) for pairs in itertools.combinations(bundles, k)]
    for case in cases:
        assert ring_links(tuple(map(tuple, case))) == _most_rings(case), case


def test_ring_packing_never_grows_when_a_link_is_removed(tmp_path):
    """A link fewer never lets more rings through: on random NVLink counts between 5 and 6 GPUs (seeded), every link
    removed in turn. The first case is one where packing greedily and then searching a bounded while gave 4.5
    links with all of them and 5 with a link of GPUs 0-2 removed; on six A100s linked as `six` below, the all-reduce
    ran 8% faster with a link of GPUs 3-5 removed."""
    rng = random.Random(0)
    cases = [
        [
            [0, 2, 3, 1, 2, 1],
            [2, 0, 2, 3, 3, 1],
            [3, 2, 0, 0, 3, 2],
            [1, 3, 0, 0, 1, 1],
            [2, 3, 3, 1, 0, 0],
            [1, 1, 2, 1, 0, 0],
        ]
    ]
    while len(cases) < 12:
        n = rng.choice((5, 6))
        links = [[0] * n for _ in range(n)]
        for a, b in itertools.combinations(range(n), 2):
            links[a][b] = links[b][a] = rng.choice((0, 1, 1, 2, 2, 3, 4))
        if all(sum(row) <= 12 for row in links):  # a V100's six links, each way
            cases.append(links)
    for links in cases:
        full = ring_links(tuple(map(tuple, links)))
        assert full == _most_rings(links), links
        for a, b in itertools.combinations(range(len(links)), 2):
            if links[a][b]:
                assert ring_links(tuple(map(tuple, _short(links, (a, b))))) <= full, (links, a, b)
    six = [
        [0, 0, 1, 2, 2, 1],
        [0, 0, 2, 2, 1, 1],
        [1, 2, 0, 3, 4, 2],
        [2, 2, 3, 0, 2, 3],
        [2, 1, 4, 2, 0, 3],
        [1, 1, 2, 3, 3, 0],
    ]
    times = []
    for links in (six, _short(six, (3, 5))):
        declared = tmp_path / f"mesh-{len(times)}.json"
        nvlink = [[a, b, links[a][b]] for a, b in itertools.combinations(range(6), 2) if links[a][b]]
        declared.write_text(json.dumps({"nodes": [{"gpu": "a100-sxm-80gb", "gpus": 6, "nvlink": nvlink}]}))
        times.append(collective_time_s(load_topology(declared), "all_reduce", range(6), 2**28))
    assert times[1] >= times[0]


def test_copies_through_host_memory_share_the_uplink_of_a_switch_they_sit_under(tmp_path):
    """Without peer-to-peer (GeForce cards), every copy climbs to host memory and back, so GPUs under one PCIe switch
    send all of it through the switch's one uplink (at the PCIe rate, links.py); on the CPU's own root ports each
    GPU has its own link. Two GPUs under a switch stay at their host-memory rate (the RTX 2080 Ti pair's 4.0 GB/s:
    its uplink carries the pair's two flows at up to 6.6 each); four share a Gen4 uplink's 26.3 GB/s four ways."""
    layouts = {"switched": "switches: [[0, 1, 2, 3]], ", "root ports": ""}
    busbw = {}
    for name, switches in layouts.items():
        declared = tmp_path / f"{name.replace(' ', '-')}.yaml"
        declared.write_text(
            f"name: w\nnodes:\n  - {{gpu: rtx-4090, gpus: 4, pcie: {{gen: 4, {switches}sockets: [[0, 1, 2, 3]]}}}}\n"
        )
        topo = load_topology(declared)
        busbw[name] = [
            bus_factor("all_reduce", n) * 2**30 / collective_time_s(topo, "all_reduce", range(n), 2**30) / 1e9
            for n in (2, 4)
        ]
    assert busbw["switched"][0] == pytest.approx(busbw["root ports"][0]) == pytest.approx(13.0, rel=0.01)
    assert busbw["root ports"][1] == pytest.approx(13.0, rel=0.01)
    assert busbw["switched"][1] == pytest.approx(26.32 / 4, rel=0.01)
    pair = load_topology(DATA / "machines" / "autodl-2080ti.yaml")
    assert 2**30 / collective_time_s(pair, "all_reduce", [0, 1], 2**30) / 1e9 == pytest.approx(4.0, rel=0.01)


def test_nvls_speedup_from_the_fixture():
    """The H200 sweep (busbw with NVLS and with NCCL_NVLS_ENABLE=0, 8 GiB): the ring alone at 4 GPUs, then a gain
    that grows with the GPUs; each within 5% of the model's."""
    text = fixture_body(DATA / "nccl" / "nccl-tests-summary-nvls-vs-ring-h200-b200-1.txt")
    h200 = text.split("The same sweep on an 8x B200")[0]
    rows = [
        line.split("|") for line in h200.splitlines() if line.startswith("|") and line.split("|")[1].strip().isdigit()
    ]
    gains = {int(r[1]): float(r[3].strip()[:-4]) / float(r[4].strip()[:-4]) for r in rows}
    assert sorted(gains) == [4, 5, 6, 7, 8] and gains[4] == 1.0
    assert pytest.approx(1.294, abs=0.001) == NVLS_ALLREDUCE_SPEEDUP == nvls_speedup(8) == nvls_speedup(72)
    for n, gain in gains.items():
        assert nvls_speedup(n) == pytest.approx(gain, rel=0.05), n
    # the model's busbw on a DGX H200: the sweep's ring at 4 GPUs (363.3 GB/s), NVLS at 8 (473.1), within 3%
    topo, size = load_topology("dgx-h200"), 8 * 2**30
    for n, busbw in ((4, 363.3), (8, 473.1)):
        assert bus_factor("all_reduce", n) * size / collective_time_s(topo, "all_reduce", range(n), size) / 1e9 == (
            pytest.approx(busbw, rel=0.03)
        )


def test_b200_ring_and_nvls_from_the_fixture():
    """The same sweep on 8x B200 (NVLink 5): the ring at 673-682 GB/s bus bandwidth, NVLS from 6 GPUs at 778, 811,
    838; the model's bus bandwidth within 5% of each (8 GiB). At 5 GPUs AWS's tuner kept the ring (678) where the
    model takes NVLS (765): not asserted."""
    text = fixture_body(DATA / "nccl" / "nccl-tests-summary-nvls-vs-ring-h200-b200-1.txt")
    b200 = text.split("The same sweep on an 8x B200")[1].split("At full node")[0]
    rows = [
        line.split("|") for line in b200.splitlines() if line.startswith("|") and line.split("|")[1].strip().isdigit()
    ]
    measured = {int(r[1]): float(r[3].strip()[:-4]) for r in rows}
    topo, size = load_topology("dgx-b200"), 8 * 2**30
    for n in (4, 6, 7, 8):
        busbw = bus_factor("all_reduce", n) * size / collective_time_s(topo, "all_reduce", range(n), size) / 1e9
        assert busbw == pytest.approx(measured[n], rel=0.05), n


def test_pcie_vs_nvlink_example_table() -> None:
    """examples/pcie_vs_nvlink.py: NVLink 4 several times faster than PCIe Gen5 for both the copy and
    the all-reduce; PCIe's bus bandwidth cannot pass its measured link rate."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    from pcie_vs_nvlink import rows

    pcie, nvlink = rows().values()
    assert pcie["copy_80gb_s"] > 5 * nvlink["copy_80gb_s"]
    assert pcie["allreduce_10gb_s"] > 5 * nvlink["allreduce_10gb_s"]
    assert pcie["busbw_gbps"] <= 54.79 * 1.001


def test_tree_keeps_many_node_all_reduce_latency_logarithmic():
    # NCCL's tree (tuning.cc): latency 2 x log2(nodes) network steps, where a ring takes 2 (nodes - 1);
    # at 8 MiB over 256 nodes the ring alone would pay 2 x 255 x 14 us x 1.9 = 13.6 ms of latency
    def one_gpu_per_node(nodes: int, size: int) -> float:
        return collective_time_s(load_topology("dgx-h100", nodes=nodes), "all_reduce", range(0, 8 * nodes, 8), size)

    assert one_gpu_per_node(256, 8 * 2**20) < 2 * one_gpu_per_node(8, 8 * 2**20) < 2e-3
    # large buffers stay on the ring: 2 (n - 1) / n x 1 GiB at one 400 Gb/s NIC's ~45 GB/s
    assert one_gpu_per_node(256, 2**30) == pytest.approx(2 * 255 / 256 * 2**30 / 45e9, rel=0.1)


def test_nccl_builds_its_rings_from_nvlinks_where_a_mesh_allows():
    """On a DGX-1 cube mesh PCIe order (0..7) crosses between the quads where no NVLink joins 3-4 and 7-0; NCCL's
    ring search keeps to NVLinks, and the widest such ring runs over NV2 bundles alone: 0-3-2-1-5-6-7-4. Where no
    ring is wider than PCIe order's (a quad's NV1 hops, bridged pairs), PCIe order stands."""
    dgx1 = load_topology("dgx1-v100")
    ring = ring_order(dgx1, range(8))
    assert ring == [0, 3, 2, 1, 5, 6, 7, 4]
    assert {dgx1.nvlink_count(a, b) for a, b in ring_hops(dgx1, range(8))} == {2}
    assert ring_hops(dgx1, [0, 1, 5]) == [(0, 1), (1, 5), (5, 0)]  # the way back counts too: no NVLink joins 5 and 0
    # an all-gather of 8 moves its bus bytes over all six NVLinks of each GPU (rings over NV1 hops too, beside the
    # first over NV2 bundles): three NV2 bundles' pace, where PCIe order's SYS hop gave 13 GB/s
    busbw = bus_factor("all_gather", 8) * 2**30 / collective_time_s(dgx1, "all_gather", range(8), 2**30) / 1e9
    assert busbw == pytest.approx(3 * dgx1.bandwidth_gbps(0, 3), rel=0.03)
    assert axis_path(dgx1, [list(range(8))]) == "nvlink"  # what `suggest` says of such a group
    assert ring_order(dgx1, [0, 1, 2, 3]) == [0, 1, 2, 3]
    assert ring_order(load_topology("a100-pcie-8gpu-bridged"), range(8)) == list(range(8))


def test_nccl_runs_several_rings_over_an_nvlink_mesh_at_once():
    """NCCL's ring search takes each ring's speed off every directed NVLink it uses and keeps the set that moves
    the most (src/graph/search.cc); on four V100s with two NVLinks between every pair it found six rings at one
    link's speed each, every direction of every link used once (NCCL's graph dump, github.com/NVIDIA/nccl/issues/
    713). So a group's rings over a mesh move as many NVLinks' worth as the links allow, not one bundle's."""
    k4_nv2 = ((0, 2, 2, 2), (2, 0, 2, 2), (2, 2, 0, 2), (2, 2, 2, 0))
    assert ring_links(k4_nv2) == 6.0
    # a square of NV2 and NV1 sides, no diagonals: a ring each way, at its NV1 sides' speed
    assert ring_links(((0, 2, 0, 1), (2, 0, 1, 0), (0, 1, 0, 2), (1, 0, 2, 0))) == 2.0
    # four GPUs with one link between every pair: three rings at one link's speed cannot use every direction of every
    # link (the complete digraph on four vertices has no Hamiltonian decomposition); six at half a link's speed can,
    # as NCCL's slower speed steps allow
    assert ring_links(((0, 1, 1, 1), (1, 0, 1, 1), (1, 1, 0, 1), (1, 1, 1, 0))) == 3.0
    dgx1, hgx = load_topology("dgx1-v100"), load_topology("hgx-h100-4gpu")

    def busbw(topo, gpus):
        return bus_factor("all_reduce", len(gpus)) * 2**30 / collective_time_s(topo, "all_reduce", gpus, 2**30) / 1e9

    per_link = dgx1.bandwidth_gbps(0, 1)  # an NV1 hop
    assert busbw(dgx1, range(8)) == pytest.approx(6 * per_link, rel=0.01)  # all six of each V100's links
    assert busbw(dgx1, [0, 1, 2, 3]) == pytest.approx(4 * per_link, rel=0.01)  # a quad: 1 + 1 + 2 links each
    assert busbw(dgx1, [0, 3]) == pytest.approx(2 * per_link, rel=0.01)  # a pair: its bundle, as before
    assert busbw(hgx, range(4)) == pytest.approx(3 * busbw(hgx, [0, 1]), rel=0.01)  # NV6 to each of three
    # a GPU's links bound every group's rings, so the search's lower bound on a ring's rate holds
    assert ring_gbps_bound(dgx1, 8) >= busbw(dgx1, range(8))
    assert ring_gbps_bound(hgx, 4) >= busbw(hgx, range(4))
