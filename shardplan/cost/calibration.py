"""Measured speeds of one GPU model (GEMM by shape, attention, memory bandwidth), and the rates the
cost model derives from them. Shipped files live in cost/calibration/*.json; `shardplan calibrate`
writes the same format. GPUs without a file use their datasheet peak scaled by the H100's measured
fraction (a labelled assumption)."""

from __future__ import annotations

import itertools
import json
import math
import statistics
from collections.abc import Callable
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from shardplan.errors import ShardplanError, describe_validation
from shardplan.textfile import read_text
from shardplan.topology.catalog import gpu_model

# the GPU whose measurements stand in for others (its file: `shardplan calibrate` on a real H100)
REFERENCE_GPU = "h100-sxm"
# Backward attention does 5 of the forward's 2 matmul passes (FlashAttention-2 paper, Dao 2023,
# Sec. 3.1: backward recomputes S and P and computes dV, dP, dS -> 2.5x the forward FLOPs).
ATTN_BWD_FLOPS_OVER_FWD = 2.5
# What PyTorch and NCCL hold outside the allocator (CUDA context with cuBLAS workspaces, NCCL
# channel buffers) where no calibration measured it. Assumption, typical for torch 2.x on Hopper.
DEFAULT_CONTEXT_BYTES = int(1.5 * 2**30)
ELEMENTWISE_OPS = ("rms_norm", "rope", "swiglu", "residual_add")
# FP8 GEMM scaling recipes `shardplan calibrate` measures: one scale per tensor with split (precise)
# accumulation, as float8 training runs its backward GEMMs; the same with fast accumulation, as it runs
# forward GEMMs (Transformer Engine and torchao's defaults); one scale per row (torchao's rowwise recipe).
FP8_RECIPES = ("tensorwise", "tensorwise_fast_accum", "rowwise")
# Architectures whose tensor-core peak needs instructions that Ampere-era kernels do not issue
# (Hopper's wgmma, Blackwell's tcgen05: NVIDIA's PTX ISA guide).
ASYNC_MMA_ARCHITECTURES = frozenset({"hopper", "blackwell"})
HOST_DISPATCH_KEYS = (
    "forward_s_per_block",
    "backward_s_per_block",
    "forward_s_fixed",
    "backward_s_fixed",
    # the same block under FSDP2's fully_shard (its hooks, copies and collective launches), and with its
    # linears as DTensor tensor parallelism (torchtitan's TP)
    "fsdp2_forward_s_per_block",
    "fsdp2_backward_s_per_block",
    "dtensor_tp_forward_s_per_block",
    "dtensor_tp_backward_s_per_block",
    # each block under torch.compile (a GPU's figure; 0 where not measured)
    "compiled_forward_s_per_block",
    "compiled_backward_s_per_block",
    # what a mixture-of-experts block adds to a dense one (`shardplan.llama.Experts`: router, host sync,
    # permutation, one expert after the other), fixed and per expert on the GPU (0 where not measured)
    "moe_forward_s_per_block",
    "moe_backward_s_per_block",
    "moe_forward_s_per_expert",
    "moe_backward_s_per_expert",
    # the same as torchtitan runs it (`Experts(grouped=True)`: no host sync, one grouped GEMM over the experts)
    "grouped_moe_forward_s_per_block",
    "grouped_moe_backward_s_per_block",
    "grouped_moe_forward_s_per_expert",
    "grouped_moe_backward_s_per_expert",
)


def elementwise_bytes_per_token(h: int, q: int, kv: int, f: int, *, swiglu: bool) -> dict[str, float]:
    """Bytes one instance of each memory-bound op of a transformer block reads and writes per token
    in the forward pass (bf16, each input read once, each output written once): a norm reads and
    writes h; RoPE reads and writes Q and K; SwiGLU reads gate and up (2f) and writes f (GeLU: f
    and f); a residual add reads 2h and writes h. The cost model takes backward as twice these."""
    return {
        "rms_norm": 2 * 2 * h,
        "rope": 2 * 2 * (q + kv),
        "swiglu": 2 * (3 * f if swiglu else 2 * f),
        "residual_add": 2 * 3 * h,
    }


SWEEP_HEAD_DIM = 128  # the head dim of calibrate's sequence sweep; other head dims scale its rates

Rate = Annotated[float, Field(gt=0, allow_inf_nan=False)]  # a measured speed
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
GemmShape = Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]*x[1-9][0-9]*x[1-9][0-9]*$")]  # "MxNxK"
AttentionShape = Annotated[str, StringConstraints(pattern=r"^b[1-9][0-9]*_h[1-9][0-9]*_s[1-9][0-9]*_d[1-9][0-9]*$")]


class CollectiveRate(BaseModel):
    """A collective `shardplan calibrate` timed under torchrun over the first `ranks` ranks (GPUs 0 .. ranks - 1 in
    torchrun's order)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    op: Literal["all_reduce", "all_gather", "reduce_scatter"]
    ranks: int = Field(ge=2)
    bytes: int = Field(gt=0, description="Buffer per rank, as nccl-tests counts it.")
    busbw_gbps: Rate = Field(description="Bus bandwidth, nccl-tests' convention.")


class Calibration(BaseModel):
    """Measurements of one GPU model, as `shardplan calibrate` writes them."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    gpu: str = Field(description="Catalogue key of the GPU measured.")
    source: str = Field("", alias="_source", description="Where and how it was measured.")
    gemm_tflops: dict[GemmShape, Rate] = Field(min_length=1, description="bf16 GEMM TFLOP/s by 'MxNxK'.")
    gemm_fp8_tflops: dict[str, dict[GemmShape, Rate]] = Field(
        {}, description="FP8 GEMM TFLOP/s by scaling recipe (FP8_RECIPES) and 'MxNxK' (GPUs with FP8 tensor cores)."
    )
    sdpa_causal_tflops: dict[AttentionShape, Rate] = Field(
        min_length=1, description="Causal attention TFLOP/s (causal FLOPs)."
    )
    sdpa_causal_backward_tflops: dict[AttentionShape, Rate] = Field(
        {}, description="Causal attention backward TFLOP/s (ATTN_BWD_FLOPS_OVER_FWD x causal forward FLOPs)."
    )
    flash2_causal_tflops: dict[AttentionShape, Rate] = Field(
        {}, description="As sdpa_causal_tflops, SDPA held to its FlashAttention-2 backend."
    )
    flash2_causal_backward_tflops: dict[AttentionShape, Rate] = Field(
        {}, description="As sdpa_causal_backward_tflops, SDPA held to its FlashAttention-2 backend."
    )
    elementwise_gbps: dict[str, Rate] = Field(
        {}, description="Forward + backward of each memory-bound op, GB/s of the bytes the cost model counts."
    )
    compiled_block_gbps: Rate | None = Field(
        None,
        description="A Llama block under torch.compile, forward + backward: GB/s of the bytes the cost model counts "
        "for its memory-bound ops over its kernels other than GEMMs and attention (measured on GPUs).",
    )
    compiled_fp8_cast_gbps: Rate | None = Field(
        None,
        description="The same block with FP8 linears: GB/s of the FP8 cast bytes the cost model counts over what its "
        "kernels other than GEMMs and attention add to the bf16 block's (GPUs with FP8 tensor cores).",
    )
    loss_gbps: Rate | None = Field(None, description="fp32 cross-entropy, GB/s of 6 fp32 passes over logits.")
    adamw_gbps: Rate | None = Field(None, description="Fused AdamW, GB/s of 28 bytes per parameter.")
    d2d_rw_gbps: Rate = Field(description="Device-to-device copy, read + write bytes per second / 1e9.")
    h2d_gbps: Rate | None = Field(None, description="Pinned host-to-device copy, GB/s.")
    context_bytes: int | None = Field(None, ge=0, description="Device memory held outside PyTorch's allocator.")
    host_dispatch: dict[str, Seconds] = Field(
        {}, description="Host seconds of eager forward/backward per block and fixed (calibrate.measure_host)."
    )
    collectives: tuple[CollectiveRate, ...] = Field(
        (), description="Collectives over the first 2, 4, ... ranks (under torchrun): `cost.link_scale` reads them."
    )

    @field_validator("gemm_tflops")
    @classmethod
    def _fits_a_peak(cls, table: dict[str, float]) -> dict[str, float]:
        _fit_gemm(table)
        return table

    @field_validator("gemm_fp8_tflops")
    @classmethod
    def _each_fits_a_peak(cls, tables: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for recipe, table in tables.items():
            if table:
                try:
                    _fit_gemm(table)
                except ValueError as err:
                    raise ValueError(f"{recipe}: {err}") from None
        return tables


class Rates(BaseModel):
    """What the cost model uses: GEMM time = flops / gemm_peak_flops + gemm_overhead_s; memory-bound
    work at its measured rate (the plain copy rate where nothing better was measured)."""

    model_config = ConfigDict(frozen=True)

    gemm_peak_flops: float = Field(description="Sustained bf16 GEMM FLOP/s for large shapes.")
    gemm_overhead_s: float = Field(description="Fixed time per GEMM (launch, wave tail).")
    fp8_gemm: dict[str, tuple[float, float]] = Field(
        {}, description="(peak FLOP/s, fixed seconds) of FP8 GEMMs by recipe; empty without FP8 tensor cores."
    )
    attention_flops: dict[int, float] = Field(
        description="Causal attention forward FLOP/s (flash / SDPA) by sequence length (`at_seq` reads it)."
    )
    attention_bwd_flops: dict[int, float] = Field(description="Causal attention backward FLOP/s by sequence length.")
    flash2_flops: dict[int, float] = Field(
        description="Causal attention forward FLOP/s of the FlashAttention-2 kernels by sequence length."
    )
    flash2_bwd_flops: dict[int, float] = Field(
        description="Causal attention backward FLOP/s of the FlashAttention-2 kernels by sequence length."
    )
    attention_head_dim: dict[str, dict[int, float]] = Field(
        {},
        description="Each attention rate (attention, attention_bwd, flash2, flash2_bwd) at other head dims over its "
        "rate at 128 (`at_head_dim` reads it); empty: 1 at every head dim.",
    )
    hbm_bytes_per_s: float = Field(description="Achievable memory traffic (read + write), bytes/s.")
    elementwise_bytes_per_s: dict[str, float] = Field(description="Rate of each memory-bound op (ELEMENTWISE_OPS).")
    compiled_block_bytes_per_s: float | None = Field(
        None, description="All of a block's memory-bound ops under torch.compile (None: not measured, eager rates)."
    )
    fp8_cast_compiled_bytes_per_s: float | None = Field(
        None, description="FP8 casts fused into a compiled block (None: not measured, the copy rate)."
    )
    loss_bytes_per_s: float
    adamw_bytes_per_s: float
    context_bytes: float = Field(description="Device memory outside the allocator per GPU.")
    host_dispatch: dict[str, float] = Field(
        description="Host seconds per block and fixed, forward and backward: a micro-batch takes at least these."
    )
    source: str


def _fit_gemm(table: dict[str, float]) -> tuple[float, float]:
    """Least squares, in relative error, of time = flops / peak + overhead over a GEMM table (TFLOP/s
    by 'MxNxK'): with x = flops / t and y = 1 / t, minimise sum((x / peak + y * overhead - 1)^2), a
    2x2 linear solve. `calibrate` times each GEMM from an event recorded before its launch, so the overhead
    holds the host's dispatch too: 709-728 TFLOP/s and 26-29 us on H100s, where the GPU alone fits 791 TFLOP/s and
    6.5 us (benchmarks/results/h100-launch-latency). Kept: it has fit GPU-bound training on six H100s, which the
    GPU's own rates would put about 10% fast; profiled, those steps' GEMMs run 4% below the GPU-alone rates, and the
    rest of the overhead pays for kernels the model does not count (benchmarks/results/h100-kernel-split)."""
    xs, ys = [], []
    for shape, tflops in table.items():
        m, n, k = (int(v) for v in shape.split("x"))
        flops = 2 * m * n * k
        t = flops / (tflops * 1e12)
        xs.append(flops / t)
        ys.append(1 / t)
    sxx, sxy, syy = sum(x * x for x in xs), sum(x * y for x, y in zip(xs, ys, strict=True)), sum(y * y for y in ys)
    sx, sy = sum(xs), sum(ys)
    det = sxx * syy - sxy * sxy
    if det <= 1e-9 * sxx * syy:  # one shape, or shapes whose times tell no overhead apart: the fit without one
        return sxx / sx, 0.0
    inv_peak = (sx * syy - sy * sxy) / det
    if inv_peak <= 0:
        raise ValueError(
            "these times fit no positive peak (time = flops / peak + overhead): expected rates that rise toward a "
            "ceiling as GEMMs grow"
        )
    overhead = (sy * sxx - sx * sxy) / det
    return 1 / inv_peak, max(overhead, 0.0)


def read_calibration(path: Path | str) -> Calibration:
    """A calibration file; errors name the file and field."""
    path = Path(path)
    text = read_text(path, what="calibration file")
    try:
        return Calibration.model_validate(json.loads(text))
    except json.JSONDecodeError as exc:
        raise ShardplanError(f"{path}: line {exc.lineno}: not valid JSON") from None
    except ValidationError as err:
        raise ShardplanError(f"{path}: {describe_validation(err)}") from None


@cache
def shipped_calibration(gpu: str) -> Calibration | None:
    """The calibration shipped for `gpu`, if any."""
    file = resources.files("shardplan").joinpath(f"cost/calibration/{gpu}.json")
    return Calibration.model_validate(json.loads(file.read_text())) if file.is_file() else None


# id(calibration) -> (the calibration, held so that no other object takes its id; its rates)
_RATES_OF: dict[int, tuple[Calibration, Rates]] = {}


def _rates_from(cal: Calibration) -> Rates:
    """`cal`'s rates, worked out once per calibration object: the search asks for them per layout,
    and serialising the file to find them in `_rates_from_json`'s cache took longer than costing."""
    hit = _RATES_OF.get(id(cal))
    if hit is None:
        if len(_RATES_OF) >= 64:
            _RATES_OF.clear()
        hit = _RATES_OF[id(cal)] = (cal, _rates_from_json(cal.model_dump_json(by_alias=True)))
    return hit[1]


@cache
def _rates_from_json(text: str) -> Rates:
    cal = Calibration.model_validate_json(text)
    peak, overhead = _fit_gemm(cal.gemm_tflops)
    hbm = cal.d2d_rw_gbps * 1e9
    attention = _by_seq(cal.sdpa_causal_tflops)
    backward = _by_seq(cal.sdpa_causal_backward_tflops or cal.sdpa_causal_tflops)
    eager = {op: cal.elementwise_gbps.get(op, cal.d2d_rw_gbps) * 1e9 for op in ELEMENTWISE_OPS}
    return Rates(
        gemm_peak_flops=peak,
        gemm_overhead_s=overhead,
        fp8_gemm={recipe: _fit_gemm(table) for recipe, table in cal.gemm_fp8_tflops.items() if table},
        attention_flops=attention,
        attention_bwd_flops=backward,
        # where FlashAttention-2 was not measured apart, SDPA's own pick stands in (on Ampere and Ada
        # that pick is FlashAttention-2: PyTorch's SDPA tries its flash backend first)
        flash2_flops=_by_seq(cal.flash2_causal_tflops) or attention,
        flash2_bwd_flops=_by_seq(cal.flash2_causal_backward_tflops) or backward,
        attention_head_dim=_head_dims(cal),
        hbm_bytes_per_s=hbm,
        elementwise_bytes_per_s=eager,
        compiled_block_bytes_per_s=cal.compiled_block_gbps and cal.compiled_block_gbps * 1e9,
        fp8_cast_compiled_bytes_per_s=cal.compiled_fp8_cast_gbps and cal.compiled_fp8_cast_gbps * 1e9,
        loss_bytes_per_s=(cal.loss_gbps or cal.d2d_rw_gbps) * 1e9,
        adamw_bytes_per_s=(cal.adamw_gbps or cal.d2d_rw_gbps) * 1e9,
        context_bytes=DEFAULT_CONTEXT_BYTES if cal.context_bytes is None else cal.context_bytes,
        host_dispatch={key: cal.host_dispatch.get(key, 0.0) for key in HOST_DISPATCH_KEYS},
        source=cal.source or f"calibration of {cal.gpu}",
    )


def _head_dims(cal: Calibration) -> dict[str, dict[int, float]]:
    """`Rates.attention_head_dim` of a calibration; FlashAttention-2's as SDPA's where it was not measured apart."""
    fwd = _by_head_dim(cal.sdpa_causal_tflops)
    bwd = _by_head_dim(cal.sdpa_causal_backward_tflops or cal.sdpa_causal_tflops)
    factors = {
        "attention": fwd,
        "attention_bwd": bwd,
        "flash2": _by_head_dim(cal.flash2_causal_tflops) or fwd,
        "flash2_bwd": _by_head_dim(cal.flash2_causal_backward_tflops) or bwd,
    }
    return {key: table for key, table in factors.items() if table}


def _shapes(by_shape: dict[str, float]) -> dict[tuple[int, ...], float]:
    """TFLOP/s by (batch, heads, sequence, head dim) from keys "b{batch}_h{heads}_s{seq}_d{head_dim}"."""
    return {tuple(int(part[1:]) for part in shape.split("_")): tflops for shape, tflops in by_shape.items()}


def _by_seq(by_shape: dict[str, float]) -> dict[int, float]:
    """FLOP/s by sequence length from TFLOP/s by shape, heads of 128 (the sweep's), the median where
    shapes share a length. Shapes of fewer than 2^17 tokens x heads are left out where larger ones
    were measured (calibrate's sweep has 2^18 at every length): too little work to fill the GPU,
    their rate tells the launch rather than the sequence length."""
    shapes = {shape: tflops for shape, tflops in _shapes(by_shape).items() if shape[3] == SWEEP_HEAD_DIM}
    large = {shape: tflops for shape, tflops in shapes.items() if shape[0] * shape[1] * shape[2] >= 2**17}
    seqs: dict[int, list[float]] = {}
    for (_, _, seq, _), tflops in (large or shapes).items():
        seqs.setdefault(seq, []).append(tflops * 1e12)
    return {seq: statistics.median(v) for seq, v in sorted(seqs.items())}


def _by_head_dim(by_shape: dict[str, float]) -> dict[int, float]:
    """The rate at each head dimension measured over the rate with heads of 128 at the same sequence length and
    FLOPs (calibrate: 4,096 tokens a sequence), 1 at 128; empty where no other head dim was measured."""
    shapes = _shapes(by_shape)
    factors = {}
    for (_, _, seq, dim), tflops in shapes.items():
        same = [t for (_, _, s, d), t in shapes.items() if d == SWEEP_HEAD_DIM and s == seq]
        if dim != SWEEP_HEAD_DIM and same:
            factors[dim] = tflops / statistics.median(same)
    return {SWEEP_HEAD_DIM: 1.0, **factors} if factors else {}


def at_head_dim(factors: dict[int, float], head_dim: int) -> float:
    """`_by_head_dim`'s factor at `head_dim`, read as `at_seq` reads lengths (log2-linear, the nearest outside the
    measured ones); 1 where none was measured."""
    return at_seq(factors, head_dim) if factors else 1.0


def at_seq(by_seq: dict[int, float], seq_len: int) -> float:
    """A rate measured at some sequence lengths, at `seq_len`: linear in log2 of the length between
    the two measured around it; the nearest measured one outside them."""
    points = sorted(by_seq.items())
    if seq_len <= points[0][0]:
        return points[0][1]
    for (s0, r0), (s1, r1) in itertools.pairwise(points):
        if seq_len <= s1:
            w = math.log2(seq_len / s0) / math.log2(s1 / s0)
            return r0 * (1 - w) + r1 * w  # not r0 + (r1 - r0) w, which rounds to 0 at w = 1 where r0 >> r1
    return points[-1][1]


def rates_for(gpu: str, calibration: Calibration | None = None) -> Rates:
    """Rates for GPU model `gpu`: from `calibration` if it is for that GPU, else the shipped file,
    else the reference GPU's measured fractions of its datasheet applied to this GPU's datasheet."""
    for cal in (calibration, shipped_calibration(gpu)):
        if cal is not None and cal.gpu == gpu:
            return _rates_from(cal)
    return _scaled_rates(gpu)


@cache
def _scaled_rates(gpu: str) -> Rates:
    """The reference GPU's measured rates scaled to `gpu`'s datasheet; one object per GPU model, as the cost
    model's memos key stage times by the rates object."""
    ref_cal = shipped_calibration(REFERENCE_GPU)
    if ref_cal is None:  # pragma: no cover - the package ships it
        raise ShardplanError(f"the shipped calibration for {REFERENCE_GPU} is missing; reinstall shardplan")
    ref, ref_spec, spec = _rates_from(ref_cal), gpu_model(REFERENCE_GPU), gpu_model(gpu)
    compute = spec.bf16_dense_tflops / ref_spec.bf16_dense_tflops
    # FlashAttention-2 uses Ampere's tensor-core instructions: on Hopper and Blackwell it reaches a
    # smaller share of the peak than the best kernel (measured on the H100 at every sequence length:
    # benchmarks/results/h100-attention-seq), on older GPUs it is the best kernel (SDPA's own pick)
    flash2 = ref.flash2_flops, ref.flash2_bwd_flops
    head_dims = dict(ref.attention_head_dim)
    if spec.architecture not in ASYNC_MMA_ARCHITECTURES:
        flash2 = ref.attention_flops, ref.attention_bwd_flops
        # there SDPA runs FlashAttention-2 too: its rate by head dim, as measured on the reference GPU, for both
        pairs = {"attention": "flash2", "attention_bwd": "flash2_bwd", "flash2": "flash2", "flash2_bwd": "flash2_bwd"}
        head_dims = {kernel: ref.attention_head_dim[like] for kernel, like in pairs.items() if like in head_dims}
    memory = spec.hbm_gbps / ref_spec.hbm_gbps
    return Rates(
        gemm_peak_flops=ref.gemm_peak_flops * compute,
        gemm_overhead_s=ref.gemm_overhead_s,
        fp8_gemm={
            recipe: (peak * spec.fp8_dense_tflops / ref_spec.fp8_dense_tflops, overhead)
            for recipe, (peak, overhead) in ref.fp8_gemm.items()
            if spec.fp8_dense_tflops
        },
        attention_flops={s: r * compute for s, r in ref.attention_flops.items()},
        attention_bwd_flops={s: r * compute for s, r in ref.attention_bwd_flops.items()},
        flash2_flops={s: r * compute for s, r in flash2[0].items()},
        flash2_bwd_flops={s: r * compute for s, r in flash2[1].items()},
        attention_head_dim=head_dims,  # the reference GPU's, assumed alike
        hbm_bytes_per_s=ref.hbm_bytes_per_s * memory,
        elementwise_bytes_per_s={op: rate * memory for op, rate in ref.elementwise_bytes_per_s.items()},
        compiled_block_bytes_per_s=ref.compiled_block_bytes_per_s and ref.compiled_block_bytes_per_s * memory,
        fp8_cast_compiled_bytes_per_s=ref.fp8_cast_compiled_bytes_per_s and ref.fp8_cast_compiled_bytes_per_s * memory,
        loss_bytes_per_s=ref.loss_bytes_per_s * memory,
        adamw_bytes_per_s=ref.adamw_bytes_per_s * memory,
        context_bytes=ref.context_bytes,
        host_dispatch=ref.host_dispatch,  # a property of the host and PyTorch, assumed alike
        source=f"assumption: {gpu} datasheet x the fractions measured on {REFERENCE_GPU} ({ref.source[:60]}...)",
    )


_FASTEST: dict[tuple, tuple[Calibration | None, Rates]] = {}


def fastest_rates(gpus: tuple[str, ...], calibration: Calibration | None = None) -> Rates:
    """Rates no GPU model of `gpus` beats at any part of a step: each rate the highest of theirs, each fixed time
    the lowest. What bounds a pipeline on a mixed cluster, whose stages may each run on any of the models: the one
    of the highest peak need not be the fastest at everything (an L40S's bf16 peak beside an A100's memory)."""
    keys = tuple(sorted(set(gpus)))
    if len(keys) == 1:
        return rates_for(keys[0], calibration)
    held = _FASTEST.get((keys, id(calibration)))
    if held is None or held[0] is not calibration:  # ids reused
        held = _FASTEST[keys, id(calibration)] = (calibration, _fastest_of([rates_for(k, calibration) for k in keys]))
    return held[1]


def _fastest_of(models: list[Rates]) -> Rates:
    """Each rate at its highest over `models`: tables by sequence length or head dim over all their points,
    where each model reads as `at_seq` reads it (between points the highest's line is at or above every model's);
    fixed times at their lowest; the host's times where the models share them, else none."""

    def by_point(tables: list[dict[int, float]]) -> dict[int, float]:
        points = sorted({p for table in tables for p in table})
        return {p: max(at_seq(table, p) for table in tables) for p in points}

    def highest(name: str) -> dict[str, float]:
        tables = [getattr(r, name) for r in models]
        return {key: max(table[key] for table in tables) for key in tables[0]}

    def highest_measured(name: str, ceiling: Callable[[Rates], float]) -> float | None:
        """The highest of a rate that some models measured (None where none did); a model without it counts with
        `ceiling`, at or above what it uses in its place, so that the result is no slower than any model."""
        rates = [getattr(r, name) for r in models]
        if not any(rates):
            return None
        return max(rate or ceiling(r) for rate, r in zip(rates, models, strict=True))

    recipes = {recipe for r in models for recipe in r.fp8_gemm}
    kernels = {kernel for r in models for kernel in r.attention_head_dim}
    host = models[0].host_dispatch  # the host's, alike for every model unless calibrations say otherwise: then none
    if any(r.host_dispatch != host for r in models):
        host = dict.fromkeys(host, 0.0)
    return Rates(
        gemm_peak_flops=max(r.gemm_peak_flops for r in models),
        gemm_overhead_s=min(r.gemm_overhead_s for r in models),
        fp8_gemm={
            recipe: (
                max(r.fp8_gemm[recipe][0] for r in models if recipe in r.fp8_gemm),
                min(r.fp8_gemm[recipe][1] for r in models if recipe in r.fp8_gemm),
            )
            for recipe in recipes
        },
        attention_flops=by_point([r.attention_flops for r in models]),
        attention_bwd_flops=by_point([r.attention_bwd_flops for r in models]),
        flash2_flops=by_point([r.flash2_flops for r in models]),
        flash2_bwd_flops=by_point([r.flash2_bwd_flops for r in models]),
        attention_head_dim={
            kernel: by_point([r.attention_head_dim.get(kernel) or {128: 1.0} for r in models]) for kernel in kernels
        },
        hbm_bytes_per_s=max(r.hbm_bytes_per_s for r in models),
        elementwise_bytes_per_s=highest("elementwise_bytes_per_s"),
        compiled_block_bytes_per_s=highest_measured(
            "compiled_block_bytes_per_s", lambda r: max(r.elementwise_bytes_per_s.values())
        ),
        fp8_cast_compiled_bytes_per_s=highest_measured("fp8_cast_compiled_bytes_per_s", lambda r: r.hbm_bytes_per_s),
        loss_bytes_per_s=max(r.loss_bytes_per_s for r in models),
        adamw_bytes_per_s=max(r.adamw_bytes_per_s for r in models),
        context_bytes=max(r.context_bytes for r in models),  # memory: what the fullest GPU holds
        host_dispatch=host,
        source="the fastest at each part of: " + "; ".join(r.source[:40] for r in models),
    )
