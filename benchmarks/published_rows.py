"""The published sources whose columns are not the common ones, each row turned into them: llm-foundry's benchmark
table, BLOOM's topology sweep and Megatron Bridge's performance summary, with what their launchers and recipes set
that the rows leave out (each setting with the file it was read from); and NeMo 24.07's GPT-3 shapes, which its
table leaves out. `validate_published.py` estimates them."""

from __future__ import annotations

import re

from shardplan import load_model


def number_in(text: str) -> float | None:
    """The first number in a cell ("1,024", "~3.5 s", "8K" as 8,192), or None where it has none."""
    m = re.search(r"[-+]?\d[\d,]*\.?\d*", text or "")
    if not m:
        return None
    value = float(m.group(0).replace(",", ""))
    return value * 1024 if re.search(r"\d\s*K\b", text) else value


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


def layout_stages(layout: str, pp: int) -> tuple[int, ...]:
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
    tp, pp, cp, ep = (int(number_in(row[k]) or 1) for k in ("tp", "pp", "cp", "ep"))
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
        "zero_fsdp": "ZeRO-3 (Megatron FSDP)" if number_in(row["fsdp"]) else "ZeRO-1 (distributed optimizer)",
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


# The GPT-3 shapes NeMo's launcher trains (NVIDIA/NeMo-Framework-Launcher launcher_scripts/conf/training/gpt3/
# 5b.yaml and 20b.yaml: num_layers, hidden_size, num_attention_heads, ffn_hidden_size 4 x hidden; the GPT-2 BPE
# vocabulary of 50,257 padded to a multiple of 128 x TP, make_vocab_size_divisible_by): what NeMo 24.07's table names
# GPT3-5B and GPT3-20B and does not describe. Only the shapes are read: the table's degrees, batches and FP8 are its
# own.
NEMO_GPT3 = {"GPT3-5B": (24, 4096, 32), "GPT3-20B": (44, 6144, 48)}
GPT2_BPE_VOCAB = 50257


def _nemo_2407(row: dict[str, str]) -> dict[str, str]:
    """A NeMo 24.07 row, its GPT-3 shapes and vocabulary filled in from NeMo's launcher where the table leaves them
    out (GPT3-175B's shape is the file's own)."""
    if not row["model"].startswith("GPT3-"):
        return row
    multiple = 128 * int(number_in(row["tp"]) or 1)
    row = row | {"vocab": row["vocab"] or str(-(-GPT2_BPE_VOCAB // multiple) * multiple)}
    if row["model"] not in NEMO_GPT3 or row["hidden"]:
        return row
    layers, hidden, heads = NEMO_GPT3[row["model"]]
    shape = {"n_layers": layers, "hidden": hidden, "n_heads": heads, "n_kv_heads": heads, "ffn_hidden": 4 * hidden}
    return row | {k: str(v) for k, v in shape.items()}


ADAPTERS = {
    "nemo_24.07_perf_summary.csv": _nemo_2407,
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
