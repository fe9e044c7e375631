"""How much a kernel that holds a few SMs slows the GEMMs, attention and memory-bound ops running
beside it: what an NCCL collective overlapped with compute costs that compute.

NCCL runs one CTA per channel for the whole of a collective (16 channels on 8x H100 with NCCL 2.22:
"16 coll channels, 16 nvls channels" in ../shared/fixtures/nccl-log/nccl-debug-topo-graph-h100-2node-
gcp-a3-socket-partial-1.txt). On one GPU a collective has no peer, so a stand-in holds the SMs: a
Triton kernel with one program per channel that copies HBM to HBM (a ring step reads its send buffer,
and the peer's writes land in this GPU's memory). Each op runs alone, then while the stand-in runs
on another stream with 8, 16, 24 and 32 programs; the ratio is the op's speed beside it. The other way
round too: the stand-in's copy rate while the op runs back to back beside it, over its rate alone (what
the compute costs a collective overlapped with it: the SMs it waits for and the HBM it shares).

    python benchmarks/overlap_interference.py [OUT.json]
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

PROGRAMS = (8, 16, 24, 32)
BLOCK = 4096


@triton.jit
def _hold(src, dst, per_program, rounds, BLOCK: tl.constexpr):
    base = tl.program_id(0) * per_program
    for _ in range(rounds):
        for start in range(0, per_program, BLOCK):
            idx = base + start + tl.arange(0, BLOCK)
            tl.store(dst + idx, tl.load(src + idx))


def _loop_s(fn: Callable[[], object], reps: int, stream: torch.cuda.Stream) -> float:
    """Seconds per call of `fn`, `reps` calls back to back on `stream`."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    with torch.cuda.stream(stream):
        start.record(stream)
        for _ in range(reps):
            fn()
        end.record(stream)
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3 / reps


def compute_ops(device: torch.device) -> dict[str, Callable[[], object]]:
    """The GEMMs (MPT-13B and Llama-3-8B blocks' shapes, two squares), attention and memory-bound ops the
    stand-in runs beside."""
    ops: dict[str, Callable[[], object]] = {}
    for m, n, k, what in (
        (4096, 15360, 5120, "MPT-13B QKV, 4,096 tokens"),
        (4096, 20480, 5120, "MPT-13B MLP up, 4,096 tokens"),
        (4096, 5120, 20480, "MPT-13B MLP down, 4,096 tokens"),
        (16384, 14336, 4096, "Llama-3-8B MLP up, 16,384 tokens"),
        (2048, 4096, 4096, "4,096 square, 2,048 tokens"),
        (8192, 8192, 8192, "8,192 cube"),
    ):
        a = torch.randn(m, k, device=device, dtype=torch.bfloat16)
        w = torch.randn(n, k, device=device, dtype=torch.bfloat16)
        ops[f"gemm {m}x{n}x{k} ({what})"] = lambda a=a, w=w: F.linear(a, w)
    q, kk, v = (torch.randn(2, 40, 2048, 128, device=device, dtype=torch.bfloat16) for _ in range(3))
    ops["flash attention forward b2 h40 s2048 d128"] = lambda: F.scaled_dot_product_attention(q, kk, v, is_causal=True)
    x, y = (torch.randn(2**27, device=device, dtype=torch.bfloat16) for _ in range(2))
    ops["add 128M bf16"] = lambda: torch.add(x, y)
    h = torch.randn(4096 * 4, 5120, device=device, dtype=torch.bfloat16)
    ops["layer norm 16,384 x 5,120"] = lambda: F.layer_norm(h, (5120,))
    return ops


def main() -> None:
    device = torch.device("cuda")
    compute, side = torch.cuda.Stream(), torch.cuda.Stream()
    src = torch.randn(2**28, device=device, dtype=torch.bfloat16)  # 512 MiB each way
    dst = torch.empty_like(src)

    def hold(programs: int, rounds: int) -> None:
        with torch.cuda.stream(side):
            _hold[(programs,)](src, dst, src.numel() // programs // BLOCK * BLOCK, rounds, BLOCK=BLOCK, num_warps=16)

    def holder_s(programs: int) -> float:  # seconds per round alone
        hold(programs, 2)  # compiles (Triton specialises an argument of 1: none is passed)
        return _loop_s(lambda: hold(programs, 4), 1, side) / 4

    def holder_beside_s(fn: Callable[[], object], alone: float, programs: int, round_s: float) -> float:
        """Seconds per round of the stand-in while `fn` runs back to back on the compute stream from
        before it starts to after it ends."""
        rounds = max(2, int(0.05 / round_s))  # about 50 ms of copying
        with torch.cuda.stream(compute):
            for _ in range(int(3 * rounds * round_s / alone) + 1):  # outlasts the stand-in
                fn()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(side)
        hold(programs, rounds)
        end.record(side)
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3 / rounds

    ops = compute_ops(device)

    per_round = {p: holder_s(p) for p in PROGRAMS}
    result: dict[str, object] = {
        "gpu": torch.cuda.get_device_name(device),
        "sms": torch.cuda.get_device_properties(device).multi_processor_count,
        "holder_gbps": {p: 2 * src.numel() * 2 / s / 1e9 for p, s in per_round.items()},
        "ops": {},
    }
    for name, fn in ops.items():
        for _ in range(3):
            fn()
        reps = max(5, int(0.2 / max(_loop_s(fn, 3, compute), 1e-6)))  # about 0.2 s a loop
        alone = statistics.median(_loop_s(fn, reps, compute) for _ in range(3))
        beside, held = {}, {}
        for p in PROGRAMS:
            runs = []
            for _ in range(3):
                hold(p, max(2, int(1.5 * alone * reps / per_round[p]) + 1))  # outlasts the loop
                runs.append(_loop_s(fn, reps, compute))
            beside[p] = alone / statistics.median(runs)
            held[p] = per_round[p] / statistics.median(holder_beside_s(fn, alone, p, per_round[p]) for _ in range(3))
        result["ops"][name] = {"alone_s": alone, "speed_beside": beside, "collective_speed_beside": held}
        both = {p: (round(beside[p], 3), round(held[p], 3)) for p in PROGRAMS}
        print(name, f"{alone * 1e3:.3f} ms", both, flush=True)
    result["sm_share_left"] = {p: 1 - p / result["sms"] for p in PROGRAMS}
    finish(result, ("speed_beside", "collective_speed_beside"), PROGRAMS)


def finish(result: dict, keys: tuple[str, ...], columns: tuple[int, ...]) -> None:
    """Add each key's median over the ops, per column, then print the result and write it to the file named
    on the command line, if any."""
    for key in keys:
        result[f"median_{key}"] = {c: statistics.median(o[key][c] for o in result["ops"].values()) for c in columns}
    text = json.dumps(result, indent=1)
    print(text)
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
