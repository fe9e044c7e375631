"""Does a collective that copies slower than its SMs could keep its pace beside compute, and what does the
compute beside it lose while those SMs mostly wait?

The cost model (`shardplan.cost.overlap`) slows an overlapped collective's bytes only where its channels copy
faster per GPU than a copy holding as many SMs still does beside compute (267 GB/s for NCCL's 16 channels on an
H100, `overlap_interference.py`), so a ring at a NIC's 50 GB/s, or an all-to-all that waits on the NICs, keeps its
pace; and it charges the compute beside a collective the same share for every SM held, waiting (latency, a NIC's
pace) or copying. `overlap_interference.py` measured only a copy at full speed. Here the stand-in holds 16
programs (NCCL's channels) and paces its copy: each program copies 4,096 bf16 elements (16 KiB read and written)
and then waits on %globaltimer until its share of the target rate allows the next, the way a channel waits on a
NIC or on its peer. For each pace it is timed alone and beside each op, and each op beside it.

    python benchmarks/overlap_paced.py [OUT.json]
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch
import triton
import triton.language as tl
from overlap_interference import BLOCK, _loop_s, compute_ops, finish

PROGRAMS = 16  # NCCL's channels on an H100 NVSwitch node, as overlap_interference.py
PACES_GBPS = (10, 50, 100, 200, 300, 400, 0)  # bytes read and written per second, all programs; 0: unpaced
SECONDS = 0.05  # the stand-in's copying per timing
BYTES_PER_BLOCK = BLOCK * 2 * 2  # bf16, read and written


@triton.jit
def _now():
    return tl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l", [], dtype=tl.int64, is_pure=False, pack=1)


@triton.jit
def _paced(src, dst, per_program, blocks, ns_per_block, BLOCK: tl.constexpr):
    base = tl.program_id(0) * per_program
    start = _now()
    offset = base * 0
    for k in range(blocks):
        deadline = start + k.to(tl.int64) * ns_per_block
        while _now() < deadline:
            pass
        idx = base + offset + tl.arange(0, BLOCK)
        tl.store(dst + idx, tl.load(src + idx))
        offset = (offset + BLOCK) % per_program


def main() -> None:
    device = torch.device("cuda")
    compute, side = torch.cuda.Stream(), torch.cuda.Stream()
    src = torch.randn(2**28, device=device, dtype=torch.bfloat16)  # 512 MiB each way
    dst = torch.empty_like(src)
    per_program = src.numel() // PROGRAMS // BLOCK * BLOCK

    def copy(pace: float, seconds: float) -> tuple[Callable[[], None], int]:
        """The paced stand-in for about `seconds` at `pace` GB/s (unpaced: as many blocks as the full-speed copy
        moves in that time, 567 GB/s with 16 programs), and the bytes it reads and writes."""
        blocks = max(1, int((pace or 567.0) * 1e9 * seconds / PROGRAMS / BYTES_PER_BLOCK))
        ns = int(BYTES_PER_BLOCK * PROGRAMS / pace) if pace else 0

        def launch() -> None:
            with torch.cuda.stream(side):
                _paced[(PROGRAMS,)](src, dst, per_program, blocks, ns, BLOCK=BLOCK, num_warps=16)

        return launch, blocks * PROGRAMS * BYTES_PER_BLOCK

    def copy_gbps(pace: float, before: Callable[[], object] | None = None, reps: int = 0) -> float:
        """GB/s the stand-in moves, alone or with `before` queued `reps` times on the compute stream first."""
        launch, moved = copy(pace, SECONDS)
        if before is not None:
            with torch.cuda.stream(compute):
                for _ in range(reps):
                    before()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(side)
        launch()
        end.record(side)
        torch.cuda.synchronize()
        return moved / (start.elapsed_time(end) / 1e3) / 1e9

    for pace in PACES_GBPS:  # compile, warm
        copy(pace, 0.001)[0]()
    torch.cuda.synchronize()
    result: dict[str, object] = {
        "gpu": torch.cuda.get_device_name(device),
        "programs": PROGRAMS,
        "copy_gbps_alone": {pace: statistics.median(copy_gbps(pace) for _ in range(3)) for pace in PACES_GBPS},
        "ops": {},
    }
    print("alone", result["copy_gbps_alone"], flush=True)
    for name, fn in compute_ops(device).items():
        for _ in range(3):
            fn()
        reps = max(5, int(0.2 / max(_loop_s(fn, 3, compute), 1e-6)))  # about 0.2 s a loop
        alone = statistics.median(_loop_s(fn, reps, compute) for _ in range(3))
        outlast = int(3 * SECONDS / alone) + 1  # the ops queued outlast the stand-in
        speed, kept = {}, {}
        for pace in PACES_GBPS:
            runs = []
            for _ in range(3):
                copy(pace, 1.5 * alone * reps)[0]()  # outlasts the loop
                runs.append(_loop_s(fn, reps, compute))
            speed[pace] = alone / statistics.median(runs)
            beside = statistics.median(copy_gbps(pace, fn, outlast) for _ in range(3))
            kept[pace] = beside / result["copy_gbps_alone"][pace]
        result["ops"][name] = {"alone_s": alone, "speed_beside": speed, "copy_speed_beside": kept}
        both = {p: (round(speed[p], 3), round(kept[p], 3)) for p in PACES_GBPS}
        print(name, f"{alone * 1e3:.3f} ms", both, flush=True)
    finish(result, ("speed_beside", "copy_speed_beside"), PACES_GBPS)


if __name__ == "__main__":
    main()
