"""Expert parallelism: a mixture-of-experts model's experts split over an `ep` mesh axis carved out of the
data-parallel GPUs, tokens swapped by all-to-all in every MoE block, expert weights sharded over the GPUs that
hold the same experts."""

from __future__ import annotations

import json
import random
import tomllib
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_meshes_match, layout_step_s, search_bound

from shardplan import Training, collective_time_s, estimate, load_model, load_topology, suggest
from shardplan.cost.bounds import all_to_all_gbps_bound, ring_gbps_bound
from shardplan.cost.calibration import rates_for, shipped_calibration
from shardplan.cost.compute import GROUPED_GEMM_S_PER_EXPERT, gemm_s, stage_times
from shardplan.cost.experts import overlapped_all_to_alls_s, unpaired_share
from shardplan.cost.overlap import Overlap
from shardplan.emit import emit
from shardplan.errors import PlanError
from shardplan.model import ModelSpec
from shardplan.solve import space
from shardplan.solve.validate import validate_plan

ROOT = Path(__file__).resolve().parents[1]
MODEL = "qwen3-30b-a3b"  # 128 experts, 8 per token, every block MoE (Qwen/Qwen3-30B-A3B config.json)
TRAIN = Training(global_batch=64, seq_len=4096, zero_stage=1, recompute="full")
# micro-batches of 4 sequences: the GPU, not the host's dispatch of the MoE blocks, sets the pace, so the
# all-to-alls show in the step (where the host sets it they run in its wait)
MB = 4


def test_the_qwen3_moe_preset_counts_its_experts() -> None:
    """Qwen's model card: 30.5 B parameters, 3.3 B active; the routed experts are 128 x 3 x 2048 x 768 per
    block, in each of the 48 blocks."""
    model = load_model(MODEL)
    assert model.num_params == pytest.approx(30.5e9, rel=0.01)
    assert model.num_active_params == pytest.approx(3.3e9, rel=0.02)
    assert model.num_expert_params == 48 * 128 * 3 * 2048 * 768
    assert model.num_moe_layers == 48


def test_experts_split_over_ep_and_dense_weights_shard_over_every_data_gpu() -> None:
    """dp 2 x ep 4 against dp 8 on one DGX H100: the same 8 shards of the dense layers' optimizer states,
    a quarter of the experts per GPU (sharded over 2), so far less memory; the batch splits over all 8."""
    topo = load_topology("dgx-h100")
    whole = estimate(MODEL, topo, TRAIN, tp=1, pp=1, dp=8, micro_batch=MB)
    split = estimate(MODEL, topo, TRAIN, tp=1, pp=1, dp=2, ep=4, micro_batch=MB)
    model = load_model(MODEL)
    dense = model.num_params - model.num_expert_params
    per_param = 4 + 8  # fp32 master and Adam's two moments (memory.py)
    assert split.memory_breakdown["master_and_optimizer"] == pytest.approx(
        per_param * (dense / 8 + model.num_expert_params / 4 / 2), rel=1e-6
    )
    assert split.memory_breakdown["weights"] == pytest.approx(2 * (dense + model.num_expert_params / 4), rel=1e-6)
    assert split.memory_per_gpu_bytes < whole.memory_per_gpu_bytes
    assert split.num_micro_batches == whole.num_micro_batches == 2
    assert split.mesh_dim_names == ("pp", "dp", "ep", "tp") and split.mesh_shape == (1, 2, 4, 1)
    assert split.breakdown["ep"] > 0 and whole.breakdown["ep"] == 0


def test_all_to_all_across_nodes_leaves_through_the_nics_from_every_gpu() -> None:
    """A ring leaves each node with its bus bytes once; an all-to-all sends (n - k)/n of every GPU's buffer
    to the other nodes, all k GPUs of a node at once. Inside a node both move (n - 1)/n over NVLink."""
    topo = load_topology("dgx-h100", nodes=2)
    size = 2**28
    assert collective_time_s(topo, "all_to_all", range(8), size) == pytest.approx(
        collective_time_s(topo, "all_gather", range(8), size)
    )
    across = collective_time_s(topo, "all_to_all", range(16), size)
    ring = collective_time_s(topo, "all_gather", range(16), size)
    assert across / ring == pytest.approx(8 * 8 / 15, rel=0.1)  # k (n - k) / (n - 1): 8 GPUs per node


def test_expert_groups_inside_a_node_beat_groups_across_nodes() -> None:
    """Two DGX H100s, ep 8: the all-to-alls of expert groups inside a node cross NVLink; spread over both
    nodes (the same degrees, GPUs interleaved) they cross the NICs and take longer."""
    topo = load_topology("dgx-h100", nodes=2)
    inside = [[[[g] for g in range(8)], [[g] for g in range(8, 16)]]]  # (pp, dp, ep, tp)
    across = [[[[g] for g in (0, 1, 2, 3, 8, 9, 10, 11)], [[g] for g in (4, 5, 6, 7, 12, 13, 14, 15)]]]

    def plan(layout: list) -> object:
        return estimate(MODEL, topo, TRAIN, tp=1, pp=1, dp=2, ep=8, rank_layout=layout, micro_batch=MB)

    near, far = plan(inside), plan(across)
    assert near.breakdown["ep"] < far.breakdown["ep"]
    assert near.comm_time_by_link["net"] < far.comm_time_by_link["net"]


@pytest.mark.parametrize(
    ("model", "kwargs", "message"),
    [
        ("llama3-8b", dict(tp=1, pp=1, dp=4, ep=2), "no experts to split"),
        (MODEL, dict(tp=1, pp=1, dp=1, ep=8, cp=1, micro_batch=3), "not a multiple of dp x ep x micro_batch"),
        ("mixtral-8x7b", dict(tp=1, pp=1, dp=1, ep=8), None),
        (MODEL, dict(tp=1, pp=1, dp=1, ep=3), "tp x pp x dp x ep"),
        (MODEL, dict(tp=1, pp=1, dp=2, cp=2, ep=2), "context and expert parallelism together"),
    ],
)
def test_impossible_expert_parallel_requests_say_what_to_change(model: str, kwargs: dict, message: str | None) -> None:
    train = TRAIN.model_copy(update={"seq_len": 8192}) if kwargs.get("cp", 1) > 1 else TRAIN
    if message is None:
        assert estimate(model, "dgx-h100", train, **kwargs).ep == 8
        return
    with pytest.raises(PlanError, match=message):
        estimate(model, "dgx-h100", train, **kwargs)


def test_the_search_places_expert_groups_and_frameworks_take_them() -> None:
    """On two DGX H100s the best plans for Qwen3 30B-A3B: each a valid layout whose DeviceMesh (fake process
    group) has the planned groups, and whose launch configs name the expert-parallel degree."""
    topo = load_topology("dgx-h100", nodes=2)
    model = load_model(MODEL)
    plans = suggest(model, topo, TRAIN, top_k=3, zero_stages=(1,), recompute=("full",), ep=(4, 8))
    for plan in plans:
        validate_plan(plan, model, topo)
        assert plan.ep in (4, 8) and "ep" in plan.mesh_dim_names
    best = plans[0]
    assert_meshes_match(best, ranks=(0, 3, 13))
    titan = tomllib.loads(emit(best, topo, "torchtitan"))
    assert titan["parallelism"]["expert_parallel_degree"] == best.ep
    assert titan["parallelism"]["data_parallel_shard_degree"] == best.dp * best.ep
    local = best.micro_batch if best.pp == 1 else best.global_batch // (best.dp * best.ep)  # without PP, a forward's
    assert titan["training"]["local_batch_size"] == local
    megatron = emit(best, topo, "megatron")
    assert f"--expert-model-parallel-size {best.ep} " in megatron
    with pytest.raises(PlanError, match="DeepSpeed sets expert parallelism in the model code"):
        emit(best, topo, "deepspeed")
    assert json.loads(best.to_json())["ep"] == best.ep


def test_experts_whole_on_a_gpu_swap_tokens_over_ep_x_tp() -> None:
    """Megatron's --expert-tensor-parallel-size 1 with TP 2 and ep 2 on 8 GPUs: each GPU holds 128 / 4 whole
    experts, as many parameters as a quarter of the experts split by TP; the all-to-all runs over 4 GPUs; the MoE
    blocks' MLP drops its TP collectives; the frameworks' expert-parallel degree is ep x tp = 4."""
    topo = load_topology("dgx-h100")
    train = TRAIN.model_copy(update={"recompute": "none"})
    whole = train.model_copy(update={"expert_tensor_parallel": False})
    # 64 (32) experts' slices on a GPU: the host's dispatch would set the pace, so take the GPU's alone here
    shipped = shipped_calibration("h100-sxm")
    host = {k: 0.0 if k.startswith("moe_") else v for k, v in shipped.host_dispatch.items()}
    gpu_paced = dict(micro_batch=MB, calibration=shipped.model_copy(update={"host_dispatch": host}))
    split = estimate(MODEL, topo, train, tp=2, pp=1, dp=2, ep=2, **gpu_paced)
    kept = estimate(MODEL, topo, whole, tp=2, pp=1, dp=2, ep=2, **gpu_paced)
    assert kept.memory_breakdown["weights"] == pytest.approx(split.memory_breakdown["weights"])
    assert kept.memory_breakdown["activations"] < split.memory_breakdown["activations"]  # own tokens, not gathered
    # every block is MoE: attention's TP collectives alone (less what fills the host's wait between kernels)
    assert kept.breakdown["tp"] == pytest.approx(split.breakdown["tp"] / 2, rel=0.01)
    assert kept.breakdown["ep"] > split.breakdown["ep"]  # 4 GPUs swap tokens, not 2
    assert kept.expert_tensor_parallel is False and kept.mesh_shape == (1, 2, 2, 2)
    assert "--expert-model-parallel-size 4 \\\n--expert-tensor-parallel-size 1 " in emit(kept, topo, "megatron")
    titan = tomllib.loads(emit(kept, topo, "torchtitan"))["parallelism"]
    assert (titan["expert_parallel_degree"], titan["expert_tensor_parallel_degree"]) == (4, 1)
    with pytest.raises(PlanError, match=r"ep x tp = 256 \(experts whole on a GPU\) does not divide the 128"):
        estimate(MODEL, load_topology("dgx-h100", nodes=64), whole, tp=8, pp=1, dp=2, ep=32)


def test_moe_blocks_host_time_grows_with_the_experts_a_gpu_holds() -> None:
    """What a MoE block adds to the host's time per block, fixed and per expert a GPU holds (one expert after the
    other, as Transformer Engine's GroupedLinear launches them), is the H100 measurement as recorded
    (benchmarks/moe_block.py, `shardplan calibrate` measures the same). At one 4,096-token micro-batch the host
    sets the pace of Qwen3 30B-A3B's blocks, where without that figure the GPU does; 128 experts on each GPU (no
    EP) take longer than 16 (EP 8)."""
    from shardplan.cost.calibration import rates_for
    from shardplan.cost.compute import stage_times

    model, shipped = load_model(MODEL), rates_for("h100-sxm")
    recorded = json.loads((ROOT / "benchmarks/results/h100-moe-block/moe-block.json").read_text())["host"]
    keys = [f"moe_{way}_s_per_{unit}" for way in ("forward", "backward") for unit in ("block", "expert")]
    assert [shipped.host_dispatch[k] for k in keys] == pytest.approx([max(recorded[k], 0.0) for k in keys])
    unmeasured = shipped.model_copy(update={"host_dispatch": shipped.host_dispatch | dict.fromkeys(keys, 0.0)})

    def times(rates: object, ep: int) -> object:
        return stage_times(model, TRAIN, layers=48, first=True, last=True, micro_batch=1, tp=1, rates=rates, ep=ep)

    assert times(shipped, 1).total_s > times(shipped, 8).total_s > times(unmeasured, 8).total_s
    assert times(shipped, 8).host_slack_s > 0 and times(unmeasured, 8).host_slack_s == 0


def test_grouped_experts_pay_one_gemm_fixed_time_a_projection_and_no_host_sync() -> None:
    """torchtitan's experts (`expert_gemms="grouped"`): each projection one torch._grouped_mm over the local experts.
    Qwen3 30B-A3B's 128 experts over EP 8 and EP 4 (16 and 32 on a GPU), the GPU's time alone: the loop's GEMM time
    grows by the fixed time of 2 x 16 more GEMMs a block forward and twice that backward, the grouped GEMMs' by the
    grouped kernel's 1.1 us per expert instead (the same FLOPs, each expert's rows halved). The grouped GEMMs as an
    H100 measured them, 1 to 64 experts: within 7%. The layer's host time is as recorded, no growth per expert; with
    it the grouped layer (no host sync, no work per expert) runs the step faster than the loop, and
    `suggest --emit torchtitan` plans with it."""
    from typer.testing import CliRunner

    from shardplan.cli import app

    model, rates = load_model(MODEL), rates_for("h100-sxm")
    gpu_alone = rates.model_copy(update={"host_dispatch": dict.fromkeys(rates.host_dispatch, 0.0)})
    loop = TRAIN.model_copy(update={"recompute": "none"})
    grouped = loop.model_copy(update={"expert_gemms": "grouped"})

    def times(train: Training, r: object, ep: int) -> object:
        return stage_times(model, train, layers=48, first=True, last=True, micro_batch=1, tp=1, rates=r, ep=ep)

    more = 48 * 3 * 2 * 16  # blocks x (forward + 2 backward) x GEMMs x more experts
    grown = times(loop, gpu_alone, 4).gemm_s - times(loop, gpu_alone, 8).gemm_s
    assert grown == pytest.approx(more * rates.gemm_overhead_s)
    extra = times(grouped, gpu_alone, 4).gemm_s - times(grouped, gpu_alone, 8).gemm_s
    assert extra == pytest.approx(more * GROUPED_GEMM_S_PER_EXPERT)
    recorded = json.loads((ROOT / "benchmarks/results/h100-moe-block-54/moe-block.json").read_text())
    for run in recorded["runs"]:  # forward + backward (twice forward) of the two grouped GEMMs
        h, f, local = run["h"], run["f"], run["local"]
        shares = sum(gemm_s(run["rows"] / local, n, k, rates) - rates.gemm_overhead_s for n, k in ((2 * f, h), (h, f)))
        modelled = 3 * local * (shares + 2 * GROUPED_GEMM_S_PER_EXPERT)
        assert modelled == pytest.approx(run["grouped_gemm_s"], rel=0.07), run["shape"]
    keys = [f"moe_{way}_s_per_{unit}" for way in ("forward", "backward") for unit in ("block", "expert")]
    shipped = [rates.host_dispatch[f"grouped_{key}"] for key in keys]
    assert shipped == pytest.approx([max(recorded["torch_host"][key], 0.0) for key in keys])
    assert times(grouped, rates, 8).total_s < times(loop, rates, 8).total_s
    args = ["suggest", "--model", MODEL, "--topology", "dgx-h100", "--global-batch", "64", "--seq-len", "4096"]
    out = CliRunner().invoke(app, [*args, "--emit", "torchtitan", "--ep", "8", "--pp", "1"])
    assert out.exit_code == 0, out.output
    torch_run = dict(pipeline_runtime="torch", tp_impl="dtensor", cp_comm="all_gather", loss="fp32")
    train = Training(global_batch=64, seq_len=4096, expert_gemms="grouped", **torch_run)
    best = suggest(MODEL, load_topology("dgx-h100"), train, top_k=1, zero_stages=(0, 2, 3), ep=(8,), pp=(1,))[0]
    assert best.expert_gemms == "grouped"
    assert float(out.output.split("estimated ")[1].split()[0]) == pytest.approx(best.step_time_s, abs=5e-4)


def test_overlapped_all_to_alls_cost_only_what_the_compute_beside_them_cannot_hide() -> None:
    """Megatron's --overlap-moe-expert-parallel-comm: on two DGX H100s with expert groups across both nodes, the
    all-to-alls run beside another micro-batch's compute; the bytes moved stay the same. A step of one micro-batch
    has no other to pair it with: nothing hides."""
    topo = load_topology("dgx-h100", nodes=2)
    train = TRAIN.model_copy(update={"recompute": "none", "global_batch": 8 * TRAIN.global_batch})
    across = [[[[g] for g in (0, 1, 2, 3, 8, 9, 10, 11)], [[g] for g in (4, 5, 6, 7, 12, 13, 14, 15)]]]
    shape = dict(tp=1, pp=1, dp=2, ep=8, rank_layout=across, micro_batch=MB)
    waited = estimate(MODEL, topo, train, **shape)
    hidden = estimate(MODEL, topo, train.model_copy(update={"ep_comm_overlap": True}), **shape)
    assert waited.num_micro_batches == 8
    assert 0 < hidden.breakdown["ep"] < waited.breakdown["ep"]
    assert hidden.comm_time_by_link == pytest.approx(waited.comm_time_by_link)
    one = train.model_copy(update={"global_batch": TRAIN.global_batch})
    alone = [estimate(MODEL, topo, t, **shape) for t in (one, one.model_copy(update={"ep_comm_overlap": True}))]
    assert alone[0].num_micro_batches == 1 and alone[1].breakdown["ep"] == pytest.approx(alone[0].breakdown["ep"])
    assert "--overlap-moe-expert-parallel-comm" in emit(hidden, topo, "megatron")
    assert "--overlap-moe-expert-parallel-comm" not in emit(waited, topo, "megatron")


def test_each_overlapped_all_to_all_hides_only_under_the_piece_of_compute_it_runs_beside() -> None:
    """Megatron's EP overlap (TransformerLayerSchedulePlan.run) pairs one micro-batch's forward of a layer with
    another's backward: the backward's combine beside the forward's attention, the forward's dispatch and then the
    backward's beside the MLP's data gradient, weight gradient and forward (the forward MLP waits for its dispatch),
    the forward's combine beside the backward's attention. An all-to-all longer than the piece beside it shows,
    however much compute the rest of the block has; none of it shows while each fits."""
    parts = (1.0, 2.0, 2.0)  # attention forward, MLP GEMMs forward, attention backward: 9 s of compute in all
    assert overlapped_all_to_alls_s(0.0, parts, Overlap()) == 0.0
    assert overlapped_all_to_alls_s(1.0, parts, Overlap()) == 0.0  # each fits beside its piece
    # the compute beside them slows
    assert overlapped_all_to_alls_s(1.0, parts, Overlap(0.25)) == pytest.approx(0.25 * 4)
    # a collective at half its speed beside compute: the combine beside the 1 s attention takes 1.5 s, the rest fit
    assert overlapped_all_to_alls_s(1.0, parts, Overlap(0.0, 0.5)) == pytest.approx(0.5)
    # 1.5 s each (6 s, under the block's 9 s of compute): the combine beside the 1 s attention shows 0.5 s
    assert overlapped_all_to_alls_s(1.5, parts, Overlap()) == pytest.approx(0.5)
    # 3 s each: the combines show 2 s and 1 s; both dispatches fit beside the MLP's 6 s
    assert overlapped_all_to_alls_s(3.0, parts, Overlap()) == pytest.approx(2 + 1)
    # 5 s each: the dispatches take 10 s, one after the other on their stream, beside the MLP's 6 s
    assert overlapped_all_to_alls_s(5.0, parts, Overlap()) == pytest.approx(4 + 4 + 3)
    # far longer than the compute: all of it hides, and no more
    assert overlapped_all_to_alls_s(100.0, parts, Overlap()) == pytest.approx(400 - 9)
    times = [overlapped_all_to_alls_s(t / 4, parts, Overlap(0.1, 0.7)) for t in range(40)]
    assert times == sorted(times)


def test_the_pipeline_warm_up_and_cool_down_run_their_all_to_alls_alone() -> None:
    """Under the EP overlap a stage's warm-up forwards and as many cool-down backwards have no other micro-batch's
    pass beside them: Megatron-Core's count with interleaving, (pp - stage - 1) x 2 + (vp - 1) x pp, one more for
    the overlap, of its micro-batches x vp chunk passes (MB-276's PP 8 x VP 4 over 128 micro-batches: 39 of 512 on
    the first stage, 25 on the last); without interleaving pp - stage - 1, and one more."""
    assert unpaired_share(8, 0, 4, 128) == 39 / 512 and unpaired_share(8, 7, 4, 128) == 25 / 512
    assert unpaired_share(4, 0, 1, 32) == 4 / 32 and unpaired_share(1, 0, 1, 16) == 1 / 16
    assert unpaired_share(8, 0, 4, 2) == 1.0  # fewer micro-batches than the warm-up: none paired


def test_a_deduplicating_dispatcher_sends_a_token_once_per_other_node() -> None:
    """DeepEP / Megatron's flex dispatcher: over two nodes holding 64 of the 128 experts each, a token with 8
    experts sends 4 copies to the other node by all-to-all, but one (unless all 8 sit on its own node, a chance
    of C(64, 8) / C(128, 8)), so the cross-node all-to-all of EP 16 shrinks about fourfold; inside one node
    nothing changes."""
    from math import comb

    topo = load_topology("dgx-h100", nodes=2)
    train = TRAIN.model_copy(update={"recompute": "none"})
    dedup = train.model_copy(update={"ep_dispatcher": "deduplicated"})
    plain, once = (estimate(MODEL, topo, t, tp=1, pp=1, dp=1, ep=16, micro_batch=MB) for t in (train, dedup))
    share = (1 - comb(64, 8) / comb(128, 8)) / 4
    assert share <= once.breakdown["ep"] / plain.breakdown["ep"] < 1.2 * share  # bytes; latency stays
    inside = [
        estimate(MODEL, "dgx-h100", t, tp=1, pp=1, dp=1, ep=8, micro_batch=MB).breakdown["ep"] for t in (train, dedup)
    ]
    assert inside[0] == inside[1]
    assert "--moe-token-dispatcher-type flex" in emit(once, topo, "megatron")


def test_a_deduplicating_dispatcher_takes_an_nvl72_rack_as_one_domain() -> None:
    """On a GB200 NVL72 rack an EP group of 8 spans two trays (nodes of 4) but one NVLink domain, which HybridEP
    takes as one node (up to 72 ranks: deepseek-ai/DeepEP csrc/hybrid_ep/config.cuh): every copy stays on NVLink,
    none is saved, as inside one DGX node. The Megatron arguments name HybridEP there and DeepEP on DGX nodes."""
    rack = load_topology("gb200-nvl72")
    train = TRAIN.model_copy(update={"recompute": "none", "global_batch": 72 * MB})
    dedup = train.model_copy(update={"ep_dispatcher": "deduplicated"})
    plain, once = (estimate(MODEL, rack, t, tp=1, pp=1, dp=9, ep=8, micro_batch=MB) for t in (train, dedup))
    assert plain.breakdown["ep"] > 0 and once.breakdown["ep"] == plain.breakdown["ep"]
    assert "--moe-flex-dispatcher-backend hybridep" in emit(once, rack, "megatron")
    nodes = load_topology("dgx-h100", nodes=2)
    across = estimate(MODEL, nodes, TRAIN.model_copy(update={"ep_dispatcher": "deduplicated"}), tp=1, pp=1, dp=1, ep=16)
    assert "--moe-flex-dispatcher-backend deepep" in emit(across, nodes, "megatron")


@pytest.mark.parametrize("nodes", [2, 4, 8])
def test_group_limited_routing_sends_a_token_to_the_nodes_of_its_groups_alone(nodes: int) -> None:
    """DeepSeek's node-limited routing: 16 experts in 4 groups of 4, each token drawing 2 groups, then 3 experts of
    theirs, uniformly (force-balanced): the other nodes a deduplicating dispatcher sends it to, counted over every
    draw, are what `remote_copies_share` gives, fewer than with the experts drawn from all 16."""
    from itertools import combinations

    from shardplan.cost.experts import remote_copies_share
    from shardplan.model.schema import MoeSpec

    moe = MoeSpec(num_experts=16, top_k=3, expert_ffn_hidden_size=8, groups=4, top_groups=2)
    model = load_model(MODEL).model_copy(update={"moe": moe})
    node_of = [e * nodes // 16 for e in range(16)]
    draws = [
        {node_of[e] for e in chosen}
        for picked in combinations(range(4), 2)
        for chosen in combinations([e for e in range(16) if e // 4 in picked], 3)
    ]
    touched = sum(len(d) for d in draws) / len(draws)  # nodes holding any of a token's experts, on average
    others = touched * (nodes - 1) / nodes  # by symmetry, of the other nodes
    assert remote_copies_share(model, nodes) * 3 * (nodes - 1) / nodes == pytest.approx(others)
    flat = model.model_copy(update={"moe": moe.model_copy(update={"groups": 1, "top_groups": 1})})
    assert remote_copies_share(model, nodes) < remote_copies_share(flat, nodes)
    deepseek = load_model("deepseek-v3").moe
    assert (deepseek.groups, deepseek.top_groups) == (8, 4)


@pytest.mark.parametrize(("expert_tp", "overlap"), [(True, False), (False, False), (False, True)])
def test_the_search_bound_never_exceeds_a_step_time_with_experts(expert_tp: bool, overlap: bool) -> None:
    """On 4 DGX H100s, every expert-parallel candidate's lower bound, all-to-alls through NICs where its EP group
    cannot fit one node, stays at or below the step time of random layouts and of the row-major one; also where
    Megatron's EP overlap may hide a block's four all-to-alls beside another micro-batch's compute."""
    topo, model = load_topology("dgx-h100", nodes=4), load_model(MODEL)
    rng, rates = random.Random(5), rates_for(topo.gpu_spec(0).key)
    train = TRAIN.model_copy(update={"expert_tensor_parallel": expert_tp, "ep_comm_overlap": overlap})
    checked, cache, memo = 0, {}, {}
    for c in space.candidates(model, topo.num_gpus, 64, zero_stages=(1,), recompute=("full",), micro_batch=(1, MB)):
        if c.ep == 1:
            continue
        group = train.expert_group(c.ep, c.tp)
        bound, fastest = search_bound(model, topo, train, c, rates, cache)
        for order in (list(range(topo.num_gpus)), rng.sample(range(topo.num_gpus), topo.num_gpus)):
            layout = np.reshape(order, (c.pp, c.dp, c.ep, c.tp)).tolist()
            assert bound <= layout_step_s(model, topo, train, layout, c, fastest, memo), c
        checked += group > 8  # groups that must cross nodes, where the NICs bound the all-to-all
    assert checked > 0


def test_an_all_to_all_across_nodes_is_bound_by_each_gpus_nics() -> None:
    """32 GPUs over 4 DGX H100s: at most 8 share a node, so each sends at least 24/32 of its buffer through its
    own 400 Gb/s NIC; a ring of 32 could run at the node's 8 NICs together."""
    topo = load_topology("dgx-h100", nodes=4)
    nic = sum(gbps for _, gbps in topo.nic_links(0))
    assert all_to_all_gbps_bound(topo, 32) == pytest.approx(nic * 32 / 24)
    assert all_to_all_gbps_bound(topo, 32) < ring_gbps_bound(topo, 32) / 4
    assert all_to_all_gbps_bound(topo, 8) == pytest.approx(ring_gbps_bound(topo, 8) * 8 / 7)
    size = 64 * 2**20
    assert size / (all_to_all_gbps_bound(topo, 32) * 1e9) <= collective_time_s(topo, "all_to_all", range(32), size)


def test_megatron_recompute_modules_drop_the_experts_activation_and_the_norm_outputs() -> None:
    """Megatron's --recompute-modules moe_act layernorm: a block keeps of its routed experts' SwiGLU the input alone
    (gate and up, 4 B per element where eager SwiGLU keeps 8) and neither norm's output (2 B x h each), and its
    backward runs those ops once more; Megatron takes the flags, torchtitan and DeepSpeed have no such recompute."""
    topo, model = load_topology("dgx-h100"), load_model(MODEL)
    base = TRAIN.model_copy(update={"recompute": "none"})
    modules = base.model_copy(update={"recompute_modules": ("moe_act", "layernorm")})
    routed, h = 8 * 768, 2048
    saved = model.activation_bytes_per_token(recompute="none") - model.activation_bytes_per_token(
        recompute="none", recompute_modules=("moe_act", "layernorm")
    )
    assert saved == 4 * routed + 2 * 2 * h
    plain, lean = (estimate(model, topo, t, tp=1, pp=1, dp=1, ep=8, micro_batch=1) for t in (base, modules))
    kept = (plan.memory_breakdown["activations"] for plan in (plain, lean))
    assert next(kept) - next(kept) == 4096 * 48 * saved  # a micro-batch of 4,096 tokens through 48 blocks
    assert lean.memory_per_gpu_bytes < plain.memory_per_gpu_bytes - 4096 * 48 * saved
    assert plain.step_time_s < lean.step_time_s < 1.02 * plain.step_time_s
    args = emit(lean, topo, "megatron").split(" \\\n")
    assert "--recompute-granularity selective" in args and "--recompute-modules moe_act layernorm" in args
    for framework in ("torchtitan", "deepspeed"):
        with pytest.raises(PlanError, match="no per-module recompute"):
            emit(lean, topo, framework)
    with pytest.raises(ValueError, match="go with recompute none or selective"):
        Training(global_batch=64, seq_len=4096, recompute="full", recompute_modules=("moe_act",))


def test_mla_up_proj_recompute_drops_queries_keys_and_values_and_runs_the_up_projections_again() -> None:
    """Megatron's --recompute-modules mla_up_proj (DeepSeek-V3, TP 2): a block keeps its latents but not the
    queries and keys (192 per head) or values (128 per head), 2 B each on its half of the 128 heads; backward runs
    the query and key-value up-projections once more, with the RoPE of their outputs. A model without MLA has no
    such module."""
    topo, model = load_topology("dgx-h100"), load_model("deepseek-v3")
    base = Training(global_batch=64, seq_len=4096)
    lean = base.model_copy(update={"recompute_modules": ("mla_up_proj",)})
    saved = model.activation_bytes_per_token(tp=2) - model.activation_bytes_per_token(
        tp=2, recompute_modules=("mla_up_proj",)
    )
    assert saved == 2 * 128 * (192 + 192 + 128) / 2
    rates = rates_for("h100-sxm")
    stage = {"layers": 4, "first": False, "last": False, "micro_batch": 1, "tp": 2, "rates": rates}
    plain, again = (stage_times(model, t, **stage) for t in (base, lean))
    ups = gemm_s(4096, 128 * 192 / 2, 1536, rates) + gemm_s(4096, 128 * 256 / 2, 512, rates)
    rope = 4096 / 2 * 2 * 2 * (128 * 64 + 64) / rates.elementwise_bytes_per_s["rope"]
    assert again.recompute_s - plain.recompute_s == pytest.approx(4 * (ups + rope))
    plan = estimate(model, topo, lean, tp=2, pp=1, dp=1, ep=4)
    assert "--recompute-modules mla_up_proj" in emit(plan, topo, "megatron").splitlines()
    with pytest.raises(PlanError, match="mla_up_proj needs multi-head latent attention"):
        estimate(load_model("llama3-8b"), topo, lean, tp=1, pp=1, dp=8)


def test_the_search_tries_megatrons_moe_recompute_modules_where_megatron_runs_a_moe_model() -> None:
    """A MoE model under Megatron's runtime: each candidate with recompute none or selective is tried with and without
    --recompute-modules moe_act layernorm (with MLA, mla_up_proj too; the modules a user names, alone, where given);
    a dense model, another runtime and the other recompute modes take none. GPT-OSS 120B on 8 DGX H100s picks
    them: its best plan keeps the experts' activations only as their inputs."""
    from shardplan.solve.search import MOE_RECOMPUTE_MODULES, _candidates

    moe, dense = load_model("gpt-oss-120b"), load_model("llama3-8b")
    train = Training(global_batch=64, seq_len=4096)

    def modules(model: ModelSpec, training: Training) -> set[tuple[str, tuple[str, ...]]]:
        return {(c.recompute, c.recompute_modules) for c in _candidates(model, 64, training, {"tp": (1,), "pp": (1,)})}

    both = {(r, m) for r in ("none", "selective") for m in ((), MOE_RECOMPUTE_MODULES)}
    assert modules(moe, train) == both | {("full", ())}
    assert modules(dense, train) == {("none", ()), ("selective", ()), ("full", ())}
    mla = (*MOE_RECOMPUTE_MODULES, "mla_up_proj")
    assert modules(load_model("deepseek-v3"), train) == {(r, m) for r in ("none", "selective") for m in ((), mla)} | {
        ("full", ())
    }
    assert modules(moe, train.model_copy(update={"pipeline_runtime": "torch"})) == modules(dense, train)
    named = train.model_copy(update={"recompute_modules": ("layernorm",)})
    assert modules(moe, named) == {("none", ("layernorm",)), ("selective", ("layernorm",)), ("full", ())}
    best = suggest(moe, load_topology("dgx-h100", nodes=8), Training(global_batch=1280, seq_len=4096), top_k=1)[0]
    assert best.recompute_modules == MOE_RECOMPUTE_MODULES and best.fits
