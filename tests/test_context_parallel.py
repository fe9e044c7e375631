"""Context parallelism: each GPU of a CP group holds 1/cp of every sequence. The layout gains a cp
axis between dp and tp; weights are sharded and gradients reduced over dp x cp; keys and values move
over the CP groups."""

from __future__ import annotations

import json
import tomllib

import pytest
from conftest import assert_meshes_match

from shardplan import Training, estimate, load_model, load_topology
from shardplan.cost.memory import stage_memories
from shardplan.emit import emit
from shardplan.errors import PlanError
from shardplan.solve.validate import mesh_groups, validate_plan

TRAIN = Training(global_batch=8, seq_len=32768, recompute="full", zero_stage=1)
# tp pairs (0, 2), (1, 3), ...; cp pairs across them; two replicas: not the row-major order
LAYOUT = [[[[0, 2], [1, 3]], [[4, 6], [5, 7]]]]


def _plan(**update):
    train = TRAIN.model_copy(update=update)
    return estimate("llama3-8b", "dgx-h100", train, tp=2, pp=1, dp=2, cp=2, rank_layout=LAYOUT)


def test_the_plan_carries_a_cp_axis_that_meshes_and_launchers_take() -> None:
    plan, topo = _plan(), load_topology("dgx-h100")
    assert plan.cp == 2 and plan.mesh_dim_names == ("pp", "dp", "cp", "tp") and plan.mesh_shape == (1, 2, 2, 2)
    assert plan.rank_layout == LAYOUT and plan.gpu_of_rank() == [0, 2, 1, 3, 4, 6, 5, 7]
    validate_plan(plan, load_model("llama3-8b"), topo)
    assert mesh_groups(plan, "cp") == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert mesh_groups(plan, "dp") == [[0, 4], [2, 6], [1, 5], [3, 7]]
    assert_meshes_match(plan)
    titan = tomllib.loads(emit(plan, topo, "torchtitan"))["parallelism"]
    assert titan["context_parallel_degree"] == 2
    assert titan["data_parallel_shard_degree"] * titan["context_parallel_degree"] * titan["tensor_parallel_degree"] == 8
    assert "--context-parallel-size 2 " in emit(plan, topo, "megatron")
    assert "--cp-comm-type" not in emit(plan, topo, "megatron")  # p2p: Megatron's default
    assert titan["context_parallel_rotate_method"] == "alltoall"
    gathered = _plan(cp_comm="all_gather")  # estimated for K/V gathered whole: both frameworks told so
    assert json.loads(gathered.to_json())["cp_comm"] == "all_gather"
    assert "--cp-comm-type all_gather " in emit(gathered, topo, "megatron")
    assert tomllib.loads(emit(gathered, topo, "torchtitan"))["parallelism"]["context_parallel_rotate_method"] == (
        "allgather"
    )
    with pytest.raises(PlanError, match="DeepSpeed has no ring-attention context parallelism"):
        emit(plan, topo, "deepspeed")
    compile(emit(plan, topo, "python"), "<emitted>", "exec")
    assert json.loads(plan.to_json())["rank_layout"] == LAYOUT


def test_each_gpu_holds_its_share_of_the_sequence_and_of_the_states() -> None:
    """dp 2 x cp 2 against dp 4: the same 4 shards of the optimizer states, half the tokens per GPU and
    so half the activations kept; the CP pairs' keys and values cross NVLink inside the node."""
    with_cp = _plan().memory_breakdown
    topo = load_topology("dgx-h100")
    without = estimate("llama3-8b", topo, TRAIN, tp=2, pp=1, dp=4).memory_breakdown
    assert with_cp["master_and_optimizer"] == pytest.approx(without["master_and_optimizer"])
    assert with_cp["activations"] == pytest.approx(without["activations"] / 2)
    assert "cp_buffers" not in with_cp and with_cp["logits"] > 0  # the loss's peak, before any attention's backward
    plan = _plan()
    assert plan.breakdown["cp"] > 0 and plan.comm_time_by_link["net"] == 0


@pytest.mark.parametrize("cp_comm", ["p2p", "all_gather"])
def test_gathered_keys_and_values_sit_beside_the_rebuilt_block_never_beside_the_loss(cp_comm: str) -> None:
    """Two stages of Llama 3 8B under full recompute: the first stage's peak is a block rebuilt for its backward
    with the keys and values its attention holds of other CP ranks (torch's context_parallel: the whole
    sequence's, each key/value head repeated for its 4 query heads as torchtitan's attention does before SDPA;
    Transformer Engine's ring: one chunk in flight, at the key/value heads); the last stage's is the loss, which
    runs before any block's backward."""
    model, tp, cp = load_model("llama3-8b"), 2, 4
    train = TRAIN.model_copy(update={"cp_comm": cp_comm})
    first, last = stage_memories(
        model, train, layers=(16, 16), tp=tp, dp=1, cp=cp, micro_batch=1, virtual_stages=1, context_bytes=0.0
    )
    tokens = TRAIN.seq_len // cp
    heads, others = (model.num_heads, cp - 1) if cp_comm == "all_gather" else (model.num_kv_heads, 1)
    assert first["cp_buffers"] == 2 * others * tokens * heads // tp * 2 * model.head_dim * 2  # K, V and gradients
    assert first["recomputed_block"] > 0 and "logits" not in first
    assert last["logits"] > last.get("recomputed_block", 0.0) + last.get("cp_buffers", 0.0)
    assert "cp_buffers" not in last and "recomputed_block" not in last


def test_cp_traffic_hides_under_the_ring_and_slows_across_nodes() -> None:
    """Two DGX H100s, CP groups of 4: inside a node the keys and values cross NVLink; split over the two
    nodes they cross the NICs, slower. The p2p ring hides its transfers under all but the local chunk's
    attention, torch's all-gather under the local chunk's only."""
    topo = load_topology("dgx-h100", nodes=2)
    inside = [[[[0, 1], [2, 3], [4, 5], [6, 7]], [[8, 9], [10, 11], [12, 13], [14, 15]]]]
    across = [[[[0, 1], [2, 3], [8, 9], [10, 11]], [[4, 5], [6, 7], [12, 13], [14, 15]]]]

    def cp_s(layout: list, comm: str) -> tuple[float, float]:
        train = TRAIN.model_copy(update={"seq_len": 8192, "cp_comm": comm})
        plan = estimate("llama3-8b", topo, train, tp=2, pp=1, dp=2, cp=4, rank_layout=layout)
        return plan.breakdown["cp"], plan.comm_time_by_link["net"]

    (near, near_net), (far, far_net) = cp_s(inside, "all_gather"), cp_s(across, "all_gather")
    assert far > 2 * near and far_net > near_net  # (both reduce gradients over the nodes)
    assert cp_s(across, "p2p")[0] < far


@pytest.mark.parametrize(
    ("update", "kwargs", "message"),
    [
        ({"seq_len": 4098}, {}, "seq_len 4098 does not split into 2 x cp = 4 load-balanced chunks"),
        ({"attention": "unfused"}, {}, "context parallelism runs the attention in chunks"),
        ({}, {"rank_layout": [[[0, 1], [2, 3], [4, 5], [6, 7]]]}, "rank_layout must have shape (pp, dp, cp, tp)"),
        ({}, {"dp": 4}, "tp x pp x dp x cp = 2 x 1 x 4 x 2 = 16, but the topology has 8 GPUs"),
    ],
)
def test_requests_that_cannot_run_say_what_to_change(update: dict, kwargs: dict, message: str) -> None:
    train = TRAIN.model_copy(update=update)
    shape = {"tp": 2, "pp": 1, "dp": 2, "cp": 2, **kwargs}
    with pytest.raises(PlanError, match=message.replace("(", r"\(").replace(")", r"\)")):
        estimate("llama3-8b", "dgx-h100", train, **shape)
