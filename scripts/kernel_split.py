"""Where profiled training steps spend their GPU time, by kernel kind, beside where `estimate()` puts it.

    python scripts/kernel_split.py RESULTS.json [--calibration FILE]

RESULTS.json is what `benchmarks/real_training.py --profile` wrote; the kernels of each case's profiled step are in
profiles/CASE.json beside it. Kernels are sorted by name: attention (SDPA's flash, cuDNN and memory-efficient
kernels), GEMMs (cuBLAS's nvjet and gemm kernels, CUTLASS), and all others (norms, activations, residual adds,
casts, the loss, the optimizer, gradient accumulation). The step's time outside kernels is the measured median
step less the profiled step's kernels. The estimate's GEMMs and attention are `stage_times`' for the case (with the
output head's three GEMMs); its other part is the rest of the estimated step. Milliseconds per optimizer step.
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

from real_training import Case, estimate_case, gpu_of, spec_of  # noqa: E402

from shardplan import Training  # noqa: E402
from shardplan.cost.calibration import rates_for, read_calibration  # noqa: E402
from shardplan.cost.compute import gemm_s, stage_times  # noqa: E402

ATTENTION = re.compile(r"sdpa|flash|fmha|attention", re.IGNORECASE)
GEMM = re.compile(r"nvjet|gemm|cutlass|xmma", re.IGNORECASE)
# the share of a block's forward attention that each recompute mode runs again
ATTENTION_REDONE = {"full": 1.0, "selective": 1.0, "selective-layer": 0.5}


def measured_split(kernels: dict[str, list[float]]) -> dict[str, float]:
    """Seconds of GPU time by kind, from {kernel name: [calls, microseconds]}."""
    split = {"gemm": 0.0, "attention": 0.0, "other": 0.0}
    for name, (_, us) in kernels.items():
        kind = "attention" if ATTENTION.search(name) else "gemm" if GEMM.search(name) else "other"
        split[kind] += us * 1e-6
    return split


def estimated_split(case: Case, gpu: str, calibration: Path | None) -> dict[str, float]:
    """Seconds of the estimate by the same kinds: GEMMs, attention, and the rest of the estimated step."""
    model = spec_of(case)
    rates = rates_for(gpu, read_calibration(calibration) if calibration else None)
    training = Training(
        global_batch=case.micro_batch * case.num_micro,
        seq_len=case.seq_len,
        recompute=case.recompute,  # type: ignore[arg-type]
        zero_stage=0,
        sequence_parallel=False,
        dtype=case.dtype,  # type: ignore[arg-type]
        compiled=case.compiled,
    )
    times = stage_times(
        model, training, layers=model.num_layers, first=True, last=True, micro_batch=case.micro_batch, tp=1, rates=rates
    )
    head = 3 * gemm_s(case.micro_batch * case.seq_len, model.vocab_size, model.hidden_size, rates)
    attention_fwd, attention_bwd = times.attention_s
    redone = ATTENTION_REDONE.get(case.recompute, 0.0)
    split = {
        "gemm": case.num_micro * (times.gemm_s + head),
        "attention": case.num_micro * model.num_layers * ((1 + redone) * attention_fwd + attention_bwd),
    }
    step = estimate_case(case, gpu, calibration)["estimated_step_time_s"]
    return {**split, "other": step - sum(split.values()), "step": step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="RESULTS.json of benchmarks/real_training.py --profile")
    parser.add_argument("--calibration", type=Path, help="calibration file (default: the shipped rates)")
    args = parser.parse_args()
    recorded = json.loads(args.results.read_text())
    gpu = gpu_of(recorded["device"])
    print(f"{recorded['device']['device']}; estimates with {args.calibration or 'the shipped rates'}; ms per step\n")
    print("| case | step | GEMMs | attention | other kernels | outside kernels |")
    print("|---|--:|--:|--:|--:|--:|")
    for row in recorded["cases"]:
        profile = args.results.parent / "profiles" / f"{row['case'].replace(' ', '_')}.json"
        if row["oom"] or not profile.exists():
            continue
        case = Case(**{key: row[key] for key in Case.__dataclass_fields__ if key in row})
        got = measured_split(json.loads(profile.read_text()))
        est = estimated_split(case, gpu, args.calibration)
        step = row["measured_step_time_s"]
        cells = [f"{step * 1e3:.1f} / {est['step'] * 1e3:.1f}"]
        cells += [f"{got[k] * 1e3:.1f} / {est[k] * 1e3:.1f} ({est[k] / got[k] - 1:+.0%})" for k in got]
        cells.append(f"{(step - sum(got.values())) * 1e3:.1f}")
        print(f"| {row['case']} | " + " | ".join(cells) + " |")
    print("\nEach cell: measured / estimated (the estimate's error).")


if __name__ == "__main__":
    main()
