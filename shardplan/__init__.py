"""shardplan: choose tensor-, pipeline- and data-parallel degrees and the placement of every rank
on a physical GPU, from the machine's real topology."""

from shardplan.cost.collectives import collective_time_s
from shardplan.errors import ShardplanError
from shardplan.hook import auto_device_mesh
from shardplan.model import ModelSpec, load_model, model_from_module
from shardplan.plan import Plan
from shardplan.solve.estimate import estimate
from shardplan.solve.search import suggest
from shardplan.solve.validate import validate_plan
from shardplan.topology import Topology, load_topology
from shardplan.training import Training

__all__ = [
    "ModelSpec",
    "Plan",
    "ShardplanError",
    "Topology",
    "Training",
    "auto_device_mesh",
    "collective_time_s",
    "estimate",
    "load_model",
    "load_topology",
    "model_from_module",
    "suggest",
    "validate_plan",
]
__version__ = "0.1.0"
