"""Memory of two torchtitan arrangements the memory model derives from source code, measured on one GPU
as rank 0 of a larger job whose other ranks exist only in a fake process group (torch.testing's
FakeStore: collectives and sends do nothing, so rank 0's own allocations are the real ones):

1. FSDP2 under pipeline parallelism (torchtitan: no reshard after forward when PP is on; the pipeline
   stage turns off resharding after backward and gradient sync until the last micro-batch). Stage 0 of
   pp=4 x dp=2, four Llama blocks (h 4096, ffn 14336) under full activation checkpointing, 8
   micro-batches of 2 x 4096 tokens, Schedule1F1B; and ScheduleInterleaved1F1B with two such stages
   (0 and 4 of 8) of two blocks each. tests/test_step_memory.py sets the peaks against `stage_memory`.
2. torch's loss_parallel: cross_entropy(logits.float()) over a ColwiseParallel head's vocabulary shard
   (tp=8) against the plain loss over a tensor of the same local size: peak bytes per local logit
   above the bf16 head input and weight.

    python scripts/pp_fsdp_memory.py > benchmarks/results/h100-pp-fsdp-memory/results.json
    python scripts/pp_fsdp_memory.py snapshot 1f1b   # case 1 under 1F1B, and where its reserved bytes went
    python scripts/pp_fsdp_memory.py sweep '{"pp": 2, "blocks": 8, "mb": 1, "n_micro": 16, "fsdp": false}'
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

# shardplan/llama.py alone (it needs torch only): a lent GPU machine need not have shardplan's other dependencies
_spec = importlib.util.spec_from_file_location(
    "shardplan_llama", Path(__file__).resolve().parents[1] / "shardplan" / "llama.py"
)
_llama = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_llama)
Block, rope_tables = _llama.Block, _llama.rope_tables

TINY = os.environ.get("TINY") == "1"  # a CPU check that everything runs
H, HEADS, FFN = (64, 4, 128) if TINY else (4096, 32, 14336)
MB, SEQ, N_MICRO = (2, 32, 8) if TINY else (2, 4096, 8)
VOCAB, LOSS_TOKENS = (256, 64) if TINY else (128256, 2 * 8192)
DEVICE = torch.device("cpu" if TINY else "cuda")
GIB = 2**30


def _fake_world(world: int) -> None:
    from torch.testing._internal.distributed.fake_pg import FakeStore

    dist.init_process_group("fake", rank=0, world_size=world, store=FakeStore())


def _static_shapes_only() -> None:
    """Newer torch decides static or dynamic shapes by a vote over P2P, which a fake process group
    cannot carry: take the static shapes every stage was given."""
    from torch.distributed.pipelining import schedules

    mode = getattr(schedules, "InferenceMode", None)
    if mode is None or not hasattr(schedules.PipelineScheduleSingle, "_warmup_p2p"):
        return

    def warmup(self, stages, has_backward, p2p_done):
        for stage in stages:
            stage._inference_mode = mode.STATIC

    for cls in (schedules.PipelineScheduleSingle, schedules.PipelineScheduleMulti):
        cls._warmup_p2p = warmup


class Stage(nn.Module):
    """`n` blocks under full activation checkpointing (torchtitan's checkpoint_wrapper)."""

    def __init__(
        self, n: int, h: int = H, heads: int = HEADS, ffn: int = FFN, seq: int = SEQ, kv_heads: int | None = None
    ) -> None:
        super().__init__()
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

        self.layers = nn.ModuleList(
            checkpoint_wrapper(Block(h, heads, ffn, 1e-5, kv_heads), preserve_rng_state=False) for _ in range(n)
        )
        self.rope = (h // heads, seq)
        cos, sin = rope_tables(*self.rope)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, self.cos, self.sin)
        return x


def _materialise(module: nn.Module, stage: Stage) -> None:
    """`module`, built on the meta device, onto DEVICE: random weights (DTensors through their local
    shards) and `stage`'s rotary tables."""
    module.to_empty(device=DEVICE)
    with torch.no_grad():
        for p in module.parameters():
            (p.to_local() if hasattr(p, "to_local") else p).normal_(0.0, 0.02)
        cos, sin = rope_tables(*stage.rope, DEVICE)
        stage.cos.copy_(cos)
        stage.sin.copy_(sin)


def _tensor_parallel(block: nn.Module, mesh) -> None:
    """torchtitan's TP plan for a Llama block with sequence parallelism: the residual stream and the norms
    stay sequence shards; each norm's output is all-gathered once (torchtitan's PrepareModuleInput on its
    attention and feed-forward modules) for the column-parallel linears, and the row-parallel ones
    reduce-scatter back to the shard."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleOutput,
        RowwiseParallel,
        parallelize_module,
    )

    gather = PrepareModuleOutput(output_layouts=Shard(1), desired_output_layouts=Replicate())
    row = RowwiseParallel(output_layouts=Shard(1))
    plan = {"attn_norm": gather, "mlp_norm": gather, "wo": row, "w2": row}
    plan |= {name: ColwiseParallel() for name in ("wq", "wk", "wv", "w1", "w3")}
    parallelize_module(block, mesh, plan)


def _stats() -> dict[str, float]:
    if TINY:
        return {}
    s = torch.cuda.memory_stats()
    return {
        "allocated_gib": s["allocated_bytes.all.current"] / GIB,
        "peak_allocated_gib": s["allocated_bytes.all.peak"] / GIB,
        "peak_reserved_gib": s["reserved_bytes.all.peak"] / GIB,
    }


def _steps(out: dict, opt: torch.optim.Optimizer, forward_backward: Callable[[], None]) -> None:
    """Four optimiser steps of `forward_backward` into `out`: what is allocated after each backward, and the
    peaks of the last two steps (and where the reserved bytes sit, per CUDA stream)."""
    for step in range(4):
        if step == 2 and not TINY:
            torch.cuda.reset_peak_memory_stats()
        opt.zero_grad()
        forward_backward()
        if not TINY:
            torch.cuda.synchronize()
        out.setdefault("after_backward", []).append(_stats())
        opt.step()
    out["peak"] = _stats()
    if not TINY:
        out["by_stream"] = _by_stream()
        out["alloc_conf"] = os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "")


TRACE_ENTRIES = 2_000_000


def _by_stream(snap: dict | None = None) -> dict[str, dict[str, float]]:
    """Segments, reserved and allocated GiB per CUDA stream's pool, in `snap` (default: now)."""
    streams: dict[str, dict[str, float]] = {}
    for seg in (snap or torch.cuda.memory._snapshot())["segments"]:
        s = streams.setdefault(str(seg["stream"]), {"segments": 0, "reserved_gib": 0.0, "allocated_gib": 0.0})
        s["segments"] += 1
        s["reserved_gib"] += seg["total_size"] / GIB
        s["allocated_gib"] += seg["allocated_size"] / GIB
    return streams


def _where(frames: list[dict]) -> str:
    """The innermost frames of an allocation that say whose it is (FSDP, the pipeline, a block, the optimizer)."""
    keys = ("fsdp", "pipelining", "shardplan_llama", "llama.py", "optim", "checkpoint", "pp_fsdp_memory")
    named = [f for f in frames if any(k in f["filename"] for k in keys)] or frames
    return " < ".join(f"{Path(f['filename']).name}:{f['line']} {f['name']}" for f in named[:3])


def _reserved_summary() -> dict:
    """Where the reserved bytes are at the end of the last step (reserved only grows): per CUDA stream, the
    segments' bytes and the bytes live in them; the segments as they were created, largest first, grouped by
    the code that asked; and the reserved bytes at the moment of the allocated peak (replayed from the trace)."""
    snap = torch.cuda.memory._snapshot()
    streams = _by_stream(snap)
    created: dict[tuple[str, str], list[float]] = {}
    live: dict[int, tuple[int, str]] = {}
    allocated = reserved = peak = reserved_at_peak = 0
    live_at_peak: dict[str, float] = {}
    for ev in snap["device_traces"][0]:
        size, action = ev["size"], ev["action"]
        if action in ("segment_alloc", "segment_map"):  # map: expandable segments grow
            reserved += size
            created.setdefault((str(ev["stream"]), _where(ev.get("frames", []))), []).append(size / GIB)
        elif action in ("segment_free", "segment_unmap"):
            reserved -= size
        elif action == "alloc":
            allocated += size
            live[ev["addr"]] = (size, _where(ev.get("frames", [])))
            if allocated > peak:
                peak, reserved_at_peak = allocated, reserved
                live_at_peak = {}
                for bytes_, where in live.values():
                    live_at_peak[where] = live_at_peak.get(where, 0.0) + bytes_ / GIB
        elif action == "free_completed":
            allocated -= size
            live.pop(ev["addr"], None)
    rows = sorted(created.items(), key=lambda kv: -sum(kv[1]))
    return {
        "by_stream": streams,
        "segments_created": [
            {"stream": st, "where": where, "count": len(sizes), "gib": sum(sizes), "largest_gib": max(sizes)}
            for (st, where), sizes in rows[:25]
        ],
        "live_at_allocated_peak": dict(sorted(live_at_peak.items(), key=lambda kv: -kv[1])[:25]),
        "trace_allocated_peak_gib": peak / GIB,
        "trace_reserved_at_allocated_peak_gib": reserved_at_peak / GIB,
        "trace_complete": len(snap["device_traces"][0]) < TRACE_ENTRIES,
    }


def pipeline(
    schedule: str,
    snapshot: bool = False,
    *,
    pp: int = 4,
    blocks: int | None = None,
    mb: int = MB,
    n_micro: int = N_MICRO,
    fsdp: bool = True,
    dp: int = 2,
    tp: int = 1,
    h: int = H,
    heads: int = HEADS,
    ffn: int = FFN,
    seq: int = SEQ,
) -> dict:
    """Stage(s) of rank 0 in a pp x dp (x tp) job: FSDP2 as torchtitan applies it under PP; with tp > 1
    torchtitan's TP plan with sequence parallelism inside each block, before FSDP (2D: FSDP over dp)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleInterleaved1F1B

    if snapshot:
        torch.cuda.memory._record_memory_history(max_entries=TRACE_ENTRIES, stacks="python")
    _fake_world(pp * dp * tp)
    mesh = init_device_mesh(DEVICE.type, (pp, dp, tp), mesh_dim_names=("pp", "dp", "tp"))
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    interleaved = schedule == "interleaved"
    stage_ids = (0, pp) if interleaved else (0,)
    blocks = blocks or (2 if interleaved else 4)
    stages, modules = [], []
    x_shape = (mb, seq // tp, h)  # under sequence parallelism stages pass their sequence shard
    for sid in stage_ids:
        with torch.device("meta"):
            module = Stage(blocks, h, heads, ffn, seq)
        if tp > 1:
            for layer in module.layers:
                _tensor_parallel(layer._checkpoint_wrapped_module, mesh["tp"])
        if fsdp:
            for layer in module.layers:
                fully_shard(layer, mesh=mesh["dp"], mp_policy=policy, reshard_after_forward=False)
            fully_shard(module, mesh=mesh["dp"], mp_policy=policy, reshard_after_forward=False)
        _materialise(module, module)
        if not fsdp:  # plain bf16 weights, fp32 gradients would need a wrapper: keep them in bf16
            module.to(torch.bfloat16)
        # static shapes, so that no stage waits for metadata from ranks that do not exist
        example = torch.empty(x_shape, dtype=torch.bfloat16, device=DEVICE)
        static = {"input_args": example, "output_args": example, "output_grads": example, "input_grads": example}
        known = inspect.signature(PipelineStage).parameters
        static = {k: v for k, v in static.items() if k in known}
        stages.append(PipelineStage(module, sid, pp * len(stage_ids), DEVICE, group=mesh["pp"].get_group(), **static))
        modules.append(module)
    params = sum(p.numel() for m in modules for p in m.parameters())  # global (unsharded) count
    opt = torch.optim.AdamW([p for m in modules for p in m.parameters()], lr=1e-4, foreach=True)

    def loss_fn(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return out.float().pow(2).mean()

    _static_shapes_only()
    sched = (
        ScheduleInterleaved1F1B(stages, n_microbatches=n_micro, loss_fn=loss_fn)
        if interleaved
        else Schedule1F1B(stages[0], n_microbatches=n_micro, loss_fn=loss_fn)
    )
    x = torch.randn(mb * n_micro, seq // tp, h, dtype=torch.bfloat16, device=DEVICE)
    out: dict = {"schedule": schedule, "stages": list(stage_ids), "blocks_per_stage": blocks, "params": params}
    out |= {"pp": pp, "micro_batch": mb, "n_micro": n_micro, "fsdp": fsdp}
    if tp > 1:
        out |= {"dp": dp, "tp": tp, "h": h, "heads": heads, "ffn": ffn, "seq": seq}
    _steps(out, opt, lambda: sched.step(x))
    if snapshot:
        out["reserved"] = _reserved_summary()
        torch.cuda.memory._record_memory_history(enabled=None)
    dist.destroy_process_group()
    return out


class Whole(nn.Module):
    """Embedding, a `Stage` of `n` blocks, final norm and head: logits out."""

    def __init__(self, n: int, h: int, heads: int, ffn: int, vocab: int, seq: int, kv_heads: int | None) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, h)
        self.stage = Stage(n, h, heads, ffn, seq, kv_heads)
        self.norm = nn.RMSNorm(h, eps=1e-5)
        self.head = nn.Linear(h, vocab, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.stage(self.embed(tokens))))


def two_d(
    *, dp: int, tp: int, blocks: int, h: int, heads: int, ffn: int, vocab: int, seq: int, mb: int, kv_heads: int = 0
) -> dict:
    """Rank 0 of a whole model under FSDP2 x TP as torchtitan runs it without PP (its 2D rows): the embedding
    (RowwiseParallel, output a sequence shard), blocks under full activation checkpointing with `_tensor_parallel`,
    the final norm on the shard, the head ColwiseParallel into vocabulary shards and torch's loss_parallel over
    them; FSDP2 on each block and on the root (resharded after forward). `kv_heads` 0: as many as `heads`."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, loss_parallel, parallelize_module

    _fake_world(dp * tp)
    mesh = init_device_mesh(DEVICE.type, (dp, tp), mesh_dim_names=("dp", "tp"))
    with torch.device("meta"):
        model = Whole(blocks, h, heads, ffn, vocab, seq, kv_heads or None)
    parallelize_module(model.embed, mesh["tp"], RowwiseParallel(input_layouts=Replicate(), output_layouts=Shard(1)))
    for layer in model.stage.layers:
        _tensor_parallel(layer._checkpoint_wrapped_module, mesh["tp"])
    head = ColwiseParallel(input_layouts=Shard(1), output_layouts=Shard(-1), use_local_output=False)
    parallelize_module(model.head, mesh["tp"], head)
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for layer in model.stage.layers:
        fully_shard(layer, mesh=mesh["dp"], mp_policy=policy)
    fully_shard(model, mesh=mesh["dp"], mp_policy=policy)
    _materialise(model, model.stage)
    params = sum(param.numel() for param in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
    tokens = torch.randint(0, vocab, (mb, seq), device=DEVICE)
    labels = torch.randint(0, vocab, (mb, seq), device=DEVICE)
    out: dict = {"kind": "2d", "dp": dp, "tp": tp, "blocks": blocks, "h": h, "heads": heads, "ffn": ffn}
    out["kv_heads"] = kv_heads or heads
    out |= {"vocab": vocab, "seq": seq, "micro_batch": mb, "params": params}

    def forward_backward() -> None:
        logits = model(tokens)
        with loss_parallel():
            value = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(0, 1))
            del logits
            value.backward()

    _steps(out, opt, forward_backward)
    dist.destroy_process_group()
    return out


def loss(parallel: bool) -> dict:
    """Peak over cross_entropy(pred.float()) forward and backward, per local logit."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import ColwiseParallel, loss_parallel, parallelize_module

    tp = 8
    _fake_world(tp)
    mesh = init_device_mesh(DEVICE.type, (tp,))
    head = nn.Linear(H, VOCAB if parallel else VOCAB // tp, bias=False, device=DEVICE, dtype=torch.bfloat16)
    if parallel:
        plan = ColwiseParallel(output_layouts=torch.distributed.tensor.Shard(-1), use_local_output=False)
        parallelize_module(head, mesh, plan)
    x = torch.randn(1, LOSS_TOKENS, H, dtype=torch.bfloat16, device=DEVICE, requires_grad=True)
    labels = torch.randint(0, VOCAB if parallel else VOCAB // tp, (1, LOSS_TOKENS), device=DEVICE)
    peaks = []
    for _ in range(3):
        if not TINY:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        pred = head(x)
        with loss_parallel() if parallel else contextlib.nullcontext():
            value = F.cross_entropy(pred.flatten(0, 1).float(), labels.flatten(0, 1))
            del pred
            value.backward()
        x.grad, head.weight.grad = None, None
        if not TINY:
            torch.cuda.synchronize()
            peaks.append(torch.cuda.max_memory_allocated() - base)
    dist.destroy_process_group()
    local_logits = LOSS_TOKENS * VOCAB // tp
    extra = LOSS_TOKENS * H * 2 * 2  # x's gradient (bf16) and the weight's gradient are small beside
    return {
        "parallel": parallel,
        "local_logits": local_logits,
        "peak_bytes": peaks,
        "bytes_per_logit": [(p - extra) / local_logits for p in peaks],
    }


def main() -> None:
    if len(sys.argv) == 3:  # one case in a fresh process
        kind, arg = sys.argv[1], sys.argv[2]
        if kind == "loss":
            print(json.dumps(loss(arg == "1")))
        elif kind == "2d":  # one shape, as JSON: {"dp": 32, "tp": 8, "blocks": 80, "h": 8192, ...}
            print(json.dumps(two_d(**json.loads(arg))))
        elif kind == "sweep":  # one shape, as JSON: {"schedule": "1f1b", "pp": 2, "blocks": 4, ...}
            shape = json.loads(arg)
            print(json.dumps(pipeline(shape.pop("schedule", "1f1b"), **shape)))
        else:
            print(json.dumps(pipeline(arg, snapshot=kind == "snapshot")))
        return
    runs = []
    for kind, arg in (("pipeline", "1f1b"), ("pipeline", "interleaved"), ("loss", "0"), ("loss", "1")):
        done = subprocess.run([sys.executable, __file__, kind, arg], capture_output=True, text=True, check=False)
        if done.returncode:
            print(done.stderr[-3000:], file=sys.stderr)
            continue
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    device = "cpu" if TINY else torch.cuda.get_device_name()
    source = f"scripts/pp_fsdp_memory.py, torch {torch.__version__}, {device}"
    print(json.dumps({"_source": source, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
