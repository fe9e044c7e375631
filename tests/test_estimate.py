"""estimate(): hand-checked pieces, invariants over sweeps, errors that say what to change."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import random
import statistics
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from shardplan import Plan, Training, estimate, load_model, load_topology
from shardplan.cost.calibration import at_head_dim, at_seq, rates_for, shipped_calibration
from shardplan.cost.collectives import (
    FLOOR_LATENCY_S,
    collective_time_s,
    nccl_channels,
    rings_time_parts,
    rings_under_load,
)
from shardplan.cost.compute import MISALIGNED_PEAK_SHARE, _block_times, fp8_cast_s, gemm_s, stage_times
from shardplan.cost.memory import (
    CACHE_PART,
    activation_bytes,
    local_params,
    param_counts,
    peak_memory,
    stage_memories,
    state_bytes,
)
from shardplan.cost.overlap import COPY_GBPS_BESIDE_COMPUTE, SPEED_BESIDE_HELD_SMS, Overlap, overlap_slowdown
from shardplan.cost.step import split_layers
from shardplan.cost.traffic import traffic_bytes
from shardplan.errors import PlanError
from shardplan.topology import read_spec
from shardplan.topology.cluster import build
from shardplan.topology.schema import LinkScale, Topology

ROOT = Path(__file__).resolve().parents[1]

TRAIN = Training(global_batch=64, seq_len=4096, recompute="selective", zero_stage=1)


def test_gemm_fit_predicts_an_independent_h100_probe_within_13_percent():
    """The GEMM fit comes from `shardplan calibrate` on the lent H100 (session 3); the shapes below
    were measured separately, on another lease, by the probe in fixtures/device-h100/facts.json."""
    rates = rates_for("h100-sxm")
    for (m, n, k), tflops in {
        (8192, 8192, 8192): 753.27,
        (4096, 4096, 4096): 623.63,
        (2048, 1024, 1024): 126.5,
        (4096, 8192, 28672): 685.65,
        (16384, 14336, 4096): 661.49,
        (16384, 1024, 8192): 583.59,
    }.items():
        measured = 2 * m * n * k / (tflops * 1e12)
        assert gemm_s(m, n, k, rates) == pytest.approx(measured, rel=0.13)


def test_fp8_gemm_fit_follows_its_own_measurement():
    """The FP8 fits (shipped h100-sxm.json, from scripts/h100_fp8.sh) against the 198 shapes they came
    from, per recipe: the whole table's time within 10% and the median shape within 10% (the bf16 fit:
    3% and 6.6%; FP8's spread is wider, p90 18-20%), and each shape faster than in BF16 once it is
    large (4 TFLOP); other GPUs scale by their FP8 datasheet peak; GPUs without FP8 tensor cores have
    no FP8 rates."""
    cal = shipped_calibration("h100-sxm")
    rates = rates_for("h100-sxm")
    for recipe, table in cal.gemm_fp8_tflops.items():
        measured, modelled, errors = 0.0, 0.0, []
        for shape, tflops in table.items():
            m, n, k = (int(v) for v in shape.split("x"))
            seconds = 2 * m * n * k / (tflops * 1e12)
            measured, modelled = measured + seconds, modelled + gemm_s(m, n, k, rates, recipe)
            errors.append(abs(gemm_s(m, n, k, rates, recipe) / seconds - 1))
            if 2 * m * n * k >= 4e12:
                assert gemm_s(m, n, k, rates, recipe) < gemm_s(m, n, k, rates), (recipe, shape)
        assert modelled == pytest.approx(measured, rel=0.10) and statistics.median(errors) <= 0.10, recipe
    h100_pcie = rates_for("h100-pcie").fp8_gemm["tensorwise"][0]
    assert h100_pcie == pytest.approx(rates.fp8_gemm["tensorwise"][0] * 1513.0 / 1978.9)
    assert rates_for("a100-sxm-80gb").fp8_gemm == {}


def test_fp8_linears_are_faster_and_need_fp8_tensor_cores():
    fp8 = TRAIN.model_copy(update={"dtype": "fp8"})
    times = {
        name: estimate("llama3-8b", "dgx-h100", train, tp=2, pp=1, dp=4).breakdown["compute"]
        for name, train in (
            ("bf16", TRAIN),
            ("fp8", fp8),
            ("rowwise", fp8.model_copy(update={"fp8_recipe": "rowwise"})),
        )
    }
    assert times["fp8"] < times["rowwise"] < times["bf16"]
    # casts under torch.compile (torchao) run at the measured compiled cast rate, slower than TE's fused kernel
    compiled = estimate("llama3-8b", "dgx-h100", fp8.model_copy(update={"compiled": True}), tp=2, pp=1, dp=4)
    plain = estimate("llama3-8b", "dgx-h100", TRAIN.model_copy(update={"compiled": True}), tp=2, pp=1, dp=4)
    assert compiled.breakdown["compute"] < plain.breakdown["compute"]
    h100 = rates_for("h100-sxm")
    assert fp8_cast_s(1e9, h100, compiled=True) == pytest.approx(4e9 / h100.fp8_cast_compiled_bytes_per_s)
    assert fp8_cast_s(1e9, h100, compiled=True) > fp8_cast_s(1e9, h100) == pytest.approx(4e9 / h100.hbm_bytes_per_s)
    with pytest.raises(PlanError, match="FP8 tensor cores"):
        estimate("llama3-8b", "dgx-a100", fp8, tp=2, pp=1, dp=4)


def test_current_scaling_reads_each_cast_tensor_once_more_for_its_amax():
    """Transformer Engine's current scaling reads each tensor for its amax before the cast (Float8CurrentScaling-
    Quantizer: nvte_compute_amax, then nvte_quantize_v2): 2 bytes per element more than a cast whose scale is
    known, forward (inputs and weights) and backward (output gradients). Llama 3 8B block, 8,192 tokens, no TP."""
    model, rates, t = load_model("llama3-8b"), rates_for("h100-sxm"), 8192
    fp8 = ("tensorwise_fast_accum", "tensorwise")
    known, current = (_block_times(model, t, 8192, 1, False, rates, precisions=fp8, amax_pass=a) for a in (False, True))
    # (rows, width, inner) of QKV (4096 + 2 x 1024 wide), the out-projection, gate+up (2 x 14336) and down
    shapes = [(t, 6144, 4096), (t, 4096, 4096), (t, 28672, 4096), (t, 4096, 14336)]
    forward = sum(rows * inner + width * inner for rows, width, inner in shapes)
    backward = sum(rows * width for rows, width, _ in shapes)
    assert current[0] - known[0] == pytest.approx(2 * forward / rates.hbm_bytes_per_s)
    assert current[1] - known[1] == pytest.approx(2 * backward / rates.hbm_bytes_per_s)
    assert current[2:] == known[2:]  # attention and the memory-bound ops as they were
    train = TRAIN.model_copy(update={"dtype": "fp8"})
    plans = [
        estimate("llama3-8b", "dgx-h100", train.model_copy(update={"fp8_recipe": r}), tp=2, pp=1, dp=4)
        for r in ("tensorwise", "current")
    ]
    assert plans[1].fp8_recipe == "current" and plans[1].breakdown["compute"] > plans[0].breakdown["compute"]


def test_cached_fp8_weights_are_cast_once_a_step_and_held():
    """Megatron-Core's TE linears pass is_first_microbatch (megatron/core/extensions/transformer_engine.py), so
    Transformer Engine casts each weight on a step's first micro-batch and keeps the cast, row-major and
    transposed, for the rest: the weights' casts leave the micro-batches (here 64: 256 sequences over dp 4) and
    come once a step, and the stage holds 2 B per weight more. Llama 3 8B, TP 2, 32 blocks."""
    train = Training(global_batch=256, seq_len=4096, dtype="fp8", zero_stage=1)
    plans = [
        estimate("llama3-8b", "dgx-h100", train.model_copy(update={"fp8_weight_cache": c}), tp=2, pp=1, dp=4)
        for c in (False, True)
    ]
    model, rates = load_model("llama3-8b"), rates_for("h100-sxm")
    weights = sum(m.per_gpu(1, 2, True)[1] * m.per_gpu(1, 2, True)[2] for m in model.block_matmuls(fused=True))
    per_cast = weights * 32 * 4 / rates.hbm_bytes_per_s  # bf16 read, e4m3 written twice
    saved = plans[0].breakdown["compute"] - plans[1].breakdown["compute"]
    assert saved == pytest.approx(64 * per_cast - per_cast, rel=0.02)  # norms aside (counted once a step)
    held = sum(local_params(model, layers=32, first=False, last=False, tp=2))
    assert plans[1].memory_breakdown["fp8_weights"] == pytest.approx(2 * held)
    assert "fp8_weights" not in plans[0].memory_breakdown and plans[1].fp8_weight_cache


def test_mla_tp_gathers_its_latents_where_other_attention_gathers_the_hidden_state():
    """Megatron-Core's MLA (multi_latent_attention.py) runs its down-projections on each TP rank's own sequence
    shard (duplicated weights), so TP gathers, and reduces the gradients of, the query and key-value latents
    (and under SP the RoPE key beside them) before the up-projections: 1536 + 512 + 64 of DeepSeek-V3's 7168."""
    v3 = load_model("deepseek-v3")
    assert v3.column_input_widths(sequence_parallel=True) == (1536 + 512 + 64, 7168)
    assert v3.column_input_widths(sequence_parallel=False) == (1536 + 512, 7168)
    assert load_model("deepseek-v2-lite").column_input_widths(sequence_parallel=True) == (2048 + 512 + 64, 2048)
    assert load_model("llama3-8b").column_input_widths(sequence_parallel=True) == (4096, 4096)
    # bytes a GPU sends on TP per step, by hand: 4 micro-batches of 4,096 bf16 tokens through 61 blocks, 7/8 of each
    # buffer at TP 8. SP: forward gathers each column GEMM's input, reduce-scatters each row output; backward
    # gathers the inputs again, reduce-scatters their gradients, gathers the row outputs' gradients. Without SP:
    # the row outputs all-reduced forward (twice the buffer), the column inputs' gradients backward.
    h, latents = 7168, 1536 + 512
    for sp, forward, backward in (
        (True, (latents + 64 + h) + 2 * h, (2 * (latents + 64) + h) + 3 * h),
        (False, 4 * h, 2 * (latents + h)),
    ):
        train = Training(global_batch=4, seq_len=4096, zero_stage=1, sequence_parallel=sp)
        moved = traffic_bytes(v3, train, tp=8, pp=1, dp=1, micro_batch=1)["tp"]
        assert moved == pytest.approx(4 * 61 * (forward + backward) * 7 / 8 * 4096 * 2)


def test_fused_gradient_accumulation_drops_the_add_per_micro_batch():
    many = Training(global_batch=256, seq_len=4096, recompute="selective", zero_stage=1)
    fused = many.model_copy(update={"grad_accumulation_fusion": True})
    base, quick = (estimate("llama3-8b", "dgx-h100", t, tp=2, pp=1, dp=4) for t in (many, fused))
    # 64 micro-batches (256 / dp 4) x 10 bytes per local weight (8.0 B / tp 2) at the copy rate: 0.86 s
    saved = base.breakdown["optimizer"] - quick.breakdown["optimizer"]
    assert saved == pytest.approx(
        64 * 10 * load_model("llama3-8b").num_params / 2 / rates_for("h100-sxm").hbm_bytes_per_s, rel=0.02
    )
    assert quick.step_time_s < base.step_time_s


def test_optimizer_state_bytes_by_zero_stage_hand_checked():
    p, dp = 1_000_000, 8
    assert sum(state_bytes(p, dp=dp, zero_stage=0, optimizer="adam").values()) == 18 * p  # 2 + 4 + 8 + 4
    assert sum(state_bytes(p, dp=dp, zero_stage=1, optimizer="adam").values()) == 2 * p + 4 * p + 12 * p / dp
    assert sum(state_bytes(p, dp=dp, zero_stage=2, optimizer="adam").values()) == 2 * p + 16 * p / dp
    # FSDP: the fp32 shard is the master; bf16 copies exist only gathered (counted apart)
    assert sum(state_bytes(p, dp=dp, zero_stage=3, optimizer="adam").values()) == 16 * p / dp


def test_half_precision_gradients_halve_gradient_memory_and_dp_traffic():
    """grad_dtype bf16/fp16 (DeepSpeed's fp16/bf16 engines, Megatron fp16 without fp32 accumulation): 2 B
    per gradient where fp32 keeps 4, in memory and in the bytes the DP axis reduces."""
    p, dp = 1_000_000, 8
    assert state_bytes(p, dp=dp, zero_stage=1, optimizer="adam", grad_bytes=2)["gradients"] == 2 * p
    model = load_model("llama3-8b")
    fp32 = Training(global_batch=64, seq_len=4096, zero_stage=1)
    half = fp32.model_copy(update={"grad_dtype": "bf16"})
    full, halved = (estimate(model, "dgx-h100", t, tp=1, pp=1, dp=8) for t in (fp32, half))
    assert full.memory_breakdown["gradients"] == 2 * halved.memory_breakdown["gradients"]
    assert halved.comm_time_by_link["nvlink"] < full.comm_time_by_link["nvlink"]
    traffic = [traffic_bytes(model, t, tp=1, pp=1, dp=8, micro_batch=1)["dp"] for t in (fp32, half)]
    assert traffic[0] == 2 * traffic[1]


def test_fsdp2_copies_its_gathered_weights_and_gradients_every_micro_batch():
    # per micro-batch and weight: copy-out of the all-gather buffer in forward and in backward (2 + 2 B
    # each), chunk_cat of the bf16 gradient into the fp32 reduce-scatter buffer (2 + 4 B); per weight of
    # the shard, the fp32 -> bf16 copy into the all-gather input, twice (4 + 2 B each). FSDP1 and
    # DeepSpeed gather and reduce flat parameters in place, as Megatron-FSDP does (Megatron's runtime)
    model = load_model("llama3-8b")
    train = Training(global_batch=16, seq_len=4096, zero_stage=3, pipeline_runtime="torch")
    fsdp1, fsdp2 = (
        estimate(model, "dgx-h100", train.model_copy(update={"fsdp_version": v}), tp=1, pp=1, dp=8) for v in (1, 2)
    )
    copies = fsdp2.num_micro_batches * model.num_params * (14 + 12 / 8) / rates_for("h100-sxm").hbm_bytes_per_s
    assert fsdp2.breakdown["fsdp"] - fsdp1.breakdown["fsdp"] == pytest.approx(copies, rel=1e-6)
    megatron = estimate(model, "dgx-h100", train.model_copy(update={"pipeline_runtime": "megatron"}), tp=1, pp=1, dp=8)
    assert megatron.breakdown["fsdp"] == pytest.approx(fsdp1.breakdown["fsdp"])


def test_fsdp_under_pipeline_parallelism_holds_the_stage_gathered_for_the_whole_step():
    # torchtitan + torch.distributed.pipelining: no reshard between micro-batches, gradients accumulated
    # unsharded in fp32 and reduce-scattered once; without PP, two blocks gathered and sharded gradients
    model = load_model("llama3-8b")
    train = Training(global_batch=64, seq_len=4096, recompute="full", zero_stage=3, pipeline_runtime="torch")
    piped = estimate(model, "dgx-h100", train, tp=1, pp=2, dp=4, micro_batch=1)
    params = param_counts(model, layers=16, first=False, last=True)  # the fullest stage: the head's
    assert piped.memory_breakdown["gathered_weights"] == pytest.approx(2 * params)
    assert piped.memory_breakdown["gradients"] == pytest.approx(4 * params)
    flat = estimate(model, "dgx-h100", train, tp=1, pp=1, dp=8, micro_batch=1)
    assert flat.memory_breakdown["gradients"] == pytest.approx(4 * model.num_params / 8, rel=1e-6)
    # gathered once per step, not twice per micro-batch (16 of them): the PP run moves far fewer DP bytes
    moved = {pp: traffic_bytes(model, train, tp=1, pp=pp, dp=8 // pp, micro_batch=1)["dp"] * pp for pp in (1, 2)}
    assert moved[2] < moved[1] / 4
    # Megatron's schedules with Megatron-FSDP gather and reduce-scatter every micro-batch, pipeline or not
    megatron = train.model_copy(update={"pipeline_runtime": "megatron"})
    each = estimate(model, "dgx-h100", megatron, tp=1, pp=2, dp=4, micro_batch=1)
    block, ends = (
        param_counts(model, layers=1, first=False, last=False),
        param_counts(model, layers=0, first=False, last=True),
    )
    assert each.memory_breakdown["gathered_weights"] == pytest.approx(2 * (2 * block + ends))  # two blocks and the head
    assert each.memory_breakdown["gradients"] == pytest.approx(4 * params / 4)
    assert traffic_bytes(model, megatron, tp=1, pp=2, dp=4, micro_batch=1)["dp"] * 2 > 4 * moved[2]


def test_megatron_fsdp_zero2_under_a_pipeline_reduces_every_micro_batch():
    """Megatron-FSDP's optim_grads reduce-scatters every backward's gradients, under Megatron's pipeline schedules
    too, so a stage keeps gradient shards; torch's pipeline stages hold the whole gradients until the last one."""
    model = load_model("llama3-8b")
    train = Training(global_batch=64, seq_len=4096, recompute="full", zero_stage=2)
    runtimes = {runtime: train.model_copy(update={"pipeline_runtime": runtime}) for runtime in ("megatron", "torch")}
    plans = {runtime: estimate(model, "dgx-h100", t, tp=1, pp=2, dp=4) for runtime, t in runtimes.items()}
    params = param_counts(model, layers=16, first=False, last=True)
    assert plans["megatron"].memory_breakdown["gradients"] == pytest.approx(4 * params / 4)
    assert plans["torch"].memory_breakdown["gradients"] == pytest.approx(4 * params)
    moved = {r: traffic_bytes(model, t, tp=1, pp=2, dp=4, micro_batch=1)["dp"] for r, t in runtimes.items()}
    assert moved["megatron"] == pytest.approx(16 * moved["torch"])  # one reduce-scatter per micro-batch, of 16


def test_interleaved_stage_holds_at_most_every_micro_batch():
    # with as many micro-batches as stages, the interleaved warm-up runs every chunk forward before
    # the first backward on stage 0: num_micro micro-batches of its layers, not Narayanan's 1 + 7/16 more
    model = load_model("llama3-8b")
    train = Training(global_batch=8, seq_len=4096, recompute="full")
    mem = {
        v: activation_bytes(model, train, stage=0, layers=4, tp=1, pp=8, micro_batch=1, num_micro=8, virtual_stages=v)[
            "activations"
        ]
        for v in (1, 2)
    }
    assert mem[2] == pytest.approx(mem[1])
    many = activation_bytes(model, train, stage=0, layers=4, tp=1, pp=8, micro_batch=1, num_micro=64, virtual_stages=2)
    assert many["activations"] == pytest.approx(mem[1] * (1 + 7 / 16))


def test_loss_parallel_keeps_16_bytes_per_logit_and_the_gathered_head_input():
    # DTensor TP's loss_parallel: zeros_like, exp and their sum beside the saved fp32 log-softmax; its
    # ColwiseParallel head keeps the all-gathered bf16 input. torch's fp32 loss over Megatron's layers: 12 B, the
    # input's sequence shard
    spec = load_model("llama3-8b")
    train = Training(global_batch=8, seq_len=4096, recompute="full", loss="fp32")
    logits = {
        impl: estimate(spec, "dgx-h100", train.model_copy(update={"tp_impl": impl}), tp=8, pp=1, dp=1).memory_breakdown[
            "logits"
        ]
        for impl in ("megatron", "dtensor")
    }
    tokens = 4096
    assert logits["dtensor"] - logits["megatron"] == pytest.approx(
        4 * tokens * spec.vocab_size / 8 + 2 * tokens * spec.hidden_size
    )


@pytest.mark.parametrize(("recompute", "kept"), [("none", 1.0), ("selective-layer", 0.5), ("full", 0.0)])
def test_dtensor_sequence_parallel_keeps_the_gathered_norm_outputs(recompute, kept):
    """torchtitan's TP plan all-gathers each norm's output once for the column-parallel linears after it, and
    they keep it for the weight gradients: 2 x 2 B per element of h beyond Megatron's 1/tp shards, in every
    block whose activations are kept and in the one rebuilt for its backward."""
    spec, tokens, tp = load_model("llama3-8b"), 4096, 8
    train = Training(global_batch=8, seq_len=tokens, recompute=recompute)
    mem = {
        impl: activation_bytes(
            spec,
            train.model_copy(update={"tp_impl": impl}),
            stage=0,
            layers=4,
            tp=tp,
            pp=2,
            micro_batch=1,
            num_micro=4,
            virtual_stages=1,
        )
        for impl in ("megatron", "dtensor")
    }
    extra = 2 * 2 * spec.hidden_size * (1 - 1 / tp) * tokens
    assert mem["dtensor"]["activations"] - mem["megatron"]["activations"] == pytest.approx(extra * kept * 4 * 2)
    if recompute != "none":
        assert mem["dtensor"]["recomputed_block"] - mem["megatron"]["recomputed_block"] == pytest.approx(extra)


def test_zero3_backward_collectives_hide_under_the_backward_alone():
    """Over PCIe (8 A100s in bridged pairs, whose rings NCCL copies through host memory between the pairs) a ZeRO-3
    step's gathers and fp32 reduce-scatters, for micro-batches of two sequences, take less than its compute. FSDP
    prefetches one block ahead within a pass, so the backward's gathers and reduce-scatters (twice the gathers'
    bytes) hide under the backward alone: what they take beyond it is exposed, though the step's collectives would
    fit under its compute as a whole."""
    train = Training(global_batch=128, seq_len=8192, zero_stage=3, recompute="none", fsdp_version=1)
    plan = estimate("llama3-8b", "a100-pcie-8gpu-bridged", train, tp=1, pp=1, dp=8, micro_batch=2)
    comm, compute = plan.comm_time_by_link["pcie"], plan.breakdown["compute"]  # all micro-batches
    assert 0.5 * compute < comm < compute
    topo, model = load_topology("a100-pcie-8gpu-bridged"), load_model("llama3-8b")
    gather = collective_time_s(topo, "all_gather", range(8), model.num_params * 2 / 32)
    scatter = collective_time_s(topo, "reduce_scatter", range(8), model.num_params * 4 / 32)
    rates = rates_for(topo.slowest_gpu_model)
    times = stage_times(model, train, layers=32, first=True, last=True, micro_batch=2, tp=1, rates=rates)
    backward_comm = plan.num_micro_batches * 32 * (gather + scatter)
    backward = plan.num_micro_batches * (times.backward_s + times.recompute_s)
    assert backward_comm > backward
    assert plan.breakdown["fsdp"] > backward_comm - backward


def test_compute_and_a_collective_beside_it_slow_each_other_as_measured():
    """The model takes the H100 measurements as recorded (a stand-in holding 16 SMs, NCCL's channel count there):
    compute beside a collective loses 14% of its speed, and the collective's bytes keep what the stand-in still
    copies beside compute (267 GB/s) over its ring's pace alone: 0.73 of it over a DGX H100's NVSwitch (366 GB/s),
    all of it at one NIC's pace or PCIe's; its latency keeps its pace. A ZeRO-3 step pays the compute's loss over
    the collective's slowed time beside it: all of its gathers and reductions but each micro-batch's first gather
    and last reduce-scatter, which nothing runs beside."""
    results = ROOT / "benchmarks/results/h100-overlap-interference"
    recorded = json.loads((results / "overlap-interference.json").read_text())
    medians = {int(k): v for k, v in recorded["median_speed_beside"].items()}
    assert dict(SPEED_BESIDE_HELD_SMS[1:]) == pytest.approx(medians, abs=5e-5)
    assert overlap_slowdown(16) == pytest.approx(1 - medians[16], abs=5e-5)
    assert overlap_slowdown(4) < overlap_slowdown(16) / 3  # 4 channels over PCIe
    both = json.loads((results / "both-ways.json").read_text())
    copied = {int(k): v * both["median_collective_speed_beside"][k] for k, v in both["holder_gbps"].items()}
    assert dict(COPY_GBPS_BESIDE_COMPUTE[1:]) == pytest.approx(copied, abs=0.05)
    assert Overlap.of(16, 365.6).speed == pytest.approx(copied[16] / 365.6, rel=1e-3) == pytest.approx(0.73, abs=0.005)
    assert Overlap.of(16, 50.0).speed == Overlap.of(4, 27.0).speed == 1.0  # a NIC's pace; PCIe Gen4's

    train = Training(global_batch=16, seq_len=4096, zero_stage=3, fsdp_version=1)
    plan = estimate("llama3-8b", "dgx-h100", train, tp=1, pp=1, dp=8)
    comm, compute = plan.comm_time_by_link["nvlink"], plan.breakdown["compute"]  # all micro-batches
    assert 0.05 * compute < comm < 0.5 * compute
    params, blocks, dgx = load_model("llama3-8b").num_params, 32, load_topology("dgx-h100")
    assert rings_under_load(dgx, range(8), Counter()).intra_gbps == pytest.approx(365.6)
    rings = rings_under_load(dgx, range(8), Counter())
    (gather, gather_latency, pace), (scatter, scatter_latency, _) = (
        rings_time_parts(rings, op, params * size / blocks, FLOOR_LATENCY_S)
        for op, size in (("all_gather", 2), ("reduce_scatter", 4))
    )
    assert gather == collective_time_s(dgx, "all_gather", range(8), params * 2 / blocks)
    assert pace == pytest.approx(365.6) and 0 < gather_latency < 0.05 * gather
    alone, micro = plan.num_micro_batches * (gather + scatter), plan.num_micro_batches
    latency = micro * ((2 * blocks - 1) * gather_latency + (blocks - 1) * scatter_latency)  # of those beside compute
    slowed = latency + (comm - alone - latency) / Overlap.of(16, 365.6).speed
    assert plan.breakdown["fsdp"] == pytest.approx(alone + overlap_slowdown(16) * slowed)
    # DDP: the gradient all-reduce (NVLS) under the last micro-batch's backward (2/3 of its compute)
    ddp = estimate("llama3-8b", "dgx-h100", train.model_copy(update={"zero_stage": 0}), tp=1, pp=1, dp=8)
    sync, backward = ddp.comm_time_by_link["nvlink"], ddp.breakdown["compute"] / ddp.num_micro_batches * 2 / 3
    _, sync_latency, pace = rings_time_parts(rings, "all_reduce", params * 4, FLOOR_LATENCY_S)
    assert pace == pytest.approx(365.6)  # NVLS: the switch reduces, the channels copy at the ring's pace
    beside = sync_latency + (sync - sync_latency) / Overlap.of(16, 365.6).speed
    assert 0 < beside < backward
    assert ddp.breakdown["dp"] == pytest.approx(overlap_slowdown(16) * beside)


def test_a_collective_beside_compute_slows_by_what_its_channels_copy(tmp_path):
    """Beside compute only a collective's bytes slow, to what its channels still copy; its latency keeps its pace,
    and the pace it is measured against is what the algorithm NCCL runs copies. Two layouts a random sweep found
    shorter on slower links, while the model slowed the latency too and took the ring's pace for every algorithm:
    a ZeRO-0 all-reduce over two DGX H100s (NVLS tree, which waits on the NVLinks here, not on the NICs), one NIC at
    half speed; and a latency-bound ZeRO-3 step of a tiny model on an NVSwitch at half its links."""
    healthy = read_spec("dgx-h100").model_dump(mode="json", exclude_none=True)
    cases = [
        ("one NIC half", 2, "llama2-7b", Training(global_batch=64, seq_len=2048, recompute="selective"), 16,
         [14, 8, 9, 4, 1, 10, 3, 0, 13, 7, 5, 11, 2, 15, 6, 12]),
        ("NVSwitch half links", 1, "gpt-tiny", Training(global_batch=16, seq_len=4096, zero_stage=3,
         recompute="full", tp_comm_overlap=True, pipeline_runtime="torch"), 4, [3, 0, 1, 5, 2, 4, 7, 6]),
    ]  # fmt: skip
    for what, nodes, model, train, dp, gpus in cases:
        (tmp_path / "healthy.json").write_text(json.dumps(healthy))
        (tmp_path / "slower.json").write_text(json.dumps(dict(_degraded(healthy))[what]))
        tp = len(gpus) // dp
        shape = dict(tp=tp, pp=1, dp=dp, rank_layout=np.reshape(gpus, (1, dp, tp)).tolist())
        before, after = (
            estimate(model, load_topology(tmp_path / f"{name}.json", nodes=nodes), train, **shape)
            for name in ("healthy", "slower")
        )
        assert after.step_time_s >= before.step_time_s, what


def test_a_collective_copying_slower_than_its_channels_can_keeps_its_pace_as_measured():
    """benchmarks/overlap_paced.py on the H100: 16 programs copy at a set pace beside GEMMs, attention and
    memory-bound ops (medians over the ops). Up to 200 GB/s the copy keeps its pace, as `Overlap.of` keeps it (under
    267 GB/s); at 300 and 400 GB/s it slows to 0.94 and 0.70 of it (the model: 0.89 and 0.67). The compute beside
    it loses as much while the programs mostly wait (10 GB/s) as while they copy flat out, as the model charges
    every held SM alike, through a collective's latency too."""
    recorded = json.loads((ROOT / "benchmarks/results/h100-overlap-paced/paced.json").read_text())
    kept = {int(k): v for k, v in recorded["median_copy_speed_beside"].items()}
    for pace in (10, 50, 100, 200):
        assert kept[pace] > 0.98 and Overlap.of(16, pace).speed == 1.0
    for pace in (300, 400):
        assert Overlap.of(16, pace).speed == pytest.approx(kept[pace], abs=0.06)
    speed = {int(k): v for k, v in recorded["median_speed_beside"].items()}
    assert speed[10] == pytest.approx(speed[0], abs=0.02)  # waiting: 0.849, flat out (0): 0.844
    assert 1 - speed[10] == pytest.approx(overlap_slowdown(16), abs=0.03)


def test_an_overlapped_collective_longer_than_its_compute_adds_its_own_excess_and_its_slowing():
    """Both run at their speeds beside each other until the compute ends; the collective then goes on alone. So a
    collective that keeps its pace (at a NIC's) adds just its excess, one slowed beside compute adds more, and the
    step never shortens as the collective grows (a degraded link, more bytes)."""
    nic, nvlink = Overlap(lost=0.14, speed=1.0), Overlap(lost=0.14, speed=0.73)
    assert nic.added_s(3.0, 2.0) == pytest.approx(1.0)
    assert nvlink.added_s(3.0, 2.0) == pytest.approx(1.0 + 2.0 * 0.27 / 0.86)
    added = [nvlink.added_s(k / 10, 2.0) for k in range(1, 60)]
    assert added == sorted(added)
    assert added[0] == pytest.approx(0.1 * 0.14 / 0.73)


def test_nccl_holds_two_channels_per_nvlink_of_the_slowest_hop():
    """16 channels through an NVSwitch and across nodes, 4 over PCIe; between GPUs bonded by NVLinks 2 per
    link of the ring's slowest hop (HGX H100 4-GPU: NV6 pairs), and no fewer than over PCIe (DGX-1's NV1 and
    NV2 pairs), so that a pair that loses its NVLink never holds fewer SMs than before."""
    dgx1, hgx, h100 = load_topology("dgx1-v100"), load_topology("hgx-h100-4gpu"), load_topology("dgx-h100", nodes=2)
    assert [nccl_channels(dgx1, g) for g in ([5, 7], [0, 3], [0, 1, 2, 3], [0, 5])] == [4, 4, 4, 4]
    assert [nccl_channels(hgx, g) for g in ([0, 1], range(4))] == [12, 12]
    assert [nccl_channels(h100, g) for g in (range(8), [0, 1], [0, 8])] == [16, 16, 16]


def test_dtensor_tp_adds_its_measured_host_time_in_eager_mode():
    # a small model at one short sequence per micro-batch: the host sets the pace, so DTensor's dispatch
    # (host time per block over the plain figure, measured by calibrate) is what the step adds
    model, rates = load_model("gpt2"), rates_for("h100-sxm")
    train = Training(global_batch=8, seq_len=512, sequence_parallel=False)
    megatron, dtensor, compiled, compiled_megatron = (
        estimate(model, "dgx-h100", train.model_copy(update=update), tp=4, pp=1, dp=2)
        for update in ({}, {"tp_impl": "dtensor"}, {"tp_impl": "dtensor", "compiled": True}, {"compiled": True})
    )
    host = rates.host_dispatch
    extra = sum(host[f"dtensor_tp_{k}"] - host[k] for k in ("forward_s_per_block", "backward_s_per_block"))
    added = dtensor.breakdown["compute"] - megatron.breakdown["compute"]
    assert added == pytest.approx(4 * model.num_layers * extra, rel=1e-6)  # 4 micro-batches per replica
    # compiled: the compiled blocks' host figures, DTensor's eager excess not added
    assert compiled.breakdown["compute"] == compiled_megatron.breakdown["compute"] < megatron.breakdown["compute"]


def test_memory_never_grows_with_more_zero_sharding():
    """Over shuffled layouts of two DGX H100s and options: ZeRO 0 -> 1 -> 2 (-> 3 without pipeline stages)
    never adds to the peak. With stages FSDP2 keeps each stage gathered and its gradients unsharded for the
    whole step, as torchtitan runs it (measured; `test_fsdp_under_pipeline_parallelism_holds_...`), so
    ZeRO-3 there is another regime, not more sharding; Megatron-FSDP gathers per micro-batch but, as FSDP does,
    keeps the embedding and head gathered, which on a stage holding little else can outweigh what sharding
    saves (gpt-tiny on 4 stages: 1.4 MB more)."""
    rng = random.Random(1)
    topo = load_topology("dgx-h100", nodes=2)
    checked = 0
    for training, shape in _random_layouts(topo.num_gpus, rng, 30):
        model = rng.choice(["gpt-tiny", "llama3-8b", "mixtral-8x7b", "deepseek-v2-lite"])
        stages = (0, 1, 2, 3) if shape["pp"] == 1 else (0, 1, 2)
        peaks = []
        for zero in stages:
            try:
                peaks.append(estimate(model, topo, Training(**{**training, "zero_stage": zero}), **shape))
            except PlanError:
                break  # nothing to shard over one copy of the weights
        checked += len(peaks) > 1
        for more, fewer in itertools.pairwise(peaks):
            assert fewer.memory_per_gpu_bytes <= more.memory_per_gpu_bytes, (model, training, shape)
            assert fewer.fits or not more.fits
    assert checked >= 20


@pytest.mark.parametrize(
    ("model", "gpus", "runtime"),
    [("llama3-8b", 16, "megatron"), ("llama3-8b", 16, "torch"), ("mixtral-8x7b", 32, "megatron"),
     ("deepseek-v2-lite", 16, "megatron")],
)  # fmt: skip
def test_memory_never_shrinks_with_a_larger_micro_batch(model: str, gpus: int, runtime: str):
    """Every candidate the search enumerates (degrees, virtual stages, ZeRO, recompute and its modules): a larger
    micro-batch, all else and the step's sequences unchanged, never lowers what the fullest GPU must hold.
    Activations grow with the tokens a micro-batch carries and no term shrinks faster: fewer micro-batches in
    flight hold as many tokens, and torch's pipeline buffers, one h-wide tensor per token, are fewer by less than
    a block keeps. The search skips the larger micro-batches of a candidate that does not fit on this ground, but
    where torch's interleaved schedule under FSDP2, in one round of micro-batches, reduces each chunk's gradients as
    it finishes (`reduces_chunks_as_they_finish`): there the whole stage's fp32 gradients give way to one chunk's
    as the micro-batches fall below 2 pp, which Llama 3 8B's smaller loss lets show."""
    from shardplan.cost.memory import reduces_chunks_as_they_finish
    from shardplan.solve import search

    spec, train = load_model(model), Training(global_batch=4 * gpus, seq_len=4096, pipeline_runtime=runtime)
    needs: dict[object, list[tuple[int, float]]] = {}
    for c in search._candidates(spec, gpus, train, {}):
        need = search._memory_bytes(spec, search._training_of(train, c), c, 0.0)
        needs.setdefault(dataclasses.replace(c, micro_batch=0), []).append((c.micro_batch, need))
    grown = [k for k, by_mb in needs.items() if len(by_mb) > 1]
    assert len(grown) > 100
    shrank = set()
    for key in grown:
        ordered = [need for _, need in sorted(needs[key])]
        if not all(small <= large * (1 + 1e-12) for small, large in itertools.pairwise(ordered)):
            shrank.add(key)
    excepted = {
        k for k in grown if reduces_chunks_as_they_finish(search._training_of(train, k), k.pp, k.virtual_stages)
    }
    assert shrank <= excepted
    assert bool(shrank) == (runtime == "torch")


def test_allocator_cache_only_fills_what_the_gpu_has_left():
    """A plan that fits reports at most the GPU's memory: the caching allocator frees cache before it
    runs out, so its reserve never passes the card (llama3-8b, micro-batch 4 x 8,192 tokens on 80 GB A100s, torch's fp32
    loss: 80.2 GB needed, 8.7 GB of cache wanted, 85.9 GB on the card)."""
    topo = load_topology("a100-pcie-8gpu-bridged")
    train = Training(global_batch=256, seq_len=8192, zero_stage=3, loss="fp32", recompute="full")
    plan = estimate("llama3-8b", topo, train, tp=1, pp=1, dp=8, micro_batch=4)
    need = plan.memory_per_gpu_bytes - plan.memory_breakdown["allocator_cache"]
    assert plan.fits and need < topo.smallest_memory_bytes
    assert plan.memory_per_gpu_bytes == pytest.approx(topo.smallest_memory_bytes)
    assert sum(plan.memory_breakdown.values()) == pytest.approx(plan.memory_per_gpu_bytes)


def test_fitting_is_decided_by_the_stage_that_requires_most_not_the_one_with_most_cache():
    """Stage 0 requires 10 bytes; stage 1 requires 8 and caches 4: on 9 bytes stage 0 does not fit, though
    stage 1 shows the larger peak; on 11 bytes both fit and stage 1's cache fills the 3 bytes its GPU has left."""
    stages = [{"activations": 10.0, CACHE_PART: 0.0}, {"activations": 8.0, CACHE_PART: 4.0}]
    assert peak_memory(stages, 9.0) == (10.0, stages[1])
    assert peak_memory(stages, 11.0) == (10.0, {"activations": 8.0, CACHE_PART: 3.0})
    assert peak_memory(stages, None) == (10.0, stages[1])


def test_tp_across_pcie_never_beats_tp_inside_nvlink_island():
    topo = load_topology("a100-pcie-8gpu-bridged")
    train = Training(global_batch=16, seq_len=2048, recompute="full", zero_stage=1)
    inside = estimate("llama2-7b", topo, train, tp=2, pp=1, dp=4)  # row-major: TP pairs 0-1, 2-3 ... bridged
    across = [[[0, 4], [1, 5], [2, 6], [3, 7]]]  # every TP pair crosses the sockets
    crossed = estimate("llama2-7b", topo, train, tp=2, pp=1, dp=4, rank_layout=across)
    assert crossed.step_time_s > inside.step_time_s
    assert crossed.default_step_time_s == pytest.approx(inside.step_time_s)
    # the same layout as a numpy array (what a script holding a mesh passes) costs the same
    assert estimate("llama2-7b", topo, train, tp=2, pp=1, dp=4, rank_layout=np.array(across)) == crossed


def _degraded(spec: dict) -> Iterator[tuple[str, dict]]:
    """`spec` (a declared topology) with one thing slower each time: an NVLink bundle loses a link (its
    last one: the pair falls back to PCIe), the NVSwitch half its links or NVLink SHARP, PCIe a
    generation, every NIC or one NIC half its speed."""
    node = spec["nodes"][0]
    for k, (a, b, links) in enumerate(node.get("nvlink", [])):
        bundles = [*node["nvlink"][:k], *([[a, b, links - 1]] if links > 1 else []), *node["nvlink"][k + 1 :]]
        yield f"NVLink {a}-{b} x{links - 1}", _with(spec, nvlink=bundles)
    if "nvswitch" in node:
        switch = node["nvswitch"]
        yield "NVSwitch half links", _with(spec, nvswitch={**switch, "links_per_gpu": switch["links_per_gpu"] // 2})
        if switch.get("nvls"):
            yield "no NVLS", _with(spec, nvswitch={**switch, "nvls": False})
    if node["pcie"]["gen"] > 3:
        yield "PCIe a generation down", _with(spec, pcie={**node["pcie"], "gen": node["pcie"]["gen"] - 1})
    half = [{**nic, "gbit": nic["gbit"] / 2} for nic in node["nics"]]
    yield "NICs half", {**_with(spec, nics=half), "network": {**spec["network"], "gbit_per_nic": half[0]["gbit"]}}
    yield "one NIC half", _with(spec, nics=[half[0], *node["nics"][1:]])


def _with_experts(shape: dict, rng: random.Random) -> dict:
    """`shape` with a random expert-parallel degree of 2 or 4 that divides its DP degree (1 where none does, or with
    context parallelism): its layout (pp, dp, tp) read as (pp, dp / ep, ep, tp)."""
    dp, tp = shape["dp"], shape["tp"]
    ep = rng.choice([d for d in (2, 4) if dp % d == 0] or [1]) if shape["cp"] == 1 else 1
    if ep == 1:
        return {**shape, "ep": 1}
    layout = np.reshape(shape["rank_layout"], (shape["pp"], dp // ep, ep, tp)).tolist()
    return {**shape, "dp": dp // ep, "ep": ep, "rank_layout": layout}


def _with(spec: dict, **node: object) -> dict:
    return {**spec, "nodes": [{**spec["nodes"][0], **node}]}


def _random_layouts(n: int, rng: random.Random, count: int) -> Iterator[tuple[dict, dict]]:
    """`count` layouts of n GPUs: degrees (CP among them), ZeRO, recompute and overlap options, ranks shuffled."""
    while count:
        tp = rng.choice([d for d in (1, 2, 4, 8) if n % d == 0])
        pp = rng.choice([d for d in (1, 2, 4) if n // tp % d == 0])
        cp = rng.choice([d for d in (1, 1, 2) if n // (tp * pp) % d == 0])
        dp = n // (tp * pp * cp)
        training = {
            "global_batch": dp * pp * rng.choice([1, 2, 4]),
            "seq_len": rng.choice([1024, 2048, 4096]),
            "zero_stage": rng.choice([0, 1, 2, 3]),
            "recompute": rng.choice(["none", "selective", "full"]),
            "tp_comm_overlap": rng.random() < 0.3,
            "pipeline_runtime": rng.choice(["megatron", "torch"]),
        }
        gpus = list(range(n))
        rng.shuffle(gpus)
        shape = (pp, dp, cp, tp) if cp > 1 else (pp, dp, tp)
        yield training, {"tp": tp, "pp": pp, "dp": dp, "cp": cp, "rank_layout": np.reshape(gpus, shape).tolist()}
        count -= 1


@pytest.mark.parametrize(("preset", "nodes"), [("a100-pcie-8gpu-bridged", 2), ("dgx1-v100", 1), ("dgx-h100", 2)])
def test_tp_groups_that_cross_a_hop_never_communicate_faster(preset, nodes):
    """Shuffled layouts whose TP groups cross a PCIe, socket or network hop, against the same degrees in
    row-major order, whose TP groups stay on NVLink: the TP part of the step is never shorter. (The whole
    step may be: a shuffle can put DP or pipeline traffic on the NVLinks instead, which the search weighs.)"""
    assert _tp_across_a_hop_never_faster(load_topology(preset, nodes=nodes), random.Random(preset), 40) >= 5


@pytest.mark.parametrize("gpu", ["a100-pcie-80gb", "h100-pcie", "rtx-3090"])
def test_tp_groups_that_leave_their_bridge_never_communicate_faster(gpu, tmp_path):
    """As above, on PCIe servers of random generation (up to the GPU's), switches, sockets and peer-to-peer, whose
    GPUs pair on whole NVLink bridges (NV12; the RTX 3090's NV4). A bridge of one or two links can be slower than a
    Gen5 PCIe path, and NCCL keeps to it: not checked here."""
    rng = random.Random(gpu)
    bridge = 4 if gpu == "rtx-3090" else 12
    compared = 0
    for k in range(4):
        pcie = {"gen": rng.choice([3, 4, 5]), "sockets": [[0, 1, 2, 3], [4, 5, 6, 7]]}
        if rng.random() < 0.5:
            pcie["switches"] = [[0, 1], [2, 3], [4, 5], [6, 7]]
        node = {"gpu": gpu, "gpus": 8, "pcie": pcie, "nvlink": [[i, i + 1, bridge] for i in range(0, 8, 2)]}
        node |= {"p2p": False} if rng.random() < 0.3 else {}
        node["nics"] = [{"name": "NIC0", "gbit": 200, "near": [0, 1]}, {"name": "NIC1", "gbit": 200, "near": [6, 7]}]
        path = tmp_path / f"server-{k}.json"
        path.write_text(json.dumps({"nodes": [node], "network": {"gbit_per_nic": 200}}))
        compared += _tp_across_a_hop_never_faster(load_topology(path, nodes=rng.choice([1, 2])), rng, 12)
    assert compared >= 5


def _tp_across_a_hop_never_faster(topo: Topology, rng: random.Random, layouts: int) -> int:
    """Over `layouts` random layouts of `topo`, those whose TP groups leave NVLink where row-major's stay on it: their
    TP time against row-major's (asserted); how many were compared."""

    def on_nvlink(grid: np.ndarray, tp: int) -> bool:
        return all(
            topo.path_kind(a, b) == "nvlink"
            for group in grid.reshape(-1, tp).tolist()
            for a, b in itertools.pairwise(group)
        )

    compared = 0
    for training, shape in _random_layouts(topo.num_gpus, rng, layouts):
        tp, layout = shape["tp"], np.asarray(shape["rank_layout"])
        row_major = np.arange(topo.num_gpus).reshape(layout.shape)
        if tp == 1 or on_nvlink(layout, tp) or not on_nvlink(row_major, tp):
            continue
        model = rng.choice(["gpt-tiny", "llama2-7b"])
        try:
            inside = estimate(model, topo, Training(**training), **{**shape, "rank_layout": None})
        except PlanError:
            continue
        across = estimate(model, topo, Training(**training), **shape)
        assert across.breakdown["tp"] >= inside.breakdown["tp"], (model, training, shape)
        compared += 1
    return compared


@pytest.mark.parametrize(
    "preset", ["dgx1-v100", "a100-pcie-8gpu-bridged", "dgx-h100", "pcie-8gpu-2socket", "hgx-h100-4gpu"]
)
def test_time_never_drops_when_a_link_is_degraded(preset, tmp_path):
    """Over shuffled layouts of one and two nodes, dense models and a mixture of experts (expert parallelism,
    Megatron's overlapped all-to-alls or not), each link made slower in turn, then each link class. To within a part
    per million: NCCL opens 2 channels per NVLink (`nccl_channels`), so a bundle that loses a link holds a few SMs
    fewer during the latency of its collectives (HGX H100's NV6 -> NV5: 1e-7 of the step)."""
    rng = random.Random(preset)
    healthy = read_spec(preset).model_dump(mode="json", exclude_none=True)
    for nodes in (1, 2):
        path = tmp_path / "healthy.json"
        path.write_text(json.dumps(healthy))
        topo = load_topology(path, nodes=nodes)
        cases = []
        for training, shape in _random_layouts(topo.num_gpus, rng, 16):
            model = rng.choice(["gpt-tiny", "llama2-7b", "qwen3-30b-a3b"])
            if model == "qwen3-30b-a3b":
                shape = _with_experts(shape, rng)
                training["ep_comm_overlap"] = shape["ep"] > 1 and rng.random() < 0.5
            try:
                cases.append((model, Training(**training), shape, estimate(model, topo, Training(**training), **shape)))
            except PlanError:
                continue  # e.g. a ZeRO stage the layout cannot shard
        assert len(cases) >= 12
        degraded = []
        for what, spec in _degraded(healthy):
            path = tmp_path / f"degraded-{len(degraded)}.json"
            path.write_text(json.dumps(spec))
            degraded.append((what, load_topology(path, nodes=nodes)))
        # and each link class measured at half its shipped rate (a calibration's `link_scale`)
        degraded += [
            (f"{kind} x0.5", topo.with_link_scale(LinkScale(**{kind: 0.5}))) for kind in LinkScale.model_fields
        ]
        for what, slower in degraded:
            for model, train, shape, plan in cases:
                after = estimate(model, slower, train, **shape).step_time_s
                assert after >= plan.step_time_s * (1 - 1e-6), (what, nodes, model, train, shape)


_NICS = [{"name": "NIC0", "gbit": 400, "near": [0]}, {"name": "NIC1", "gbit": 400, "near": [7]}]


@pytest.mark.parametrize(
    ("node", "nodes", "slower", "model", "training", "shape"),
    [
        # DP over a bridge of one NVLink (0-1, the slowest) and one of four (2-3, 8 channels): charged the most
        # channels any group holds for the slowest group's time, the four-link bridge down to three took 0.5% off
        (
            {"gpu": "a100-pcie-80gb", "gpus": 4, "nvlink": [[0, 1, 1], [2, 3, 4]], "pcie": {"gen": 3}},
            1,
            {"nvlink": [[0, 1, 1], [2, 3, 3]]},
            "llama2-7b",
            {"global_batch": 2, "seq_len": 2048, "zero_stage": 1},
            {"tp": 2, "pp": 1, "dp": 2, "rank_layout": [[[1, 3], [0, 2]]]},
        ),
        # gradients over pairs inside and across two nodes: charged the slowest group's channels alone, PCIe a
        # generation down made a pair through host memory the slowest, whose 4 channels replaced the 16 of a pair
        # across nodes: 2.8% off
        (
            {
                "gpu": "a100-pcie-80gb",
                "gpus": 8,
                "nvlink": [[0, 1, 12], [2, 3, 1], [4, 5, 12], [6, 7, 1]],
                "pcie": {
                    "gen": 5,
                    "sockets": [[0, 1, 2, 3], [4, 5, 6, 7]],
                    "host_bridges": [[0, 1, 2, 3], [4, 5, 6, 7]],
                },
            },
            2,
            {"pcie": {"gen": 4, "sockets": [[0, 1, 2, 3], [4, 5, 6, 7]], "host_bridges": [[0, 1, 2, 3], [4, 5, 6, 7]]}},
            "qwen3-30b-a3b",
            {"global_batch": 1, "seq_len": 2048, "pipeline_runtime": "torch", "tp_comm_overlap": True},
            {
                "tp": 8,
                "pp": 1,
                "dp": 1,
                "cp": 2,
                "rank_layout": [[[[15, 4, 14, 0, 3, 5, 2, 11], [9, 7, 12, 13, 8, 1, 10, 6]]]],
            },
        ),
    ],
)
def test_a_slower_link_does_not_lighten_what_compute_loses_beside_a_collective(
    node, nodes, slower, model, training, shape, tmp_path
):
    """Groups of one axis that hold different channels (`nccl_channels`) for different times: the stage loses the
    compute of the group that loses most (`AxisTimes.overlap`), so a link made slower never shortens the step.
    Found by degrading random declared topologies (each case: what a simpler rule took off the step)."""
    times = []
    for declared in (node, {**node, **slower}):
        path = tmp_path / f"node-{len(times)}.json"
        nics = _NICS if declared["gpus"] == 8 else _NICS[:1]
        path.write_text(json.dumps({"nodes": [{**declared, "nics": nics}], "network": {"gbit_per_nic": 400}}))
        times.append(estimate(model, load_topology(path, nodes=nodes), Training(**training), **shape).step_time_s)
    assert times[1] >= times[0]


def _h100_nodes(tmp_path: Path, fabrics: list[str]) -> Path:
    """H100 nodes alike but for their NVLink: an NVSwitch, or a DGX-1-style cube mesh (NV2 bundles)."""
    cube = [[i, j, 2] for i in range(8) for j in range(i + 1, 8) if i ^ j in (1, 2, 4)]
    nodes = [
        {"gpu": "h100-sxm", "gpus": 8, **({"nvswitch": {"links_per_gpu": 18}} if f == "nvswitch" else {"nvlink": cube})}
        for f in fabrics
    ]
    path = tmp_path / ("-".join(fabrics) + ".json")
    path.write_text(json.dumps({"nodes": nodes, "network": {"gbit_per_nic": 400}}))
    return path


def test_a_pipeline_over_mixed_nvlink_fabrics_runs_at_the_slower_nodes_pace(tmp_path):
    """TP=8 on each node, one stage per node: the stage on the cube-mesh node sets the pace, whichever
    node the pipeline starts on (nodes that differ only in NVLink are not interchangeable). NCCL's rings there
    use 6 of each GPU's 18 NVLinks, where the switch's carry all 18 (at a ring's share): over 1.4x the step."""
    train = Training(global_batch=32, seq_len=4096)
    step = {
        tuple(f): estimate("llama3-8b", _h100_nodes(tmp_path, f), train, tp=8, pp=2, dp=1).step_time_s
        for f in (["nvswitch", "nvswitch"], ["nvswitch", "cube"], ["cube", "nvswitch"], ["cube", "cube"])
    }
    assert step["nvswitch", "cube"] == pytest.approx(step["cube", "cube"])
    assert step["nvswitch", "cube"] > 1.4 * step["nvswitch", "nvswitch"]
    # the cube-mesh node sets the pace either way; as the first stage (no output head) its GPU waits longer
    # for the host's dispatch, which hides a little more of its TP collectives
    assert 1.4 * step["nvswitch", "nvswitch"] < step["cube", "nvswitch"] <= step["cube", "cube"]


def test_a_stage_steps_its_optimizer_at_its_slowest_gpus_pace(tmp_path):
    """One stage over a B200 node and an L40S node: a tiny model's blocks run at the host's pace on both, so neither
    GPU is slower at compute, but the optimizer step (memory-bound) takes as long as it does on the L40S, the GPU
    of the smaller memory bandwidth: what an all-L40S cluster takes for it."""

    def cluster(*gpus: str) -> Path:
        path = tmp_path / f"{'-'.join(gpus)}.json"
        path.write_text(json.dumps({"nodes": [{"gpu": g, "gpus": 1} for g in gpus], "network": {"gbit_per_nic": 100}}))
        return path

    train = Training(global_batch=8, seq_len=1024)
    steps = {gpus: estimate("gpt-tiny", cluster(*gpus), train, tp=1, pp=1, dp=2) for gpus in (("b200", "l40s"),
             ("l40s", "b200"), ("l40s", "l40s"), ("b200", "b200"))}  # fmt: skip
    assert steps["b200", "l40s"].breakdown["compute"] == pytest.approx(steps["b200", "b200"].breakdown["compute"])
    for mixed in (("b200", "l40s"), ("l40s", "b200")):
        assert steps[mixed].breakdown["optimizer"] == pytest.approx(steps["l40s", "l40s"].breakdown["optimizer"])
    assert steps["l40s", "l40s"].breakdown["optimizer"] > 2 * steps["b200", "b200"].breakdown["optimizer"]


def test_each_stage_runs_at_its_slowest_gpu_models_pace(tmp_path):
    """A DGX H100 node beside a DGX A100 node: a stage is timed on the GPUs it runs on (not on rank 0's), so
    with a stage per node the step lies between the all-H100 and all-A100 clusters' whichever node holds
    rank 0, the lighter first stage (no output head) belongs on the A100s, and one stage over both nodes
    runs at the A100s' pace."""

    def cluster(*gpus: str) -> Path:
        nodes = [{"gpu": g, "gpus": 8, "nvswitch": {"links_per_gpu": 18 if g == "h100-sxm" else 12}} for g in gpus]
        path = tmp_path / f"{'-'.join(gpus)}.json"
        path.write_text(json.dumps({"nodes": nodes, "network": {"gbit_per_nic": 400}}))
        return path

    train = Training(global_batch=32, seq_len=4096)
    h100, a100, mixed = (
        cluster("h100-sxm", "h100-sxm"),
        cluster("a100-sxm-80gb", "a100-sxm-80gb"),
        cluster("h100-sxm", "a100-sxm-80gb"),
    )
    a100_first = [[list(range(8, 16))], [list(range(8))]]
    step = {
        (name, first): estimate("llama3-8b", topo, train, tp=8, pp=2, dp=1, rank_layout=layout).step_time_s
        for name, topo in (("h100", h100), ("a100", a100), ("mixed", mixed))
        for first, layout in (("node 0", None), ("node 1", a100_first))
    }
    for first in ("node 0", "node 1"):
        assert step["h100", first] < step["mixed", first] <= step["a100", first]
    assert step["mixed", "node 1"] < step["mixed", "node 0"]  # the A100s hold stage 0
    across = estimate("llama3-8b", mixed, train, tp=8, pp=1, dp=2).breakdown["compute"]
    assert across == pytest.approx(estimate("llama3-8b", a100, train, tp=8, pp=1, dp=2).breakdown["compute"])


def test_more_tokens_take_longer():
    """Twice the sequences, or sequences twice as long, over shuffled layouts on DGX H100s: the step never
    gets shorter (collectives that the host's dispatch time already hides stay hidden as the GPU's work grows)."""
    rng = random.Random(0)
    for nodes in (1, 2):
        topo = load_topology("dgx-h100", nodes=nodes)
        for training, shape in _random_layouts(topo.num_gpus, rng, 16):
            model = rng.choice(["gpt-tiny", "llama3-8b", "mixtral-8x7b", "deepseek-v2-lite"])
            times = []
            for more in ({}, {"global_batch": 2 * training["global_batch"]}, {"seq_len": 2 * training["seq_len"]}):
                try:
                    times.append(estimate(model, topo, Training(**{**training, **more}), **shape).step_time_s)
                except PlanError:
                    break
            assert all(t >= times[0] for t in times[1:]), (model, training, shape, times)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tp": 3, "pp": 1, "dp": 3}, "tp x pp x dp = 3 x 1 x 3 = 9, but the topology has 8 GPUs"),
        ({"tp": 8, "pp": 1, "dp": 1, "model": "gpt2"}, "tp=8 does not divide the 12 attention heads"),
        ({"tp": 1, "pp": 1, "dp": 8, "micro_batch": 3}, "not a multiple of dp x micro_batch"),
        ({"tp": 2, "pp": 1, "dp": 4, "rank_layout": [[[0, 1], [2, 3], [4, 5], [6, 6]]]}, "exactly once"),
        ({"tp": 2, "pp": 1, "dp": 4, "rank_layout": [[[0, 1, 2, 3], [4, 5, 6, 7]]]}, "shape"),
        ({"tp": 2, "pp": 1, "dp": 4, "rank_layout": [[[0, 1, 2], [3, 4, 5], [6, 7], [8]]]}, "shape"),
        ({"tp": 2, "pp": 1, "dp": 4, "rank_layout": [[[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 7.0]]]}, "integer"),
        ({"tp": 1, "pp": 8, "dp": 1, "virtual_stages": 5}, "40 exceeds the 32 layers plus embedding and head"),
        ({"tp": 8, "pp": 1, "dp": 1, "virtual_stages": 3}, "virtual_stages=3 interleaves pipeline stages: set pp > 1"),
        (
            {"tp": 1, "pp": 2, "dp": 4, "virtual_stages": 4, "layers_per_stage": (2, 30)},
            "stage 0 has 2 layers, too few for 4 virtual stages",
        ),
        (
            {"tp": 1, "pp": 2, "dp": 4, "virtual_stages": 2, "pipeline_runtime": "deepspeed"},
            "the deepspeed pipeline runtime runs one model chunk per GPU: set virtual_stages=1",
        ),
        (
            {"tp": 1, "pp": 2, "dp": 4, "layers_per_stage": (0, 32)},
            "layers_per_stage (0, 32) must give 2 stages of at least one layer each, summing to the 32 layers",
        ),
        ({"tp": 1, "pp": 1, "dp": 8, "micro_batch": 1.5}, "must be whole numbers"),
        (
            {"tp": 1, "pp": 2, "dp": 4, "zero_stage": 2, "pipeline_runtime": "deepspeed"},
            "the deepspeed pipeline runtime refuses ZeRO-2 with pp > 1: set zero_stage to 0 or 1, or pp=1",
        ),
        (
            {"tp": 1, "pp": 8, "dp": 1, "micro_batch": 16, "pipeline_runtime": "torch"},
            "the torch pipeline runtime needs a micro-batch per stage, pp=8, here 4: a smaller micro-batch",
        ),
        (
            {"tp": 1, "pp": 8, "dp": 1, "virtual_stages": 2, "micro_batch": 16},
            "interleaved pipelines need the micro-batches to be a multiple of pp=8, here 4: set virtual_stages=1",
        ),
    ],
)
def test_impossible_requests_say_what_to_change(kwargs, message):
    model = kwargs.pop("model", "llama3-8b")
    options = ("pipeline_runtime", "zero_stage")
    train = TRAIN.model_copy(update={k: kwargs.pop(k) for k in options if k in kwargs})
    with pytest.raises(PlanError, match=message.replace("(", r"\(").replace(")", r"\)")):
        estimate(model, "dgx-h100", train, **kwargs)


def test_chunks_may_hold_only_the_embedding_or_the_head():
    # Llama 3's split (arXiv:2407.21783 Sec. 3.3.2): 32 blocks + embedding + head = 34 items, 2 stages x 17
    # chunks of one item; the first chunk is the embedding alone, the last the head alone
    plan = estimate("llama3-8b", "dgx-h100", TRAIN, tp=1, pp=2, dp=4, virtual_stages=17)
    assert plan.layers_per_stage == (16, 16) and plan.virtual_stages == 17
    one_chunk = estimate("llama3-8b", "dgx-h100", TRAIN, tp=1, pp=2, dp=4, virtual_stages=1)
    assert plan.breakdown["bubble"] < one_chunk.breakdown["bubble"] / 10


def test_plan_json_round_trip_and_key_set():
    plan = estimate("llama3-8b", "dgx-h100", TRAIN, tp=2, pp=2, dp=2, micro_batch=2)
    assert Plan.from_json(plan.to_json()) == plan
    assert plan.mesh_dim_names == ("pp", "dp", "tp") and plan.mesh_shape == (2, 2, 2)
    assert plan.rank_layout[1][0][1] == (1 * 2 + 0) * 2 + 1
    assert set(plan.breakdown) == {"compute", "tp", "cp", "ep", "pp", "bubble", "dp", "fsdp", "optimizer"}
    assert set(plan.comm_time_by_link) == {"nvlink", "pcie", "net"}
    assert plan.step_time_s == pytest.approx(sum(plan.breakdown.values()))
    model = load_model("llama3-8b")
    assert plan.mfu == pytest.approx(3 * model.flops_per_token(4096) * plan.tokens_per_s / (8 * 989.4e12), rel=1e-9)


def test_pipeline_sends_a_tp_slice_unless_every_rank_sends_the_whole_tensor():
    topo = load_topology("dgx-h100", nodes=2)
    no_sp = TRAIN.model_copy(update={"sequence_parallel": False})
    whole = no_sp.model_copy(update={"pipeline_scatter_gather": False})  # --no-scatter-gather-tensors-in-pipeline
    deepspeed = no_sp.model_copy(update={"pipeline_runtime": "deepspeed"})  # whole tensors, sent one way at a time
    times = {
        name: estimate("llama3-8b", topo, train, tp=4, pp=4, dp=1).breakdown["pp"]
        for name, train in (("sp", TRAIN), ("scatter", no_sp), ("whole", whole), ("deepspeed", deepspeed))
    }
    assert times["sp"] <= times["scatter"] < times["whole"] / 2  # the slice, plus an NVLink all-gather
    assert times["deepspeed"] == pytest.approx(2 * times["whole"])  # four blocking transfers per micro-batch, not two
    shape = dict(tp=4, pp=4, dp=1, micro_batch=1)
    model = load_model("llama3-8b")
    assert traffic_bytes(model, whole, **shape)["pp"] == 4 * traffic_bytes(model, no_sp, **shape)["pp"]
    assert traffic_bytes(model, deepspeed, **shape)["pp"] == traffic_bytes(model, whole, **shape)["pp"]


def test_a_middle_stage_talks_with_one_neighbour_at_a_time():
    """One stage per node, each GPU's traffic through its own NIC: a transfer across a boundary takes
    as long with 4 stages as with 2, since neighbouring stages run opposite passes and every other
    boundary transfers at once; a middle stage's NICs never carry both of its boundaries together."""
    train = Training(global_batch=16, seq_len=4096, recompute="full")

    def per_transfer(pp: int) -> float:
        topo = load_topology("dgx-h100", nodes=pp)
        pp_s = estimate("llama3-8b", topo, train, tp=8, pp=pp, dp=1).breakdown["pp"]
        return pp_s / (2 * (16 + pp - 1))

    assert per_transfer(4) == pytest.approx(per_transfer(2), rel=1e-9)
    assert per_transfer(8) == pytest.approx(per_transfer(2), rel=1e-9)


def test_unfused_attention_pays_for_the_square_and_selective_recompute_drops_it():
    # Megatron's core attention before FlashAttention keeps softmax output, dropout output and mask
    # (5as bytes per token per layer for GPT with dropout, Korthikanti et al. 2022 Sec. 4)
    gpt = load_model("gpt2")
    train = Training(global_batch=8, seq_len=1024, recompute="none")
    flash, unfused = (
        estimate(gpt, "dgx-h100", train.model_copy(update={"attention": a}), tp=1, pp=1, dp=8)
        for a in ("flash", "unfused")
    )
    square = 5 * gpt.num_heads * 1024 * 1024 * gpt.num_layers  # one micro-batch of one sequence
    assert unfused.memory_breakdown["activations"] - flash.memory_breakdown["activations"] == pytest.approx(square)
    gpt3 = {  # big enough to leave host dispatch behind: 96 heads, s x s over 2,048 tokens
        a: estimate("gpt3-175b", "dgx-h100", Training(global_batch=1, seq_len=2048, attention=a), tp=8, pp=1, dp=1)
        for a in ("flash", "unfused")
    }
    assert gpt3["unfused"].breakdown["compute"] > 1.02 * gpt3["flash"].breakdown["compute"]
    selective = train.model_copy(update={"recompute": "selective"})
    kept = {
        a: estimate(gpt, "dgx-h100", selective.model_copy(update={"attention": a}), tp=1, pp=1, dp=8)
        for a in ("flash", "unfused")
    }
    assert kept["unfused"].memory_breakdown["activations"] == kept["flash"].memory_breakdown["activations"]


def test_misaligned_gemms_run_at_the_share_of_the_peak_measured_on_the_h100():
    """The share is the median of the nine misaligned GEMMs recorded over the calibrated peak. GPT-2's
    unpadded vocabulary (50,257) makes its head GEMMs misaligned, so padding to 50,304 (as nanoGPT
    does) is faster despite the extra FLOPs."""
    recorded = json.loads((ROOT / "benchmarks/results/h100-alignment/alignment.json").read_text())
    misaligned = [recorded["bf16"][hd][op] for hd in ("108", "150", "450") for op in ("qk_tflops", "av_tflops")]
    misaligned += recorded["head_bf16"]["50257"].values()
    rates = rates_for("h100-sxm")
    measured_share = statistics.median(misaligned) * 1e12 / rates.gemm_peak_flops
    assert measured_share == pytest.approx(MISALIGNED_PEAK_SHARE, rel=0.01)
    flops = 2 * 8192 * 50257 * 768
    assert gemm_s(8192, 50257, 768, rates) == pytest.approx(
        flops / (MISALIGNED_PEAK_SHARE * rates.gemm_peak_flops) + rates.gemm_overhead_s
    )
    gpt2 = load_model("gpt2")
    train = Training(global_batch=128, seq_len=1024)  # 16k tokens a micro-batch: past host dispatch
    padded, unpadded = (
        estimate(gpt2.model_copy(update={"vocab_size": v}), "dgx-h100", train, tp=1, pp=1, dp=8, micro_batch=16)
        for v in (50304, 50257)
    )
    assert unpadded.step_time_s > padded.step_time_s


def test_triton_2022_attention_runs_at_flash2_rates_over_the_published_ratios():
    # 32k tokens of one sequence: attention dominates, so the step tells the attention rate apart
    train = Training(global_batch=8, seq_len=32768, recompute="none", zero_stage=3)
    plans = {
        a: estimate("llama2-7b", "dgx-h100", train.model_copy(update={"attention": a}), tp=1, pp=1, dp=8)
        for a in ("flash", "triton")
    }
    assert plans["triton"].memory_per_gpu_bytes == plans["flash"].memory_per_gpu_bytes  # no s x s either
    rates, model = rates_for("h100-sxm"), load_model("llama2-7b")
    flops = 32768 * 2 * 32768 * model.num_heads * model.head_dim * model.num_layers  # causal, one sequence
    fwd, bwd, flash2_fwd, flash2_bwd = (
        at_seq(r, 32768)  # longer than measured: the 16,384-token rates
        for r in (rates.attention_flops, rates.attention_bwd_flops, rates.flash2_flops, rates.flash2_bwd_flops)
    )
    extra = flops * (1.4 / flash2_fwd - 1 / fwd) + 2.5 * flops * (2.0 / flash2_bwd - 1 / bwd)
    gained = plans["triton"].breakdown["compute"] - plans["flash"].breakdown["compute"]
    assert gained == pytest.approx(extra, rel=1e-6)
    # on the H100 FlashAttention-2 (Ampere instructions) trails SDPA's own pick (cuDNN) at every length, by 30% and
    # more from 512 tokens on (at 128 and 256, where launches and tails weigh, by 10-25%:
    # benchmarks/results/h100-attention-short)
    assert all(rates.flash2_flops[s] < 0.7 * rates.attention_flops[s] for s in rates.attention_flops if s >= 512)
    assert all(rates.flash2_flops[s] < rates.attention_flops[s] for s in rates.attention_flops)


def test_attention_rate_follows_the_sequence_length_it_was_measured_at():
    """calibrate measures attention at 16,384 tokens for sequences of 128 to 16,384 (FlashAttention's
    benchmark shape): shorter sequences give each tile less work. Between two measured lengths the
    rate is read linearly in log2 of the length (benchmarks/results/h100-attention-seq, and -short below 512)."""
    rates = rates_for("h100-sxm")
    table = rates.attention_flops
    assert sorted(table) == [128, 256, 512, 1024, 2048, 4096, 8192, 16384]
    assert table[128] < table[256] < table[512] < 0.5 * table[16384]
    assert at_seq(table, 3072) == pytest.approx(table[2048] + (table[4096] - table[2048]) * math.log2(1.5))
    assert at_seq(table, 64) == table[128] and at_seq(table, 65536) == table[16384]
    # 8,192 tokens in 16 sequences of 512 or one of 8,192: 1/16 of the attention FLOPs, at its own rate
    model = load_model("llama3-8b")
    short, long = (_block_times(model, 8192, s, 1, False, rates)[2] for s in (512, 8192))
    assert short / long == pytest.approx(512 / 8192 * table[8192] / table[512])


def test_attention_rates_scale_by_head_dim_where_other_head_dims_were_measured():
    """calibrate times the same FLOPs at 4,096 tokens with heads of 64 and 256 beside 128: each kernel's rate there
    over its rate at 128 scales the sequence sweep (read log2-linearly between head dims, the nearest outside),
    for the model's head dim; a calibration with heads of 128 only scales nothing. The H100's (benchmarks/results/
    h100-attention-head-dim): SDPA forward 0.77 of its 128 rate with heads of 64, FlashAttention-2 0.95."""
    cal = shipped_calibration("h100-sxm")
    keys = (
        "sdpa_causal_tflops",
        "sdpa_causal_backward_tflops",
        "flash2_causal_tflops",
        "flash2_causal_backward_tflops",
    )
    only_128 = {key: {k: v for k, v in getattr(cal, key).items() if k.endswith("_d128")} for key in keys}
    half = {key: {**table, "b4_h32_s4096_d64": table["b4_h16_s4096_d128"] / 2} for key, table in only_128.items()}
    plain, slow = (rates_for("h100-sxm", cal.model_copy(update=update)) for update in (only_128, half))
    assert plain.attention_head_dim == {} and slow.attention_head_dim["attention"] == pytest.approx({128: 1.0, 64: 0.5})
    assert slow.attention_flops == plain.attention_flops == rates_for("h100-sxm").attention_flops  # heads of 128
    assert at_head_dim(slow.attention_head_dim["attention"], 96) == pytest.approx(0.5 + 0.5 * math.log2(1.5))
    assert at_head_dim({}, 64) == 1.0 and at_head_dim(slow.attention_head_dim["attention"], 32) == 0.5
    # GPT-OSS's heads of 64: at half the rate its attention takes twice the time; the GEMMs are untouched (its sinks'
    # backward time, which does not follow the attention rate, aside: test_a_learned_sink_adds_...)
    model = load_model("gpt-oss-20b").model_copy(update={"attention_sinks": False})
    base, scaled = (_block_times(model, 8192, 4096, 1, False, r) for r in (plain, slow))
    assert scaled[2] == pytest.approx(2 * base[2]) and scaled[3] == pytest.approx(2 * base[3])
    assert scaled[:2] == base[:2]
    shipped = rates_for("h100-sxm").attention_head_dim
    assert shipped["attention"][64] == pytest.approx(0.77, abs=0.01) and shipped["flash2"][64] == pytest.approx(
        0.95, abs=0.01
    )


def test_mla_runs_its_down_projections_whole_on_each_rank_and_its_attention_at_both_head_dims():
    """DeepSeek-V3 under TP 8: every rank multiplies the hidden state by the whole query and key-value
    down-projections (1,536 and 512 + 64 wide): on its sequence shard under SP, on every token without it; a
    Llama's linears are all split, so SP leaves its GEMMs alone. Causal attention does s/2 x heads x (192 + 128)
    FLOPs per token (QK^T at the query-key head dim, AV at the value head dim), at the rate of heads of 192 (what an
    H100 measured: benchmarks/results/h100-mla)."""
    rates, tokens, tp = rates_for("h100-sxm"), 8192, 8
    ds, llama = load_model("deepseek-v3"), load_model("llama3-70b")
    with_sp, without = (_block_times(ds, tokens, 4096, tp, sp, rates) for sp in (True, False))
    down = sum(gemm_s(tokens, w, 7168, rates) - gemm_s(tokens / tp, w, 7168, rates) for w in (1536, 512 + 64))
    assert without[0] - with_sp[0] == pytest.approx(down)
    assert (
        _block_times(llama, tokens, 4096, tp, True, rates)[0] == _block_times(llama, tokens, 4096, tp, False, rates)[0]
    )
    flops = tokens * 4096 * 128 * (192 + 128) / tp
    rate = at_seq(rates.attention_flops, 4096) * at_head_dim(rates.attention_head_dim["attention"], 192)
    assert with_sp[2] == pytest.approx(flops / rate)


def test_mla_attention_runs_near_the_rate_of_its_query_key_head_dim_measured():
    """benchmarks/results/h100-mla (an H100, SDPA's own pick, causal, 2 x 4,096 tokens, 64 heads): attention with
    queries and keys of 192 and values of 128 runs, against heads of 128, within 6% of the head-dim factors' reading
    at 192 (the calibration's heads of 64, 128 and 256), forward and backward."""
    run = json.loads((ROOT / "benchmarks/results/h100-mla/attention-mla.json").read_text())
    rate = {
        (c["qk_head_dim"], c["v_head_dim"]): (c["forward_tflops"], c["backward_tflops"])
        for c in run["cases"]
        if c["backend"] == "default"
    }
    factors = rates_for("h100-sxm").attention_head_dim
    for i, kernel in enumerate(("attention", "attention_bwd")):
        measured = rate[192, 128][i] / rate[128, 128][i]
        assert at_head_dim(factors[kernel], 192) == pytest.approx(measured, rel=0.06), kernel


def _cudnn_attention_runs() -> dict[tuple[str, int, int, int], dict]:
    """benchmarks/results/h100-attention-sinks' cases by (case, batch, sequence, head dim)."""
    run = json.loads((ROOT / "benchmarks/results/h100-attention-sinks/attention-sinks.json").read_text())
    return {(c["case"], c["batch"], c["seq"], c["head_dim"]): c for c in run["runs"] if "error" not in c}


def test_attention_is_charged_what_cudnns_fused_kernel_took_at_gpt_oss_shapes():
    """benchmarks/results/h100-attention-sinks, without sinks: cuDNN 9.19's fused attention (what Transformer Engine
    runs) on 1 and 4 x 4,096 tokens of GPT-OSS's 64 heads of 64, causal and within a 128-key window. The cost model
    (the calibration's SDPA rates, the window as causal attention over its span) is within 15% of it, forward and
    backward."""
    cases = _cudnn_attention_runs()
    spec, rates = load_model("gpt-oss-120b").model_copy(update={"attention_sinks": False}), rates_for("h100-sxm")
    for window in (None, 128):
        span = {"attention_window": window}
        model = spec.model_copy(
            update={"layers": tuple(ly.model_copy(update=span) if ly.kind == "block" else ly for ly in spec.layers)}
        )
        for batch in (1, 4):
            measured = cases[f"cudnn causal{' window 128' if window else ''}", batch, 4096, 64]
            times = _block_times(model, batch * 4096, 4096, 1, False, rates)
            assert times[2] == pytest.approx(measured["forward_s"], rel=0.15), (window, batch)
            assert times[3] == pytest.approx(measured["backward_s"], rel=0.15), (window, batch)


def test_a_learned_sink_adds_the_backward_time_cudnn_took_for_it():
    """benchmarks/results/h100-attention-sinks (an H100, cuDNN 9.19's fused attention, the kernel Transformer Engine
    runs for GPT-OSS): with a sink per query head the forward stayed within 11% and the backward took a time per
    (token, query head) more that did not follow the sequence (2,048-8,192), the 128-key window or the head dim (64,
    128). GPT-OSS, every other block windowed, is charged within 10% of what its blocks measured more at 1 and 4 x
    4,096 tokens (Megatron Bridge's H100 and B200 micro-batches); forward, GEMMs and memory-bound ops as without."""
    cases = _cudnn_attention_runs()
    pairs = [
        (case, cases[name.removesuffix(" + sink"), *shape]) for (name, *shape), case in cases.items() if "+" in name
    ]
    assert len(pairs) == 7
    assert all(0.95 < sink["forward_s"] / plain["forward_s"] < 1.12 for sink, plain in pairs)
    per_row = [(sink["backward_s"] - plain["backward_s"]) / (sink["batch"] * sink["seq"] * 64) for sink, plain in pairs]
    assert min(per_row) > 1.0e-9 and max(per_row) < 1.7e-9
    rates, sinks = rates_for("h100-sxm"), load_model("gpt-oss-120b")
    plain_model = sinks.model_copy(update={"attention_sinks": False})
    assert sinks.attention_sinks and not load_model("llama3-8b").attention_sinks
    for batch in (1, 4):
        with_sink, without = (_block_times(m, batch * 4096, 4096, 1, False, rates) for m in (sinks, plain_model))
        assert with_sink[:3] == without[:3] and with_sink[4] == without[4]
        measured = statistics.mean(
            cases[f"cudnn causal{w} + sink", batch, 4096, 64]["backward_s"]
            - cases[f"cudnn causal{w}", batch, 4096, 64]["backward_s"]
            for w in ("", " window 128")
        )
        assert with_sink[3] - without[3] == pytest.approx(measured, rel=0.10)


def test_multi_token_prediction_runs_a_block_a_projection_and_the_head_again_on_the_last_stage():
    """Megatron's --mtp-num-layers 1 (DeepSeek-V3 Sec. 2.2): the last stage holds one more block like the model's
    last, a 2h -> h projection, three norms and the embedding (shared with the first stage's); each micro-batch runs
    that block, the projection, an embedding gather, the output head and a loss once more there."""
    from shardplan.cost.compute import FP32, stage_times
    from shardplan.emit import emit

    model, rates, tokens, tp = load_model("deepseek-v3"), rates_for("h100-sxm"), 4096, 2
    h, v = model.hidden_size, model.vocab_size
    moe_block = next(ly for ly in model.layers if ly.name == "moe block")
    assert model.mtp_layer_params == (moe_block.params + 2 * h * h + 3 * h, moe_block.expert_params)
    assert (
        param_counts(model, layers=4, first=False, last=True, mtp=1)
        == param_counts(model, layers=4, first=False, last=True) + model.mtp_layer_params[0] + v * h
    )
    train = Training(global_batch=64, seq_len=4096, recompute="none", mtp_layers=1)
    stage = {"first": False, "last": True, "micro_batch": 1, "tp": tp, "rates": rates, "ep": 8}
    with_mtp = stage_times(model, train, layers=4, **stage)
    one_more = stage_times(model, train.model_copy(update={"mtp_layers": 0}), layers=5, **stage)
    head = gemm_s(tokens, v / tp, h, rates) + 3 * tokens * v / tp * FP32 / rates.loss_bytes_per_s
    extra = head + gemm_s(tokens, h / tp, 2 * h, rates) + tokens * h * 2 / rates.hbm_bytes_per_s
    assert with_mtp.forward_s - one_more.forward_s == pytest.approx(extra)
    topo = load_topology("dgx-h100", nodes=32)
    plain, mtp = (
        estimate(model, topo, t, tp=1, pp=16, dp=2, ep=8, layers_per_stage=(4,) * 15 + (1,))
        for t in (train.model_copy(update={"mtp_layers": 0}), train)
    )
    assert mtp.step_time_s > plain.step_time_s and mtp.mtp_layers == 1
    args = [line.removesuffix(" \\") for line in emit(mtp, topo, "megatron").splitlines()]
    assert "--mtp-num-layers 1" in args and '--pipeline-model-parallel-layout "E,t*4|' + "t*4|" * 14 + 't,m,L"' in args
    for framework in ("torchtitan", "deepspeed"):
        with pytest.raises(PlanError, match="no multi-token prediction"):
            emit(mtp, topo, framework)


def test_rates_are_kept_per_calibration_and_follow_a_modified_copy():
    cal = shipped_calibration("h100-sxm")
    assert rates_for("h100-sxm", cal) is rates_for("h100-sxm")  # worked out once
    slow = cal.model_copy(update={"d2d_rw_gbps": 1.0})
    assert rates_for("h100-sxm", slow).hbm_bytes_per_s == 1e9 < rates_for("h100-sxm").hbm_bytes_per_s


def test_flash2_rate_on_gpus_without_a_calibration_follows_their_architecture():
    h100, a100, h800 = rates_for("h100-sxm"), rates_for("a100-sxm-80gb"), rates_for("h800-sxm")
    ratio = 312.0 / 989.4  # datasheet BF16 dense peaks
    # Ampere: FlashAttention-2 is SDPA's own pick, at the H100's best-kernel share of the peak
    assert a100.flash2_flops == pytest.approx({s: r * ratio for s, r in h100.attention_flops.items()})
    assert a100.flash2_flops == pytest.approx(a100.attention_flops)
    # Hopper (same peak): FlashAttention-2 at its share measured on the H100
    assert h800.flash2_bwd_flops == pytest.approx(h100.flash2_bwd_flops)
    # the RTX Blackwell cards (sm_120) have neither wgmma nor tcgen05: FlashAttention-2 is their best kernel, as on
    # Ampere; the data-centre B200 (tcgen05) keeps the H100's gap between the two
    pro, b200 = rates_for("rtx-pro-6000"), rates_for("b200")
    assert pro.flash2_flops == pytest.approx({s: r * 500.0 / 989.4 for s, r in h100.attention_flops.items()})
    assert b200.flash2_flops == pytest.approx({s: r * 2250.0 / 989.4 for s, r in h100.flash2_flops.items()})


def test_rope_is_charged_only_to_models_that_rotate_q_and_k():
    # llama2-7b: RoPE on Q and K; the same model with learned or ALiBi positions (GPT-3, BLOOM, MPT)
    # saves exactly RoPE's bytes at its measured rate, forward + backward, in every block
    llama = load_model("llama2-7b")
    plain = llama.model_copy(update={"rotary": False})
    train = Training(global_batch=8, seq_len=4096, recompute="none", zero_stage=3)
    rotary, learned = (estimate(m, "dgx-h100", train, tp=1, pp=1, dp=8).breakdown["compute"] for m in (llama, plain))
    rates = rates_for("h100-sxm")
    qk = (llama.num_heads + llama.num_kv_heads) * llama.head_dim
    rope_bytes = 2 * 2 * qk  # reads and writes Q and K in bf16, per token
    per_block = 3 * 4096 * rope_bytes / rates.elementwise_bytes_per_s["rope"]  # forward + twice that backward
    assert rotary - learned == pytest.approx(llama.num_layers * per_block)
    assert not load_model("gpt3-175b").rotary and load_model("llama3-8b").rotary


def test_each_loss_keeps_its_bytes_per_logit_and_a_fused_one_reads_them_once():
    # fp32 loss: 12 B per logit at the peak, and the freed bf16 logits (2 B) in the allocator's cache;
    # Megatron's: 6 B, nothing cached; both 3 fp32 passes each way at the measured cross-entropy rate. Fused
    # (flash-attn's CrossEntropyLoss): bf16 logits and gradient, 2 B read forward, 4 B backward. All: the final
    # norm's input, output and fp32 upcast (8 B per element of h). Measured: benchmarks/results/h100-loss-memory.
    train = Training(global_batch=8, seq_len=4096, recompute="none", zero_stage=3)
    plans = {
        loss: estimate("llama3-8b", "dgx-h100", train.model_copy(update={"loss": loss}), tp=1, pp=1, dp=8)
        for loss in ("fp32", "megatron", "fused")
    }
    spec = load_model("llama3-8b")
    logits, head = 4096 * spec.vocab_size, 4096 * 8 * spec.hidden_size
    for loss, per_logit in (("fp32", 12), ("megatron", 6), ("fused", 4)):
        assert plans[loss].memory_breakdown["logits"] == pytest.approx(per_logit * logits + head)
    cache = {loss: plan.memory_breakdown["allocator_cache"] for loss, plan in plans.items()}
    assert cache["fp32"] - cache["fused"] == pytest.approx(2 * logits) and cache["megatron"] == cache["fused"]
    assert plans["megatron"].breakdown["compute"] == plans["fp32"].breakdown["compute"]
    rates = rates_for("h100-sxm")
    fp32_s, fused_s = 2 * 3 * 4 * logits / rates.loss_bytes_per_s, (2 + 4) * logits / rates.hbm_bytes_per_s
    saved = plans["fp32"].breakdown["compute"] - plans["fused"].breakdown["compute"]
    assert saved == pytest.approx(fp32_s - fused_s, rel=1e-6)
    assert Training(global_batch=8, seq_len=4096).loss == "megatron"  # as the other defaults, Megatron-LM's


@pytest.mark.parametrize("sequence_parallel", [False, True])
def test_async_tp_backward_hides_only_what_the_gradient_gemms_cover(sequence_parallel):
    # the column-parallel backward's reductions run under the weight-gradient GEMMs: TP time drops, but
    # never below the forward's collectives
    base = TRAIN.model_copy(update={"sequence_parallel": sequence_parallel})
    tp = {
        overlap: estimate(
            "llama3-70b", "dgx-h100", base.model_copy(update={"tp_async_backward": overlap}), tp=8, pp=1, dp=1
        )
        for overlap in (False, True)
    }
    assert tp[True].breakdown["tp"] < tp[False].breakdown["tp"]
    assert tp[True].breakdown["tp"] >= tp[False].breakdown["tp"] / 2  # the forward's half (no recompute) stays
    assert tp[True].comm_time_by_link == tp[False].comm_time_by_link  # the same bytes move


def test_tp_traffic_under_sp_counts_the_backward_regather():
    # per layer, forward: 2 all-gathers + 2 reduce-scatters (SP) or 2 all-reduces, the same bytes;
    # backward under SP gathers the input again for the weight gradient: 6 units against 4
    from shardplan.cost.traffic import traffic_bytes

    plain = Training(global_batch=8, seq_len=4096, recompute="none", sequence_parallel=False)
    sp = plain.model_copy(update={"sequence_parallel": True})
    shape = dict(tp=8, pp=1, dp=1, micro_batch=1)
    model = load_model("llama3-70b")
    assert traffic_bytes(model, sp, **shape)["tp"] == pytest.approx(1.25 * traffic_bytes(model, plain, **shape)["tp"])


def test_zero2_reduce_scatters_every_micro_batchs_gradients_without_a_pipeline() -> None:
    """ZeRO-2 holds gradients only as shards, so each micro-batch's backward reduce-scatters its own (DeepSpeed refuses
    no_sync with partitioned gradients); ZeRO-1 accumulates into the whole buffer and reduces once. Under torch's
    pipeline both reduce once and hold whole gradients until then (its stages sync on the last micro-batch; DeepSpeed
    refuses ZeRO-2 with pp > 1; Megatron-FSDP reduces every micro-batch:
    test_megatron_fsdp_zero2_under_a_pipeline_reduces_every_micro_batch)."""
    topo = load_topology("dgx-h100", nodes=2)
    model = load_model("llama3-8b")

    def network_s(zero: int, pp: int) -> float:
        train = Training(global_batch=128, seq_len=4096, zero_stage=zero, pipeline_runtime="torch")
        return estimate(model, topo, train, tp=1, pp=pp, dp=16 // pp, micro_batch=1).comm_time_by_link["net"]

    reduce_scatter = collective_time_s(topo, "reduce_scatter", range(16), model.num_params * 4)
    assert network_s(2, 1) - network_s(1, 1) == pytest.approx(7 * reduce_scatter, rel=1e-6)  # 8 micro-batches
    assert network_s(2, 2) == pytest.approx(network_s(1, 2), rel=1e-9)

    def gradients(zero: int, pp: int) -> float:
        train = Training(global_batch=128, seq_len=4096, zero_stage=zero, pipeline_runtime="torch")
        return estimate(model, topo, train, tp=1, pp=pp, dp=16 // pp).memory_breakdown["gradients"]

    # what is reduced once is held whole until then: only ZeRO-2 without a pipeline keeps gradient shards
    assert gradients(2, 1) == pytest.approx(gradients(1, 1) / 16)
    assert gradients(2, 2) == gradients(1, 2)


@pytest.mark.parametrize(
    ("runtime", "name"),
    [("megatron", "llama3-70b"), ("deepspeed", "llama3-70b"), ("torch", "llama3-70b"), ("megatron", "deepseek-v3")],
)
def test_the_fullest_stages_hold_the_most_any_stage_requires(runtime: str, name: str) -> None:
    """The search checks memory on `fullest_stages` only: over pipelines of 4-16 stages, even and uneven splits,
    interleaved or not, every ZeRO stage and recompute mode, the most they require is the most any stage does;
    also where the first blocks are dense and the others MoE, so that stages of as many blocks differ."""
    from shardplan.cost.memory import fullest_stages, required_bytes

    model = load_model(name)
    n = model.num_layers
    for pp, v, zero, recompute, micro in itertools.product((4, 5, 16), (1, 2), (0, 1, 3), ("none", "full"), (4, 32)):
        if runtime == "deepspeed" and (v > 1 or zero > 1):
            continue
        train = Training(
            global_batch=micro * 2, seq_len=4096, zero_stage=zero, recompute=recompute, pipeline_runtime=runtime
        )
        for layers in (
            split_layers(n, pp),
            (3, *split_layers(n - 3 - 2, pp - 2), 2),
            (1, *split_layers(n - 1, pp - 1)),
        ):
            shape = dict(layers=layers, tp=8, dp=2, micro_batch=1, virtual_stages=v, context_bytes=0.0)
            every = stage_memories(model, train, **shape)
            some = stage_memories(model, train, **shape, stages=fullest_stages(model, layers, train, v))
            assert max(map(required_bytes, some)) == max(map(required_bytes, every))


def test_gradient_sync_hides_only_where_the_nics_are_free():
    """Four DGX H100 nodes, TP 16 x DP 2 under ZeRO-2 (each micro-batch's gradients reduce-scattered over the NICs
    beside its backward). Where two nodes share one NVLink domain TP 16 stays on NVLink; where each node is its own,
    TP 16 crosses the NICs too and holds them for part of every micro-batch, so less of the sync hides."""
    spec = read_spec("dgx-h100")
    train = Training(global_batch=64, seq_len=4096, zero_stage=2)

    def dp_exposed(domain_nodes: int) -> float:
        topo = build(spec.model_copy(update={"nvlink_domain_nodes": domain_nodes}), nodes=4)
        assert topo.path_kind(0, 16) == "net"  # the DP groups leave the node either way
        return estimate("llama3-70b", topo, train, tp=16, pp=1, dp=2).breakdown["dp"]

    assert dp_exposed(1) > 2 * dp_exposed(2) > 0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"global_batch": 0}, r"^global_batch: Input should be greater than 0$"),
        ({"zero_stage": 5}, r"^zero_stage: Input should be 0, 1, 2 or 3$"),
        ({"recompute": "full", "recompute_modules": ("moe_act",)}, r"^Value error, recompute_modules moe_act go with"),
        ({"micro_batches": 4}, r"^micro_batches: Extra inputs are not permitted$"),
    ],
)
def test_training_settings_that_cannot_be_are_a_shardplan_error(settings: dict, message: str) -> None:
    """`Training` refuses what cannot be with the error family users catch (a ValueError too, as pydantic's was),
    one line naming the field."""
    from shardplan import ShardplanError

    with pytest.raises(ShardplanError, match=message) as info:
        Training(**{"global_batch": 64, "seq_len": 4096, **settings})
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)
