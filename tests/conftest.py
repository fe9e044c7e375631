"""Shared test helpers: fixture files copied from ../shared/fixtures into tests/data, and a plan's DeviceMesh
checked against its groups."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).parent / "data"
SEPARATOR = "# ===== verbatim output below (everything after this line is copied unchanged from the source) ====="


def fixture_body(path: Path) -> str:
    """The verbatim output of a fixture: everything after its '# =====' header line (fixtures/README)."""
    text = path.read_text()
    _head, sep, body = text.partition(SEPARATOR + "\n")
    return body if sep else text


def assert_meshes_match(plan: Any, ranks: Iterable[int] | None = None) -> None:
    """On each of `ranks` (default: every rank) of a fake process group, the plan's DeviceMesh has, along each
    axis, the GPUs `mesh_groups` gives, as a process group of those ranks."""
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore

    from shardplan.solve.validate import mesh_groups

    for rank in range(plan.num_gpus) if ranks is None else ranks:
        dist.init_process_group("fake", store=FakeStore(), rank=rank, world_size=plan.num_gpus)
        try:
            mesh = plan.device_mesh("cpu")
            assert mesh.mesh.tolist() == plan.rank_layout
            for axis in plan.mesh_dim_names:
                mine = next(g for g in mesh_groups(plan, axis) if rank in g)
                assert sorted(dist.get_process_group_ranks(mesh.get_group(axis))) == sorted(mine)
                assert mesh[axis].mesh.tolist() == mine
        finally:
            dist.destroy_process_group()


@pytest.fixture
def body_file(tmp_path: Path):
    """Write a fixture's verbatim body to a temporary file of the same name and return its path."""

    def write(path: Path) -> Path:
        out = tmp_path / path.name
        out.write_text(fixture_body(path))
        return out

    return write


def gpu_available() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        return True
    except Exception:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if gpu_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU and driver")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def layout_step_s(
    model: Any, topology: Any, training: Any, layout: Any, candidate: Any, split: Any, memo: dict | None = None
) -> float:
    """The cost model's step time of a search candidate's degrees and options on `layout`, layers split as given;
    `memo` shared over the calls of one topology, as the search shares it."""
    from shardplan.cost.step import step_cost

    return step_cost(
        model,
        topology,
        training,
        layout,
        micro_batch=candidate.micro_batch,
        virtual_stages=candidate.virtual_stages,
        layers_per_stage=split,
        ep=candidate.ep,
        memo=memo,
    ).step_time_s


def search_bound(
    model: Any, topology: Any, training: Any, candidate: Any, rates: Any, memo: dict | None = None
) -> tuple[float, Any]:
    """The search's lower bound of a candidate (its fastest split of layers at `rates`, TP rings and all-to-alls at
    their bounds), and that split; `memo` shared over the candidates of one model and topology, as the search
    shares it."""
    from shardplan.cost.bounds import all_to_all_gbps_bound, ring_gbps_bound
    from shardplan.cost.step_bound import time_lower_bound_s
    from shardplan.solve.stages import balance_stages

    c = candidate
    degrees = dict(tp=c.tp, pp=c.pp, dp=c.dp, micro_batch=c.micro_batch, virtual_stages=c.virtual_stages, ep=c.ep)
    fastest = balance_stages(model, training, rates, **degrees, memory_bytes=None, memo=memo)
    group = training.expert_group(c.ep, c.tp)
    bound = time_lower_bound_s(
        model,
        topology,
        training,
        **degrees,
        layers_per_stage=fastest,
        tp_ring_gbps=ring_gbps_bound(topology, c.tp),
        ep_gbps=all_to_all_gbps_bound(topology, group, groups=topology.num_gpus // (c.pp * group)),
        memo=memo,
    )
    return bound, fastest
