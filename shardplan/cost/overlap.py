"""How an overlapped collective and the compute beside it slow each other: the SMs NCCL's channels hold, and what
those channels still move while compute shares the GPU (both measured on an H100 with a stand-in for the channels)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

# Speed of GEMMs, attention and memory-bound ops (median of 9) on an H100 while a kernel holds that many SMs (NCCL
# holds one per channel, `collectives.nccl_channels`): benchmarks/overlap_interference.py,
# benchmarks/results/h100-overlap-interference (GEMMs 0.59-0.90 at 16, by their wave count). Measured on the H100
# only; assumed for other GPUs.
SPEED_BESIDE_HELD_SMS = ((0, 1.0), (8, 0.9319), (16, 0.8631), (24, 0.8500), (32, 0.7538))
# And the other way round: what that stand-in still copies while the same ops run beside it, GB/s, by the SMs it
# holds: its rate alone (299 / 567 / 800 / 999 GB/s with 8 / 16 / 24 / 32 programs) times its median speed beside
# them (0.447 / 0.471 / 0.504 / 0.529; benchmarks/results/h100-overlap-interference/both-ways.json). A ring's
# channels move its bus bytes much as the stand-in copies (a read here, a write into the next GPU), so a collective
# whose channels copy no faster than that per GPU keeps its pace beside compute, and a faster one (NVLink) slows to
# it; its latency (waits, not copies) keeps its pace either way. Measured on the H100 only; assumed for other GPUs.
# A paced copy bears both out (benchmarks/overlap_paced.py, benchmarks/results/h100-overlap-paced): 16 programs
# copying up to 200 GB/s keep 0.99 of their pace beside compute, at 400 GB/s 0.70 (278 GB/s); and the compute
# beside them loses as much while they mostly wait (10 GB/s: 0.85 of its speed) as while they copy (0.84). The same
# run on an H200 (benchmarks/results/h200-overlap-paced) copies within 2% of the H100's beside compute, and its
# compute keeps 0.86-0.90 of its speed: the H100's tables stand for it.
COPY_GBPS_BESIDE_COMPUTE = ((0, 0.0), (8, 133.4), (16, 267.3), (24, 402.9), (32, 528.2))


def overlap_slowdown(channels: int) -> float:
    """The share of an overlapped collective's time that the compute running beside it loses, for a
    collective that holds `channels` SMs (`nccl_channels`)."""
    return 1 - _interpolate(SPEED_BESIDE_HELD_SMS, channels)


def _interpolate(table: Sequence[tuple[int, float]], x: int) -> float:
    """`table`'s (x, y) points joined by straight lines, at `x` (beyond the last, its y)."""
    for (a, ya), (b, yb) in itertools.pairwise(table):
        if x <= b:
            return ya + (yb - ya) * (x - a) / (b - a)
    return table[-1][1]


@dataclass(frozen=True)
class Overlap:
    """How a collective and the compute it is overlapped with slow each other: the share of its speed the compute
    `lost` (`overlap_slowdown`) and the share the collective keeps (`speed`)."""

    lost: float = 0.0
    speed: float = 1.0

    @classmethod
    def of(cls, channels: int, copy_gbps: float) -> Overlap:
        """A collective holding `channels` SMs that copy `copy_gbps` per GPU alone (`rings_time_parts`): its bytes
        keep their pace where the channels still copy that much beside compute (`COPY_GBPS_BESIDE_COMPUTE`), else
        slow to what they do."""
        copied = _interpolate(COPY_GBPS_BESIDE_COMPUTE, channels)
        return cls(overlap_slowdown(channels), copied / copy_gbps if 0 < copied < copy_gbps < math.inf else 1.0)

    def of_collective(self, alone_s: float, latency_s: float) -> Overlap:
        """This overlap for one collective of `alone_s` seconds alone, `latency_s` of them its latency: its bytes move
        at `speed` beside compute, its latency at its own pace (the stand-in measured copies, not waits), so it keeps
        its seconds alone over its seconds beside compute.

        >>> Overlap(0.1, 0.5).of_collective(3.0, 1.0)  # 1 s of latency, then 2 s of bytes take 4 s
        Overlap(lost=0.1, speed=0.6)
        """
        moving = alone_s - latency_s
        if moving <= 0.0:  # all latency
            return Overlap(self.lost)
        if self.speed >= 1.0:
            return self
        return Overlap(self.lost, alone_s / (latency_s + moving / self.speed))

    @staticmethod
    def merged(parts: Sequence[tuple[float, Overlap]]) -> Overlap:
        """One overlap for collectives that run one after another, each (its seconds alone, its overlap): the compute
        beside them loses each one's share while that one runs, and they keep their seconds alone over their seconds
        beside compute.

        >>> Overlap.merged([(1.0, Overlap(0.25, 0.5)), (2.0, Overlap(0.5, 1.0))])  # 2 s and 2 s beside compute
        Overlap(lost=0.375, speed=0.75)
        """
        beside = [(alone / overlap.speed, overlap) for alone, overlap in parts if alone > 0.0]
        total = sum(seconds for seconds, _ in beside)
        if not total:
            return Overlap()
        lost = sum(seconds * overlap.lost for seconds, overlap in beside) / total
        return Overlap(lost, sum(alone for alone, _ in parts if alone > 0.0) / total)

    def added_s(self, comm_s: float, compute_s: float) -> float:
        """Seconds a collective of `comm_s` (alone) adds to the `compute_s` it runs beside: both run at their
        speeds here until one ends, and the other goes on at its own.

        >>> Overlap(0.1, 0.5).added_s(1.0, 4.0)  # hidden: the compute loses 0.1 of the 2 s they share
        0.2
        >>> round(Overlap(0.1, 0.5).added_s(4.0, 1.0), 3)  # the compute ends at 1.11 s, the collective then has 3.44 s
        3.556
        """
        if compute_s <= 0.0 or comm_s <= 0.0:
            return max(comm_s, 0.0)
        pace = 1.0 - self.lost
        if comm_s / self.speed <= compute_s / pace:
            return comm_s * self.lost / self.speed
        return comm_s - compute_s + compute_s * (1.0 - self.speed) / pace

    def streams_s(self, compute: Sequence[tuple[float, int | None]], comm: Sequence[tuple[float, int | None]]) -> float:
        """Seconds until a compute stream and a collective stream have both run their tasks, each in order: a task
        is (seconds alone, the index of the other stream's task it waits for, or None), and starts when the one
        before it has ended and what it waits for has. While both streams run, they go at their speeds here.

        >>> Overlap(0.0, 0.5).streams_s([(1.0, None), (1.0, 0)], [(1.0, None)])  # the collective half done at 1 s
        2.5
        """
        tasks = ([t for t, _ in compute], [t for t, _ in comm])
        waits = ([w for _, w in compute], [w for _, w in comm])
        done, clock = [0, 0], 0.0
        while True:
            ready = [
                s
                for s in (0, 1)
                if done[s] < len(tasks[s]) and (waits[s][done[s]] is None or done[1 - s] > waits[s][done[s]])
            ]
            if not ready:
                return clock
            rates = (1.0 - self.lost, self.speed) if len(ready) == 2 else (1.0, 1.0)
            ends = {s: tasks[s][done[s]] / rates[s] for s in ready}
            step = min(ends.values())
            for s in ready:
                tasks[s][done[s]] -= step * rates[s]
                if ends[s] == step:
                    done[s] += 1
            clock += step
