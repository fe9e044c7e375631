"""Step time against published runs (benchmarks/validate_published.py), on the sources whose runs
state what the cost model needs: degrees, batch, recompute and which communication they overlap.

- Narayanan et al. 2021 (arXiv:2104.04473) Table 1: Megatron-LM weak scaling 1.7B-530B on A100.
- Megatron-LM README "Performance Benchmarking" (Megatron-Core r0.8.0, H100): overlap flags stated.
- MegaScale (arXiv:2402.15627) Table 2: the Megatron-LM baseline, 175B on 256-8,192 Ampere GPUs.
- Korthikanti et al. 2022 (arXiv:2205.05198) Table 5: with and without sequence parallelism.
- Llama 3 (arXiv:2407.21783) Table 4: 405B on 8,192 and 16,384 H100s, interleaved as Sec. 3.3.2 says.
- Megatron Bridge performance summary (NeMo 25.09-26.04): Llama 3 70B and 405B in FP8 on 64 and 1,024 H100s, 405B
  on 128 B200s (datasheet rates times the H100's measured fractions).

Every row within 25% and the mean within 10% (issue 5's bounds). The harness prints every source.
"""

from __future__ import annotations

import csv
import importlib.util
import statistics
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parents[1] / "benchmarks" / "validate_published.py"
DATA = Path(__file__).resolve().parent / "data" / "validation"
SUBSET = {
    "narayanan2021_megatron_ptdp.csv": "T1-",
    "megatron_core_readme_h100_scaling.csv": "MC-",
    "megascale2024_175b_530b.csv": "T2-Megatron-LM-",
    "korthikanti2022_seqpar_selective.csv": "T5-",
    "llama3_2024_405b_pretraining.csv": "T4-",
    "nemo_24.07_perf_summary.csv": "N2407-",  # FP8 (Transformer Engine) on DGX-H100
    "megatron_bridge_perf_summary.csv": "MB-",  # its dense Llama rows on DGX-H100 and DGX-B200, FP8 (2025-2026)
}
# Megatron Bridge's rows on GB200 / GB300 NVL72 racks (Llama 3 70B on one rack since session 30; Llama 3.1 405B and
# Qwen3 235B-A22B on 256 GPUs, across racks, since session 48) are estimated by the harness and not part of the subset:
# MB-167 (PP 4 without virtual stages) is +35%, its table not giving the settings it ran with.
RACKS = ("GB200", "GB300")
# The subset's rows run dense models: the Megatron Bridge MoE rows (Qwen3, expert parallelism) are estimated by the
# harness and outside the bounds (-54% to +25%, eight beyond 25%: issue 5's notes), not part of the subset.
DENSE = "1"


def _harness():
    spec = importlib.util.spec_from_file_location("validate_published", HARNESS)
    module = importlib.util.module_from_spec(spec)
    sys.modules["validate_published"] = module
    spec.loader.exec_module(module)
    return module


def test_published_subset_within_bounds() -> None:
    vp = _harness()
    rows = [
        vp.evaluate(name, row)
        for name, row in vp.usable_rows()
        if row["row_id"].startswith(SUBSET.get(name, "-")) and row["ep"] in ("", DENSE) and row["gpu"] not in RACKS
    ]
    used = [r for r in rows if r.error is not None]
    assert len(used) >= 15, [r.skipped for r in rows]
    worst = max(used, key=lambda r: abs(r.error))
    assert abs(worst.error) <= 0.25, f"{worst.row_id}: {worst.error:+.1%}"
    assert statistics.mean(abs(r.error) for r in used) <= 0.10


def test_every_usable_row_on_the_mean_within_10_percent() -> None:
    """All 358 rows the harness estimates (every file, DeepSpeed ZeRO-3 of 2021 included; FP8 runs since
    2026-11-25, Megatron Bridge's since 2026-12-05, its MoE rows since, DeepSeek-V3's and Blackwell's MXFP8 ones
    since the fifth session that day, GB200 / GB300 racks' Llama 3 70B since session 30, jobs across racks, an H200
    run and NeMo's GPT-3 5B and 20B since session 48): mean |error| 9.3% (9.55% at the 332 rows before; the Llama 3
    405B rows' gradient sync sharing the NICs with pipeline sends adds 3 points to each). Seventeen rows are beyond
    25% (issue 5's notes say which and why): not asserted, and two of them cannot be (next test)."""
    vp = _harness()
    used = [r for r in (vp.evaluate(name, row) for name, row in vp.usable_rows()) if r.error is not None]
    assert len(used) >= 358
    assert statistics.mean(abs(r.error) for r in used) <= 0.10


def test_two_runs_of_the_same_inputs_leave_no_estimate_within_25_percent_of_both() -> None:
    """Why no row bound of 25% is asserted over every row: Megatron Bridge's 26.02.01 and 26.02 tables give Qwen3
    30B-A3B on two DGX H100s with the same settings (MB-191, MB-228), measured 1.77x apart. The harness estimates
    both alike and lists them with the other repeated runs, whose spread is a few percent."""
    vp = _harness()
    rows = [vp.evaluate(name, row) for name, row in vp.usable_rows() if row["row_id"] in ("MB-191", "MB-228")]
    assert len(rows) == 2 and rows[0].plan_json and rows[0].plan_json == rows[1].plan_json
    short, long = sorted(r.measured_step_s for r in rows)
    assert (long - short) / (long + short) > 0.25  # the worst row's error of the best single estimate
    table = vp._repeated_inputs(rows)
    assert any(line.startswith("| MB-191, MB-228 |") and line.endswith("| 27.8% |") for line in table)


def test_every_validation_file_is_estimated_or_says_why_not() -> None:
    vp = _harness()
    files = {p.name for p in DATA.glob("*.csv")}
    assert set(vp.FILE_DEFAULTS) <= files
    assert files - set(vp.FILE_DEFAULTS) <= set(vp.NOT_USABLE)


def test_every_llmfoundry_run_is_estimated_to_fit() -> None:
    """The 148 llm-foundry benchmark runs all ran, most at the micro-batch Composer found to be the
    largest that fits (submit_benchmarks.py asks for device_train_microbatch_size 'auto'): the memory
    estimate must not turn any of them away. With the fp32 loss in place of MPT's fused
    cross-entropy, 56 would not fit."""
    vp = _harness()
    rows = [vp.evaluate(n, row) for n, row in vp.usable_rows() if n.startswith("llmfoundry")]
    used = [r for r in rows if r.error is not None]
    assert len(used) >= 140 and [r.row_id for r in used if not r.fits] == []


def test_megatron_bridge_h100_llama_runs_fit_as_megatron_core_keeps_activations() -> None:
    """Megatron Bridge's H100 recipes run Llama 3 70B at TP 4 x PP 8 x 5 virtual stages and 405B at TP 8 x PP 8 x
    CP 2 x 8 with no activation recompute, in FP8 (performance-summary-archive.md; llama3_workload_base_configs.py).
    They ran, so the estimate must fit them: with eager SwiGLU and bf16 linear inputs the 70B's first stage would
    keep 59 GiB of activations and need 87 GiB."""
    vp = _harness()
    bridge = [(n, row) for n, row in vp.usable_rows() if n.startswith("megatron_bridge") and row["gpu"] not in RACKS]
    rows = [vp.evaluate(n, row) for n, row in bridge]
    used = [r for r in rows if r.error is not None]
    dense = [r for r in used if "LLAMA" in r.label]
    assert len(dense) == 10 and [r.row_id for r in dense if not r.fits] == []


def test_megatron_bridge_moe_runs_fit_with_their_experts_split() -> None:
    """Megatron Bridge's Qwen3 30B-A3B runs (EP 16 on 16 H100s; EP 8 with PP 2; EP 8 on 8 B200s, B300s, and GB200s
    or GB300s of an NVL72 rack) and 235B-A22B (TP 2 x PP 8 x EP 32 on 256 H100s, PP 8 x EP 8 on 64 and 256 B200s and
    on 256 B300s, PP 4 or 8 x EP 16 or 32 on 256 GB200s or GB300s) ran without recompute, and DeepSeek-V3's (TP 2 x
    PP 8 x EP 64 on 1,024 H100s; PP 16 x EP 8 and PP 8 x EP 32 on 256 B200s) with MLA's up-projections recomputed,
    each expert whole on a GPU (expert_tensor_parallel_size=1), so the estimate must fit them."""
    vp = _harness()
    rows = [vp.evaluate(n, row) for n, row in vp.usable_rows() if n.startswith("megatron_bridge")]
    moe = [r for r in rows if r.error is not None and ("Qwen3" in r.label or "DeepSeek" in r.label)]
    assert len(moe) == 44 and [r.row_id for r in moe if not r.fits] == []


def test_megatron_bridge_runs_fit_with_their_gradients_in_bf16() -> None:
    """Every Megatron Bridge performance recipe reduces gradients in bf16 into bf16 buffers (grad_reduce_in_fp32 =
    False in set_llama3_common_configs and its kin), so Llama 3 70B at TP 1 x PP 4 x VP 5 fits a GB300's 279 GB, as
    it ran (fp32 gradients would need 36 GB more). The one row estimated not to fit is MB-167, whose table gives
    micro-batches of 2 and no virtual stages where every other release and the recipe have 1 and 5."""
    vp = _harness()
    rows = [vp.evaluate(n, row) for n, row in vp.usable_rows() if n.startswith("megatron_bridge")]
    assert [r.row_id for r in rows if r.error is not None and not r.fits] == ["MB-167"]


def test_bloom_sweep_mean_within_bounds() -> None:
    """BLOOM's 2022 Megatron-DeepSpeed sweep (76 rows: TP 1-8, PP 1-12) on the mean: no sequence
    parallelism, and DeepSpeed's pipeline sends whole activations from every TP rank. Single rows
    miss by up to 25% (the 20B probe: hidden 14,400, its GEMMs 1,800 wide per TP rank, not a multiple
    of 128, which the chronicles' "tile and wave quantization" section measured 22% slower than 13,824;
    its head dim 450 is charged as misaligned): not bounded here."""
    vp = _harness()
    used = [
        r for r in (vp.evaluate(n, row) for n, row in vp.usable_rows() if n.startswith("bloom")) if r.error is not None
    ]
    assert len(used) >= 70 and statistics.mean(abs(r.error) for r in used) <= 0.10


def test_llmfoundry_long_sequences_at_the_triton_attention_rate() -> None:
    """llm-foundry's MPT runs used the 2022 Triton FlashAttention (attn_impl='triton'). At 16k-64k
    tokens per sequence attention is most of the step: rated as FlashAttention-2 over the
    FlashAttention-2 paper's ratios, every such row (A100 and H100) lands within 25%; at SDPA's own
    H100 rate they came out 30-55% short."""
    vp = _harness()
    long = [
        vp.evaluate(n, row)
        for n, row in vp.usable_rows()
        if n.startswith("llmfoundry") and int(row["seq_len"]) >= 16384
    ]
    used = [r for r in long if r.error is not None]
    assert len(used) >= 20
    worst = max(used, key=lambda r: abs(r.error))
    assert abs(worst.error) <= 0.25, f"{worst.row_id}: {worst.error:+.1%}"


@pytest.mark.parametrize(("row_id", "seconds"), [("BL-1", 769.99), ("BL-6", 434.14)])
def test_bloom_early_tflops_read_back_to_the_logged_step_time(row_id: str, seconds: float) -> None:
    """The sweep's first sections print TFLOP/s but no s/it; the chronicle's iteration logs give both
    (chronicles-prequel.md, "Best TFLOPs"). The harness's conversion of the early TFLOP/s basis must
    give back the logged iteration time."""
    vp = _harness()
    name, row = next((n, r) for n, r in vp.usable_rows() if r["row_id"] == row_id)
    assert vp.evaluate(name, row).measured_step_s == pytest.approx(seconds, rel=1e-3)


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
    every run within 5% of the measured peak, eager (B3-1) and torch.compile (B1-2 on 8 GPUs, B3-2 on
    128). The same three steps reproduced on one GPU over a fake process group reserved 65.5, 61.1
    and 75.4 GiB with expandable segments, 67.8, 61.9 and 76.9 without (published: 67, 62, 77;
    benchmarks/results/torchtitan-step-memory.json)."""
    vp = _harness()
    rows = {r["row_id"]: vp.evaluate(n, r) for n, r in vp.usable_rows() if r["row_id"] in ("B1-2", "B3-1", "B3-2")}
    error = {k: (r.estimated_mem_gib - r.measured_mem_gib) / r.measured_mem_gib for k, r in rows.items()}
    assert len(error) == 3 and all(abs(e) <= 0.05 for e in error.values()), error


def test_torchtitan_2025_compiles_its_loss(monkeypatch) -> None:
    """Trainy's torchtitan run of June 2025 (WF-8node: Llama 3.1 8B, FSDP over 64 H200s, torch.compile, Float8, local
    batch 2 of 8,192 tokens) peaked at 46.97 GiB where the December 2024 rows of the same arrangement on H100s
    (B3-2, B3-3) peaked at 62 GiB. torchtitan compiles its loss with the model from 2025, so no fp32 logits are
    kept: estimated so, 8.5% under; with the eager fp32 loss the estimate would be a third over."""
    vp = _harness()
    name, row = next((n, r) for n, r in vp.usable_rows() if r["row_id"] == "WF-8node")
    compiled = vp.evaluate(name, row)
    assert -0.10 <= (compiled.estimated_mem_gib - compiled.measured_mem_gib) / compiled.measured_mem_gib <= 0.0
    monkeypatch.setattr(vp, "COMPILED_LOSS_COMMITS", ())
    eager = vp.evaluate(name, row)
    assert eager.estimated_mem_gib > 1.25 * eager.measured_mem_gib


def test_torchtitan_context_parallel_peak_memory() -> None:
    """torchtitan's context-parallel rows (torch's all-gather rotation, full recompute, Float8 and
    torch.compile): Llama 3.1 8B at 131,072 and 262,144 tokens on one node (B2-3: FSDP 2 x CP 4, B2-4:
    CP 8), Llama 3.1 405B at 65,536, 131,072 and 262,144 tokens on 512 GPUs (B6-2, B6-3, B6-4: TP 8, PP 8, CP
    2, 4 and 8), estimated on their 96 GB GPUs: within 5% (-1.7%, -2.2%, +3.8%, +3.5%, -3.6% on 2026-12-06, with
    the gathered keys and values at the query heads, beside the rebuilt block and not the loss)."""
    vp = _harness()
    ids = ("B2-3", "B2-4", "B6-2", "B6-3", "B6-4")
    rows = {r["row_id"]: vp.evaluate(n, r) for n, r in vp.usable_rows() if r["row_id"] in ids}
    error = {k: (r.estimated_mem_gib - r.measured_mem_gib) / r.measured_mem_gib for k, r in rows.items()}
    assert len(error) == 5 and all(abs(e) <= 0.05 for e in error.values()), error


def test_mist_peak_memory() -> None:
    """Mist's kick-the-tires run (GPT-2 1.3B on 2 L4s, DP 2, ZeRO-1, fp16 weights and gradients, full
    recompute, unfused attention; Mist README Step 2.4): allocated peak 19,273.83 MiB, the figure Mist's
    own prediction (19,503 MiB) targets. The estimate was 2.6% below it on 2026-12-05. The reserved
    peak (21,096 MiB on the larger GPU) is 10% above the estimate: the allocator-cache term counts the
    kept activations, not the recomputed block's s x s temporaries (not asserted)."""
    check = _harness().mist_check()
    assert check.estimated_allocated_mib == pytest.approx(check.allocated_mib, rel=0.05)


def _table_4_ms(row_id: str) -> float:
    lines = (DATA / "korthikanti2022_per_layer_time.csv").read_text().splitlines()
    rows = csv.DictReader(ln for ln in lines if not ln.startswith("#"))
    return next(float(r["combined_ms"]) for r in rows if r["row_id"] == row_id)


def _layer_of_22b_ms(sequence_parallel: bool, recompute: str) -> float:
    """Compute and exposed TP time of one layer of Korthikanti et al.'s 22B (h 6144, 64 heads, s 2048,
    micro-batch 4, TP 8 on A100s, Megatron's core attention): the 48-layer estimate less the 24-layer
    one, over 24, in ms."""
    from shardplan import Training, estimate, load_topology
    from shardplan.model.hf_config import spec_from_config

    topo = load_topology("dgx-a100")
    train = Training(
        global_batch=4, seq_len=2048, sequence_parallel=sequence_parallel, recompute=recompute, attention="unfused"
    )

    def layers_ms(num_layers: int) -> float:
        config = {
            "model_type": "gpt2",
            "n_embd": 6144,
            "n_layer": num_layers,
            "n_head": 64,
            "n_positions": 2048,
            "vocab_size": 51200,
        }
        model = spec_from_config(config, "Korthikanti et al. 2022 Table 3, 22B", name="22B")
        breakdown = estimate(model, topo, train, tp=8, pp=1, dp=1, micro_batch=4).breakdown
        return (breakdown["compute"] + breakdown["tp"]) * 1e3

    return (layers_ms(48) - layers_ms(24)) / 24


@pytest.mark.parametrize(("row_id", "sequence_parallel"), [("T4-1", False), ("T4-2", True)])
def test_one_layer_of_22b_matches_korthikanti_table_4(row_id: str, sequence_parallel: bool) -> None:
    """Korthikanti et al. 2022 Table 4: forward + backward of one layer of their 22B model, no
    recompute: within 10% (+1.5% without SP, -1.4% with it). Megatron of 2022 overlaps the
    column-parallel backward's collectives with the gradient GEMMs; with that overlap off the
    estimate runs 5-8% higher."""
    assert _layer_of_22b_ms(sequence_parallel, "none") == pytest.approx(_table_4_ms(row_id), rel=0.10)


def test_selective_recompute_of_22b_costs_the_attention_core_korthikanti_measured() -> None:
    """Table 4 again: selective recompute adds 1.3 ms per layer to the backward (T4-4 less T4-1), the
    forward of the attention core (QK^T, softmax, dropout, AV) run again. Estimated: 1.25 ms, within 10%,
    its batched GEMMs bound as much by the scores they write and read as by their FLOPs."""
    measured = _table_4_ms("T4-4") - _table_4_ms("T4-1")
    extra = _layer_of_22b_ms(False, "selective") - _layer_of_22b_ms(False, "none")
    assert extra == pytest.approx(measured, rel=0.10)


def test_a_megatron_bridge_job_across_nvl72_racks_holds_each_slurm_segment_in_one_nvlink_domain(monkeypatch) -> None:
    """Megatron Bridge's launcher asks Slurm for segments of 4-GPU nodes (the whole job up to 18 trays, else the
    largest divisor up to 18: scripts/performance/utils/executors.py), each in one rack: 256 GPUs are four NVLink
    domains of 64. So estimated, its Llama 3.1 405B and Qwen3 235B-A22B rows on 256 GB200s or GB300s are each within
    12% (mean 5.6%). With the whole job in one NVLink domain, the PP 16 x VP 8 rows (MB-85, MB-175, MB-211) would
    send their pipeline over NVLink and be estimated 19-21% fast."""
    vp = _harness()
    assert [vp.slurm_segment(n) for n in (2, 18, 24, 32, 36, 64, 97)] == [2, 18, 12, 16, 18, 16, 1]
    topo = vp._topology({"gpu": "GB200", "machine": ""}, 256)
    assert sorted(len(d.gpus) for d in topo.nvswitch_domains) == [64] * 4
    across = [
        vp.evaluate(n, row)
        for n, row in vp.usable_rows()
        if n.startswith("megatron_bridge") and row["gpu"] in RACKS and int(row["n_gpus"]) > 72
    ]
    used = [r for r in across if r.error is not None]
    assert len(used) == 23 and all(r.fits for r in used)
    assert max(abs(r.error) for r in used) <= 0.12
    assert statistics.mean(abs(r.error) for r in used) <= 0.06
    monkeypatch.setattr(vp, "slurm_segment", lambda nodes: nodes)
    one_domain = [vp.evaluate(n, row) for n, row in vp.usable_rows() if row["row_id"] in ("MB-85", "MB-175", "MB-211")]
    assert all(r.error < -0.15 for r in one_domain)
