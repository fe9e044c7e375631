"""`shardplan calibrate` really measures (on the CPU here, tiny shapes), its file feeds the cost model,
and under torchrun (two gloo ranks) it measures peer copies and collectives."""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from shardplan import Training, estimate, load_model, load_topology
from shardplan.cost.calibration import (
    ELEMENTWISE_OPS,
    HOST_DISPATCH_KEYS,
    Calibration,
    CollectiveRate,
    at_seq,
    rates_for,
    read_calibration,
    shipped_calibration,
)
from shardplan.cost.collectives import bus_factor, collective_time_s
from shardplan.cost.link_scale import calibrated_links
from shardplan.errors import ShardplanError
from shardplan.topology import Topology
from shardplan.topology.cluster import build
from shardplan.topology.sources.nvml import spec_from_facts

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, ranks: int = 1) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    launcher = ["-m", "torch.distributed.run", "--nproc-per-node", str(ranks)] if ranks > 1 else []
    cmd = [sys.executable, *launcher, "-m", "shardplan.cli", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(torch.cuda.is_available(), reason="what a machine without a GPU is told")
def test_full_calibration_without_a_gpu_says_where_to_run_it(tmp_path: Path) -> None:
    """Without a GPU the full sweep ran its 8,192-wide GEMMs on the CPU for many minutes, silently; it now says at
    once where to run it, and writes nothing."""
    out = tmp_path / "cal.json"
    run = _cli("calibrate", "-o", str(out))
    assert run.returncode == 2 and run.stderr.startswith("error: no CUDA GPU here: calibrate measures the GPU")
    assert "--device cpu" in run.stderr and not out.exists()


def test_quick_calibration_on_cpu_is_a_valid_file(tmp_path: Path) -> None:
    out = tmp_path / "cal.json"
    run = _cli("calibrate", "--quick", "--device", "cpu", "-o", str(out))
    assert run.returncode == 0, run.stderr[-2000:]
    cal = read_calibration(out)
    assert cal.gpu == "cpu"
    # the TP shapes: hidden 256, q 256, kv 128 -> QKV output (256 + 2*128) / tp for tp 1 and 2
    assert {"128x512x256", "128x256x256"} <= set(cal.gemm_tflops)
    assert set(cal.elementwise_gbps) == set(ELEMENTWISE_OPS)
    assert all(v > 0 for v in (*cal.gemm_tflops.values(), *cal.elementwise_gbps.values(), cal.loss_gbps))
    assert cal.sdpa_causal_backward_tflops and cal.adamw_gbps
    assert cal.flash2_causal_tflops.keys() == cal.sdpa_causal_tflops.keys()  # the CPU's flash kernel
    assert set(cal.host_dispatch) == set(HOST_DISPATCH_KEYS)
    again = _cli("calibrate", "--quick", "--device", "cpu", "-o", str(out))
    assert again.returncode == 2 and "already exists" in again.stderr


def test_compiled_block_rates_from_recorded_kernels() -> None:
    """benchmarks/results/h100-compiled-block: calibrate's compiled Llama block profiled on two H100s, 12 blocks of
    five widths and up to six token counts. Sorting each recorded kernel list by name gives the recorded kinds, with
    GEMMs, attention and the memory-bound rest all present; the rates follow from them; and calibrate's block (8B
    widths, 8,192 tokens: the shipped rates) is within 10% of every other shape, bf16 and FP8."""
    from shardplan.profiled_block import compiled_block_rates, kernels_by_kind

    shipped = shipped_calibration("h100-sxm")
    results = ROOT / "benchmarks/results/h100-compiled-block"
    blocks = {}
    for run in ("widths", "tokens"):
        recorded = json.loads((results / run / "compiled-block.json").read_text())["blocks"]
        blocks |= {f"{run}: {name}": block for name, block in recorded.items()}
    assert len(blocks) == 12
    for name, block in blocks.items():
        for dtype in ("bf16", "fp8"):
            kinds = kernels_by_kind(block[dtype]["kernels_s"])
            assert kinds == pytest.approx(block[dtype]["by_kind_s"]) and min(kinds.values()) > 0, name
        other = (block["bf16"]["by_kind_s"]["other"], block["fp8"]["by_kind_s"]["other"])
        rates = compiled_block_rates(block["width"], block["tokens"], *other)
        assert rates == pytest.approx(block["rates"]), name
        assert rates["compiled_block_gbps"] == pytest.approx(shipped.compiled_block_gbps, rel=0.10), name
        assert rates["compiled_fp8_cast_gbps"] == pytest.approx(shipped.compiled_fp8_cast_gbps, rel=0.10), name
    assert shipped.compiled_block_gbps == blocks["widths: 8B 8192"]["rates"]["compiled_block_gbps"]


def test_torchrun_calibration_measures_pairs_and_collectives(tmp_path: Path) -> None:
    out = tmp_path / "cal.json"
    run = _cli("calibrate", "--quick", "--device", "cpu", "-o", str(out), ranks=2)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    data = json.loads(out.read_text())
    assert [(r["src"], r["dst"]) for r in data["peer_copy_gbps"]] == [(0, 1), (1, 0)]
    ops = {(r["op"], r["ranks"]) for r in data["collectives"]}
    assert ops == {("all_reduce", 2), ("all_gather", 2), ("reduce_scatter", 2)}
    assert all(r["busbw_gbps"] > 0 for r in data["collectives"])
    assert data["versions"]["ranks"] == 2


def test_calibration_file_changes_the_estimate(tmp_path: Path) -> None:
    """A GPU measured at half the GEMM and attention speed takes longer per step; --calibration on
    the CLI reads the same file."""
    shipped = shipped_calibration("h100-sxm")
    assert shipped is not None
    slow = shipped.model_dump(by_alias=True)
    for key in ("gemm_tflops", "sdpa_causal_tflops", "sdpa_causal_backward_tflops"):
        slow[key] = {k: v / 2 for k, v in slow[key].items()}
    path = tmp_path / "slow.json"
    path.write_text(json.dumps(slow))
    model, topo, train = load_model("llama3-8b"), load_topology("dgx-h100"), Training(global_batch=64, seq_len=4096)
    fast = estimate(model, topo, train, tp=1, pp=1, dp=8)
    slowed = estimate(model, topo, train, tp=1, pp=1, dp=8, calibration=path)
    assert slowed.breakdown["compute"] > 1.6 * fast.breakdown["compute"]
    assert rates_for("h100-sxm", read_calibration(path)).gemm_peak_flops == pytest.approx(
        rates_for("h100-sxm").gemm_peak_flops / 2
    )
    args = ["estimate", "--model", "llama3-8b", "--topology", "dgx-h100", "--tp", "1", "--pp", "1", "--dp", "8"]
    cli = _cli(
        *args, "--global-batch", "64", "--zero", "0", "--recompute", "none", "--json", "--calibration", str(path)
    )
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["step_time_s"] == pytest.approx(slowed.step_time_s)


def _shipped_with(**changes: object) -> dict:
    """The shipped H100 calibration as a file's JSON, these top-level fields changed."""
    shipped = shipped_calibration("h100-sxm")
    assert shipped is not None
    return {**shipped.model_dump(by_alias=True), **changes}


# each but the first once passed, and then raised a ZeroDivisionError or ValueError inside `estimate` (or, NaN, a
# pydantic error when the rates were worked out), found by mutating the shipped file
# the 512x larger GEMM done in half the time: no positive peak fits
SHRINKING = {"1024x1024x1024": 1.0, "8192x8192x8192": 1000.0}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"d2d_rw_gbps": -1}, r"d2d_rw_gbps: Input should be greater than 0"),
        ({"gemm_tflops": {}}, r"gemm_tflops: Dictionary should have at least 1 item"),
        ({"gemm_tflops": {"2048x0x2048": 300.0}}, r"gemm_tflops\.2048x0x2048\.\[key\]: String should match pattern"),
        (
            {"sdpa_causal_tflops": {"b4_h16_s4096_d128": math.nan}},
            r"sdpa_causal_tflops\.b4_h16_s4096_d128: Input should ",
        ),
        ({"gemm_tflops": SHRINKING}, r"gemm_tflops: Value error, these times fit no positive peak"),
        ({"gemm_fp8_tflops": {"rowwise": SHRINKING}}, r"gemm_fp8_tflops: Value error, rowwise: these times fit no pos"),
    ],
)
def test_bad_calibration_file_names_file_and_field(tmp_path: Path, changes: dict, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_shipped_with(**changes)))
    with pytest.raises(ShardplanError, match=r"^" + str(path).replace(".", r"\.") + ": " + message) as info:
        read_calibration(path)
    assert "\n" not in str(info.value)


def test_a_calibration_path_that_is_no_utf8_file_is_one_line(tmp_path: Path) -> None:
    """A folder given for the file is a one-line error (it was an IsADirectoryError); a Latin-1 byte in a string
    reads as it does in UTF-8 (it was a UnicodeDecodeError)."""
    with pytest.raises(ShardplanError, match=r": a folder, not a calibration file$"):
        read_calibration(tmp_path)
    path = tmp_path / "latin1.json"
    path.write_bytes(json.dumps(_shipped_with(device_name="caf\u00e9")).encode("latin-1"))
    assert read_calibration(path).gemm_tflops == shipped_calibration("h100-sxm").gemm_tflops


def test_one_gemm_shape_is_its_own_peak(tmp_path: Path) -> None:
    """A calibration that timed one GEMM shape cannot tell a fixed overhead from the peak: the peak is its rate."""
    path = tmp_path / "one.json"
    path.write_text(json.dumps(_shipped_with(gemm_tflops={"4096x4096x4096": 600.0})))
    rates = rates_for("h100-sxm", read_calibration(path))
    assert rates.gemm_peak_flops == pytest.approx(600e12) and rates.gemm_overhead_s == 0


def test_rates_between_measured_lengths_stay_between_them() -> None:
    """`at_seq` at a measured length gives its rate exactly, however far apart the neighbours' rates are."""
    assert at_seq({64: 1e27, 128: 1.0}, 128) == 1.0
    assert 1.0 < at_seq({64: 1e27, 128: 1.0}, 96) < 1e27


CALIBRATED_PAIR = ROOT / "benchmarks/results/multi-gpu-2gpu/calibration.json"


def _h200_pair() -> tuple[Topology, Calibration]:
    """Two NVLinked H200s (NV18) as NVML read them, and `shardplan calibrate` under torchrun on them
    (benchmarks/results/multi-gpu-2gpu, the one lending of two GPUs)."""
    facts = json.loads((ROOT / "tests/data/nvml/h200-x2-nvlink.json").read_text())
    topo = build(spec_from_facts(facts["nvml_facts"]))
    return topo, read_calibration(CALIBRATED_PAIR)


def test_measured_collectives_set_the_link_rates() -> None:
    """The pair's collectives of 256 MiB and 1 GiB took 12-41% longer than the shipped rates give (mean 28%); read
    back, the calibration runs NVLink at 0.70 of its shipped rate, where the median of the six meets its measured
    time: their mean error falls to 11% (all-reduce of 1 GiB +25%, all-gather and reduce-scatter -19% to +2%), PCIe
    and the network left as they were. An estimate with the file charges the pair's gradient all-reduce that much
    longer, and a topology keeps its scale through JSON."""
    topo, cal = _h200_pair()
    calibrated = calibrated_links(topo, cal)
    assert calibrated.link_scale.nvlink == pytest.approx(0.70, abs=0.005)
    assert calibrated.link_scale.pcie == calibrated.link_scale.net == 1
    errors: dict[str, list[float]] = {"shipped": [], "calibrated": []}
    for row in (r for r in cal.collectives if r.bytes >= 2**28):
        measured = row.bytes * bus_factor(row.op, row.ranks) / (row.busbw_gbps * 1e9)
        for name, t in (("shipped", topo), ("calibrated", calibrated)):
            errors[name].append(collective_time_s(t, row.op, range(row.ranks), row.bytes) / measured - 1)
    shipped, calibrated_error = (sum(map(abs, errors[name])) / 6 for name in ("shipped", "calibrated"))
    assert len(errors["shipped"]) == 6 and calibrated_error < 0.12 and calibrated_error < shipped / 2
    train = Training(global_batch=16, seq_len=4096, zero_stage=0, recompute="full")
    plain, measured = (estimate("llama3-8b", topo, train, tp=1, pp=1, dp=2, calibration=c) for c in (None, cal))
    assert measured.comm_time_by_link["nvlink"] == pytest.approx(plain.comm_time_by_link["nvlink"] / 0.70, rel=0.05)
    assert Topology.from_json(calibrated.to_json()).link_scale == calibrated.link_scale
    cli = _cli("suggest", "--model", "llama3-8b", "--topology", "dgx-h200", "--calibration", str(CALIBRATED_PAIR))
    assert cli.returncode == 0, cli.stderr
    assert "links     at the calibration's measured rates: nvlink x0.70" in cli.stdout


@pytest.mark.parametrize(
    ("source", "nodes", "ranks", "kind"),
    [("dgx-h100", 2, 16, "net"), ("a100-pcie-8gpu-bridged", 1, 4, "pcie"), ("a100-pcie-8gpu-bridged", 1, 2, "nvlink")],
)
def test_a_group_measured_slow_slows_its_slowest_link_class(source: str, nodes: int, ranks: int, kind: str) -> None:
    """Collectives measured at half the modelled bus bandwidth slow the slowest link class their group crosses (by a
    half where it carries all of their time; more across nodes, where NVLink inside the nodes carries part of it) so
    far that the group's collectives take twice as long (the median of the three), and no other class; small
    messages, which fixed costs decide, scale nothing, and nor does a file measured on other GPUs."""
    topo = load_topology(source, nodes=nodes)
    rows, ops = [], ("all_reduce", "all_gather", "reduce_scatter")
    for op in ops:
        for size in (2**20, 2**30):
            busbw = size * bus_factor(op, ranks) / collective_time_s(topo, op, range(ranks), size) / 1e9
            rows.append(CollectiveRate(op=op, ranks=ranks, bytes=size, busbw_gbps=busbw / (2 if size > 2**20 else 8)))
    shipped = shipped_calibration("h100-sxm")
    assert shipped is not None
    measured = shipped.model_copy(update={"collectives": tuple(rows), "gpu": topo.gpu_model_ids[0][0]})
    calibrated = calibrated_links(topo, measured)
    scale = calibrated.link_scale.model_dump()
    assert scale.pop(kind) <= 0.5 + 1e-3 and set(scale.values()) == {1.0}
    slower = [
        collective_time_s(calibrated, op, range(ranks), 2**30) / collective_time_s(topo, op, range(ranks), 2**30)
        for op in ops
    ]
    assert statistics.median(slower) == pytest.approx(2, rel=0.01) and min(slower) > 1
    assert calibrated_links(topo, shipped) is topo  # the shipped file measured no collectives
    assert calibrated_links(topo, measured.model_copy(update={"gpu": "b200"})) is topo  # a machine of other GPUs
