"""What a Llama block keeps for backward, eager and under torch.compile, bf16 and with FP8 linears: every tensor its
forward saves (torch.autograd.graph.saved_tensors_hooks; under torch.compile AOTAutograd saves its own choice),
weights and the rotary tables left out, beside `ModelSpec.activation_bytes_per_token`. Writes DIR/compiled-saved.json.

    PYTHONPATH=. python scripts/compiled_saved.py DIR [--checkpointed]

`--checkpointed`: each block compiled around its checkpoint wrapper, as torchtitan applies full activation
checkpointing and then torch.compile (the Llama-2-7B width alone; DIR/compiled-saved-checkpointed.json).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import torch
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from compiled_block import WIDTHS as BLOCKS  # noqa: E402

from shardplan.cost.calibration import SWEEP_HEAD_DIM  # noqa: E402
from shardplan.llama import rope_tables  # noqa: E402
from shardplan.profiled_block import BLOCK_SEQ_LEN, block_spec, llama_block  # noqa: E402

TOKENS = 8192
WIDTHS = {label: BLOCKS[label] for label in ("8B", "Llama-2-7B", "1B")}  # f = 3.5h, 2.69h, 4h


def saved(
    width: tuple, *, fp8: bool, compiled: bool, device: torch.device, checkpointed: bool = False
) -> dict[int, tuple[int, tuple, str]]:
    """The storages one forward keeps for backward: {address: (bytes, shape, dtype of the first tensor saved from
    it)}; a storage saved by several ops (a norm's output read by Q, K and V) counts once."""
    h = width[0]
    block = llama_block(width, device, fp8=fp8)
    torch._dynamo.reset()
    module = checkpoint_wrapper(block, preserve_rng_state=False) if checkpointed else block
    run = torch.compile(module, fullgraph=True, dynamic=False) if compiled else module
    x = torch.randn(TOKENS // BLOCK_SEQ_LEN, BLOCK_SEQ_LEN, h, device=device, dtype=torch.bfloat16, requires_grad=True)
    cos, sin = rope_tables(SWEEP_HEAD_DIM, BLOCK_SEQ_LEN, device)
    skip = {t.untyped_storage().data_ptr() for t in (*block.parameters(), cos, sin)}
    for _ in range(2):  # compile first, then record
        kept: dict[int, tuple[int, tuple, str]] = {}

        def pack(t: torch.Tensor, kept: dict = kept) -> torch.Tensor:
            storage = t.untyped_storage()
            if storage.data_ptr() not in skip:
                kept.setdefault(storage.data_ptr(), (storage.nbytes(), tuple(t.shape), str(t.dtype)[6:]))
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = run(x, cos, sin)
        out.backward(torch.randn_like(out))
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--checkpointed", action="store_true")
    args = parser.parse_args()
    out, checkpointed = args.out, args.checkpointed
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    widths = {"Llama-2-7B": WIDTHS["Llama-2-7B"]} if checkpointed else WIDTHS
    for label, width in widths.items():
        model = block_spec(width).activation_bytes_per_token(tp=1, sequence_parallel=False)
        for fp8 in (False, True):
            for compiled in (True,) if checkpointed else (False, True):
                device = torch.device("cuda", 0)
                kept = saved(width, fp8=fp8, compiled=compiled, device=device, checkpointed=checkpointed)
                per_token = sum(nbytes for nbytes, _, _ in kept.values()) / TOKENS
                groups = Counter((shape, dtype, nbytes) for nbytes, shape, dtype in kept.values())
                name = f"{label} {'fp8' if fp8 else 'bf16'} {'compiled' if compiled else 'eager'}"
                listed = [[list(shape), dtype, nbytes, n] for (shape, dtype, nbytes), n in sorted(groups.items())]
                rows[name] = {"bytes_per_token": per_token, "model_bf16_eager": model, "saved": listed}
                h = width[0]
                print(f"{name}: {per_token / h:.2f} h bytes a token (model, bf16 eager: {model / h:.2f} h)")
                for shape, dtype, nbytes, n in listed:
                    print(f"    {n} x {shape} {dtype} ({nbytes / TOKENS / h:.2f} h a token)", flush=True)
    name = "compiled-saved-checkpointed.json" if checkpointed else "compiled-saved.json"
    (out / name).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
