"""Train Llama-style models on one GPU and compare measured step time and peak memory with `estimate()`.

    python benchmarks/real_training.py [--calibration FILE] [--out DIR]        # on a GPU: measure + estimate
    python benchmarks/real_training.py --reestimate RESULTS.json [--calibration FILE]   # estimates only

The model is written here in plain PyTorch, as Llama-2 is (RMSNorm, rotary embeddings, multi-head
causal attention through `scaled_dot_product_attention`, SwiGLU MLP, untied output head, fp32
cross-entropy). Training is mixed precision as Megatron-LM does it: bf16 weights for compute, each
micro-batch's bf16 weight gradients added into persistent fp32 gradient buffers, fused AdamW on fp32
master weights, then the bf16 weights rewritten from the masters. Each case runs WARMUP steps, then
STEPS timed steps (device events); the median step time and the allocator's peaks are recorded.
`estimate()` gets the same model (its ModelSpec is checked against the module's parameter count),
the same batch, one GPU of the model measured (benchmarks/machines/GPU-1gpu.yaml, GPU the catalogue's name for the
device), and the calibration file `shardplan calibrate` wrote on the same GPU, or without one the rates shardplan
ships for that model (an H200's are the H100's calibration scaled by the datasheets): nothing here is tuned per case.

Writes RESULTS.json (one entry per case) and a Markdown table with the errors next to it.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shardplan import Training, estimate  # noqa: E402
from shardplan.cost.calibration import read_calibration  # noqa: E402
from shardplan.model.hf_config import spec_from_config  # noqa: E402
from shardplan.model.schema import ModelSpec  # noqa: E402
from shardplan.topology import load_topology  # noqa: E402
from shardplan.topology.catalog import match_product_name  # noqa: E402

MACHINES = ROOT / "benchmarks/machines"  # GPU-1gpu.yaml: one GPU of the catalogue's model GPU
WARMUP, STEPS = 3, 8

# Llama-2-style shapes (head_dim 128, vocab 32000, untied head), ~0.55B, ~1.2B and ~2.7B parameters.
MODELS: dict[str, dict[str, int]] = {
    "llama-0.5b": {"hidden_size": 1536, "num_attention_heads": 12, "intermediate_size": 4096, "num_hidden_layers": 16},
    "llama-1.2b": {"hidden_size": 2048, "num_attention_heads": 16, "intermediate_size": 5504, "num_hidden_layers": 22},
    "llama-2.7b": {"hidden_size": 2560, "num_attention_heads": 20, "intermediate_size": 6912, "num_hidden_layers": 32},
    # Llama-2-7B's width with 8 of its 32 blocks (~1.9B): 7B-sized GEMMs that fit one GPU with Adam
    "llama-7b-8l": {"hidden_size": 4096, "num_attention_heads": 32, "intermediate_size": 11008, "num_hidden_layers": 8},
}


@dataclass(frozen=True)
class Case:
    """One training configuration: model, sequence length, micro-batch, recompute, micro-batches per step."""

    model: str
    seq_len: int
    micro_batch: int
    recompute: str = "none"
    num_micro: int = 1
    dtype: str = "bf16"  # or "fp8": the blocks' linears as shardplan.llama.Float8Linear
    compiled: bool = False  # each block under torch.compile

    @property
    def name(self) -> str:
        accumulate = f" x{self.num_micro}" if self.num_micro > 1 else ""
        extra = (" fp8" if self.dtype == "fp8" else "") + (" compiled" if self.compiled else "")
        return f"{self.model} s{self.seq_len} mb{self.micro_batch}{accumulate} rc-{self.recompute}{extra}"


CASES = (
    Case("llama-0.5b", 2048, 1),
    Case("llama-0.5b", 2048, 8),
    Case("llama-0.5b", 4096, 4),
    Case("llama-0.5b", 8192, 2, "full"),
    Case("llama-1.2b", 2048, 4),
    Case("llama-1.2b", 4096, 2, num_micro=2),
    Case("llama-1.2b", 8192, 1),
    Case("llama-1.2b", 8192, 4, "full"),
    Case("llama-2.7b", 2048, 2),
    Case("llama-2.7b", 4096, 1),
    Case("llama-2.7b", 4096, 8, "full"),
    Case("llama-2.7b", 8192, 2, "full"),
    Case("llama-2.7b", 4096, 2),  # near the edge: the estimate says it fits
    Case("llama-2.7b", 2048, 6),  # the estimate says it does not fit
    # torchtitan's op-level selective recompute (its Llama 3 8B default)
    Case("llama-0.5b", 8192, 4, "selective-op"),
    Case("llama-1.2b", 8192, 2, "selective-op"),
    Case("llama-1.2b", 2048, 8, "selective-op"),
    Case("llama-2.7b", 4096, 2, "selective-op"),
    Case("llama-7b-8l", 4096, 4),
    Case("llama-7b-8l", 4096, 8, "full"),
)

# FP8 linears (torchao's tensorwise recipe, written out in shardplan.llama) against the same models in
# bf16, all with compiled blocks as torchtitan runs float8: `--cases fp8`
FP8_CASES = tuple(
    Case(model, seq, mb, recompute, dtype=dtype, compiled=True)
    for model, seq, mb, recompute in (
        ("llama-1.2b", 4096, 2, "none"),
        ("llama-2.7b", 4096, 2, "none"),
        ("llama-7b-8l", 4096, 4, "none"),
        ("llama-7b-8l", 8192, 4, "full"),
    )
    for dtype in ("bf16", "fp8")
)


def model_config(name: str, seq_len: int) -> dict[str, Any]:
    """The Hugging Face style config.json of a benchmark model."""
    shape = MODELS[name]
    return {
        "model_type": "llama",
        "vocab_size": 32000,
        "num_key_value_heads": shape["num_attention_heads"],
        "max_position_embeddings": seq_len,
        "tie_word_embeddings": False,
        "rms_norm_eps": 1e-5,
        **shape,
    }


def spec_of(case: Case) -> ModelSpec:
    return spec_from_config(model_config(case.model, case.seq_len), "benchmarks/real_training.py", name=case.model)


def gpu_of(facts: dict[str, Any]) -> str:
    """The catalogue's name of the GPU a run measured (`device_facts`)."""
    gpu = match_product_name(facts["device"], facts["total_bytes"])
    if gpu is None:
        raise SystemExit(f"{facts['device']}: not in shardplan's GPU catalogue")
    return gpu


def training_of(case: Case) -> Training:
    """What one optimizer step of `case` trains: its micro-batches of one GPU, without ZeRO or sequence parallelism."""
    return Training(
        global_batch=case.micro_batch * case.num_micro,
        seq_len=case.seq_len,
        recompute=case.recompute,  # type: ignore[arg-type]
        zero_stage=0,
        sequence_parallel=False,
        dtype=case.dtype,  # type: ignore[arg-type]
        compiled=case.compiled,
        loss="fp32",  # shardplan/llama.py: cross_entropy(logits.float())
    )


def estimate_case(case: Case, gpu: str, calibration: Path | None) -> dict[str, Any]:
    plan = estimate(
        spec_of(case),
        load_topology(MACHINES / f"{gpu}-1gpu.yaml"),
        training_of(case),
        tp=1,
        pp=1,
        dp=1,
        micro_batch=case.micro_batch,
        calibration=calibration,
    )
    return {
        "estimated_step_time_s": plan.step_time_s,
        "estimated_memory_bytes": plan.memory_per_gpu_bytes,
        "estimated_fits": plan.fits,
        "estimated_breakdown_s": plan.breakdown,
        "estimated_memory_breakdown": plan.memory_breakdown,
    }


# --- measurement (torch only from here) -----------------------------------------------------------


def measure_case(case: Case, profile: Path | None = None, steps: int = STEPS) -> dict[str, Any]:
    """Train `case` on cuda:0; the measured figures, or {'oom': True, ...} when it runs out of memory."""
    import torch

    torch.manual_seed(0)
    try:
        return {"oom": False, **_train(case, profile, steps)}
    except torch.cuda.OutOfMemoryError as exc:
        return {"oom": True, "error": str(exc).splitlines()[0][:300], "measured_max_allocated_bytes": None}
    finally:
        gc.collect()
        torch.cuda.empty_cache()


def _train(case: Case, profile: Path | None, steps: int) -> dict[str, Any]:
    """Warm-up and timed steps of `case`. With `profile`, one more step runs under torch.profiler and
    its kernel table is written there."""
    import torch

    from shardplan.llama import Llama, MixedPrecisionAdamW, compile_blocks, float8_linears

    cfg = model_config(case.model, case.seq_len)
    with torch.device("cuda"):
        model = Llama(cfg)
    if case.dtype == "fp8":
        float8_linears(model.blocks)
    if case.compiled:
        # a fresh run's compiler: the graphs of earlier cases would make the dims that differ here dynamic (PyTorch's
        # automatic dynamic shapes), whose kernels a training run that compiles once never runs
        torch._dynamo.reset()
        compile_blocks(model)
    params = sum(p.numel() for p in model.parameters())
    if params != spec_of(case).num_params:
        raise SystemExit(f"{case.name}: module has {params} parameters, ModelSpec {spec_of(case).num_params}")
    opt = MixedPrecisionAdamW(model)
    tokens = torch.randint(0, cfg["vocab_size"], (case.num_micro, case.micro_batch, case.seq_len + 1), device="cuda")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times, parts = [], []

    def mark(marks: list[torch.cuda.Event]) -> None:
        marks.append(torch.cuda.Event(enable_timing=True))
        marks[-1].record()

    def train_step(marks: list[torch.cuda.Event]) -> torch.Tensor:
        """One optimiser step; `marks` gets an event before it, after each forward and each
        backward, and after the optimizer."""
        mark(marks)
        for micro in range(case.num_micro):
            inputs, labels = tokens[micro, :, :-1], tokens[micro, :, 1:]
            loss = model(inputs, labels, recompute=case.recompute) / case.num_micro
            mark(marks)
            loss.backward()
            mark(marks)
        opt.step()
        mark(marks)
        return loss

    for step in range(WARMUP + steps):
        marks: list[torch.cuda.Event] = []
        loss = train_step(marks)
        marks[-1].synchronize()
        if step >= WARMUP:
            spans = [a.elapsed_time(b) / 1e3 for a, b in itertools.pairwise(marks)]
            times.append(sum(spans))
            parts.append((sum(spans[0:-1:2]), sum(spans[1:-1:2]), spans[-1]))
    result = dict(
        measured_step_time_s=statistics.median(times),
        measured_step_times_s=times,
        measured_forward_s=statistics.median(p[0] for p in parts),
        measured_backward_s=statistics.median(p[1] for p in parts),
        measured_optimizer_s=statistics.median(p[2] for p in parts),
        measured_max_allocated_bytes=torch.cuda.max_memory_allocated(),
        measured_max_reserved_bytes=torch.cuda.max_memory_reserved(),
        final_loss=float(loss.detach().item()) * case.num_micro,
        params=params,
    )
    free, total = torch.cuda.mem_get_info()
    result["measured_outside_allocator_bytes"] = total - free - torch.cuda.memory_reserved()
    if profile is not None:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            train_step([])
            torch.cuda.synchronize()
        events = prof.key_averages()
        table = events.table(sort_by="self_cuda_time_total", row_limit=60, max_name_column_width=90)
        kernels = {e.key: [e.count, e.self_device_time_total] for e in events if e.self_device_time_total > 0}
        profile.mkdir(parents=True, exist_ok=True)
        stem = case.name.replace(" ", "_")
        (profile / f"{stem}.txt").write_text(table)
        # every kernel: calls and microseconds on the GPU (scripts/kernel_split.py sorts them)
        (profile / f"{stem}.json").write_text(json.dumps(kernels, indent=1))
    return result


def device_facts() -> dict[str, Any]:
    import torch

    torch.cuda.init()
    free, total = torch.cuda.mem_get_info()
    return {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "total_bytes": total,
        "context_bytes": total - free,  # before any tensor: the CUDA context and libraries
        "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF"),
    }


# --- report ----------------------------------------------------------------------------------------


def _err(estimated: float, measured: float) -> float:
    return (estimated - measured) / measured


def add_errors(row: dict[str, Any]) -> None:
    """Measured peak device memory = allocator peak reserved + what the process holds outside it."""
    if row["oom"]:
        row["measured_peak_memory_bytes"] = None
        return
    row["measured_peak_memory_bytes"] = row["measured_max_reserved_bytes"] + row["measured_outside_allocator_bytes"]
    row["step_time_error"] = _err(row["estimated_step_time_s"], row["measured_step_time_s"])
    row["memory_error"] = _err(row["estimated_memory_bytes"], row["measured_peak_memory_bytes"])


def markdown(facts: dict[str, Any], rows: list[dict[str, Any]], calibration: Path | None) -> str:
    gb = 1e9
    steps = max((len(r.get("measured_step_times_s") or []) for r in rows), default=STEPS)
    rates = (
        f"`{calibration.name}` (from `shardplan calibrate` on the same GPU, before these runs)"
        if calibration
        else f"the rates shardplan ships for {gpu_of(facts)} (no calibration file)"
    )
    lines = [
        f"# Real training on one {facts['device']}: measured vs estimated",
        "",
        f"Device: {facts['device']}, torch {facts['torch']} (CUDA {facts['cuda']}), allocator "
        f"`{facts.get('alloc_conf') or 'default'}`. Estimates: `estimate()` with {rates}. Measured peak = "
        "`max_memory_reserved` + what the process holds outside the allocator (CUDA context, "
        f"libraries). Median of {steps} steps after {WARMUP} warm-up steps. Re-run: "
        "`bash scripts/h100_truth.sh` on an H100 or H200.",
        "",
        "| case | measured s | estimated s | error | measured GB | estimated GB | error | fits (est.) |",
        "|---|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in rows:
        if r["oom"]:
            measured = "OOM"
            lines.append(
                f"| {r['case']} | {measured} | {r['estimated_step_time_s']:.3f} | - | OOM | "
                f"{r['estimated_memory_bytes'] / gb:.1f} | - | {'yes' if r['estimated_fits'] else 'no'} |"
            )
            continue
        lines.append(
            f"| {r['case']} | {r['measured_step_time_s']:.3f} | {r['estimated_step_time_s']:.3f} | "
            f"{r['step_time_error']:+.1%} | {r['measured_peak_memory_bytes'] / gb:.1f} | "
            f"{r['estimated_memory_bytes'] / gb:.1f} | {r['memory_error']:+.1%} | "
            f"{'yes' if r['estimated_fits'] else 'no'} |"
        )
    ran = [r for r in rows if not r["oom"]]
    if ran:
        t = [abs(r["step_time_error"]) for r in ran]
        m = [abs(r["memory_error"]) for r in ran]
        lines += [
            "",
            f"Step time |error|: mean {statistics.mean(t):.1%}, max {max(t):.1%}. "
            f"Peak memory |error|: mean {statistics.mean(m):.1%}, max {max(m):.1%}.",
        ]
    agree = sum(r["oom"] != r["estimated_fits"] for r in rows)
    lines.append(f"Fit predicted correctly (runs / runs out of memory) in {agree} of {len(rows)} cases.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibration", type=Path, help="calibration file of this GPU (default: the shipped rates)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results", help="results folder")
    parser.add_argument("--reestimate", type=Path, help="recorded results: recompute the estimates only")
    parser.add_argument("--only", help="run the cases whose name contains this")
    parser.add_argument("--cases", choices=("bf16", "fp8"), default="bf16", help="CASES, or FP8_CASES")
    parser.add_argument("--profile", action="store_true", help="write the kernels of one more step of each case")
    parser.add_argument("--steps", type=int, default=STEPS, help=f"timed steps per case (default {STEPS})")
    args = parser.parse_args()
    if args.calibration:
        read_calibration(args.calibration)  # a bad file fails before any GPU time is spent
    if args.reestimate:
        recorded = json.loads(args.reestimate.read_text())
        facts, rows = recorded["device"], recorded["cases"]
        gpu, out_json = gpu_of(facts), args.reestimate
    else:
        facts, rows = device_facts(), []
        gpu = gpu_of(facts)  # a GPU the catalogue lacks fails before any case runs
        for case in FP8_CASES if args.cases == "fp8" else CASES:
            if args.only and args.only not in case.name:
                continue
            measured = measure_case(case, args.out / "profiles" if args.profile else None, args.steps)
            rows.append({"case": case.name, **asdict(case), **measured})
            print(case.name, "OOM" if measured["oom"] else f"{measured['measured_step_time_s']:.4f} s", flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        short = gpu.split("-")[0]  # h100-sxm: h100-single-gpu.json
        out_json = args.out / (f"{short}-fp8-training.json" if args.cases == "fp8" else f"{short}-single-gpu.json")
    for row in rows:
        case = Case(**{key: row[key] for key in Case.__dataclass_fields__ if key in row})
        row.update(estimate_case(case, gpu, args.calibration))
        add_errors(row)
    calibration = str(args.calibration) if args.calibration else None
    out_json.write_text(json.dumps({"device": facts, "calibration": calibration, "cases": rows}, indent=2))
    report = markdown(facts, rows, args.calibration)
    out_json.with_suffix(".md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
