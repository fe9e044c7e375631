"""Peak memory of torchtitan-style training steps with torchao's Float8 linears, against the same steps in bf16, on
one GPU: what torchao's own float8 training (not the emulation in shardplan.llama) holds, for the torchtitan rows that
ran it (../shared torchtitan_benchmarks.csv WF-8node, B4-1, B5-1, B5-2).

The model is h100_torchtitan_step_memory.py's Llama 3 8B (32 blocks, micro-batch 2 x 8,192 tokens) or, for the TP
cases, torchtitan's Llama with 70B's widths (40 blocks, 16 x 8,192 tokens, FSDP 32 x TP 8), built in torchtitan's
order (torchtitan/train.py and models/llama3/infra/parallelize.py): float8 conversion of every block
linear on the meta device (torchao `convert_to_float8_training`, tensorwise scaling, the output layer left out, FSDP
float8 all-gather on), then activation checkpointing (op-level SAC with torchtitan's save list, or full), then
per-block torch.compile, then FSDP2 over `dp` ranks of which this process is rank 0 (the others exist in a fake
process group: their collectives do nothing, rank 0's allocations are real); under TP, torchtitan's `apply_tp` with
torchao's float8 styles comes before checkpointing. The loss is compiled with the blocks (torchtitan from 2025; under
TP eager, with loss_parallel, as in Dec 2024), then clip_grad_norm_, AdamW (foreach) and, with float8, torchao's
`precompute_float8_dynamic_scale_for_fsdp`. After 2 steps the peak statistics are reset and 2 more run.

    python scripts/torchao_float8_memory.py [CASE ...] > results.jsonl    # needs torchao; an 80 GB GPU
    TRACE=1 python scripts/torchao_float8_memory.py CASE ...                 # and where the reserve went
"""

import contextlib
import json
import os
import subprocess
import sys
from functools import partial

import torch
import torch.nn.functional as F
from h100_eager_vs_compiled_sac import SAVE, B, RMSNorm, S, policy_fn, repeat_kv, rope
from h100_torchtitan_step_memory import VOCAB, Model
from torch import nn
from torch.distributed.tensor.parallel import loss_parallel

TP_BLOCKS, TP_BATCH = 40, 16
LLAMA_70B = 8192, 64, 8, 28672  # hidden, heads, KV heads, MLP width
# name -> (activation checkpointing, float8, FSDP degree, TP degree[, local batch[, blocks[, compiled loss]]])
CASES = {
    "sac-bf16-dp64": ("op", False, 64, 1),
    "sac-float8-dp64": ("op", True, 64, 1),  # WF-8node: Llama 3.1 8B, FSDP 64, torchtitan's default op-level SAC
    "full-bf16-dp8": ("full", False, 8, 1),
    "full-float8-dp8": ("full", True, 8, 1),
    # B4-1: Llama 3.1 70B's widths, FSDP 32 x TP 8 (float8 TP styles), full checkpointing, a local batch of
    # 16 x 8,192 tokens; 40 of its 80 blocks, to fit an 80 GB GPU
    "tp-bf16": ("full", False, 32, 8),
    "tp-float8": ("full", True, 32, 8),
    # the bf16 one with half the local batch (half the logits and kept inputs), and with half the blocks (half the
    # kept inputs): which of the two the reserve beyond the estimate follows
    "tp-bf16-b8": ("full", False, 32, 8, TP_BATCH // 2),
    "tp-bf16-20": ("full", False, 32, 8, TP_BATCH, TP_BLOCKS // 2),
    # torchtitan from 2025 compiles the loss whenever it compiles (components/loss.py build_cross_entropy_loss), under
    # TP inside loss_parallel as well
    "tp-bf16-cl": ("full", False, 32, 8, TP_BATCH, TP_BLOCKS, True),
    "tp-bf16-cl-b8": ("full", False, 32, 8, TP_BATCH // 2, TP_BLOCKS, True),
}
# torchtitan's op-level SAC save list of 2025 (models/llama3/infra/parallelize.py `_op_sac_save_list`): Dec 2024's,
# and FSDP's reduce-scatter and the amax (aten.max) of each float8 cast; torchao's float8 linears reach aten.mm with
# float8 tensors
SAVE_2025 = SAVE | {torch.ops._c10d_functional.reduce_scatter_tensor.default, torch.ops.aten.max.default}


class Attention(nn.Module):
    """torchtitan's Llama attention (models/llama3/model): its own module, as its TP plan names it."""

    def __init__(self, h: int, heads: int, kv: int):
        super().__init__()
        self.heads, self.kv, self.d = heads, kv, h // heads
        self.wq, self.wk = nn.Linear(h, heads * self.d, bias=False), nn.Linear(h, kv * self.d, bias=False)
        self.wv, self.wo = nn.Linear(h, kv * self.d, bias=False), nn.Linear(heads * self.d, h, bias=False)

    def forward(self, x, freqs):
        b, s, _ = x.shape
        q, k, v = (w(x).view(b, s, -1, self.d) for w in (self.wq, self.wk, self.wv))
        q, k = rope(q, k, freqs)
        k, v = repeat_kv(k, self.heads // self.kv), repeat_kv(v, self.heads // self.kv)
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        return self.wo(o.transpose(1, 2).reshape(b, s, -1))


class FeedForward(nn.Module):
    def __init__(self, h: int, f: int):
        super().__init__()
        self.w1, self.w3, self.w2 = (
            nn.Linear(h, f, bias=False),
            nn.Linear(h, f, bias=False),
            nn.Linear(f, h, bias=False),
        )

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    def __init__(self, h: int, heads: int, kv: int, f: int):
        super().__init__()
        self.attention_norm, self.ffn_norm = RMSNorm(h), RMSNorm(h)
        self.attention, self.feed_forward = Attention(h, heads, kv), FeedForward(h, f)

    def forward(self, x, freqs):
        x = x + self.attention(self.attention_norm(x), freqs)
        return x + self.feed_forward(self.ffn_norm(x))


def tensor_parallel(model: nn.Module, mesh, float8: bool) -> None:
    """torchtitan's `apply_tp` with loss_parallel: its float8 styles for tensorwise float8 linears."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleInput,
        RowwiseParallel,
        SequenceParallel,
        parallelize_module,
    )

    top = {
        "tok_embeddings": RowwiseParallel(input_layouts=Replicate(), output_layouts=Shard(1)),
        "norm": SequenceParallel(),
        "output": ColwiseParallel(input_layouts=Shard(1), output_layouts=Shard(-1), use_local_output=False),
    }
    parallelize_module(model, mesh, top)
    row, col, prepare = RowwiseParallel, ColwiseParallel, PrepareModuleInput
    if float8:
        from torchao.float8 import float8_tensor_parallel as styles

        row, col, prepare = styles.Float8RowwiseParallel, styles.Float8ColwiseParallel, styles.PrepareFloat8ModuleInput
    for block in model.layers.values():
        plan = {
            "attention_norm": SequenceParallel(),
            "attention": prepare(input_layouts=(Shard(1), None), desired_input_layouts=(Replicate(), None)),
            "attention.wq": col(),
            "attention.wk": col(),
            "attention.wv": col(),
            "attention.wo": row(output_layouts=Shard(1)),
            "ffn_norm": SequenceParallel(),
            "feed_forward": prepare(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),)),
            "feed_forward.w1": col(),
            "feed_forward.w2": row(output_layouts=Shard(1)),
            "feed_forward.w3": col(),
        }
        parallelize_module(block, mesh, plan)


def one(
    ac: str,
    float8: bool,
    dp: int,
    tp: int,
    batch: int | None = None,
    blocks: int = TP_BLOCKS,
    compiled_loss: bool | None = None,
) -> dict:
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    from torch.testing._internal.distributed.fake_pg import FakeStore

    trace = os.environ.get("TRACE") == "1"  # where the reserved bytes went (pp_fsdp_memory's summary)
    if trace:
        from pp_fsdp_memory import TRACE_ENTRIES

        torch.cuda.memory._record_memory_history(max_entries=TRACE_ENTRIES, stacks="python")
    torch.manual_seed(0)
    torch.distributed.init_process_group("fake", rank=0, world_size=dp * tp, store=FakeStore())
    mesh = init_device_mesh("cuda", (dp, tp), mesh_dim_names=("dp", "tp"))
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    with torch.device("meta"):
        model = Model(blocks, partial(TransformerBlock, *LLAMA_70B), *LLAMA_70B[:2]) if tp > 1 else Model(32)
    batch = batch or (TP_BATCH if tp > 1 else B)
    if float8:
        from torchao.float8 import (
            Float8LinearConfig,
            convert_to_float8_training,
            precompute_float8_dynamic_scale_for_fsdp,
        )

        config = Float8LinearConfig(enable_fsdp_float8_all_gather=True)
        convert_to_float8_training(model, config=config, module_filter_fn=lambda mod, fqn: fqn != "output")
    if tp > 1:
        tensor_parallel(model, mesh["tp"], float8)
    n = len(model.layers)
    for i, block in list(model.layers.items()):
        sac = {"context_fn": partial(policy_fn, SAVE_2025)} if ac == "op" else {}
        block = checkpoint_wrapper(block, preserve_rng_state=False, **sac)
        block = torch.compile(block, fullgraph=True)
        fully_shard(block, mesh=mesh["dp"], mp_policy=mp, reshard_after_forward=int(i) < n - 1)
        model.layers.register_module(i, block)
    fully_shard(model, mesh=mesh["dp"], mp_policy=mp, reshard_after_forward=None)  # as h100_torchtitan_step_memory.py
    model.to_empty(device="cuda")
    with torch.no_grad():
        for p in model.parameters():
            p.to_local().normal_(0.0, 0.02)

    def cross_entropy(pred, labels):
        return F.cross_entropy(pred.flatten(0, 1).float(), labels.flatten(0, 1))

    # under TP, torchtitan of Dec 2024 (B4-1): eager, over the head's vocabulary shards
    compiled_loss = tp == 1 if compiled_loss is None else compiled_loss
    loss_fn = torch.compile(cross_entropy) if compiled_loss else cross_entropy

    opt = torch.optim.AdamW(model.parameters(), lr=8e-4, betas=(0.9, 0.95), weight_decay=0.1, foreach=True)
    tokens = torch.randint(0, VOCAB, (batch, S), device="cuda")
    labels = torch.randint(0, VOCAB, (batch, S), device="cuda")
    out = {"ac": ac, "float8": float8, "dp": dp, "tp": tp, "blocks": n, "micro_batch": batch, "seq": S}
    out["compiled_loss"] = compiled_loss
    out["params"] = sum(p.numel() for p in model.parameters())
    for step in range(4):
        if step == 2:
            torch.cuda.reset_peak_memory_stats()
        opt.zero_grad()
        out["allocated_before_step"] = torch.cuda.memory_allocated()
        with loss_parallel() if tp > 1 else contextlib.nullcontext():
            loss = loss_fn(model(tokens), labels)
            torch.cuda.synchronize()
            out["allocated_after_forward"] = torch.cuda.memory_allocated()  # what the blocks keep, and the loss's
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()
        if float8:
            precompute_float8_dynamic_scale_for_fsdp(model)
        torch.cuda.synchronize()
    stats = torch.cuda.memory_stats()
    out |= {
        "max_reserved": stats["reserved_bytes.all.peak"],
        "max_allocated": stats["allocated_bytes.all.peak"],
        "num_alloc_retries": stats["num_alloc_retries"],
    }
    if trace:
        from pp_fsdp_memory import _reserved_summary

        out["reserved"] = _reserved_summary()
    torch.distributed.destroy_process_group()
    return out


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--one":  # one case, in a fresh process
        print(json.dumps(one(*CASES[sys.argv[2]])))
        return
    import torchao

    source = f"scripts/torchao_float8_memory.py, torch {torch.__version__}, torchao {torchao.__version__}"
    print(json.dumps({"_source": f"{source}, {torch.cuda.get_device_name()}"}), flush=True)
    env = dict(os.environ, PYTORCH_CUDA_ALLOC_CONF="expandable_segments:True")  # what torchtitan's launcher sets
    for name in sys.argv[1:] or list(CASES):  # one JSON line each, as each ends
        done = subprocess.run([sys.executable, __file__, "--one", name], env=env, capture_output=True, text=True)
        if done.returncode:
            print(f"{name}: failed\n{done.stderr[-4000:]}", file=sys.stderr, flush=True)
            continue
        run = {"case": name, **json.loads(done.stdout.strip().splitlines()[-1])}
        print(json.dumps(run), flush=True)
        gib = {k: round(run[k] / 2**30, 2) for k in ("max_reserved", "max_allocated", "allocated_after_forward")}
        print(f"{name}: {gib}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
