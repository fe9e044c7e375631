"""`auto_device_mesh`: the training-side entry, called on every rank under torchrun.

Each node's first local rank reads its own topology (NVML) when `topology="live"`; every rank
sends rank 0 what it was asked to plan (a fingerprint of model, training and options) with that
reading; rank 0 checks that ranks agree and that nodes match what was declared, plans, and
broadcasts either the plan or the error. Every rank then builds the same mesh, or raises the same
`ShardplanError`: a failure on rank 0 is broadcast, never left for the others to hang on.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shardplan.errors import PlanError, ShardplanError
from shardplan.model import ModelSpec, load_model
from shardplan.plan import Plan
from shardplan.topology import Topology, TopologySpec, load_topology, read_spec
from shardplan.topology.cluster import build
from shardplan.training import Training

if TYPE_CHECKING:
    from torch import nn
    from torch.distributed.device_mesh import DeviceMesh


def auto_device_mesh(
    model: ModelSpec | str | Path | nn.Module,
    training: Training,
    *,
    device_type: str = "cuda",
    topology: str | Path | Topology = "live",
    nic_gbit: float | None = None,
    **search: Any,
) -> tuple[DeviceMesh, Plan]:
    """Plan on rank 0 from every node's topology, and build the planned DeviceMesh on every rank.

    Call after `init_process_group` (with NCCL, after `torch.cuda.set_device(LOCAL_RANK)`). Rank g
    drives GPU g: torchrun's order, one process per GPU, `CUDA_VISIBLE_DEVICES` unset or the same
    on every node. `topology`: "live", or a source as for `load_topology` (a one-node source is
    repeated over the nodes torchrun runs). `nic_gbit`: the line rate in Gb/s of NICs whose speed the source does
    not state (a node whose RDMA ports and Ethernet drivers state none; a saved `nvidia-smi topo -m`). `search`:
    keyword options of `suggest` (e.g. `pp=(1,)`, `zero_stages=(3,)`, `cp=(1, 2, 4)`: a plan with cp > 1 gives the
    mesh a "cp" axis).
    `training` also says what runs the step on the mesh: torch's own parallelism (fully_shard, parallelize_module,
    torch.distributed.pipelining), torch's cross_entropy(logits.float()) and MoE experts by torch._grouped_mm is
    `Training(..., pipeline_runtime="torch", tp_impl="dtensor", loss="fp32", expert_gemms="grouped")`; its defaults
    are Megatron-LM's. Under TP the
    estimate takes that loss to run inside torch's `loss_parallel` over the head's vocabulary shards, as torchtitan
    runs it (`loss="fused"` for it compiled).
    """
    import torch.distributed as dist

    if not dist.is_initialized():
        raise PlanError("auto_device_mesh needs torch.distributed initialised (init_process_group under torchrun)")
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    node = int(os.environ.get("GROUP_RANK", rank // local_world))

    reading: str | None = None
    if local_rank == 0 and isinstance(topology, str) and topology == "live":
        try:
            reading = read_spec("live").model_dump_json()
        except ShardplanError as exc:
            reading = f"error: node {node}: {exc}"
    asked = _fingerprint(model, training, topology, {**search, "nic_gbit": nic_gbit})
    mine = {"node": node, "local_world": local_world, "fingerprint": asked}
    everyone: list[Any] = [None] * world
    dist.all_gather_object(everyone, {**mine, "reading": reading})

    result: list[Any] = [None]
    if rank == 0:
        try:
            plan = _plan(everyone, model, training, topology, nic_gbit, search)
            result = [("plan", plan.to_json())]
        except ShardplanError as exc:
            result = [("error", str(exc))]
        except Exception as exc:  # broadcast it: the other ranks must not wait for a plan forever
            result = [("error", f"planning failed on rank 0: {type(exc).__name__}: {exc}")]
    dist.broadcast_object_list(result, src=0)
    kind, payload = result[0]
    if kind == "error":
        raise ShardplanError(payload)
    plan = Plan.from_json(payload)
    return plan.device_mesh(device_type), plan


def nvlink_domain_nodes(specs: list[TopologySpec]) -> int:
    """How many consecutive nodes (live readings, node order) share one NVLink domain: those whose GPUs all report
    the same multi-node NVLink clique (`GpuInfo.fabric`, an NVL72 rack's trays), where every node's do and the
    cliques hold equal runs of nodes; else 1, each node its own domain."""
    cliques = [{info.fabric for node in spec.nodes for info in node.gpu_info} for spec in specs]
    if any(len(c) != 1 or None in c for c in cliques):
        return 1
    runs = [(clique, len(list(run))) for clique, run in itertools.groupby(c.pop() for c in cliques)]
    sizes = {size for _, size in runs}
    if len(sizes) != 1 or len({clique for clique, _ in runs}) != len(runs):
        return 1
    return sizes.pop()


def _fingerprint(model: Any, training: Training, topology: Any, search: dict[str, Any]) -> str:
    """What a rank was asked to plan, hashed: ranks given different inputs must not plan alike."""
    spec = _model_spec(model)
    where = topology.to_json() if isinstance(topology, Topology) else str(topology)
    text = "|".join([spec.model_dump_json(), training.model_dump_json(), where, repr(sorted(search.items()))])
    return hashlib.sha256(text.encode()).hexdigest()


def _model_spec(model: Any) -> ModelSpec:
    if isinstance(model, ModelSpec | str | Path):
        return load_model(model)
    from shardplan.model import model_from_module

    return model_from_module(model)


def _plan(
    everyone: list[dict[str, Any]], model: Any, training: Training, topology: Any, nic_gbit: float | None, search: dict
) -> Plan:
    """Rank 0: check agreement, assemble the cluster, search."""
    from shardplan.solve.search import suggest

    world = len(everyone)
    differ = [r for r, e in enumerate(everyone) if e["fingerprint"] != everyone[0]["fingerprint"]]
    if differ:
        raise PlanError(f"ranks {differ} were given a different model, training or topology than rank 0")
    per_node: dict[int, int] = {}
    for e in everyone:
        per_node[e["node"]] = e["local_world"]
    nodes = len(per_node)
    built = isinstance(topology, Topology)  # a source (preset, file) is copied once per node; a Topology is not
    if isinstance(topology, str) and topology == "live":
        readings = {e["node"]: e["reading"] for e in everyone if e["reading"] is not None}
        failed = [r for r in readings.values() if r.startswith("error: ")]
        if failed:
            raise PlanError(failed[0].removeprefix("error: "))
        specs = [TopologySpec.model_validate_json(readings[n]) for n in sorted(readings)]
        domain = {"nvlink_domain_nodes": nvlink_domain_nodes(specs)}
        if all(s == specs[0] for s in specs):
            topo = build(specs[0].model_copy(update=domain), nodes=nodes, nic_gbit=nic_gbit)
        else:
            topo = build(
                specs[0].model_copy(update={"nodes": [s.nodes[0] for s in specs], **domain}), nic_gbit=nic_gbit
            )
    else:
        topo = load_topology(topology, nic_gbit=nic_gbit)
        if topo.num_gpus != world and topo.num_nodes == 1 and world % topo.num_gpus == 0 and not built:
            topo = load_topology(topology, nodes=world // topo.num_gpus, nic_gbit=nic_gbit)
    if topo.num_gpus != world:
        hint = ": pass its source (a preset, a file), which each node's copy joins" if built else ""
        raise PlanError(f"the topology has {topo.num_gpus} GPUs but torchrun runs {world} processes{hint}")
    on_node = Counter(g.node for g in topo.gpus)  # once: thousands of nodes each scanning every GPU take minutes
    for n, procs in sorted(per_node.items()):
        gpus = on_node[n]
        if gpus != procs:
            raise PlanError(f"node {n}: the topology has {gpus} GPUs there but torchrun runs {procs} processes")
    return suggest(_model_spec(model), topo, training, top_k=1, **search)[0]
