"""From plans to running jobs: the JSON contract, real DeviceMeshes (fake process group), the
framework emitters, and torchrun end to end on CPU with gloo."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import assert_meshes_match

from shardplan import Plan, ShardplanError, Training, estimate, load_topology
from shardplan.emit import emit
from shardplan.emit.remap import visible_devices

ROOT = Path(__file__).parent.parent
CROSSED = ROOT / "tests/data/machines/a100-pcie-bridged-crossed.yaml"
TRAIN = Training(global_batch=64, seq_len=4096, zero_stage=1)

PLAN_KEYS = {  # the JSON contract (DESIGN.md "Plan"): new keys carry neutral defaults; removing one bumps the version
    "schema_version", "model", "topology", "num_gpus", "tp", "pp", "dp", "cp", "ep", "expert_tensor_parallel",
    "ep_comm_overlap", "ep_dispatcher", "expert_gemms", "micro_batch", "num_micro_batches", "virtual_stages",
    "zero_stage", "recompute", "recompute_modules", "mtp_layers", "dtype", "fp8_recipe", "fp8_weight_cache",
    "fp8_all_gather", "sequence_parallel", "compiled", "loss", "tp_impl", "pipeline_runtime", "cp_comm",
    "tp_comm_overlap", "overlap_param_gather", "global_batch", "seq_len",
    "mesh_dim_names", "mesh_shape", "rank_layout", "layers_per_stage", "step_time_s", "tokens_per_s", "mfu",
    "memory_per_gpu_bytes", "memory_breakdown", "fits", "breakdown", "comm_time_by_link", "default_step_time_s",
    "optimal", "gap",
}  # fmt: skip

LAYOUTS = [  # (tp, pp, dp, layout): row-major and not
    (2, 1, 4, [[[0, 2], [3, 1], [6, 4], [7, 5]]]),
    (2, 2, 2, [[[0, 2], [1, 3]], [[4, 6], [5, 7]]]),
    (4, 2, 1, [[[7, 6, 5, 4]], [[0, 1, 2, 3]]]),
    (1, 4, 2, [[[0], [4]], [[1], [5]], [[2], [6]], [[3], [7]]]),
    (2, 1, 4, None),
]


def _plan(tp: int, pp: int, dp: int, layout: list | None) -> Plan:
    return estimate("llama3-8b", load_topology(CROSSED), TRAIN, tp=tp, pp=pp, dp=dp, rank_layout=layout)


def test_plan_json_keys_and_round_trip() -> None:
    plan = _plan(*LAYOUTS[0])
    doc = json.loads(plan.to_json())
    assert set(doc) == PLAN_KEYS
    assert Plan.from_json(plan.to_json()) == plan
    # what is not a plan: one line each (it was a JSONDecodeError, a TypeError and pydantic's 21-line error)
    for text, message in (
        ("not json", "plan: line 1: not valid JSON"),
        ("[1]", "plan schema_version None is not 1"),
        (json.dumps({**doc, "tp": "x"}), "plan: tp: Input should be a valid integer"),
    ):
        with pytest.raises(ShardplanError, match=message) as info:
            Plan.from_json(text)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("tp,pp,dp,layout", LAYOUTS)
def test_device_mesh_groups_equal_the_plan(tp: int, pp: int, dp: int, layout: list | None) -> None:
    assert_meshes_match(_plan(tp, pp, dp, layout))


def test_remap_per_node_visible_devices() -> None:
    topo = load_topology(CROSSED)
    assert visible_devices(_plan(*LAYOUTS[0]), topo) == {0: "0,2,3,1,6,4,7,5"}
    assert visible_devices(_plan(2, 1, 4, None), topo) == {}
    two_nodes = load_topology(CROSSED, nodes=2)
    across = [[[0, 8], [1, 9], [2, 10], [3, 11], [4, 12], [5, 13], [6, 14], [7, 15]]]
    plan = estimate("llama3-8b", two_nodes, TRAIN, tp=2, pp=1, dp=8, rank_layout=across)
    assert visible_devices(plan, two_nodes) is None
    assert "cannot be set per node" in emit(plan, two_nodes, "megatron")


# Documented keys: torchtitan torchtitan/config/job_config.py (Parallelism, Training,
# ActivationCheckpoint); Megatron-LM megatron/training/arguments.py; DeepSpeed docs/config-json.
TORCHTITAN_KEYS = {
    "parallelism": {
        "data_parallel_replicate_degree", "data_parallel_shard_degree", "tensor_parallel_degree",
        "pipeline_parallel_degree", "pipeline_parallel_schedule", "pipeline_parallel_microbatch_size",
        "enable_async_tensor_parallel", "context_parallel_degree", "expert_parallel_degree",
        "module_fqns_per_model_part", "fsdp_reshard_after_forward",
    },
    "training": {"global_batch_size", "local_batch_size", "seq_len", "mixed_precision_param"},
    "activation_checkpoint": {"mode"},
}  # fmt: skip
MEGATRON_ARGS = {
    "--tensor-model-parallel-size", "--pipeline-model-parallel-size", "--micro-batch-size", "--global-batch-size",
    "--seq-length", "--bf16", "--num-layers-per-virtual-pipeline-stage", "--sequence-parallel",
    "--recompute-granularity", "--recompute-method", "--recompute-num-layers", "--use-distributed-optimizer",
    "--pipeline-model-parallel-layout", "--tp-comm-overlap",
    "--overlap-grad-reduce", "--overlap-param-gather", "--use-megatron-fsdp", "--data-parallel-sharding-strategy",
    "--no-gradient-accumulation-fusion", "--ckpt-format",
}  # fmt: skip
DEEPSPEED_KEYS = {
    "train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "bf16",
    "zero_optimization", "activation_checkpointing", "shardplan",
}  # fmt: skip


@pytest.mark.parametrize("tp,pp,dp,layout", LAYOUTS)
def test_emitters_use_documented_keys_and_agree_with_the_plan(tp: int, pp: int, dp: int, layout: list | None) -> None:
    plan, topo = _plan(tp, pp, dp, layout), load_topology(CROSSED)
    toml = tomllib.loads(emit(plan, topo, "torchtitan"))
    keys = {k: set(v) for k, v in TORCHTITAN_KEYS.items()}
    if pp == 1:  # one stage: no split to name
        keys["parallelism"].remove("module_fqns_per_model_part")
    assert {k: set(v) for k, v in toml.items()} == keys
    par = toml["parallelism"]
    assert (
        par["tensor_parallel_degree"]
        * par["pipeline_parallel_degree"]
        * par["data_parallel_shard_degree"]
        * par["data_parallel_replicate_degree"]
        == plan.num_gpus
    )
    # torchtitan accumulates over global_batch_size // (local_batch_size x dp) forwards; a pipeline splits its local
    # batch into micro-batches: either way the plan's micro-batches of its micro-batch size
    local, micro = toml["training"]["local_batch_size"], par["pipeline_parallel_microbatch_size"]
    forwards = plan.global_batch // (local * plan.dp) * (local // micro if pp > 1 else 1)
    assert (local if pp == 1 else micro) == plan.micro_batch and forwards == plan.num_micro_batches

    megatron = emit(plan, topo, "megatron")
    flags = {line.split()[0] for line in megatron.splitlines() if line.startswith("--")}
    assert flags <= MEGATRON_ARGS
    assert f"--tensor-model-parallel-size {tp} " in megatron and f"--pipeline-model-parallel-size {pp} " in megatron
    if plan.rank_layout != [
        [list(range(s * dp * tp + d * tp, s * dp * tp + d * tp + tp)) for d in range(dp)] for s in range(pp)
    ]:
        assert "CUDA_VISIBLE_DEVICES" in megatron

    ds = json.loads(emit(plan, topo, "deepspeed"))
    assert set(ds) == DEEPSPEED_KEYS
    assert ds["train_micro_batch_size_per_gpu"] * ds["gradient_accumulation_steps"] * dp == ds["train_batch_size"]

    python = emit(plan, topo, "python")
    compile(python, "<emitted>", "exec")
    assert f"micro-batches of {plan.micro_batch} sequence" in python
    assert f", {plan.num_micro_batches} per step" in python


def test_python_snippet_states_the_runtime_the_estimate_assumed() -> None:
    """The mesh alone does not say how TP, the loss and the pipeline run; the memory estimate depends on them (torch's
    loss under DTensor TP runs inside loss_parallel), so the snippet says what was assumed, and the plan keeps it."""
    topo = load_topology(CROSSED)
    torch_run = TRAIN.model_copy(update={"tp_impl": "dtensor", "pipeline_runtime": "torch", "loss": "fp32"})
    plan = estimate("llama3-8b", topo, torch_run.model_copy(update={"compiled": True}), tp=2, pp=2, dp=2)
    assert (Plan.from_json(plan.to_json()).tp_impl, plan.pipeline_runtime) == ("dtensor", "torch")
    assumed = [line for line in emit(plan, topo, "python").splitlines() if line.startswith("# assumed: ")]
    assert assumed == [
        "# assumed: DTensor TP (parallelize_module); cross_entropy on an fp32 copy of the logits inside "
        "loss_parallel(); torch.distributed.pipelining's pipeline schedule; blocks under torch.compile"
    ]
    megatron = estimate("llama3-8b", topo, TRAIN, tp=1, pp=1, dp=8)
    assert "# assumed: Megatron-LM's vocab-parallel cross-entropy\n" in emit(megatron, topo, "python")


@pytest.mark.parametrize(
    "recompute,titan,megatron",
    [
        ("selective-op", {"mode": "selective", "selective_ac_option": "op"}, ""),
        ("selective-layer", {"mode": "selective", "selective_ac_option": "2"}, "--recompute-method block"),
        ("full", {"mode": "full"}, "--recompute-granularity full"),
        ("selective", {"mode": "none"}, "--recompute-granularity selective"),
    ],
)
def test_recompute_modes_map_to_each_framework(recompute: str, titan: dict, megatron: str) -> None:
    topo = load_topology(CROSSED)
    plan = estimate("llama3-8b", topo, TRAIN.model_copy(update={"recompute": recompute}), tp=2, pp=2, dp=2)
    assert tomllib.loads(emit(plan, topo, "torchtitan"))["activation_checkpoint"] == titan
    args = emit(plan, topo, "megatron")
    assert megatron in args and ("--recompute" in args) == bool(megatron)


def test_megatron_recomputes_half_of_each_model_chunk() -> None:
    """Megatron's block method counts the layers it recomputes per model chunk: with two virtual stages of 8 blocks
    each on a stage, selective-layer (every second block) recomputes 4 of each chunk, not 8 (all of them)."""
    topo = load_topology(CROSSED)
    train = TRAIN.model_copy(update={"recompute": "selective-layer"})
    plan = estimate("llama3-8b", topo, train, tp=2, pp=2, dp=2, virtual_stages=2)
    assert "--recompute-method block \\\n--recompute-num-layers 4 " in emit(plan, topo, "megatron")


@pytest.mark.parametrize(
    ("zero", "pp", "sharding"),
    [
        (1, 1, None),
        (2, 1, "optim_grads"),
        (3, 1, "optim_grads_params"),
        (2, 2, "optim_grads"),
        (3, 2, "optim_grads_params"),
    ],
)
def test_zero_stages_map_to_each_frameworks_sharding(zero: int, pp: int, sharding: str | None) -> None:
    """Megatron: ZeRO-1 the distributed optimizer; ZeRO-2/3 Megatron-FSDP's sharding strategies, with a pipeline too
    (and a comment: less benchmarked there). torchtitan: FSDP2 resharding weights after forward for ZeRO-3 only."""
    topo = load_topology(CROSSED)
    plan = estimate("llama3-8b", topo, TRAIN.model_copy(update={"zero_stage": zero}), tp=2, pp=pp, dp=4 // pp)
    args = emit(plan, topo, "megatron")
    assert "--use-distributed-optimizer" in args
    assert ("--use-megatron-fsdp" in args) == (sharding is not None)
    assert sharding is None or f"--data-parallel-sharding-strategy {sharding} " in args
    assert ("Megatron-FSDP under a pipeline" in args) == (zero >= 2 and pp > 1)
    reshard = tomllib.loads(emit(plan, topo, "torchtitan"))["parallelism"]["fsdp_reshard_after_forward"]
    assert reshard == ("default" if zero == 3 else "never")


@pytest.mark.parametrize(
    "layers,pp,v,stages",
    [
        (126, 16, 8, None),  # Llama 3 405B: the first chunk the embedding alone, the last the head alone
        (32, 4, 2, None),  # even: Megatron's own split
        (32, 4, 1, (7, 9, 9, 7)),  # uneven, one chunk per stage
    ],
)
def test_pipeline_split_names_every_block_once_on_its_stage(layers: int, pp: int, v: int, stages: tuple | None) -> None:
    from shardplan.model.hf_config import spec_from_config

    cfg = {"model_type": "llama", "hidden_size": 1024, "num_hidden_layers": layers, "num_attention_heads": 8}
    cfg |= {"intermediate_size": 4096, "vocab_size": 32000, "max_position_embeddings": 2048}
    model = spec_from_config(cfg, "test config", name="test")
    topo = load_topology("dgx-h100", nodes=2 * pp // 8)
    train = Training(global_batch=2 * pp, seq_len=2048, zero_stage=1)
    plan = estimate(model, topo, train, tp=1, pp=pp, dp=2, virtual_stages=v, layers_per_stage=stages)
    parts = tomllib.loads(emit(plan, topo, "torchtitan"))["parallelism"]["module_fqns_per_model_part"]
    assert len(parts) == pp * v
    flat = [name for part in parts for name in part]
    assert flat == ["tok_embeddings", *(f"layers.{i}" for i in range(layers)), "norm", "output"]
    per_stage = [sum(name.startswith("layers.") for k, part in enumerate(parts) if k % pp == p for name in part)
                 for p in range(pp)]  # fmt: skip
    assert tuple(per_stage) == plan.layers_per_stage

    args = emit(plan, topo, "megatron")
    layout = re.search(r'--pipeline-model-parallel-layout "([^"]+)"', args)
    if len(set(plan.layers_per_stage)) == 1 and plan.layers_per_stage[0] % v == 0:
        assert layout is None and (v == 1 or f"--num-layers-per-virtual-pipeline-stage {layers // (pp * v)}" in args)
        return
    segments = layout.group(1).split("|")
    assert len(segments) == pp * v and segments[0].startswith("E") and segments[-1].endswith("L")
    count = sum(int(t[2:] or 1) if t.startswith("t*") else t == "t" for seg in segments for t in seg.split(","))
    assert count == layers


def test_overlap_flags_travel_to_the_launch_configs() -> None:
    topo = load_topology(CROSSED)
    train = TRAIN.model_copy(update={"tp_comm_overlap": True, "overlap_param_gather": True})
    plan = estimate("llama3-8b", topo, train, tp=2, pp=1, dp=4)
    assert Plan.from_json(plan.to_json()).tp_comm_overlap
    assert tomllib.loads(emit(plan, topo, "torchtitan"))["parallelism"]["enable_async_tensor_parallel"] is True
    args = emit(plan, topo, "megatron")
    assert "--tp-comm-overlap" in args and "--overlap-param-gather" in args


def test_fp8_plans_ask_each_framework_for_fp8_linears() -> None:
    topo = load_topology("dgx-h100")
    plan = estimate("llama3-8b", topo, TRAIN.model_copy(update={"dtype": "fp8"}), tp=2, pp=1, dp=4)
    assert Plan.from_json(plan.to_json()).dtype == "fp8"
    titan = tomllib.loads(emit(plan, topo, "torchtitan"))
    assert titan["model"]["converters"] == ["float8"] and titan["float8"]["recipe_name"] == "tensorwise"
    assert "--fp8-format hybrid" in emit(plan, topo, "megatron") and "--fp8-recipe" not in emit(plan, topo, "megatron")
    # Transformer Engine's current scaling: Megatron's --fp8-recipe tensorwise; torchao's tensorwise scales alike
    current = estimate(
        "llama3-8b", topo, TRAIN.model_copy(update={"dtype": "fp8", "fp8_recipe": "current"}), tp=2, pp=1, dp=4
    )
    assert "--fp8-recipe tensorwise" in emit(current, topo, "megatron")
    # Megatron-LM keeps each step's FP8 weight casts: a plan made without them says so
    assert "--fp8-weight-cache" in emit(current, topo, "megatron")
    cached = TRAIN.model_copy(update={"dtype": "fp8", "fp8_weight_cache": True})
    assert "--fp8-weight-cache" not in emit(estimate("llama3-8b", topo, cached, tp=2, pp=1, dp=4), topo, "megatron")
    assert tomllib.loads(emit(current, topo, "torchtitan"))["float8"]["recipe_name"] == "tensorwise"
    bf16 = estimate("llama3-8b", topo, TRAIN, tp=2, pp=1, dp=4)
    assert "float8" not in emit(bf16, topo, "torchtitan") and "--fp8" not in emit(bf16, topo, "megatron")


def test_fp8_all_gather_reaches_torchtitans_float8_config_only_where_fsdp2_gathers() -> None:
    topo = load_topology("dgx-h100")
    fsdp2 = {"dtype": "fp8", "zero_stage": 3, "pipeline_runtime": "torch", "fp8_all_gather": True}
    plan = estimate("llama3-8b", topo, TRAIN.model_copy(update=fsdp2), tp=1, pp=1, dp=8)
    assert Plan.from_json(plan.to_json()).fp8_all_gather
    float8 = tomllib.loads(emit(plan, topo, "torchtitan"))["float8"]
    assert float8["enable_fsdp_float8_all_gather"] and float8["precompute_float8_dynamic_scale_for_fsdp"]
    for other in ({"zero_stage": 1}, {"pipeline_runtime": "megatron"}, {"fp8_recipe": "rowwise"}, {"dtype": "bf16"}):
        plan = estimate("llama3-8b", topo, TRAIN.model_copy(update=fsdp2 | other), tp=1, pp=1, dp=8)
        assert not plan.fp8_all_gather and "fsdp_float8" not in emit(plan, topo, "torchtitan"), other


def _torchrun(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "8", *args]  # a free port
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_torchrun_gloo_every_rank_builds_the_planned_mesh() -> None:
    run = _torchrun("tests/dist_check.py", str(CROSSED))
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    ok = [line for line in run.stdout.splitlines() if line.startswith("OK ")]
    assert ok == ["OK 2 1 4 [[[0, 2], [1, 3], [6, 4], [7, 5]]]"]  # TP pairs on the crossed NVLink bridges


def test_torchrun_ranks_that_disagree_all_get_the_same_error() -> None:
    run = _torchrun("tests/dist_check.py", str(CROSSED), "--disagree")
    # ranks print at once, so lines may run together: find each rank's message in the whole output
    errors = dict(re.findall(r"rank (\d) error: (ranks .*? than rank 0)", run.stdout))
    assert sorted(errors) == [str(r) for r in range(8)], run.stdout[-2000:]
    assert set(errors.values()) == {"ranks [3] were given a different model, training or topology than rank 0"}


def test_torchrun_example_trains_with_fsdp_and_tp() -> None:
    run = _torchrun("examples/train_auto_mesh.py", "--tp", "2", "--topology", str(CROSSED))
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "plan: tp=2 pp=1 dp=4" in run.stdout and "OK: loss" in run.stdout


def test_torchtitan_config_compiles_what_the_plan_compiled() -> None:
    """A plan made for compiled blocks turns torchtitan's compile on (its loss with them); async TP, torchtitan's TP
    overlap, takes effect only compiled, and an uncompiled plan that assumed it says so."""
    topo = load_topology("dgx-h100", nodes=2)
    configs = {}
    for compiled in (False, True):
        train = Training(global_batch=32, seq_len=4096, tp_comm_overlap=True, compiled=compiled, loss="fused")
        configs[compiled] = emit(estimate("llama3-70b", topo, train, tp=8, pp=1, dp=2), topo, "torchtitan")
    assert tomllib.loads(configs[True])["training"]["compile"] is True
    assert "compile" not in tomllib.loads(configs[False])["training"]
    assert all(tomllib.loads(c)["parallelism"]["enable_async_tensor_parallel"] for c in configs.values())
    assert "takes effect only compiled" in configs[False] and "takes effect only compiled" not in configs[True]
    # the eager plan assumed a fused loss, which torchtitan computes only compiled
    assert "the plan assumes the fused loss; torchtitan's is fp32 here" in configs[False]
    assert "loss" not in configs[True].split("[parallelism]")[0]


def test_each_framework_config_says_which_loss_the_plan_assumed() -> None:
    """Megatron's arguments turn Transformer Engine's cross-entropy on for a plan that assumed a fused loss, and say
    where a plan assumed torch's fp32 loss or compiled blocks, which Megatron-LM does not run; DeepSpeed's config
    carries the loss for the model code."""
    topo = load_topology("dgx-h100")
    plans = {
        (loss, compiled): estimate(
            "llama3-8b", topo, Training(global_batch=32, seq_len=4096, loss=loss, compiled=compiled), tp=2, pp=1, dp=4
        )
        for loss, compiled in (("megatron", False), ("fused", False), ("fp32", True))
    }
    args = {key: emit(plan, topo, "megatron") for key, plan in plans.items()}
    te_loss = "--cross-entropy-loss-fusion \\\n--cross-entropy-fusion-impl te"
    assert te_loss in args["fused", False] and "cross-entropy" not in args["megatron", False]
    assert "# the plan assumes torch's fp32 cross-entropy" in args["fp32", True] and te_loss not in args["fp32", True]
    assert "torch.compile" in args["fp32", True] and "torch.compile" not in args["fused", False]
    carried = {k: json.loads(emit(plan, topo, "deepspeed"))["shardplan"] for k, plan in plans.items()}
    assert [(c["loss"], c["compiled"]) for c in carried.values()] == list(carried)
