"""Does `shardplan calibrate` time an op's launch latency with it? Times bf16 GEMMs of the calibration's shapes three
ways on the GPU at hand: as `calibrate`'s `_Timer` does (an event, one call, an event), with the GPU held busy by a
spin kernel while the host launches the call (so the events time the GPU alone), and as the mean of 50 calls
back to back. Prints TFLOP/s by shape and the host's dispatch time of one `a @ b`. With `--table`, instead: every
shape of the shipped H100 calibration timed both ways by `measure_gemms`, and `_fit_gemm`'s peak and overhead of each.

    python scripts/launch_latency.py            # benchmarks/results/h100-launch-latency/launch_latency.txt
    python scripts/launch_latency.py --table    # benchmarks/results/h100-launch-latency/gemm_fit.txt
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from shardplan.calibrate import SPIN_CYCLES, _Timer, measure_gemms
from shardplan.cost.calibration import _fit_gemm

SHIPPED = Path(__file__).resolve().parents[1] / "shardplan/cost/calibration/h100-sxm.json"
SHAPES = ((384, 2048, 2048), (768, 2048, 2048), (768, 2048, 8192), (768, 4096, 8192), (2048, 8192, 8192))


def _back_to_back(fn: Callable[[], object], calls: int = 50) -> float:
    """Mean seconds of `fn` over `calls` calls between two events, a spin kernel queued before the first."""
    torch.cuda._sleep(SPIN_CYCLES)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / calls


def fit_table(device: torch.device) -> None:
    """The shipped H100 file's GEMM shapes, timed as calibrate does and with the GPU busy first, each table fitted."""
    shipped = json.loads(SHIPPED.read_text())["gemm_tflops"]
    shapes = [tuple(int(v) for v in key.split("x")) for key in shipped]
    print(torch.cuda.get_device_name(), len(shapes), "shapes")
    for name, timer in (("calibrate's timer", _Timer(device)), ("busy first", _Timer(device, busy_first=True))):
        table = measure_gemms(timer, device, shapes)
        peak, overhead = _fit_gemm(table)
        print(
            f"{name}: fit peak {peak / 1e12:.1f} TFLOP/s, overhead {overhead * 1e6:.2f} us; "
            f"min {min(table.values()):.1f} max {max(table.values()):.1f} TFLOP/s"
        )


def main() -> None:
    device = torch.device("cuda")
    if "--table" in sys.argv[1:]:
        fit_table(device)
        return
    timer, busy_first = _Timer(device), _Timer(device, busy_first=True)
    print(torch.cuda.get_device_name(), torch.__version__)
    for m, n, k in SHAPES:
        a = torch.randn(m, k, device=device, dtype=torch.bfloat16)
        b = torch.randn(k, n, device=device, dtype=torch.bfloat16)
        flops = 2 * m * n * k

        def fn(a=a, b=b) -> torch.Tensor:
            return a @ b

        for _ in range(5):
            fn()
        torch.cuda.synchronize()
        host = []
        for _ in range(50):
            t0 = time.perf_counter()
            fn()
            host.append(time.perf_counter() - t0)
        torch.cuda.synchronize()
        rates = [flops / t / 1e12 for t in (timer(fn), busy_first(fn), _back_to_back(fn))]
        print(
            f"{m}x{n}x{k}: TFLOP/s calibrate's timer {rates[0]:6.1f}, GPU busy first {rates[1]:6.1f}, "
            f"50 back to back {rates[2]:6.1f}; host dispatch {statistics.median(host) * 1e6:5.1f} us"
        )


if __name__ == "__main__":
    main()
