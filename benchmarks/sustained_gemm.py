"""bf16 GEMM throughput held for minutes against the short bursts `shardplan calibrate` times.

Calibration times each GEMM over ten repeats; a training run keeps the tensor cores busy for hours,
under the board's power limit and its cooling. This runs one large GEMM back to back for SECONDS
and records, per second, the achieved TFLOP/s with the SM clock, power and temperature NVML reports.
Prints JSON (the second argument, if given, is the output file).

    python benchmarks/sustained_gemm.py [SECONDS] [OUT.json]
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import pynvml
import torch

SHAPE = (8192, 8192, 8192)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 120.0
    device = torch.device("cuda", 0)
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    m, n, k = SHAPE
    a = torch.randn(m, k, device=device, dtype=torch.bfloat16)
    b = torch.randn(k, n, device=device, dtype=torch.bfloat16)
    flops = 2 * m * n * k
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    samples = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        calls = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 1.0:
            for _ in range(20):
                a @ b
            calls += 20
        end.record()
        end.synchronize()
        samples.append(
            {
                "t_s": round(time.perf_counter() - start, 2),
                "tflops": calls * flops / (begin.elapsed_time(end) / 1e3) / 1e12,
                "sm_mhz": pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM),
                "power_w": pynvml.nvmlDeviceGetPowerUsage(handle) / 1e3,
                "temp_c": pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU),
            }
        )
    first, last = samples[:3], samples[-10:]
    result = {
        "device": torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "shape": "x".join(map(str, SHAPE)),
        "seconds": seconds,
        "first_3s_tflops": statistics.median(s["tflops"] for s in first),
        "last_10s_tflops": statistics.median(s["tflops"] for s in last),
        "samples": samples,
    }
    result["sustained_over_burst"] = result["last_10s_tflops"] / result["first_3s_tflops"]
    text = json.dumps(result, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}))
    for s in samples[::10]:
        print(f"{s['t_s']:6.1f} s {s['tflops']:6.1f} TFLOP/s {s['sm_mhz']} MHz {s['power_w']:.0f} W {s['temp_c']} C")
    if len(sys.argv) > 2:
        with open(sys.argv[2], "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
