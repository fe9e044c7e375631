"""shardplan: choose tensor-, pipeline- and data-parallel degrees and the placement of every rank
on a physical GPU, from the machine's real topology."""

from shardplan.errors import ShardplanError
from shardplan.topology import Topology, load_topology

__all__ = ["ShardplanError", "Topology", "load_topology"]
__version__ = "0.1.0"
