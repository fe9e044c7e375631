"""From a `Plan` to what a training job runs: DeviceMeshes and framework launch configs."""

from __future__ import annotations

from shardplan.errors import ShardplanError
from shardplan.plan import Plan
from shardplan.topology.schema import Topology

FORMATS = ("torchtitan", "megatron", "deepspeed", "python")


def emit(plan: Plan, topology: Topology, fmt: str) -> str:
    """The plan as `fmt` (torchtitan TOML, Megatron-LM arguments, DeepSpeed JSON, Python)."""
    if fmt == "torchtitan":
        from shardplan.emit.torchtitan import torchtitan_toml as render
    elif fmt == "megatron":
        from shardplan.emit.megatron import megatron_args as render
    elif fmt == "deepspeed":
        from shardplan.emit.deepspeed import deepspeed_json as render
    elif fmt == "python":
        from shardplan.emit.python import python_snippet as render
    else:
        raise ShardplanError(f"unknown --emit format {fmt!r}; one of {', '.join(FORMATS)}")
    return render(plan, topology)
