"""A Llama block under torch.compile on one GPU, profiled as `shardplan calibrate` profiles it (`block_kernels`):
at some widths and token counts (default: four widths at 8,192 tokens), bf16 and (FP8 tensor cores) with FP8
linears; each block's kernels by kind and the rates calibrate derives from them (`compiled_block_rates`). Writes
DIR/compiled-block.json and prints a table.

    PYTHONPATH=. python benchmarks/compiled_block.py DIR [--widths 8B ...] [--tokens 8192 ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from shardplan.profiled_block import block_kernels, compiled_block_rates, kernels_by_kind

# (hidden, q, kv, ffn): Llama-3.2-1B, -3-8B and -3-70B with every head its own keys and values (calibrate's block is
# the 8B one), and the 8B with its 8 key-value heads (GQA's repeat_kv copies are ops the cost model does not count)
WIDTHS = {
    "1B": (2048, 2048, 2048, 8192),
    "8B": (4096, 4096, 4096, 14336),
    "8B GQA": (4096, 4096, 1024, 14336),
    "70B": (8192, 8192, 8192, 28672),
    "Llama-2-7B": (4096, 4096, 4096, 11008),  # benchmarks/real_training.py's llama-7b-8l
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--widths", nargs="+", choices=tuple(WIDTHS), default=tuple(WIDTHS))
    parser.add_argument("--tokens", nargs="+", type=int, default=[8192], help="multiples of 4,096")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda", 0)
    fp8 = torch.cuda.get_device_capability(device) >= (8, 9)
    rows = {}
    print("| width | tokens | dtype | GEMMs ms | attention ms | other ms |\n|---|--:|---|--:|--:|--:|")
    for label in args.widths:
        for tokens in args.tokens:
            width, row = WIDTHS[label], {}
            for dtype in ("bf16", "fp8") if fp8 else ("bf16",):
                kernels = block_kernels(device, tokens, width, fp8=dtype == "fp8", repeats=10)
                kinds = kernels_by_kind(kernels)
                row[dtype] = {"by_kind_s": kinds, "kernels_s": kernels}
                cells = " | ".join(f"{kinds[k] * 1e3:.3f}" for k in ("gemm", "attention", "other"))
                print(f"| {label} | {tokens} | {dtype} | {cells} |", flush=True)
            other = {dtype: row[dtype]["by_kind_s"]["other"] for dtype in ("bf16", "fp8") if dtype in row}
            rates = compiled_block_rates(width, tokens, other["bf16"], other.get("fp8"))
            rows[f"{label} {tokens}"] = {"width": width, "tokens": tokens, **row, "rates": rates}
    print()
    for key, row in rows.items():
        print(key, {name: round(value, 1) for name, value in row["rates"].items()})
    facts = {"device": torch.cuda.get_device_name(device), "torch": torch.__version__}
    (args.out / "compiled-block.json").write_text(json.dumps({**facts, "blocks": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
