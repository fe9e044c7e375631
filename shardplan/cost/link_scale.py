"""Link rates as measured on the machine: `shardplan calibrate` under torchrun times all-reduce, all-gather and
reduce-scatter over the first 2, 4, ... ranks; each link class is scaled (`Topology.link_scale`) until the model
gives the median of its large collectives, those of the groups whose slowest link is of that class, their measured
time. Where nothing was measured, the catalogue's rates and `links.py`'s efficiencies stand.

A group's slowest link: the network where it spans NVLink islands of different nodes (or NVLink domains), NVLink
where it sits in one NVLink island, PCIe otherwise. Classes are scaled in that order, narrowest first, each against
the model with the classes before it scaled: a group that crosses PCIe or the network also moves over NVLink."""

from __future__ import annotations

import statistics

from shardplan.cost.calibration import Calibration
from shardplan.cost.collectives import bus_factor, collective_time_s
from shardplan.topology.schema import LinkScale, Topology

# Messages from 256 MiB up: there the fixed costs are a few percent of a collective's time at most (an all-reduce
# of 256 MiB on two NVLinked H200s: 0.9 ms measured, benchmarks/results/multi-gpu-2gpu/nccl-loop.txt, against
# NCCL's tens of microseconds of latency), so measured over modelled time is measured over modelled bandwidth.
MIN_BYTES = 2**28
ROUNDS, TOLERANCE = 12, 0.005  # the median group within half a percent of its measured time


def link_class(topology: Topology, ranks: int) -> str:
    """The slowest link class a collective over GPUs 0 .. ranks - 1 crosses: nvlink, pcie or net."""
    group = range(ranks)
    if len({topology.island_of[i] for i in group}) > 1:
        return "net"
    island = set(next(i for i in topology.nvlink_islands() if 0 in i))
    return "nvlink" if all(i in island for i in group) else "pcie"


def calibrated_links(topology: Topology, calibration: Calibration | None) -> Topology:
    """`topology` with each link class scaled to what `calibration`'s collectives measured (itself where they
    measured none of its classes: no calibration, one rank, messages below `MIN_BYTES`, or GPUs of a model the
    topology has none of).

    >>> from shardplan import load_topology
    >>> from shardplan.cost.calibration import CollectiveRate, shipped_calibration
    >>> dgx = load_topology("dgx-h100", nodes=2)
    >>> modelled = collective_time_s(dgx, "all_reduce", range(16), 2**30)
    >>> busbw = 2**30 * bus_factor("all_reduce", 16) / modelled / 1e9 / 2  # measured: half the model's
    >>> row = CollectiveRate(op="all_reduce", ranks=16, bytes=2**30, busbw_gbps=busbw)
    >>> slow = calibrated_links(dgx, shipped_calibration("h100-sxm").model_copy(update={"collectives": (row,)}))
    >>> round(collective_time_s(slow, "all_reduce", range(16), 2**30) / modelled, 2), slow.link_scale.nvlink
    (2.0, 1.0)
    >>> round(slow.link_scale.net, 2)  # below a half: the NVLinks inside each node carry part of the time
    0.36
    """
    if calibration is None or not calibration.collectives or calibration.gpu not in topology.gpu_model_ids[0]:
        return topology  # nothing measured, or measured on a machine of other GPUs (as its compute rates, unused)
    # each large enough row the topology holds, with its link class and measured seconds (classed once: the
    # scaled copies below build their lookups afresh)
    measured = [
        (link_class(topology, r.ranks), r, r.bytes * bus_factor(r.op, r.ranks) / (r.busbw_gbps * 1e9))
        for r in calibration.collectives
        if r.bytes >= MIN_BYTES and r.ranks <= topology.num_gpus
    ]
    scale = topology.link_scale.model_dump()
    for kind in ("nvlink", "pcie", "net"):
        mine = [(r, seconds) for of, r, seconds in measured if of == kind]
        # the class's share of a group's time is below 1 where the group also crosses faster links: scaled by
        # modelled over measured time, the model moves part of the way; a few rounds close the gap
        for _ in range(ROUNDS if mine else 0):
            ratio = statistics.median(collective_time_s(topology, r.op, range(r.ranks), r.bytes) / s for r, s in mine)
            if abs(ratio - 1) < TOLERANCE:
                break
            scale[kind] *= ratio
            topology = topology.with_link_scale(LinkScale(**scale))
    return topology
