"""Where profiled training steps spend their GPU time, by kernel kind, beside where `estimate()` puts it.

    python scripts/kernel_split.py RESULTS.json [--calibration FILE]

RESULTS.json is what `benchmarks/real_training.py --profile` wrote; the kernels of each case's profiled step are in
profiles/CASE.json beside it. Kernels are sorted by name (`KINDS`): attention (SDPA's flash and cuDNN kernels with
their pre- and post-processing), GEMMs (cuBLAS's nvjet and gemm kernels, CUTLASS), the loss (softmax forward and
backward, NLL), the optimizer (fused AdamW, the bf16 copy-back, zeroing the fp32 gradients and adding each
micro-batch's gradients into them), and the blocks' other ops (norms, activations, residual adds, RoPE, copies).
The time outside kernels is the measured median step less the profiled step's kernels. The estimate's parts are
`stage_times`' GEMMs (with the output head's three; FP8 casts, which the estimate counts with the GEMMs and which
compiled blocks fuse into their other kernels, moved to the blocks), attention and loss, the breakdown's optimizer,
and the rest of the estimated step. Milliseconds per optimizer step.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from real_training import Case, estimate_case, gpu_of, spec_of, training_of  # noqa: E402

from shardplan.cost.calibration import rates_for, read_calibration  # noqa: E402
from shardplan.cost.compute import fp8_cast_elements, fp8_cast_s, gemm_s, stage_times  # noqa: E402
from shardplan.profiled_block import ATTENTION_KERNELS, GEMM_KERNELS  # noqa: E402

# the first pattern a kernel's name matches sets its kind; "blocks" takes the rest
KINDS = (
    ("attention", ATTENTION_KERNELS),
    ("gemm", GEMM_KERNELS),
    ("loss", re.compile(r"SoftMax|nll_loss")),
    # real_training's MixedPrecisionAdamW: fused AdamW, bf16 copy-back, zero_grad, and gradient accumulation
    ("optimizer", re.compile(r"multi_tensor_apply|bfloat16_copy|FillFunctor<float>|CUDAFunctor_add<float>")),
    ("blocks", re.compile("")),
)
# the share of a block's forward attention that each recompute mode runs again
ATTENTION_REDONE = {"full": 1.0, "selective": 1.0, "selective-layer": 0.5}
# and of its forward FP8 casts (op-level selective recompute runs GEMMs again, whose casts the estimate leaves out)
CASTS_REDONE = {"full": 1.0, "selective-layer": 0.5}


def measured_split(kernels: dict[str, list[float]]) -> dict[str, float]:
    """Seconds of GPU time by kind, from {kernel name: [calls, microseconds]}."""
    split = dict.fromkeys((kind for kind, _ in KINDS), 0.0)
    for name, (_, us) in kernels.items():
        split[next(kind for kind, pattern in KINDS if pattern.search(name))] += us * 1e-6
    return split


def estimated_split(case: Case, gpu: str, calibration: Path | None) -> dict[str, float] | None:
    """Seconds of the estimate by the same kinds, and the estimated step; None where the estimate has the GPU wait
    for the host, whose time has no kinds."""
    model = spec_of(case)
    rates = rates_for(gpu, read_calibration(calibration) if calibration else None)
    training = training_of(case)
    times, headless = (
        stage_times(
            model,
            training,
            layers=model.num_layers,
            first=True,
            last=last,
            micro_batch=case.micro_batch,
            tp=1,
            rates=rates,
        )
        for last in (True, False)
    )
    if times.host_slack_s or headless.host_slack_s:
        return None
    head = 3 * gemm_s(case.micro_batch * case.seq_len, model.vocab_size, model.hidden_size, rates)
    attention_fwd, attention_bwd = times.attention_s
    redone = ATTENTION_REDONE.get(case.recompute, 0.0)
    estimated = estimate_case(case, gpu, calibration)
    split = {
        "attention": case.num_micro * model.num_layers * ((1 + redone) * attention_fwd + attention_bwd),
        "gemm": case.num_micro * (times.gemm_s + head),
        "loss": case.num_micro * (times.total_s - headless.total_s - head),  # the last stage's more, less the head
        "optimizer": estimated["estimated_breakdown_s"]["optimizer"],
    }
    if case.dtype == "fp8":
        tokens, kwargs = case.micro_batch * case.seq_len, {"compiled": case.compiled}
        forward, backward = fp8_cast_elements(model, tokens, 1, False, weight_casts=True)
        redo = 1 + CASTS_REDONE.get(case.recompute, 0.0)
        per_block = redo * fp8_cast_s(forward, rates, **kwargs) + fp8_cast_s(backward, rates, **kwargs)
        split["gemm"] -= case.num_micro * model.num_layers * per_block
    step = estimated["estimated_step_time_s"]
    return {**split, "blocks": step - sum(split.values()), "step": step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="RESULTS.json of benchmarks/real_training.py --profile")
    parser.add_argument("--calibration", type=Path, help="calibration file (default: the shipped rates)")
    args = parser.parse_args()
    recorded = json.loads(args.results.read_text())
    gpu = gpu_of(recorded["device"])
    print(f"{recorded['device']['device']}; estimates with {args.calibration or 'the shipped rates'}; ms per step\n")
    print("| case | step | " + " | ".join(kind for kind, _ in KINDS) + " | outside kernels |")
    print("|---|--:|" + "--:|" * len(KINDS) + "--:|")
    for row in recorded["cases"]:
        profile = args.results.parent / "profiles" / f"{row['case'].replace(' ', '_')}.json"
        if row["oom"] or not profile.exists():
            continue
        case = Case(**{key: row[key] for key in Case.__dataclass_fields__ if key in row})
        got = measured_split(json.loads(profile.read_text()))
        est = estimated_split(case, gpu, args.calibration)
        if est is None:
            print(f"| {row['case']} | host-bound in the estimate: not split |" + " |" * (len(KINDS) + 1))
            continue
        step = row["measured_step_time_s"]
        cells = [f"{step * 1e3:.1f} / {est['step'] * 1e3:.1f}"]
        cells += [f"{got[k] * 1e3:.1f} / {est[k] * 1e3:.1f} ({est[k] / got[k] - 1:+.0%})" for k in got]
        cells.append(f"{(step - sum(got.values())) * 1e3:.1f}")
        print(f"| {row['case']} | " + " | ".join(cells) + " |")
    print("\nEach cell: measured / estimated (the estimate's error).")


if __name__ == "__main__":
    main()
