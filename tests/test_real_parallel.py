"""benchmarks/real_parallel.py for real on CPU: its cases from the planner, and a tiny Llama trained
under torchrun by four gloo ranks with FSDP2, tensor parallelism (DTensor) and 1F1B pipelining, each
layout computing the same model on the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

from shardplan import Training, estimate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import real_parallel  # noqa: E402

# the layouts the torchrun test trains, estimated here (what a tiny model's suggestions hold varies)
LAYOUTS = {
    "fsdp dp=4": (1, 1, 4),
    "tp=4 megatron-style": (4, 1, 1),
    "tp=2 x fsdp dp=2": (2, 1, 2),
    "pp=2 x tp=2": (2, 2, 1),
}


def _cases() -> list[dict]:
    args = Namespace(topology="hgx-h100-4gpu", gpu=None, model="tiny", global_batch=8, seq_len=64, calibration=None)
    cases = real_parallel.plan_cases(args)
    spec = real_parallel.spec_from_config(real_parallel.model_config("tiny", 64), "test", name="tiny")
    for name, (tp, pp, dp) in LAYOUTS.items():
        train = Training(global_batch=8, seq_len=64, zero_stage=3 if dp > 1 else 0, **real_parallel.IMPLEMENTATION)
        plan = estimate(spec, "hgx-h100-4gpu", train, tp=tp, pp=pp, dp=dp, micro_batch=2)
        cases.append(real_parallel.case_of(name, plan, "tiny"))
    return cases


def test_cases_are_the_suggestions_then_the_alternatives() -> None:
    cases = real_parallel.plan_cases(
        Namespace(topology="hgx-h100-4gpu", gpu=None, model="tiny", global_batch=8, seq_len=64, calibration=None)
    )
    labels = [c["label"] for c in cases]
    assert labels[0] == "suggested #1" and any(label.startswith("hand-picked") for label in labels)
    # an alternative equal to a suggestion is not trained twice (TP=4 is suggested here)
    plans = [
        (c["plan"]["tp"], c["plan"]["pp"], c["plan"]["dp"], c["plan"]["micro_batch"], c["plan"]["recompute"])
        for c in cases
    ]
    assert len(set(plans)) == len(plans) and (4, 1, 1) in {p[:3] for p in plans}
    suggested = [c["plan"]["step_time_s"] for c in cases if c["label"].startswith("suggested")]
    assert suggested == sorted(suggested)
    assert all(c["plan"]["tp"] * c["plan"]["pp"] * c["plan"]["dp"] == 4 for c in cases)


def test_spread_layout_separates_tp_partners() -> None:
    layout = real_parallel.spread_layout(1, 2, 2)  # [p][d][t]
    assert layout == [[[0, 2], [1, 3]]]


def test_spearman() -> None:
    assert real_parallel.spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert real_parallel.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert real_parallel.spearman([1, 1, 2], [5, 6, 7]) == pytest.approx(0.866, abs=1e-3)


def test_layouts_train_the_same_model_under_torchrun(tmp_path: Path) -> None:
    cases = _cases()
    path = tmp_path / "cases.json"
    path.write_text(json.dumps(cases))
    pick = {c["label"]: i for i, c in enumerate(cases) if c["label"] in LAYOUTS}
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "4"]  # a free port
    cmd += ["benchmarks/real_parallel.py"]
    cmd += ["run", str(path), "--case", *map(str, pick.values()), "--out", str(out), "--device", "cpu"]
    cmd += ["--init-std", "0.5", "--lr", "1e-2", "--steps", "2", "--warmup", "1"]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    losses = {name: json.loads((out / f"case-{i}.json").read_text())["losses"] for name, i in pick.items()}
    first = [v[0] for v in losses.values()]
    # the same weights and batch: the same loss, up to bf16 rounding in differently split matmuls
    assert max(first) - min(first) < 1e-3 * first[0], losses
    # and each layout's gradients and updates train it alike
    last = [v[-1] for v in losses.values()]
    assert all(x < 0.75 * first[0] for x in last), losses
    assert max(last) - min(last) < 0.05 * first[0], losses

    summary, table = real_parallel.report(
        cases, {i: json.loads((out / f"case-{i}.json").read_text()) for i in pick.values()}
    )
    assert len(summary["cases"]) == len(cases) and -1 <= summary["spearman"] <= 1
    assert all(summary["cases"][i]["measured_step_time_s"] > 0 for i in pick.values()) and "not run" in table
