"""The memory-bound ops of a Llama block, eager and under torch.compile, on one GPU: calibrate's
measure_elementwise (8,192 tokens, Llama-3-8B's widths) eager, compiled, and eager again. Writes
DIR/elementwise_compiled.json.

    python benchmarks/elementwise_compiled.py DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from shardplan.calibrate import WIDTHS, _Timer, measure_elementwise


def main() -> None:
    device = torch.device("cuda", 0)
    timer = _Timer(device, warmup=3, repeats=10)
    out = {
        "eager": measure_elementwise(timer, device, 8192, WIDTHS[1]),
        "compiled": measure_elementwise(timer, device, 8192, WIDTHS[1], compiled=True),
        "eager_again": measure_elementwise(timer, device, 8192, WIDTHS[1]),
    }
    text = json.dumps(out, indent=1)
    print(text)
    (Path(sys.argv[1]) / "elementwise_compiled.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
