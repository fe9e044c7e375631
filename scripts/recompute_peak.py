"""The peak memory of backward under full activation checkpointing with compiled blocks, bf16 and with FP8 linears:
whether the block that backward rebuilds keeps what the same block keeps without checkpointing
(`ModelSpec.activation_bytes_per_token`, `fp8_recast_inputs`). Four Llama-2-7B-wide blocks on 16,384 tokens, each
block checkpointed around its compiled self (benchmarks/real_training.py's order) or compiled around its checkpoint
wrapper (torchtitan's `apply_ac`, then `apply_compile`); the peak allocated over forward and backward above what
was allocated before it. Writes DIR/recompute-peak.json.

    PYTHONPATH=. python scripts/recompute_peak.py DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.utils.checkpoint import checkpoint

from shardplan.cost.calibration import SWEEP_HEAD_DIM
from shardplan.llama import rope_tables
from shardplan.profiled_block import llama_block

H, F, BLOCKS, SEQ, BATCH = 4096, 11008, 4, 4096, 4


def peak(order: str, fp8: bool) -> dict[str, float]:
    torch._dynamo.reset()
    torch.manual_seed(0)
    device = torch.device("cuda", 0)
    blocks = [llama_block((H, H, H, F), device, fp8=fp8) for _ in range(BLOCKS)]
    if order == "checkpoint(compile(block))":
        compiled = [torch.compile(b, fullgraph=True) for b in blocks]

        def run(x: torch.Tensor) -> torch.Tensor:
            for fn in compiled:
                x = checkpoint(fn, x, cos, sin, use_reentrant=False)
            return x
    else:
        wrapped = [torch.compile(checkpoint_wrapper(b, preserve_rng_state=False), fullgraph=True) for b in blocks]

        def run(x: torch.Tensor) -> torch.Tensor:
            for fn in wrapped:
                x = fn(x, cos, sin)
            return x

    cos, sin = rope_tables(SWEEP_HEAD_DIM, SEQ, device)
    x = torch.randn(BATCH, SEQ, H, device=device, dtype=torch.bfloat16, requires_grad=True)
    grad = torch.randn_like(x)
    for _ in range(3):
        for b in blocks:
            b.zero_grad(set_to_none=False)
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = run(x)
        after_forward = torch.cuda.memory_allocated() - base
        out.backward(grad)
        torch.cuda.synchronize()
        top = torch.cuda.max_memory_allocated() - base
        del out
    return {"after_forward_bytes": after_forward, "peak_bytes": top}


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for order in ("checkpoint(compile(block))", "compile(checkpoint(block))"):
        for fp8 in (False, True):
            name = f"{order} {'fp8' if fp8 else 'bf16'}"
            rows[name] = peak(order, fp8)
            print(name, {k: round(v / 2**30, 3) for k, v in rows[name].items()}, "GiB", flush=True)
    tokens = SEQ * BATCH
    rows["4h + 2f, one block, GiB"] = (4 * H + 2 * F) * tokens / 2**30
    print("4h + 2f of one block:", round(rows["4h + 2f, one block, GiB"], 3), "GiB")
    (out / "recompute-peak.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
