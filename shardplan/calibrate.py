"""`shardplan calibrate`: measure this machine's speeds and write a calibration file.

Run it with plain `python -m shardplan.cli calibrate` on one GPU, or under `torchrun` on several
(every rank measures its own GPU; rank 0 also measures peer copies and collectives with the others
and writes the file). What is measured, each timed with device events after a warm-up, the median
of several repeats, on random data:

- bf16 GEMMs with the shapes tensor parallelism produces (forward, data- and weight-gradient
  layouts of a transformer block's four projections, for several model widths, token counts and TP
  degrees); on GPUs with FP8 tensor cores the same shapes in FP8 (per-tensor scales with and without
  fast accumulation, per-row scales);
- causal flash/SDPA attention, forward and backward, at 16,384 tokens for sequences of 512 to 16,384
  (the cost model reads the rate at a block's sequence length): SDPA's own pick of kernel, and SDPA
  held to its FlashAttention-2 backend (the kernel older attention implementations are rated against);
- memory-bound work as the standard PyTorch ops do it, forward + backward: RMSNorm, rotary
  embedding, SwiGLU, residual add, fp32 cross-entropy; each as the bytes the cost model counts for
  it over the measured time (so eager-mode overheads are in the rate); on a GPU a whole Llama block under
  torch.compile, profiled, the bytes the cost model counts for its memory-bound ops over its kernels other than
  GEMMs and attention (Inductor fuses across ops), and with FP8 tensor cores the same block with FP8 linears, the
  FP8 casts' bytes over what those kernels add;
- device-to-device copy, pinned host-to-device copy, fused AdamW;
- the host's dispatch cost of eager PyTorch: forward and backward of a tiny Llama (shardplan.llama)
  with 1 and 3 blocks, whose GPU work is negligible, gives seconds per block and per model; again
  with the blocks under FSDP2's fully_shard, and with their linears as DTensor tensor parallelism,
  over a mesh of this rank alone, and (on a GPU) with each block under torch.compile;
- the memory the CUDA context (and NCCL, with several ranks) holds outside PyTorch's allocator;
- with several ranks: point-to-point copies per GPU pair and all-reduce / all-gather /
  reduce-scatter bus bandwidth per group size and message size.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from functools import partial
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from shardplan.cost.calibration import ATTN_BWD_FLOPS_OVER_FWD, FP8_RECIPES, elementwise_bytes_per_token
from shardplan.errors import ShardplanError
from shardplan.profiled_block import BLOCK_SEQ_LEN, measure_compiled_block

# Transformer widths (hidden, q = heads x head_dim, kv = kv heads x head_dim, ffn) whose GEMM shapes
# are measured: Llama-3.2-1B, Llama-3-8B and Llama-3-70B (their config.json), covering narrow to wide.
WIDTHS = ((2048, 2048, 512, 8192), (4096, 4096, 1024, 14336), (8192, 8192, 1024, 28672))
TOKENS = (2048, 8192)
TP = (1, 2, 4, 8)
# Attention (batch, heads, sequence, head dim): 16,384 tokens of 16 heads of 128 at every sequence length, as the
# FlashAttention papers measure it (the cost model reads the rate at a block's sequence length off this sweep), then
# the same FLOPs at 4,096 tokens a sequence with heads of 64 and of 256 (32 and 8 of them): the rate by head dim
ATTENTION = (
    *((16384 // s, 16, s, 128) for s in (128, 256, 512, 1024, 2048, 4096, 8192, 16384)),
    (4, 32, 4096, 64),
    (4, 8, 4096, 256),
)
QUICK = {
    "widths": ((256, 256, 128, 512),),
    "tokens": (128,),
    "tp": (1, 2),
    "attention": ((1, 2, 128, 128), (1, 4, 128, 64)),
}


SPIN_CYCLES = 2_000_000  # about 1 ms of an H100's clock: time for the host to queue the events and the op behind it


class _Timer:
    """Median seconds of `fn` over `repeats` runs after `warmup` runs, timed with device events on
    CUDA, or with a host clock (the device synchronised before and after) on the CPU or when
    `host_clock` asks for wall time. Events time from before `fn` launches its kernels, so they include the host's
    launch latency, unless `busy_first` queues a spin kernel ahead of them (the GPU alone;
    benchmarks/results/h100-launch-latency)."""

    def __init__(
        self,
        device: torch.device,
        *,
        warmup: int = 3,
        repeats: int = 10,
        host_clock: bool = False,
        busy_first: bool = False,
    ) -> None:
        self.device, self.warmup, self.repeats = device, warmup, repeats
        self.events = device.type == "cuda" and not host_clock
        self.busy_first = busy_first and self.events

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self, fn: Callable[[], object]) -> float:
        for _ in range(self.warmup):
            fn()
        times = []
        for _ in range(self.repeats):
            if self.events:
                if self.busy_first:
                    torch.cuda._sleep(SPIN_CYCLES)
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            else:
                self._sync()
                t0 = time.perf_counter()
                fn()
                self._sync()
                times.append(time.perf_counter() - t0)
        return statistics.median(times)


def _gemm_shapes(widths: tuple, tokens: tuple, tps: tuple) -> list[tuple[int, int, int]]:
    """(M, N, K) of every GEMM in a block's forward and backward: for each projection (M=T, N, K),
    the data gradient (T, K, N) and the weight gradient (N, K, T)."""
    shapes: set[tuple[int, int, int]] = set()
    for h, q, kv, f in widths:
        for t in tokens:
            for tp in tps:
                for n, k in (((q + 2 * kv) // tp, h), (h, q // tp), (2 * f // tp, h), (h, f // tp)):
                    shapes.update({(t, n, k), (t, k, n), (n, k, t)})
    return sorted(shapes)


def measure_gemms(timer: _Timer, device: torch.device, shapes: list[tuple[int, int, int]]) -> dict[str, float]:
    """bf16 TFLOP/s by 'MxNxK'."""
    out = {}
    for m, n, k in shapes:
        a = torch.randn(m, k, device=device, dtype=torch.bfloat16)
        b = torch.randn(k, n, device=device, dtype=torch.bfloat16)
        out[f"{m}x{n}x{k}"] = 2 * m * n * k / timer(lambda a=a, b=b: a @ b) / 1e12
    return out


def measure_gemms_fp8(timer: _Timer, device: torch.device, shapes: list[tuple[int, int, int]]) -> dict[str, dict]:
    """FP8 (e4m3) TFLOP/s by 'MxNxK' with a bf16 output, as float8 training runs its linears
    (torch._scaled_mm; the second operand column-major): `tensorwise` (one scale per tensor) with
    split accumulation, as backward GEMMs run; `tensorwise_fast_accum` as forward GEMMs run
    (Transformer Engine and torchao both accumulate the forward GEMM fast); `rowwise` (a scale per
    row of each operand)."""
    out: dict[str, dict] = {recipe: {} for recipe in FP8_RECIPES}
    one = torch.ones((), device=device)
    for m, n, k in shapes:
        a = torch.randn(m, k, device=device).to(torch.float8_e4m3fn)
        b = torch.randn(n, k, device=device).to(torch.float8_e4m3fn).t()
        rows_a, rows_b = torch.ones(m, 1, device=device), torch.ones(1, n, device=device)
        cases = {
            "tensorwise": (one, one, False),
            "tensorwise_fast_accum": (one, one, True),
            "rowwise": (rows_a, rows_b, False),
        }
        for name in FP8_RECIPES:
            sa, sb, fast = cases[name]

            def run(a=a, b=b, sa=sa, sb=sb, fast=fast) -> torch.Tensor:
                return torch._scaled_mm(a, b, scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16, use_fast_accum=fast)

            out[name][f"{m}x{n}x{k}"] = 2 * m * n * k / timer(run) / 1e12
    return out


def measure_attention(
    timer: _Timer, device: torch.device, cases: tuple, backend: SDPBackend | None = None
) -> tuple[dict[str, float], dict[str, float]]:
    """Causal SDPA TFLOP/s forward and backward, on causal FLOPs (half of 4*b*h*s*s*d forward;
    backward counted as ATTN_BWD_FLOPS_OVER_FWD x forward). `backend` restricts SDPA to one kernel
    family; PyTorch raises RuntimeError where that kernel cannot run on this device."""
    with sdpa_kernel(backend) if backend is not None else nullcontext():
        return _time_attention(timer, device, cases)


def _time_attention(timer: _Timer, device: torch.device, cases: tuple) -> tuple[dict[str, float], dict[str, float]]:
    fwd, bwd = {}, {}
    for b, heads, s, d in cases:
        q, k, v = (
            torch.randn(b, heads, s, d, device=device, dtype=torch.bfloat16, requires_grad=True) for _ in range(3)
        )
        flops = 2 * b * heads * s * s * d  # 4*b*h*s*s*d / 2
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        grad = torch.randn_like(out)
        key = f"b{b}_h{heads}_s{s}_d{d}"
        t_fwd = timer(lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v, is_causal=True))

        def both(q: torch.Tensor = q, k: torch.Tensor = k, v: torch.Tensor = v, grad: torch.Tensor = grad) -> None:
            torch.autograd.grad(F.scaled_dot_product_attention(q, k, v, is_causal=True), (q, k, v), grad)

        t_bwd = max(timer(both) - t_fwd, 1e-9)
        fwd[key] = flops / t_fwd / 1e12
        bwd[key] = ATTN_BWD_FLOPS_OVER_FWD * flops / t_bwd / 1e12
    return fwd, bwd


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def measure_elementwise(timer: _Timer, device: torch.device, tokens: int, width: tuple) -> dict[str, float]:
    """Forward + backward of each memory-bound op of a Llama block with the standard PyTorch ops,
    as GB/s of the bytes the cost model counts for it (`elementwise_bytes_per_token`, forward
    bytes x 3 for forward + backward)."""
    h, q, kv, f = width
    counted = elementwise_bytes_per_token(h, q, kv, f, swiglu=True)
    bf16 = {"dtype": torch.bfloat16, "device": device}

    def leaf(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, **bf16, requires_grad=True)

    x, w = leaf(tokens, h), leaf(h)
    qk = leaf(1, tokens, (q + kv) // 128, 128)
    cos, sin = torch.randn(tokens, 1, 128, **bf16), torch.randn(tokens, 1, 128, **bf16)
    gate, up = leaf(tokens, f), leaf(tokens, f)
    y = leaf(tokens, h)
    ops: dict[str, Callable[[], torch.Tensor]] = {
        "rms_norm": lambda: F.rms_norm(x, (h,), w, 1e-5),
        "rope": lambda: _rope(qk, cos, sin),
        "swiglu": lambda: F.silu(gate) * up,
        "residual_add": lambda: x + y,
    }
    out = {}
    for name, op in ops.items():
        result = op()
        grad = torch.randn_like(result)
        inputs = [t for t in (x, w, qk, gate, up, y) if t.requires_grad]

        def step(op: Callable[[], torch.Tensor] = op, grad: torch.Tensor = grad, inputs: list = inputs) -> None:
            torch.autograd.grad(op(), inputs, grad, allow_unused=True)

        out[name] = 3 * counted[name] * tokens / timer(step) / 1e9
    return out


def measure_loss(timer: _Timer, device: torch.device, tokens: int, vocab: int) -> float:
    """fp32 cross-entropy over bf16 logits, forward + backward, as GB/s of the 6 fp32 passes over
    the logits that the cost model counts (3 forward, 3 backward)."""
    logits = torch.randn(tokens, vocab, device=device, dtype=torch.bfloat16, requires_grad=True)
    labels = torch.randint(0, vocab, (tokens,), device=device)

    def step() -> None:
        torch.autograd.grad(F.cross_entropy(logits.float(), labels), logits)

    return 6 * tokens * vocab * 4 / timer(step) / 1e9


def measure_copies(timer: _Timer, device: torch.device, nbytes: int) -> dict[str, float]:
    """Device-to-device copy (read + write bytes) and pinned host-to-device copy, GB/s."""
    src = torch.randn(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    out = {"d2d_rw_gbps": 2 * nbytes / timer(lambda: dst.copy_(src)) / 1e9}
    if device.type == "cuda":
        host = torch.randn(nbytes // 4).pin_memory()
        out["h2d_gbps"] = nbytes / timer(lambda: dst.copy_(host, non_blocking=True)) / 1e9
    return out


def measure_adamw(timer: _Timer, device: torch.device, params: int) -> float:
    """Fused AdamW over `params` fp32 parameters, as GB/s of the 28 bytes per parameter it must move
    (read param, grad, two moments; write param and moments)."""
    p = torch.randn(params, device=device, requires_grad=True)
    p.grad = torch.randn_like(p)
    opt = torch.optim.AdamW([p], lr=1e-4, fused=device.type == "cuda")
    return 28 * params / timer(opt.step) / 1e9


def _collective(op: str, buf: torch.Tensor, shard: torch.Tensor, group: dist.ProcessGroup) -> None:
    if op == "all_reduce":
        dist.all_reduce(buf, group=group)
    elif op == "all_gather":
        dist.all_gather_into_tensor(buf, shard, group=group)
    else:  # reduce_scatter_single since torch 2.13, reduce_scatter_tensor before
        (getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor)(shard, buf, group=group)


def measure_host(device: torch.device, *, repeats: int = 30) -> dict[str, float]:
    """Host seconds of eager forward and backward, per transformer block and fixed (embedding, head,
    loss), from a tiny Llama with 1 and 3 blocks: median wall time per iteration, synchronised. The
    model has full-size heads (head_dim 128) so that attention takes the same kernel path, and the
    mixed-precision gradient hooks of a real training step. Then per block with the blocks under
    FSDP2's fully_shard (fp32 shards, bf16 compute, fp32 reduction, as torchtitan), and with each
    block's linears tensor-parallel as DTensors (column-wise Q, K, V, W1, W3; row-wise O, W2, as
    torchtitan), both over a mesh of this rank alone: their hooks, copies and dispatch; and on a GPU
    with each block under torch.compile (0 where not measured)."""
    from shardplan.llama import MixedPrecisionAdamW, compile_blocks, fully_shard_model, parallelize_blocks

    wall = _Timer(device, warmup=3, repeats=repeats, host_clock=True)
    mesh, owns_group = _own_mesh(device)

    def plain(model: torch.nn.Module) -> None:
        MixedPrecisionAdamW(model)  # registers the per-parameter gradient hooks

    def fsdp2(model: torch.nn.Module) -> None:
        for param in model.parameters():  # fp32 shards (the rotary tables stay bf16)
            param.data = param.data.float()
        fully_shard_model(model, mesh)

    def compiled(model: torch.nn.Module) -> None:
        compile_blocks(model)
        plain(model)

    wrappers = [("", plain), ("fsdp2_", fsdp2), ("dtensor_tp_", partial(parallelize_blocks, mesh=mesh))]
    # compiling needs Triton on a GPU (on the CPU a C++ toolchain, which a test machine may lack)
    out: dict[str, float] = {"compiled_forward_s_per_block": 0.0, "compiled_backward_s_per_block": 0.0}
    if device.type == "cuda":
        wrappers.append(("compiled_", compiled))
    for prefix, wrap in wrappers:
        per_blocks = {}
        for blocks in (1, 3):
            model = _tiny_llama(blocks, device)
            wrap(model)
            per_blocks[blocks] = _forward_backward_s(wall, model, device)
        # noise may put 3 blocks below 1 on an idle host: no time, not a negative one (the file takes none)
        out[f"{prefix}forward_s_per_block"] = max((per_blocks[3][0] - per_blocks[1][0]) / 2, 0.0)
        out[f"{prefix}backward_s_per_block"] = max((per_blocks[3][1] - per_blocks[1][1]) / 2, 0.0)
        if not prefix:
            out["forward_s_fixed"] = max(per_blocks[1][0] - out["forward_s_per_block"], 0.0)
            out["backward_s_fixed"] = max(per_blocks[1][1] - out["backward_s_per_block"], 0.0)
    for grouped in (False, True):
        out |= _moe_host(wall, device, out["forward_s_per_block"], out["backward_s_per_block"], grouped=grouped)
    if owns_group:
        dist.destroy_process_group()
    return out


def _moe_host(
    wall: _Timer, device: torch.device, forward: float, backward: float, *, grouped: bool
) -> dict[str, float]:
    """What a mixture-of-experts block's host time adds to a dense block's (`forward`, `backward`), fixed and per
    expert this GPU holds: blocks with 2 and with 8 local experts (top-2 of 8), per block as above; as Megatron-Core
    runs them (`moe_*`), or with `grouped` as torchtitan does (`grouped_moe_*`: `shardplan.llama.Experts`)."""
    from shardplan.llama import MixedPrecisionAdamW

    extra = {}
    for local in (2, 8):
        per_blocks = {}
        for blocks in (1, 3):
            model = _tiny_llama(blocks, device, local_experts=local, grouped=grouped)
            MixedPrecisionAdamW(model)
            per_blocks[blocks] = _forward_backward_s(wall, model, device)
        extra[local] = [
            (per_blocks[3][i] - per_blocks[1][i]) / 2 - dense for i, dense in enumerate((forward, backward))
        ]
    out, prefix = {}, "grouped_" if grouped else ""
    for i, way in enumerate(("forward", "backward")):
        per_expert = max((extra[8][i] - extra[2][i]) / 6, 0.0)
        out[f"{prefix}moe_{way}_s_per_expert"] = per_expert
        out[f"{prefix}moe_{way}_s_per_block"] = max(extra[2][i] - 2 * per_expert, 0.0)
    return out


def _tiny_llama(blocks: int, device: torch.device, *, local_experts: int = 0, grouped: bool = False) -> torch.nn.Module:
    from shardplan.llama import Llama

    cfg = {
        "vocab_size": 256,
        "hidden_size": 256,
        "num_attention_heads": 2,
        "intermediate_size": 512,
        "num_hidden_layers": blocks,
        "rms_norm_eps": 1e-5,
        "max_position_embeddings": 128,
    }
    if local_experts:
        cfg |= {
            "num_experts": 8,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 512,
            "local_experts": local_experts,
            "grouped_experts": grouped,
        }
    with device:
        return Llama(cfg)


def _forward_backward_s(wall: _Timer, model: torch.nn.Module, device: torch.device) -> tuple[float, float]:
    """Host seconds of one forward, and of one backward (forward + backward less the forward): 128 tokens on a GPU, 16
    on the CPU, which runs the kernels as well as dispatching them (its bf16 matmuls took 0.38 s of a 3-block step of
    128 tokens on a 2-core VM without bf16 instructions)."""
    length = 128 if device.type == "cuda" else 16
    tokens = torch.randint(0, 256, (1, length + 1), device=device)
    forward = wall(partial(model, tokens[:, :-1], tokens[:, 1:]))
    both = wall(lambda: model(tokens[:, :-1], tokens[:, 1:]).backward())
    return forward, max(both - forward, 0.0)


def _own_mesh(device: torch.device) -> tuple[Any, bool]:
    """A device mesh of this rank alone, and whether a process group was started for it: a one-rank
    group of its own when none is running; under torchrun one subgroup per rank."""
    from torch.distributed.device_mesh import DeviceMesh

    owns_group = not dist.is_initialized()
    if owns_group:
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
        group = dist.group.WORLD
    else:
        group, _ = dist.new_subgroups(group_size=1)
    return DeviceMesh.from_group(group, device.type), owns_group


def measure_collectives(timer: _Timer, device: torch.device, sizes: tuple[int, ...]) -> list[dict[str, Any]]:
    """Bus bandwidth (nccl-tests convention) of all-reduce, all-gather and reduce-scatter over the
    first g ranks for g = 2, 4, ... world size, per message size in bytes. Every rank calls it."""
    world, rank = dist.get_world_size(), dist.get_rank()
    rows = []
    g = 2
    while g <= world:
        group = dist.new_group(list(range(g)))
        for size in sizes:
            if rank >= g:
                continue
            numel = size // 2 // g * g
            buf = torch.randn(numel, device=device, dtype=torch.bfloat16)
            shard = torch.empty(numel // g, device=device, dtype=torch.bfloat16)
            for op, factor in (
                ("all_reduce", 2 * (g - 1) / g),
                ("all_gather", (g - 1) / g),
                ("reduce_scatter", (g - 1) / g),
            ):
                seconds = timer(partial(_collective, op, buf, shard, group))
                rows.append(
                    {"op": op, "ranks": g, "bytes": numel * 2, "busbw_gbps": numel * 2 * factor / seconds / 1e9}
                )
        g *= 2
    return rows


def measure_peers(timer: _Timer, device: torch.device, nbytes: int) -> list[dict[str, Any]]:
    """One-way point-to-point copy GB/s from rank i to rank j for every ordered pair (all ranks
    call it; pairs run one at a time)."""
    world, rank = dist.get_world_size(), dist.get_rank()
    buf = torch.randn(nbytes // 2, device=device, dtype=torch.bfloat16)
    rows = []
    for i in range(world):
        for j in range(world):
            if i == j:
                continue

            def send_recv(i: int = i, j: int = j) -> None:
                if rank == i:
                    dist.send(buf, j)
                elif rank == j:
                    dist.recv(buf, i)

            seconds = timer(send_recv)
            if rank == j:
                rows.append({"src": i, "dst": j, "gbps": nbytes / seconds / 1e9})
    gathered: list[list[dict[str, Any]]] = [[] for _ in range(world)]
    dist.all_gather_object(gathered, rows)
    return sorted((r for part in gathered for r in part), key=lambda r: (r["src"], r["dst"]))


def _gpu_key(device: torch.device) -> str:
    """The catalogue key of this GPU ('cpu' on the CPU; the raw name when the catalogue lacks it)."""
    if device.type != "cuda":
        return "cpu"
    from shardplan.topology.catalog import match_product_name

    name = torch.cuda.get_device_name(device)
    return match_product_name(name, torch.cuda.get_device_properties(device).total_memory) or name


def calibrate(*, quick: bool = False, device_type: str | None = None) -> dict[str, Any]:
    """Measure this process's device (and, under torchrun, the collectives of all ranks); the
    calibration file's content on rank 0. `quick` measures a few tiny shapes (tests, CPU)."""
    distributed = "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
    if device_type is None and not quick and not torch.cuda.is_available():
        # the full sweep's 8,192-wide GEMMs take many minutes on a CPU, and measure nothing a plan uses
        raise ShardplanError(
            "no CUDA GPU here: calibrate measures the GPU it runs on (under torchrun, the links between GPUs too); "
            "run it on a GPU node, or pass --device cpu (--quick for a few tiny shapes) to measure this CPU"
        )
    device_type = device_type or ("cuda" if torch.cuda.is_available() else "cpu")
    if device_type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    owns_group = distributed and not dist.is_initialized()
    if owns_group:
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    torch.manual_seed(0)
    timer = _Timer(device, warmup=1 if quick else 3, repeats=3 if quick else 10)
    widths = QUICK["widths"] if quick else WIDTHS
    tokens = QUICK["tokens"][0] if quick else 8192
    attention_cases = QUICK["attention"] if quick else ATTENTION
    attn_fwd, attn_bwd = measure_attention(timer, device, attention_cases)
    try:
        flash2_fwd, flash2_bwd = measure_attention(timer, device, attention_cases, SDPBackend.FLASH_ATTENTION)
    except RuntimeError:  # no FlashAttention-2 kernel for this device (the CPU, pre-Ampere GPUs)
        flash2_fwd, flash2_bwd = {}, {}
    result: dict[str, Any] = {
        "gpu": _gpu_key(device),
        "device_name": torch.cuda.get_device_name(device) if device_type == "cuda" else platform.processor() or "cpu",
        "gemm_tflops": measure_gemms(
            timer, device, _gemm_shapes(widths, QUICK["tokens"] if quick else TOKENS, QUICK["tp"] if quick else TP)
        ),
        "sdpa_causal_tflops": attn_fwd,
        "sdpa_causal_backward_tflops": attn_bwd,
        "flash2_causal_tflops": flash2_fwd,
        "flash2_causal_backward_tflops": flash2_bwd,
        "elementwise_gbps": measure_elementwise(timer, device, tokens, widths[-1 if quick else 1]),
        "loss_gbps": measure_loss(timer, device, tokens // 4 if not quick else tokens, 1024 if quick else 128256),
        **measure_copies(timer, device, 2**20 if quick else 2**30),
        "adamw_gbps": measure_adamw(timer, device, 2**16 if quick else 2**28),
        "host_dispatch": measure_host(device, repeats=5 if quick else 30),
    }
    if device_type == "cuda":  # compiling needs Triton on a GPU (on the CPU a C++ toolchain, which CI may lack)
        h, _, _, f = widths[-1 if quick else 1]  # all heads with keys and values: GQA's copies are not counted
        result |= measure_compiled_block(device, BLOCK_SEQ_LEN if quick else tokens, (h, h, h, f))
    if device_type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9):  # FP8 tensor cores
        shapes = _gemm_shapes(widths, QUICK["tokens"] if quick else TOKENS, QUICK["tp"] if quick else TP)
        result["gemm_fp8_tflops"] = measure_gemms_fp8(timer, device, shapes)
    if distributed:
        sizes = (2**10, 2**14) if quick else tuple(2**p for p in range(20, 31, 2))
        result["peer_copy_gbps"] = measure_peers(timer, device, 2**14 if quick else 2**28)
        result["collectives"] = measure_collectives(timer, device, sizes)
        dist.barrier()
    if device_type == "cuda":  # what the process holds outside PyTorch's allocator (context, NCCL buffers)
        free, total = torch.cuda.mem_get_info(device)
        result["context_bytes"] = total - free - torch.cuda.memory_reserved(device)
    result["versions"] = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "driver": _driver_version(),
        "python": platform.python_version(),
        "host": platform.node(),
        "ranks": int(os.environ.get("WORLD_SIZE", "1")),
    }
    if owns_group:
        dist.destroy_process_group()
    result["_source"] = (
        f"shardplan calibrate on {result['device_name']} ({result['versions']['ranks']} rank(s)), torch "
        f"{torch.__version__}, driver {result['versions']['driver']}; {'quick shapes' if quick else 'full sweep'}"
    )
    return result


def _driver_version() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        return str(pynvml.nvmlSystemGetDriverVersion())
    except Exception:  # no NVML (a CPU machine) is a normal case
        return None


def write(result: dict[str, Any]) -> str:
    """The calibration file's text."""
    return json.dumps(result, indent=2) + "\n"
