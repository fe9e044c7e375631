"""Step time against published runs (benchmarks/validate_published.py), on the sources whose runs
state what the cost model needs: degrees, batch, recompute and which communication they overlap.

- Narayanan et al. 2021 (arXiv:2104.04473) Table 1: Megatron-LM weak scaling 1.7B-530B on A100.
- Megatron-LM README "Performance Benchmarking" (Megatron-Core r0.8.0, H100): overlap flags stated.
- MegaScale (arXiv:2402.15627) Table 2: the Megatron-LM baseline, 175B on 256-8,192 Ampere GPUs.
- Korthikanti et al. 2022 (arXiv:2205.05198) Table 5: with and without sequence parallelism.
- Llama 3 (arXiv:2407.21783) Table 4: 405B on 8,192 and 16,384 H100s, interleaved as Sec. 3.3.2 says.

Every row within 25% and the mean within 10% (issue 5's bounds). The harness prints every source.
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parents[1] / "benchmarks" / "validate_published.py"
SUBSET = {
    "narayanan2021_megatron_ptdp.csv": "T1-",
    "megatron_core_readme_h100_scaling.csv": "MC-",
    "megascale2024_175b_530b.csv": "T2-Megatron-LM-",
    "korthikanti2022_seqpar_selective.csv": "T5-",
    "llama3_2024_405b_pretraining.csv": "T4-",
}


def _harness():
    spec = importlib.util.spec_from_file_location("validate_published", HARNESS)
    module = importlib.util.module_from_spec(spec)
    sys.modules["validate_published"] = module
    spec.loader.exec_module(module)
    return module


def test_published_subset_within_bounds() -> None:
    vp = _harness()
    rows = [vp.evaluate(name, row) for name, row in vp.usable_rows() if row["row_id"].startswith(SUBSET.get(name, "-"))]
    used = [r for r in rows if r.error is not None]
    assert len(used) >= 15, [r.skipped for r in rows]
    worst = max(used, key=lambda r: abs(r.error))
    assert abs(worst.error) <= 0.25, f"{worst.row_id}: {worst.error:+.1%}"
    assert statistics.mean(abs(r.error) for r in used) <= 0.10


def test_bloom_sweep_mean_within_bounds() -> None:
    """BLOOM's 2022 Megatron-DeepSpeed sweep (76 rows: TP 1-8, PP 1-12) on the mean: no sequence
    parallelism, and DeepSpeed's pipeline sends whole activations from every TP rank. Single rows
    miss by up to 38% (the 20B and 200B probes, hidden 14,400: not a multiple of 128): not bounded here."""
    vp = _harness()
    used = [
        r for r in (vp.evaluate(n, row) for n, row in vp.usable_rows() if n.startswith("bloom")) if r.error is not None
    ]
    assert len(used) >= 70 and statistics.mean(abs(r.error) for r in used) <= 0.10


@pytest.mark.parametrize("row_id", ["MC-4", "MC-9"])
def test_overlap_flags_matter(row_id: str) -> None:
    """Without --tp-comm-overlap / --overlap-param-gather the same runs come out slower."""
    vp = _harness()
    name, row = next((n, r) for n, r in vp.usable_rows() if r["row_id"] == row_id)
    with_flags = vp.evaluate(name, row)
    row = dict(row, other_opts="")
    without = vp.evaluate(name, row)
    assert without.estimated_step_s > with_flags.estimated_step_s


def test_torchtitan_peak_memory() -> None:
    """torchtitan's BF16 Llama 3.1 8B FSDP rows (per-op selective recompute, local batch 2, seq 8192):
    the torch.compile runs (B1-2 on 8 GPUs, B3-2 on 128) within 5% of the measured peak. The eager
    run (B3-1) reserved 5 GiB more than the compiled one with the same model and batch; the estimate
    may fall short of it by as much as the default caching allocator added on a real H100
    (benchmarks/results/h100-selective-op: up to 10%)."""
    vp = _harness()
    rows = {r["row_id"]: vp.evaluate(n, r) for n, r in vp.usable_rows() if r["row_id"] in ("B1-2", "B3-1", "B3-2")}
    error = {k: (r.estimated_mem_gib - r.measured_mem_gib) / r.measured_mem_gib for k, r in rows.items()}
    assert abs(error["B1-2"]) <= 0.05 and abs(error["B3-2"]) <= 0.05, error
    assert -0.10 <= error["B3-1"] < 0, error
