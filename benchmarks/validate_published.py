"""Estimate every usable published training run in tests/data/validation and compare step times.

A row is usable when it gives an architecture, hardware, TP/PP/DP degrees, a global batch and a
measured throughput (step time, tokens/s/GPU, or TFLOP/s/GPU with a stated FLOP basis), in BF16
without context parallelism. Missing settings take the defaults in FILE_DEFAULTS, stated per source.

    python benchmarks/validate_published.py        # prints per-row errors, writes benchmarks/results/validation.md
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

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
# mpt/modeling_mpt.py: flash_attn.losses.cross_entropy.CrossEntropyLoss); the benchmark yamls do not.
FUSED_LOSS = {"llmfoundry_mpt_fsdp_benchmarks.csv", "megatron_bridge_perf_summary.csv"}
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


def _num(text: str) -> float | None:
    m = re.search(r"[-+]?\d[\d,]*\.?\d*", text or "")
    if not m:
        return None
    value = float(m.group(0).replace(",", ""))
    return value * 1024 if re.search(r"\d\s*K\b", text) else value


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
        return load_model(row["preset"]), int(_num(row["seq_len"]))
    h, layers, heads = int(_num(row["hidden"])), int(_num(row["n_layers"])), int(_num(row["n_heads"]))
    kv = int(_num(row["n_kv_heads"]) or heads)
    ffn = int(_num(row["ffn_hidden"]) or 4 * h)
    vocab = int(_num(row["vocab"]) or 51200)
    seq = int(_num(row["seq_len"]))
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
        return load_topology(MACHINES / row["machine"], nodes=n_gpus // int(_num(row["gpus_per_node"]) or 8))
    preset = "dgx-h100" if "H100" in gpu else "dgx-a100" if ("A100" in gpu or "Ampere" in gpu) else None
    preset = {"B200": "dgx-b200", "B300": "dgx-b300"}.get(gpu, preset)
    if gpu.startswith("GB"):  # NVL72 trays of 4 GPUs, each Slurm segment of them in one rack's NVLink domain
        trays = n_gpus // 4
        spec = read_spec(f"{gpu.lower()}-nvl72")
        tray = spec.nodes[0].model_copy(update={"count": trays})
        return build(spec.model_copy(update={"nodes": [tray], "nvlink_domain_nodes": slurm_segment(trays)}))
    if preset is None:
        raise ShardplanError(f"no preset for GPU {gpu!r}")
    per_node = int(_num(row["gpus_per_node"]) or 8)
    if n_gpus % per_node:
        raise ShardplanError(f"{n_gpus} GPUs do not fill nodes of {per_node}")
    return load_topology(preset, nodes=n_gpus // per_node)


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
    if _num(row["step_time_s"]):
        return _num(row["step_time_s"])
    tokens = global_batch * seq
    if _num(row["tokens_per_s_per_gpu"]):
        return tokens / (_num(row["tokens_per_s_per_gpu"]) * n)
    tflops, basis = _num(row["tflops_per_gpu"]), row["tflops_basis"].lower()
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


def _llmfoundry(row: dict[str, str]) -> dict[str, str]:
    """An llm-foundry benchmark row in the common columns (MPT: GPT-style blocks, FFN 4h)."""
    gpu = {"h100_80gb": "H100 80GB", "a100_80gb": "A100 80GB", "a100_40gb": "A100 40GB"}[row["GPU"]]
    sharding = {"FULL_SHARD": "ZeRO-3 (FSDP FULL_SHARD)", "SHARD_GRAD_OP": "gradients sharded (SHARD_GRAD_OP)"}
    return {
        "row_id": row["row_id"],
        "model": f"MPT {row['Model']}",
        "hidden": row["d_model"],
        "n_layers": row["n_layers"],
        "n_heads": row["n_heads"],
        "n_kv_heads": "",
        "ffn_hidden": row["ffn_hidden"],
        "vocab": row["vocab"],
        "seq_len": row["SeqLen (T)"],
        "gpu": gpu,
        "machine": "dgx-a100-40gb.yaml" if row["GPU"] == "a100_40gb" else "",
        "n_gpus": row["# GPUs"],
        "gpus_per_node": "8",
        "precision": "FP8" if "fp8" in row["Precision"] else "BF16",
        "tp": "1",
        "pp": "1",
        "dp": row["# GPUs"],
        "zero_fsdp": sharding[row["Sharding Strategy"]],
        "micro_batch": row["MicroBatchSize"],
        "global_batch": row["GlobalBatchSize"],
        "act_recompute": "full" if row["Activation Checkpointing"] == "True" else "none",
        "tokens_per_s_per_gpu": row["Throughput (T/s/GPU)"],
        # Composer's FSDP mixed precision (composer/trainer/mosaic_fsdp_utils.py get_mixed_precision, 2023): PURE
        # reduces gradients in the compute dtype (bf16), DEFAULT in fp32. (FSDP1 casts the reduced shard back to
        # fp32, 2 bytes per sharded parameter more than counted here; these rows report no memory.)
        "grad_dtype": "bf16" if row["MP Mode"] == "PURE" else "fp32",
    }


# The sweep's sections before "TFLOPs calculation improved" printed TFLOP/s from an estimate that the
# log calls under-reporting, fixed by Megatron-DeepSpeed PR 251 (about 3% higher from there on). Its
# step times and TFLOP/s agree with 96 B s l h^2 alone: without eq. 3's attention and vocabulary terms
# (the chronicle's 20B run: 769.99 s/it at 108.47 TFLOP/s on 8 GPUs; 200B on 320 GPUs: 221.21 s, 94.39).
BLOOM_OLD_TFLOPS = {
    "Best TFLOPs / fp16",
    "Best TFLOPs / bf16",
    "dealing with JZ hanging on the large model",
    "Choosing the fastest 3D Topology",
    "tile and wave quantization",
}


def _bloom(row: dict[str, str]) -> dict[str, str]:
    """A BLOOM tr11 sweep row in the common columns (vocabulary: BLOOM's 250,880 tokens)."""
    return {
        "row_id": row["row_id"],
        "model": f"GPT {row['size'] or row['nhidden']} (BLOOM sweep)",
        "hidden": row["nhidden"],
        "n_layers": row["nlayers"],
        "n_heads": row["nheads"],
        "vocab": "250880",
        "seq_len": "2048",
        "gpu": "A100 80GB",
        "machine": "jean-zay-a100.yaml",
        "n_gpus": row["gpus"],
        "gpus_per_node": "8",
        "precision": "BF16",
        "tp": row["tp"],
        "pp": row["pp"],
        "dp": row["dp"],
        "micro_batch": row["mbs"],
        # a few rows run a smaller batch than the column says; their context line gives it ("GBS=512")
        "global_batch": (re.findall(r"GBS=(\d+)", row["context"]) or [row["gbs"]])[0],
        "step_time_s": row["sec_per_it"],
        "tflops_per_gpu": row["tflops"],
        "tflops_basis": "hardware" if row["section"] not in BLOOM_OLD_TFLOPS else "hardware, blocks' gemms only",
    }


# Megatron Bridge's H100 and B200 Llama recipes (scripts/performance/configs/llama/llama3_workload_base_configs.py,
# llama31_workload_base_configs.py: H100_FP8_CS, B200_FP8_CS): no recompute, no FSDP, TP communication overlapped
# (the llama3 recipes import userbuffers_bf16_h100_h8192_tp4_mbs1_seqlen8192), Transformer Engine's fused cross
# entropy (utils/overrides.py _set_common_perf_overrides); the model recipes (src/megatron/bridge/recipes/llama/
# llama3.py) run the distributed optimizer with overlapped gradient reduction and parameter gather.
BRIDGE_MODELS = {
    "LLAMA3_70B": "llama3-70b",
    "LLAMA3.1_405B": "llama3-405b",
    "Qwen3_30B_a3B": "qwen3-30b-a3b",
    "Qwen3_235B_a22B": "qwen3-235b-a22b",
    # scripts/performance/configs/gpt_oss/gpt_oss_workload_base_configs.py: EP 8 (64 on B200 in 26.02), expert TP 1,
    # PP 4 on H100, recompute_modules layernorm and moe_act; gpt_oss_llm_pretrain.py: bf16 gradient reduction,
    # force-balanced routing; the recipe
    # (src/megatron/bridge/recipes/gpt_oss/gpt_oss.py) keeps the alltoall dispatcher except on B300
    "GPT OSS 120B": "gpt-oss-120b",
    # scripts/performance/configs/deepseek/parallelism_configs.py and deepseek_workload_base_configs.py: expert TP 1,
    # recompute_modules mla_up_proj (and on H100 and B200 at EP 32 mlp, the 3 dense blocks' MLPs: not modelled);
    # deepseek_llm_pretrain.py: bf16 gradient reduction, force-balanced routing; the flex dispatcher (DEDUPLICATED)
    # and, on H100 and B200 at EP 32, overlapped all-to-alls; one multi-token-prediction layer (the recipe's
    # mtp_num_layers, src/megatron/bridge/recipes/deepseek/deepseek_v3.py) in the last chunk of the pipeline
    # layouts `DEEPSEEK_LAYOUTS` gives
    "DeepSeekV3": "deepseek-v3",
}


# Megatron Bridge's DeepSeek-V3 pipeline layouts (E: embedding, t: block, m: MTP layer, L: loss; chunks in model
# order): deepseek_llm_pretrain.py's H100 one, and the recipe's (PP, VP) map for B200 (deepseek_v3.py: (16, 1)
# and (8, 2) alike, a chunk of 4 blocks each and one block with the MTP layer and the loss last)
DEEPSEEK_LAYOUTS = {"H100 80GB": "Et|(tt|)*30mL", "B200": "Et*4|(t*4|)*14tmL"}


def _layout_stages(layout: str, pp: int) -> tuple[int, ...]:
    """Blocks per pipeline stage of a Megatron `--pipeline-model-parallel-layout`: chunk k on stage k % pp."""
    expanded = re.sub(r"\(([^)]*)\)\*(\d+)", lambda m: m.group(1) * int(m.group(2)), layout)
    stages = [0] * pp
    for k, chunk in enumerate(expanded.split("|")):
        stages[k % pp] += sum(int(n or 1) for n in re.findall(r"t(?:\*(\d+))?", chunk))
    return tuple(stages)


# Megatron Bridge runs whose recipes dispatch through the flex dispatcher (HybridEP, DeepEP): qwen3_llm_pretrain.py's
# 30B-A3B recipes, qwen3_workload_base_configs.py's GB200 and GB300 235B-A22B ones (hybridep),
# deepseek_llm_pretrain.py's H100 one (enable_deepep=True), deepseek_workload_base_configs.py's B200 ones (hybridep;
# deepep at EP 32)
DEDUPLICATED = {
    ("Qwen3_30B_a3B", "H100 80GB"),
    ("Qwen3_30B_a3B", "B200"),
    ("Qwen3_30B_a3B", "B300"),
    ("Qwen3_30B_a3B", "GB200"),
    ("Qwen3_30B_a3B", "GB300"),
    ("Qwen3_235B_a22B", "GB200"),
    ("Qwen3_235B_a22B", "GB300"),
    ("DeepSeekV3", "H100 80GB"),
    ("DeepSeekV3", "B200"),
}


def _megatron_bridge(row: dict[str, str]) -> dict[str, str]:
    """A Megatron Bridge performance row in the common columns, where the recipe it ran is read (Llama 3 and 3.1,
    Qwen3, GPT-OSS and DeepSeek-V3 on DGX-H100 and DGX-B200; Llama and Qwen3 on GB200 / GB300 racks; Qwen3 alone on
    DGX-B300); the others name why they are not estimated."""
    out = {"row_id": row["row_id"], "model": row["model"], "n_gpus": row["n_gpus"]}
    # MXFP8 is Blackwell's block-scaled FP8, as the 25.11 tables' "FP8-MX": timed as FP8 at the GPU's FP8 dense rate
    # (Blackwell's tensor cores run MX-scaled FP8 at that rate, NVIDIA Blackwell datasheet)
    precision = (row["precision"] or ("FP8" if "describes FP8" in row["notes"] else "")).replace("MXFP8", "FP8-MX")
    # the B300's recipes are read for the Qwen3 models alone (qwen3_workload_base_configs.py, as on the B200: 30B-A3B
    # with HybridEP and CUDA graphs of the router and the dispatch's preprocessing; 235B-A22B with PP 8 x EP 8 and
    # the alltoall dispatcher, its all-to-alls not overlapped)
    if row["system"] == "DGX-B300" and not row["model"].startswith("Qwen3"):
        return out | {"not_usable": "DGX-B300: the recipes' B300 settings (dispatchers, CUDA graphs, layouts) not read"}
    if row["system"] == "DGX-B300" and row["vp"] != "n/a":
        return out | {"not_usable": "DGX-B300: virtual stages, which the B300 recipe read has not: an earlier one"}
    if row["task"] != "Pre-Training Performance":
        return out | {"not_usable": f"{row['task']}: the fine-tuning recipes' data and settings are not read"}
    gpu = {"DGX-H100": "H100 80GB"}.get(row["system"], row["system"].removeprefix("DGX-"))  # B200, B300, GB200, GB300
    if gpu.startswith("GB"):  # NVL72 racks: a Slurm segment of trays in one NVLink domain (`_topology`)
        if row["model"] not in ("LLAMA3_70B", "LLAMA3.1_405B", "Qwen3_30B_a3B", "Qwen3_235B_a22B"):
            return out | {"not_usable": f"{row['system']}: the recipes' settings for this model there are not read"}
        if row["model"].startswith("LLAMA3") and row["fsdp"] != "0":
            # llama3_workload_base_configs.py GB200/GB300 FP8_CS and BF16, llama31_workload_base_configs.py GB200
            # FP8_CS and GB300 BF16 / FP8_CS (V1): Megatron-FSDP with layers' activations offloaded to the CPU (rows
            # from 26.06 on leave the column empty); without FSDP the GB200 / GB300 recipes (llama31_llm_pretrain.py)
            # set what the B200's does
            return out | {"not_usable": "Megatron-FSDP with activations offloaded to the Grace CPU (cpu_offloading)"}
        if row["model"].startswith("Qwen3") and tuple(map(int, row["release"].split("."))) >= (26, 6):
            # Megatron Bridge PR 4249, "Enable Qwen3 GB200/GB300 MXFP8 CuTeDSL Fusion and Full-Iter CUDA Graphs for
            # 26.06": 1.5x the 26.04 rows' throughput for 30B-A3B, 1.3x for 235B-A22B
            return out | {"not_usable": "26.06 on: full-iteration CUDA graphs and a fused grouped MLP, not modelled"}
    if row["model"] == "LLAMA3_8B":
        # the 8B recipes changed between releases (H100: Megatron FSDP in the 25.x tables, DDP with 5 of 32 blocks
        # recomputed, recompute_num_layers=5, in the recipe file); a row does not say which applied
        return out | {"not_usable": "8B: the recipe's recompute and sharding are not stated per release"}
    name = row["model"].removesuffix(" (dropless)")
    if name.endswith("(tokendrop)"):
        return out | {"not_usable": "token dropping: the capacity factor its experts pad to is not stated"}
    if name not in BRIDGE_MODELS:
        return out | {"not_usable": "no preset for this architecture (hybrid Mamba)"}
    if not precision.startswith(("FP8", "BF16")):
        return out | {"not_usable": f"precision {precision or 'not stated'}"}
    tp, pp, cp, ep = (int(_num(row[k]) or 1) for k in ("tp", "pp", "cp", "ep"))
    data = int(row["n_gpus"]) // (tp * pp * cp)
    spec = load_model(BRIDGE_MODELS[name])
    # the Qwen3 recipes set expert_tensor_parallel_size=1 (scripts/performance/configs/qwen/
    # qwen3_workload_base_configs.py): each expert whole on a GPU, the EP group spanning the TP ranks too, so the
    # layout's ep axis is EP / TP
    axis = ep // tp if spec.moe else 1
    return out | {
        "preset": BRIDGE_MODELS[name] if spec.moe else "",
        "ep": str(axis),
        "expert_tp": "1" if spec.moe else "",
        "ep_dispatcher": "deduplicated" if (name, gpu) in DEDUPLICATED else "alltoall",
        # every performance recipe reduces gradients in bf16, into bf16 buffers: grad_reduce_in_fp32 = False in
        # set_llama3_common_configs, set_llama31_common_configs, set_qwen3_common_configs and the DeepSeek and
        # GPT-OSS ones (scripts/performance/configs/*/*_llm_pretrain.py)
        "grad_dtype": "bf16",
        "hidden": str(spec.hidden_size),
        "n_layers": str(spec.num_layers),
        "n_heads": str(spec.num_heads),
        "n_kv_heads": str(spec.num_kv_heads),
        "ffn_hidden": str(spec.ffn_hidden_size),
        "vocab": str(spec.vocab_size),
        "seq_len": row["seq_len"],
        "gpu": gpu,
        "gpus_per_node": "8",
        "precision": precision,
        # FP8 but Blackwell's MXFP8 is Transformer Engine's per-tensor current scaling: the Bridge recipes have only
        # *_H100_FP8_CS_* variants for Hopper (e.g. qwen3_workload_base_configs.py), and the 25.09 and 25.11 tables
        # print current scaling first, MXFP8 in parentheses ("FP8-CS (FP8-MX)")
        "fp8_recipe": "current" if precision.startswith("FP8") and not precision.startswith("FP8-MX") else "",
        "tp": row["tp"],
        "pp": row["pp"],
        "cp": row["cp"],
        "dp": str(data // axis),
        "sp": "yes" if int(row["tp"]) > 1 else "no",
        "vpp": "" if row["vp"] == "n/a" else row["vp"],
        "zero_fsdp": "ZeRO-3 (Megatron FSDP)" if _num(row["fsdp"]) else "ZeRO-1 (distributed optimizer)",
        "micro_batch": row["mbs"],
        "global_batch": row["gbs"],
        "act_recompute": "none",
        "recompute_modules": {"GPT OSS 120B": "moe_act layernorm", "DeepSeekV3": "mla_up_proj"}.get(name, ""),
        "mtp_layers": "1" if name == "DeepSeekV3" else "",
        "pp_layout": DEEPSEEK_LAYOUTS[gpu] if name == "DeepSeekV3" else "",
        "other_opts": _bridge_overlaps(name, row["system"], ep),
        "tokens_per_s_per_gpu": row["tokens_per_s_per_gpu"],
    }


def _bridge_overlaps(model: str, system: str, ep: int) -> str:
    """The overlap flags of a Megatron Bridge recipe: TP communication overlap and the distributed optimizer's
    parameter gather (scripts/performance/utils/overrides.py), but Qwen3 235B-A22B on H100 turns TP overlap off
    and overlaps its MoE all-to-alls instead (qwen3_llm_pretrain.py qwen3_235b_a22b_pretrain_config_h100:
    CommOverlapConfig(tp_comm_overlap=False); qwen3_workload_base_configs.py: moe_a2a_overlap=True)."""
    if model in ("Qwen3_235B_a22B", "DeepSeekV3") and system == "DGX-H100":  # deepseek_llm_pretrain.py alike
        return "--overlap-param-gather --overlap-moe-expert-parallel-comm"
    if (model, system, ep) == ("DeepSeekV3", "DGX-B200", 32):  # deepseek_workload_base_configs.py B200_FP8_MX_V2
        return "--tp-comm-overlap --overlap-param-gather --overlap-moe-expert-parallel-comm"
    return "--tp-comm-overlap --overlap-param-gather"


ADAPTERS = {
    "llmfoundry_mpt_fsdp_benchmarks.csv": _llmfoundry,
    "bloom176b_topology_sweep.csv": _bloom,
    "megatron_bridge_perf_summary.csv": _megatron_bridge,
}
COLUMNS = [
    "row_id",
    "model",
    "hidden",
    "n_layers",
    "n_heads",
    "n_kv_heads",
    "ffn_hidden",
    "vocab",
    "seq_len",
    "gpu",
    "machine",
    "n_gpus",
    "gpus_per_node",
    "precision",
    "fp8_recipe",
    "tp",
    "pp",
    "dp",
    "cp",
    "sp",
    "vpp",
    "zero_fsdp",
    "micro_batch",
    "global_batch",
    "act_recompute",
    "other_opts",
    "step_time_s",
    "tokens_per_s_per_gpu",
    "tflops_per_gpu",
    "tflops_basis",
    "mem_per_gpu",
    "not_usable",
    "ep",
    "expert_tp",
    "ep_dispatcher",
    "preset",
    "recompute_modules",
    "mtp_layers",
    "pp_layout",
]


def usable_rows() -> list[tuple[str, dict[str, str]]]:
    out = []
    for name in FILE_DEFAULTS:
        lines = [ln for ln in (DATA / name).read_text().splitlines() if not ln.startswith("#")]
        adapt = ADAPTERS.get(name, dict)
        out += [(name, {c: "" for c in COLUMNS} | adapt(row)) for row in csv.DictReader(lines)]
    return out


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
    measured = _num(row["mem_per_gpu"]) if "GiB" in row["mem_per_gpu"] else None
    if measured is None:
        return None, None
    per_node = int(_num(row["gpus_per_node"]) or 8)
    source = "dgx-h100" if "H100" in row["gpu"] else "dgx-a100"
    if "HBM2e" in row["gpu"]:
        source = MACHINES / "grand-teton-h100-96gb.yaml"
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
    cp_label = f" c={row['cp']}" if (_num(row.get("cp", "")) or 1) > 1 else ""
    cp_label += f" e={row['ep']}" if (_num(row["ep"]) or 1) > 1 else ""
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
    if not all(_num(row[k]) for k in ("n_layers", "hidden", "n_heads", "seq_len")):
        result.skipped = "architecture or sequence length not stated"
        return result
    try:
        n = int(_num(row["n_gpus"]))
        tp, pp = int(_num(row["tp"]) or 1), int(_num(row["pp"]) or 1)
        cp = int(_num(row.get("cp", "")) or 1)
        ep = int(_num(row["ep"]) or 1)
        dp = int(_num(row["dp"]) or n // (tp * pp * cp * ep))
        model, seq = _model(row)
        gb = _num(row["global_batch"])
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
        mb = int(_num(row["micro_batch"]) or mb_default)
        vpp = int(_num(row["vpp"]) or vpp_default) if pp > 1 else 1
        if "fsdp" in row.get("zero_fsdp", "").lower() and name == "torchtitan_benchmarks.csv":
            local = int(_num(row["micro_batch"]) or 1)
            global_batch = local * dp
            # torchtitan (Dec 2024, parallelisms/pipelining_utils.py) splits the local batch into
            # `pipeline_parallel_microbatches` micro-batches, by default the PP degree, and gives each
            # rank 2 stages under a multi-stage (interleaved) schedule when no split points are set
            mb = local // pp
            vpp = 2 if "interleaved" in opts else 1
        if vpp > 1 and (global_batch // (dp * ep * mb)) % pp:
            vpp = 1
        train = Training(
            global_batch=global_batch,
            seq_len=seq,
            dtype="fp8" if fp8 else "bf16",
            fp8_recipe=row["fp8_recipe"] or ("rowwise" if "rowwise" in opts else "tensorwise"),
            recompute=_recompute(name, row, recompute),
            zero_stage=zero,
            sequence_parallel=_sequence_parallel(name, row),
            grad_dtype=row.get("grad_dtype") or "fp32",
            attention="unfused" if name in UNFUSED_ATTENTION else "triton" if name in TRITON_ATTENTION else "flash",
            loss="fused" if name in FUSED_LOSS else "fp32",
            compiled="torch.compile" in opts,
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
            shape["layers_per_stage"] = _layout_stages(row["pp_layout"], pp)
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
