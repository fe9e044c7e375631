"""Does `shardplan calibrate` time an op's launch latency with it? Times bf16 GEMMs of the calibration's shapes three
ways on the GPU at hand: as `calibrate`'s `_Timer` does (an event, one call, an event), with the GPU held busy by a
spin kernel while the host launches the call (so the events time the GPU alone), and as the mean of 50 calls
back to back. Prints TFLOP/s by shape and the host's dispatch time of one `a @ b`.

    python scripts/launch_latency.py
"""

from __future__ import annotations

import statistics
import time

import torch

from shardplan.calibrate import _Timer

SHAPES = ((384, 2048, 2048), (768, 2048, 2048), (768, 2048, 8192), (768, 4096, 8192), (2048, 8192, 8192))


def _busy_first(fn, repeats: int = 10) -> float:
    """Median seconds of `fn` between two events, with a spin kernel queued before the first."""
    times = []
    for _ in range(repeats):
        torch.cuda._sleep(2_000_000)  # ~1 ms of spinning: the host queues the events and the op meanwhile
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def _back_to_back(fn, calls: int = 50) -> float:
    torch.cuda._sleep(2_000_000)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / calls


def main() -> None:
    device = torch.device("cuda")
    timer = _Timer(device)
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
        rates = [flops / t / 1e12 for t in (timer(fn), _busy_first(fn), _back_to_back(fn))]
        print(
            f"{m}x{n}x{k}: TFLOP/s calibrate's timer {rates[0]:6.1f}, GPU busy first {rates[1]:6.1f}, "
            f"50 back to back {rates[2]:6.1f}; host dispatch {statistics.median(host) * 1e6:5.1f} us"
        )


if __name__ == "__main__":
    main()
