"""Run under torchrun (gloo, CPU) by tests/test_emit.py: every rank plans with auto_device_mesh on a
declared irregular topology and checks the mesh against the plan.

    torchrun --nproc-per-node 8 tests/dist_check.py TOPOLOGY [--disagree]
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from shardplan import ShardplanError, Training, auto_device_mesh
from shardplan.solve.validate import mesh_groups


def main() -> None:
    topology, disagree = sys.argv[1], "--disagree" in sys.argv
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    batch = 128 if disagree and rank == 3 else 64  # rank 3 asks for something else
    train = Training(global_batch=batch, seq_len=4096)
    try:
        mesh, plan = auto_device_mesh("llama3-8b", train, device_type="cpu", topology=topology, tp=(2,), pp=(1,))
    except ShardplanError as exc:
        print(f"rank {rank} error: {exc}", flush=True)
        dist.barrier()  # every rank has printed before any exits (torchrun stops the rest at the first exit)
        dist.destroy_process_group()
        raise SystemExit(3) from None
    plans: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(plans, plan.to_json())
    assert len(set(plans)) == 1, "ranks got different plans"
    position = next(
        (p, d, t)
        for p, stage in enumerate(plan.rank_layout)
        for d, cell in enumerate(stage)
        for t, g in enumerate(cell)
        if g == rank
    )
    assert tuple(mesh.get_coordinate()) == position, (mesh.get_coordinate(), position)
    for axis in plan.mesh_dim_names:
        mine = next(g for g in mesh_groups(plan, axis) if rank in g)  # rank g drives GPU g
        assert sorted(dist.get_process_group_ranks(mesh.get_group(axis))) == sorted(mine), (axis, mine)
        value = torch.tensor([float(rank)])
        dist.all_reduce(value, group=mesh.get_group(axis))
        assert value.item() == sum(mine), (axis, value.item(), mine)
    if rank == 0:
        print(f"OK {plan.tp} {plan.pp} {plan.dp} {plan.rank_layout}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
