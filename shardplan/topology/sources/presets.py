"""Presets: declared topologies shipped with the package (topology/presets/*.yaml), each citing
the datasheet or real output it follows in its `source` field."""

from __future__ import annotations

from importlib import resources

from shardplan.errors import TopologyError
from shardplan.topology.sources.file import parse_declared
from shardplan.topology.spec import TopologySpec


def preset_names() -> list[str]:
    """Names of the shipped presets."""
    folder = resources.files("shardplan").joinpath("topology/presets")
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def read_preset(name: str) -> TopologySpec:
    """The preset called `name`."""
    if name not in preset_names():
        raise TopologyError(f"unknown topology preset {name!r}; presets: {', '.join(preset_names())}")
    text = resources.files("shardplan").joinpath(f"topology/presets/{name}.yaml").read_text()
    return parse_declared(text, f"preset {name}")
