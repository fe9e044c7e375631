"""Model presets: Hugging Face style configs shipped in model/presets/*.json, each naming where its
numbers come from in `_shardplan_source`."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from shardplan.errors import ModelSpecError


def model_preset_names() -> list[str]:
    """Names of the shipped model presets."""
    folder = resources.files("shardplan").joinpath("model/presets")
    return sorted(p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json"))


def read_model_preset(name: str) -> tuple[dict[str, Any], str]:
    """The config of preset `name` and its source citation."""
    if name not in model_preset_names():
        raise ModelSpecError(f"unknown model {name!r}; presets: {', '.join(model_preset_names())}")
    data = json.loads(resources.files("shardplan").joinpath(f"model/presets/{name}.json").read_text())
    return data, data.pop("_shardplan_source")
