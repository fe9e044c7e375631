"""Does `shardplan calibrate` time an op's launch latency with it? Times bf16 GEMMs of the calibration's shapes three
ways on the GPU at hand: as `calibrate`'s `_Timer` does (an event, one call, an event), with the GPU held busy by a
spin kernel while the host launches the call (so the events time the GPU alone), and as the mean of 50 calls
back to back. Prints TFLOP/s by shape and the host's dispatch time of one `a @ b`.

    python scripts/launch_latency.py
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from shardplan.calibrate import SPIN_CYCLES, _Timer

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


def main() -> None:
    device = torch.device("cuda")
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
