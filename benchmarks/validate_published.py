"""Estimate every usable published training run in tests/data/validation and compare step times.

A row is usable when it gives an architecture, hardware, the parallel degrees, a global batch and a measured
throughput (step time, tokens/s/GPU, or TFLOP/s/GPU with a stated FLOP basis). Missing settings take the defaults in
FILE_DEFAULTS, stated per source; the sources with columns of their own are read by benchmarks/published_rows.py.

    python benchmarks/validate_published.py        # prints per-row errors, writes benchmarks/results/validation.md
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks.published_rows, from a test too
from benchmarks.published_rows import ADAPTERS, COLUMNS, layout_stages, number_in
from shardplan import Training, estimate, load_model, load_topology
from shardplan.errors import ShardplanError
from shardplan.model.hf_config import spec_from_config
from shardplan.topology import read_spec
from shardplan.topology.cluster import build

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "validation"
RESULTS = Path(__file__).resolve().parent / "results" / "validation.md"

# Settings a source does not print, per file: (micro_batch, recompute, zero_stage, virtual_stages).
FILE_DEFAULTS = {
    # Narayanan et al. 2021 ran Megatron-LM with full recompute (the paper's eq. 3 counts it), no
    # distributed optimizer (2021), micro-batch 1 where Table 1 is silent (their Sec. 5.1 setting).
    "narayanan2021_megatron_ptdp.csv": (1, "full", 0, 1),
    "korthikanti2022_seqpar_selective.csv": (1, "selective", 0, 1),
    # Megatron-Core README: the benchmark scripts use the distributed optimizer and selective recompute.
    "megatron_core_readme_h100_scaling.csv": (1, "selective", 1, 1),
    # MegaScale's Megatron-LM baseline: recompute is not stated; its 53% MFU (Table 2) would need 71%
    # hardware FLOP utilisation under full recompute, above any published A100 run, so selective.
    "megascale2024_175b_530b.csv": (1, "selective", 1, 6),
    "torchtitan_benchmarks.csv": (1, "selective-op", 3, 1),
    # Llama 3 (arXiv:2407.21783 Sec. 3.3): FSDP sharding optimizer states and gradients (ZeRO-2 like); the
    # gradients kept as shards, so reduce-scattered every micro-batch, as the default (Megatron's) runtime does.
    # Sec. 3.3.2 runs an interleaved schedule and takes one layer off the first and last stages, so
    # that "the first model chunk on the first stage has only the embedding": one layer per chunk,
    # (126 + 2) / 16 stages = 8 chunks per GPU.
    "llama3_2024_405b_pretraining.csv": (1, "none", 2, 8),
    # NeMo 24.07 (Megatron-Core): its rows state micro-batch and virtual stages; NeMo's GPT recipes run the
    # distributed optimizer and no activation recompute unless a recipe sets it (none is stated here).
    "nemo_24.07_perf_summary.csv": (1, "none", 1, 1),
    # llm-foundry: every row states micro-batch, sharding and activation checkpointing.
    "llmfoundry_mpt_fsdp_benchmarks.csv": (1, "none", 3, 1),
    # BLOOM tr11 sweep (file header): Megatron-DeepSpeed, ZeRO-1, activation checkpointing.
    "bloom176b_topology_sweep.csv": (1, "full", 1, 1),
    # Megatron Bridge (Megatron-Core): every usable row states micro-batch and virtual stages (`_megatron_bridge`).
    "megatron_bridge_perf_summary.csv": (1, "none", 1, 1),
}
# Sources that predate Megatron's sequence parallelism (Korthikanti et al., arXiv:2205.05198, May 2022)
# ran TP without it, where a row does not say (the `sp` column) otherwise.
NO_SEQUENCE_PARALLEL = {
    "narayanan2021_megatron_ptdp.csv",  # SC21
    "bloom176b_topology_sweep.csv",  # Megatron-DeepSpeed, Feb 2022
}
# Sources that predate FlashAttention (Dao et al., arXiv:2205.14135, May 2022) ran Megatron's core
# attention: the s x s scores and probabilities in memory.
UNFUSED_ATTENTION = NO_SEQUENCE_PARALLEL | {"korthikanti2022_seqpar_selective.csv"}
# llm-foundry's benchmark launcher defaults to `--attn_impl triton` (scripts/train/benchmarking/
# submit_benchmarks.py): the 2022 FlashAttention kernel in Triton (llmfoundry/models/layers/
# flash_attn_triton.py), on the pre-MLIR Triton its setup.py pins (triton-pre-mlir, patched for sm90).
TRITON_ATTENTION = {"llmfoundry_mpt_fsdp_benchmarks.csv"}
# llm-foundry's MPT takes `loss_fn: fused_crossentropy` unless the yaml says otherwise (llmfoundry/models/
# mpt/modeling_mpt.py: flash_attn.losses.cross_entropy.CrossEntropyLoss); the benchmark yamls do not. Megatron
# Bridge's performance recipes set `cross_entropy_fusion_impl = "te"` (scripts/performance/utils/overrides.py
# `_set_common_perf_overrides`): Transformer Engine's parallel cross-entropy, in place over the bf16 logits.
FUSED_LOSS = {"llmfoundry_mpt_fsdp_benchmarks.csv", "megatron_bridge_perf_summary.csv"}
# torchtitan compiles its loss with the model from 2025 (torchtitan/components/loss.py build_cross_entropy_loss: `if
# job_config.training.compile: loss_fn = torch.compile(loss_fn)`): the fp32 upcast and the softmax fuse into kernels
# that keep no fp32 logits, as a fused cross-entropy does: 4 B per logit at the peak against the eager loss's 14, on
# an H100 (benchmarks/results/h100-loss-memory). Its December 2024 loss (train.py, commit 9dec370) ran eager.
# The commits of its 2025 rows:
COMPILED_LOSS_COMMITS = ("e7c0cae", "820504e")
# Megatron-Core with Transformer Engine: SwiGLU through its fused SwiGLUFunction (bias_activation_fusion, on in
# NeMo's and Megatron Bridge's Llama configs) and FP8 linears that keep their inputs' FP8 casts. Not their weights'
# (`Training.fp8_weight_cache`, Megatron-LM's default): the performance scripts seen set
# disable_parameter_transpose_cache (NeMo's scripts/performance/llm Llama 3 70B; Bridge's SFT, PEFT and benchmark-
# common configs), and with the cache's 2 B per weight the Llama 3.1 405B rows on 80 GB H100s would not fit.
MEGATRON_CORE_TE = {"nemo_24.07_perf_summary.csv", "megatron_bridge_perf_summary.csv"}
# Sources on Megatron code from before the asynchronous column-parallel backward: Megatron-LM of early
# 2021, and the BigScience Megatron-DeepSpeed fork (megatron/mpu/layers.py: ColumnParallelLinear is
# copy_to_tensor_model_parallel_region + F.linear, its backward all-reduce synchronous).
SYNC_TP_BACKWARD = NO_SEQUENCE_PARALLEL
# ZeRO-3 per parameter (FSDP2's fully_shard: torchtitan); the other ZeRO-3 runs shard flat parameters
# (Composer's FullyShardedDataParallel in llm-foundry, DeepSpeed ZeRO-3 in Narayanan et al. Table 2).
FSDP2 = {"torchtitan_benchmarks.csv"}
# tensor parallelism as DTensors (torchtitan's parallelize_llama), with its loss_parallel over the vocabulary,
# pipelines under torch.distributed.pipelining, and context parallelism by torch's context_parallel, whose
# default rotation all-gathers keys and values (torchtitan's context_parallel_rotate_method "allgather")
DTENSOR_TP = {"torchtitan_benchmarks.csv"}
# What runs each source's pipeline schedule (Megatron-LM unless named): torch.distributed.pipelining in
# torchtitan; DeepSpeed's PipelineEngine in BLOOM's Megatron-DeepSpeed (whole tensors per TP rank).
PIPELINE_RUNTIME = {"torchtitan_benchmarks.csv": "torch", "bloom176b_topology_sweep.csv": "deepspeed"}
# Megatron-LM since 2021 (--no-gradient-accumulation-fusion turns it off) and NeMo accumulate weight gradients
# inside the weight-gradient GEMM (APEX's fused_weight_gradient_mlp_cuda, present in NVIDIA's containers):
# the sources on Megatron-LM of 2022 and later.
GRAD_ACCUMULATION_FUSION = {
    "korthikanti2022_seqpar_selective.csv",
    "megatron_core_readme_h100_scaling.csv",
    "megascale2024_175b_530b.csv",
    "nemo_24.07_perf_summary.csv",
    "megatron_bridge_perf_summary.csv",
}
# The sources run by Megatron-LM code (and Megatron-DeepSpeed's GPT model, which calls the same) compute the loss with
# its vocab-parallel cross-entropy (megatron/core/tensor_parallel/cross_entropy.py; in 2021-2022,
# megatron/mpu/cross_entropy.py on `output.float()`): an fp32 softmax made in place, 6 B per logit at the peak
# (benchmarks/results/h100-loss-memory; its native --cross-entropy-loss-fusion held 10 B, but which runs set it is not
# checked: with the fp32 loss's 14 B the same rows fit). Llama 3's own stack is not stated: torch's fp32 loss, the
# conservative one.
MEGATRON_LOSS = {
    "narayanan2021_megatron_ptdp.csv",
    "bloom176b_topology_sweep.csv",
    *GRAD_ACCUMULATION_FUSION,
} - FUSED_LOSS
# Files with no row the cost model can take, and why (listed in the report).
NOT_USABLE = {
    "nemo_long_sequence_cp.csv": (
        "model TFLOP/s without its formula: whether the attention term counts the causal half (a factor up to 2 "
        "at 1M tokens) is not stated"
    ),
    "korthikanti2022_per_layer_time.csv": "one layer's forward/backward time, not a training step",
    "korthikanti2022_activation_memory_pct.csv": "analytic activation memory, no run (tests/test_model_specs.py)",
    "parallelism_choice_findings.csv": "which configuration won, no step times (benchmarks/published_choices.py)",
    "large_runs_misc.csv": (
        "MT-NLG: a secondary transcription without FLOP basis or batch (the file: verify before use); fms-fsdp: "
        "the inter-node network is not stated and FSDP/HSDP step time hangs on it; BLOOM-176B-final: its "
        "102.03 s/it is BL-155's configuration, counted there"
    ),
    "memory_and_costmodel_checks.csv": (
        "Mist: recompute differs by stage (5 of 12 layers on stage 0, none on stage 1), not a Training "
        "setting; Aceso: per-stage plans not stored; Accelerate: load memory only"
    ),
}
MACHINES = Path(__file__).resolve().parent / "machines"


@dataclass
class Row:
    source: str
    row_id: str
    label: str
    measured_step_s: float
    estimated_step_s: float | None = None
    error: float | None = None
    skipped: str | None = None
    recompute: str = ""
    measured_mem_gib: float | None = None
    estimated_mem_gib: float | None = None
    fits: bool | None = None  # the estimate's verdict on a run that did run
    comm_share: float | None = None  # communication (overlapped or not) over the estimated step
    zero_stage: int | None = None
    plan_json: str = ""  # the whole estimate: rows with the same one are the same inputs to the cost model


def _model(row: dict[str, str]):
    if row["preset"]:  # the architecture of a shipped preset, at the row's sequence length
        return load_model(row["preset"]), int(number_in(row["seq_len"]))
    h, layers, heads = int(number_in(row["hidden"])), int(number_in(row["n_layers"])), int(number_in(row["n_heads"]))
    kv = int(number_in(row["n_kv_heads"]) or heads)
    ffn = int(number_in(row["ffn_hidden"]) or 4 * h)
    vocab = int(number_in(row["vocab"]) or 51200)
    seq = int(number_in(row["seq_len"]))
    if "llama" in row["model"].lower():
        cfg = {
            "model_type": "llama",
            "hidden_size": h,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kv,
            "intermediate_size": ffn,
            "vocab_size": vocab,
            "max_position_embeddings": seq,
        }
    else:
        cfg = {
            "model_type": "gpt2",
            "n_embd": h,
            "n_layer": layers,
            "n_head": heads,
            "n_inner": ffn,
            "vocab_size": vocab,
            "n_positions": seq,
        }
    return spec_from_config(cfg, f"{row['model']} (validation row)", name=row["model"]), seq


def _topology(row: dict[str, str], n_gpus: int):
    gpu = row["gpu"]
    if "HBM2e" in gpu:  # torchtitan's Grand Teton H100s: 96 GB HBM2e at 500 W (file header)
        raise ShardplanError(
            "GPU not in the catalogue: H100 with HBM2e at a 500 W power limit has no datasheet; "
            "the 700 W H100 SXM (HBM3) is other hardware"
        )
    if row["machine"]:
        return load_topology(MACHINES / row["machine"], nodes=n_gpus // int(number_in(row["gpus_per_node"]) or 8))
    preset = _dgx(gpu)
    if gpu.startswith("GB"):  # NVL72 trays of 4 GPUs, each Slurm segment of them in one rack's NVLink domain
        trays = n_gpus // 4
        spec = read_spec(f"{gpu.lower()}-nvl72")
        tray = spec.nodes[0].model_copy(update={"count": trays})
        return build(spec.model_copy(update={"nodes": [tray], "nvlink_domain_nodes": slurm_segment(trays)}))
    if preset is None:
        raise ShardplanError(f"no preset for GPU {gpu!r}")
    per_node = int(number_in(row["gpus_per_node"]) or 8)
    if n_gpus % per_node:
        raise ShardplanError(f"{n_gpus} GPUs do not fill nodes of {per_node}")
    return load_topology(preset, nodes=n_gpus // per_node)


def _dgx(gpu: str) -> str | None:
    """The DGX (HGX) preset of a source's GPU name: 8 GPUs on NVSwitch, one 400 Gb/s NIC each (200 Gb/s on A100)."""
    for names, preset in (
        (("H100",), "dgx-h100"),
        (("H200",), "dgx-h200"),
        (("A100", "Ampere"), "dgx-a100"),
        (("B200",), "dgx-b200"),
        (("B300",), "dgx-b300"),
    ):
        if any(name in gpu for name in names) and not gpu.startswith("GB"):
            return preset
    return None


def slurm_segment(nodes: int) -> int:
    """The nodes of one Slurm `--segment` that Megatron Bridge's launcher asks for on 4-GPU nodes (GB200, GB300):
    the whole job up to 18 nodes (one NVL72 rack's trays), else the largest divisor of the node count up to 18
    (scripts/performance/utils/executors.py `slurm_executor`, since 2025; the README: "Segments are not guaranteed
    to land in different NVLink domains"). A segment's nodes share one rack's NVLink domain; two segments share
    one only where both fit a rack, so the segment is the NVLink domain such a job is sure of."""
    if nodes <= 18:
        return nodes
    return next(size for size in range(18, 0, -1) if nodes % size == 0)


def _measured_step(row: dict[str, str], model, seq: int, global_batch: int, n: int) -> float | None:
    if number_in(row["step_time_s"]):
        return number_in(row["step_time_s"])
    tokens = global_batch * seq
    if number_in(row["tokens_per_s_per_gpu"]):
        return tokens / (number_in(row["tokens_per_s_per_gpu"]) * n)
    tflops, basis = number_in(row["tflops_per_gpu"]), row["tflops_basis"].lower()
    b, n_layers, h, v = global_batch, model.num_layers, model.hidden_size, model.vocab_size
    if tflops and basis == "hardware, blocks' gemms only":
        return 96 * b * seq * n_layers * h * h / (tflops * 1e12 * n)
    if tflops and "hardware" in basis:
        # Narayanan et al. 2021 eq. 3: 96 B s l h^2 (1 + s / 6h + V / (16 l h)), recompute included
        flops = 96 * b * seq * n_layers * h * h * (1 + seq / (6 * h) + v / (16 * n_layers * h))
        return flops / (tflops * 1e12 * n)
    if tflops and "model" in basis:
        return 3 * model.flops_per_token(seq) * tokens / (tflops * 1e12 * n)
    return None


def usable_rows() -> list[tuple[str, dict[str, str]]]:
    out = []
    for name in FILE_DEFAULTS:
        lines = [ln for ln in (DATA / name).read_text().splitlines() if not ln.startswith("#")]
        adapt = ADAPTERS.get(name, dict)
        out += [(name, {c: "" for c in COLUMNS} | adapt(row)) for row in csv.DictReader(lines)]
    return out


def _loss(name: str, *, compiled: bool) -> str:
    """The cross-entropy a source's runs computed (`Training.loss`); `compiled`: a torchtitan run that compiled it."""
    if name in FUSED_LOSS or compiled:
        return "fused"
    return "megatron" if name in MEGATRON_LOSS else "fp32"


def _recompute(name: str, row: dict[str, str], default: str) -> str:
    rc = row["act_recompute"].lower()
    if "full" in rc:
        return "full"
    if "layer" in rc:  # torchtitan's per-layer selective AC at its default frequency (every 2nd block)
        return "selective-layer"
    if "selective" in rc:
        # torchtitan's llama3 configs set selective_ac_option = "op" (train_configs/llama3_8b.toml)
        return "selective-op" if name == "torchtitan_benchmarks.csv" else "selective"
    return "none" if rc in ("no", "none", "false") else default


def _sequence_parallel(name: str, row: dict[str, str]) -> bool:
    said = row["sp"].lower()
    if said.startswith(("yes", "no")):
        return said.startswith("yes")
    return name not in NO_SEQUENCE_PARALLEL


def _memory_gib(row: dict[str, str], model, train: Training, n: int, shape: dict[str, int]):
    """(measured, estimated) peak GiB per GPU where the row gives one. torchtitan reports the caching
    allocator's peak reservation (`max_reserved_gib`), so the estimate leaves out what the process holds
    outside the allocator (`framework`). Memory does not depend on clocks or power, so the Grand Teton
    H100s (HBM2e, 500 W) are estimated as catalogue H100s with their 96 GB: the cache a run keeps
    depends on the room the GPU leaves it."""
    measured = number_in(row["mem_per_gpu"]) if "GiB" in row["mem_per_gpu"] else None
    if measured is None:
        return None, None
    per_node = int(number_in(row["gpus_per_node"]) or 8)
    source = MACHINES / "grand-teton-h100-96gb.yaml" if "HBM2e" in row["gpu"] else _dgx(row["gpu"])
    topo = load_topology(source, nodes=max(1, n // per_node))
    plan = estimate(model, topo, train, **shape)
    return measured, (plan.memory_per_gpu_bytes - plan.memory_breakdown["framework"]) / 2**30


@dataclass
class MistCheck:
    """Mist's kick-the-tires run (tests/data/validation/mist_test_small_base.json): measured and estimated."""

    allocated_mib: float
    reserved_mib: float
    step_s: float
    estimated_allocated_mib: float
    estimated_reserved_mib: float
    estimated_step_s: float


def mist_check() -> MistCheck:
    """The peak Mist measured for GPT-2 1.3B on 2 L4s against the estimate: allocated (what Mist's own
    prediction targets) against `memory_per_gpu_bytes` less the framework and the allocator's cache;
    reserved (the larger GPU's) against it less the framework alone."""
    run = json.loads((DATA / "mist_test_small_base.json").read_text())
    model = spec_from_config(run["model"], "Mist test-small-base", name="gpt2-1.3b")
    topo = load_topology(DATA.parent / "topo" / "nvidia-smi-topo-l4-2gpu-sys-1.txt", gpu="l4")
    keys = ("global_batch", "seq_len", "zero_stage", "recompute", "dtype", "grad_dtype", "attention", "loss")
    train = Training(**{k: run[k] for k in keys})
    plan = estimate(model, topo, train, tp=1, pp=1, dp=run["dp"], micro_batch=run["micro_batch"])
    reserved = plan.memory_per_gpu_bytes - plan.memory_breakdown["framework"]
    return MistCheck(
        allocated_mib=run["measured_allocated_peak_mib"],
        reserved_mib=max(run["measured_reserved_peak_mib"]),
        step_s=run["measured_step_s"],
        estimated_allocated_mib=(reserved - plan.memory_breakdown["allocator_cache"]) / 2**20,
        estimated_reserved_mib=reserved / 2**20,
        estimated_step_s=plan.step_time_s,
    )


def evaluate(name: str, row: dict[str, str]) -> Row:
    cp_label = f" c={row['cp']}" if (number_in(row.get("cp", "")) or 1) > 1 else ""
    cp_label += f" e={row['ep']}" if (number_in(row["ep"]) or 1) > 1 else ""
    label = f"{row['model'][:28]} n={row['n_gpus']} t={row['tp']} p={row['pp']} d={row['dp']}{cp_label}"
    result = Row(name, row["row_id"], label, measured_step_s=0.0)
    opts = row.get("other_opts", "").lower().replace("quantization=none", "")
    fp8 = "float8" in opts or row["precision"].upper().startswith(("FP8", "BF16 + FLOAT8"))
    if row["not_usable"]:
        result.skipped = row["not_usable"]
        return result
    if "lora" in opts:
        result.skipped = "LoRA (frozen base weights: no weight gradients or optimizer step for them)"
        return result
    if "megascale" in row["row_id"].lower():
        result.skipped = "MegaScale's own system (algorithmic changes, arXiv:2402.15627)"
        return result
    if not row["tp"] or not row["pp"]:
        result.skipped = "TP or PP degree not stated"
        return result
    if not all(number_in(row[k]) for k in ("n_layers", "hidden", "n_heads", "seq_len")):
        result.skipped = "architecture or sequence length not stated"
        return result
    try:
        n = int(number_in(row["n_gpus"]))
        tp, pp = int(number_in(row["tp"]) or 1), int(number_in(row["pp"]) or 1)
        cp = int(number_in(row.get("cp", "")) or 1)
        ep = int(number_in(row["ep"]) or 1)
        dp = int(number_in(row["dp"]) or n // (tp * pp * cp * ep))
        model, seq = _model(row)
        gb = number_in(row["global_batch"])
        if "tokens" in row["global_batch"]:  # "16M tokens/batch"
            gb = 16 * 2**20 // seq
        global_batch = int(gb or 0)  # torchtitan's FSDP rows: local batch x dp, below
        mb_default, recompute, zero, vpp_default = FILE_DEFAULTS[name]
        sharding = row.get("zero_fsdp", "").lower()
        if "zero-3" in sharding or "fsdp2" in sharding:
            zero = 3
        elif "zero-1" in sharding:
            zero = 1
        elif "gradients sharded" in sharding:
            zero = 2
        mb = int(number_in(row["micro_batch"]) or mb_default)
        vpp = int(number_in(row["vpp"]) or vpp_default) if pp > 1 else 1
        if "fsdp" in row.get("zero_fsdp", "").lower() and name == "torchtitan_benchmarks.csv":
            local = int(number_in(row["micro_batch"]) or 1)
            global_batch = local * dp
            # torchtitan (Dec 2024, parallelisms/pipelining_utils.py) splits the local batch into
            # `pipeline_parallel_microbatches` micro-batches, by default the PP degree, and gives each
            # rank 2 stages under a multi-stage (interleaved) schedule when no split points are set
            mb = local // pp
            vpp = 2 if "interleaved" in opts else 1
        if vpp > 1 and (global_batch // (dp * ep * mb)) % pp:
            vpp = 1
        compiled = "torch.compile" in opts
        loss_compiled = row.get("software", "").startswith(tuple(f"torchtitan {c}" for c in COMPILED_LOSS_COMMITS))
        train = Training(
            global_batch=global_batch,
            seq_len=seq,
            dtype="fp8" if fp8 else "bf16",
            fp8_recipe=row["fp8_recipe"] or ("rowwise" if "rowwise" in opts else "tensorwise"),
            fp8_all_gather="float8 all-gather" in f"{row['precision']} {opts}".lower(),
            recompute=_recompute(name, row, recompute),
            zero_stage=zero,
            sequence_parallel=_sequence_parallel(name, row),
            grad_dtype=row.get("grad_dtype") or "fp32",
            attention="unfused" if name in UNFUSED_ATTENTION else "triton" if name in TRITON_ATTENTION else "flash",
            loss=_loss(name, compiled=compiled and loss_compiled),
            compiled=compiled,
            tp_async_backward=name not in SYNC_TP_BACKWARD,
            grad_accumulation_fusion=name in GRAD_ACCUMULATION_FUSION,
            tp_comm_overlap=any(flag in opts for flag in ("--tp-comm-overlap", "async tp", "asynctp")),
            overlap_param_gather="--overlap-param-gather" in opts,
            fsdp_version=2 if name in FSDP2 else 1,
            tp_impl="dtensor" if name in DTENSOR_TP else "megatron",
            pipeline_runtime=PIPELINE_RUNTIME.get(name, "megatron"),
            cp_comm="all_gather" if name in DTENSOR_TP else "p2p",
            fused_swiglu=name in MEGATRON_CORE_TE,
            fp8_saved_inputs=name in MEGATRON_CORE_TE,
            expert_tensor_parallel=row["expert_tp"] != "1",
            ep_comm_overlap="--overlap-moe-expert-parallel-comm" in opts,
            ep_dispatcher=row["ep_dispatcher"] or "alltoall",
            recompute_modules=tuple(row.get("recompute_modules", "").split()),
            mtp_layers=int(row["mtp_layers"] or 0),
        )
        result.recompute, result.zero_stage = train.recompute, train.zero_stage
        shape = dict(tp=tp, pp=pp, dp=dp, cp=cp, ep=ep, micro_batch=mb, virtual_stages=vpp)
        if row["pp_layout"]:
            shape["layers_per_stage"] = layout_stages(row["pp_layout"], pp)
        result.measured_mem_gib, result.estimated_mem_gib = _memory_gib(row, model, train, n, shape)
        measured = _measured_step(row, model, seq, global_batch, n)
        if measured is None:
            result.skipped = "no measured throughput"
            return result
        result.measured_step_s = measured
        topo = _topology(row, n)
        plan = estimate(model, topo, train, **shape)
    except (ShardplanError, ValueError, TypeError) as exc:
        result.skipped = str(exc)[:90]
        return result
    result.estimated_step_s = plan.step_time_s
    result.fits = plan.fits
    result.comm_share = sum(plan.comm_time_by_link.values()) / plan.step_time_s
    result.plan_json = plan.model_dump_json()
    result.error = (plan.step_time_s - measured) / measured
    return result


COMM_SHARES = (0.0, 0.05, 0.1, 0.2, 0.4)


def _by_comm_share(used: list[Row]) -> list[str]:
    """Signed error by how much of the estimated step its collectives take (hidden or not), ZeRO-3
    rows apart: where the estimate leans one way as communication grows, the overlap or the bandwidths
    are suspect."""
    lines = [
        "",
        "Signed error by the share of the estimated step that collectives take (hidden or not):",
        "",
        "| share | ZeRO-3 rows | their mean error | other rows | their mean error |",
        "|---|---|---|---|---|",
    ]
    for low, high in itertools.pairwise((*COMM_SHARES, math.inf)):
        cells = []
        for sharded in (True, False):
            errs = [
                r.error
                for r in used
                if r.error is not None and (r.zero_stage == 3) == sharded and low <= (r.comm_share or 0.0) < high
            ]
            cells += [str(len(errs)), f"{statistics.mean(errs):+.1%}" if errs else "-"]
        lines.append(f"| {low:.2f}-{high:.2f} | {' | '.join(cells)} |")
        zero3, others = f"{cells[0]:>3} rows {cells[1]:>6}", f"{cells[2]:>3} rows {cells[3]:>6}"
        print(f"  comm share {low:.2f}-{high:.2f}: ZeRO-3 {zero3}, others {others}")
    return lines


def _repeated_inputs(used: list[Row]) -> list[str]:
    """Rows the cost model cannot tell apart (the same estimate, so the same inputs to it), each group with
    the least worst-row error any one estimate of it can have: (longest - shortest) / (longest + shortest), the
    error of the harmonic mean of its longest and shortest measurements. Their spread is what remeasuring moves."""
    groups: dict[str, list[Row]] = {}
    for r in used:
        groups.setdefault(r.plan_json, []).append(r)
    spreads = []
    for group in (g for g in groups.values() if len(g) > 1):
        times = [r.measured_step_s for r in group]
        spreads.append(((max(times) - min(times)) / (max(times) + min(times)), group, times))
    lines = [
        "",
        "Rows with the same inputs (the same estimate), and the least worst-row error any one estimate of each "
        "group can have:",
        "",
        "| rows | run | measured s | least worst-row error |",
        "|---|---|---|---|",
    ]
    for floor, group, times in sorted(spreads, key=lambda item: -item[0]):
        ids = ", ".join(r.row_id for r in group)
        lines.append(f"| {ids} | {group[0].label} | {', '.join(f'{t:.3f}' for t in times)} | {floor:.1%} |")
        if floor > 0.05:
            print(f"  same inputs {ids}: measured {min(times):.3f}-{max(times):.3f} s, no estimate within {floor:.1%}")
    median = f", least worst-row error median {statistics.median(f for f, _, _ in spreads):.1%}" if spreads else ""
    print(f"  {len(spreads)} groups of rows with the same inputs{median}")
    return lines


def main() -> None:
    start = time.perf_counter()
    rows = [evaluate(name, row) for name, row in usable_rows()]
    used = [r for r in rows if r.error is not None]
    lines = [
        "# Step time: estimate vs published runs",
        "",
        "Generated by `python benchmarks/validate_published.py`.",
        "",
        "| source | row | run | measured s | estimated s | error |",
        "|---|---|---|---|---|---|",
    ]
    for r in used:
        lines.append(
            f"| {r.source} | {r.row_id} | {r.label} | {r.measured_step_s:.3f} | {r.estimated_step_s:.3f} "
            f"| {r.error:+.1%} |"
        )
        print(
            f"{r.row_id:>22} {r.label:<55} measured {r.measured_step_s:8.3f} s  estimate {r.estimated_step_s:8.3f} s"
            f"  {r.error:+7.1%}"
        )
    errors = [abs(r.error) for r in used if r.error is not None]
    false_oom = [r.row_id for r in used if r.fits is False]
    summary = (
        f"{len(used)} rows used, {len(rows) - len(used)} skipped; |error| mean {statistics.mean(errors):.1%}, "
        f"median {statistics.median(errors):.1%}, max {max(errors):.1%}; runs estimated not to fit in GPU "
        f"memory: {len(false_oom)} {false_oom[:8]}; {time.perf_counter() - start:.1f} s"
    )
    lines += ["", summary, "", "| source | rows | mean abs error | max abs error |", "|---|---|---|---|"]
    for source in dict.fromkeys(r.source for r in used):
        errs = [abs(r.error) for r in used if r.source == source and r.error is not None]
        lines.append(f"| {source} | {len(errs)} | {statistics.mean(errs):.1%} | {max(errs):.1%} |")
        print(f"  {source:<42} {len(errs):>4} rows  mean {statistics.mean(errs):6.1%}  max {max(errs):6.1%}")
    lines += _by_comm_share(used)
    lines += _repeated_inputs(used)
    lines += [
        "",
        "## Peak memory per GPU: estimate vs published runs",
        "",
        "Measured: the caching allocator's peak reservation as the source reports it; estimated: "
        "`memory_per_gpu_bytes` less what the process holds outside the allocator.",
        "",
        "| source | row | run | recompute | measured GiB | estimated GiB | error |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.measured_mem_gib is None or r.estimated_mem_gib is None:
            continue
        err = (r.estimated_mem_gib - r.measured_mem_gib) / r.measured_mem_gib
        lines.append(
            f"| {r.source} | {r.row_id} | {r.label} | {r.recompute} | {r.measured_mem_gib:.1f} "
            f"| {r.estimated_mem_gib:.1f} | {err:+.1%} |"
        )
        print(
            f"{r.row_id:>22} memory measured {r.measured_mem_gib:5.1f} GiB"
            f"  estimate {r.estimated_mem_gib:5.1f} GiB  {err:+6.1%}"
        )
    mist = mist_check()
    lines += [
        "",
        "Mist's kick-the-tires run (GPT-2 1.3B, 2x L4, DP 2, full recompute; tests/data/validation/"
        "mist_test_small_base.json):",
        "",
        "| peak | measured MiB | estimated MiB | error |",
        "|---|---|---|---|",
    ]
    for what, measured, estimated in (
        ("allocated", mist.allocated_mib, mist.estimated_allocated_mib),
        ("reserved (larger GPU)", mist.reserved_mib, mist.estimated_reserved_mib),
    ):
        err = (estimated - measured) / measured
        lines.append(f"| {what} | {measured:.0f} | {estimated:.0f} | {err:+.1%} |")
        print(
            f"{'MIST-base':>22} memory {what:<21} measured {measured:7.0f} MiB"
            f"  estimate {estimated:7.0f} MiB  {err:+6.1%}"
        )
    step_err = (mist.estimated_step_s - mist.step_s) / mist.step_s
    lines += [
        "",
        f"Its step time: measured {mist.step_s:.2f} s, estimated {mist.estimated_step_s:.2f} s ({step_err:+.1%}).",
    ]
    lines += ["", "Skipped:", ""]
    lines += [f"- {r.source} {r.row_id}: {r.skipped}" for r in rows if r.skipped]
    lines += [f"- {name}: all rows: {why}" for name, why in NOT_USABLE.items()]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print(summary)


if __name__ == "__main__":
    main()
