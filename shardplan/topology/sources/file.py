"""Read a declared topology (YAML or JSON) into a `TopologySpec`, validated by pydantic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from shardplan.errors import TopologyError, describe_validation
from shardplan.topology.sources import yaml_data
from shardplan.topology.spec import TopologySpec


def parse_declared(text: str, source: str) -> TopologySpec:
    """A `TopologySpec` from YAML or JSON text; errors name the file and the field."""
    try:
        data: Any = json.loads(text) if source.endswith(".json") else yaml_data(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        if isinstance(exc, json.JSONDecodeError):
            line = f"line {exc.lineno}: "
        raise TopologyError(f"{source}: {line}not valid {'JSON' if source.endswith('.json') else 'YAML'}") from None
    if not isinstance(data, dict):
        raise TopologyError(f"{source}: expected a mapping with 'nodes', found {type(data).__name__}")
    try:  # unnamed, it goes by its file's name (as a saved `nvidia-smi topo -m` does), which errors then name
        return TopologySpec.model_validate({"name": Path(source).name, **data})
    except ValidationError as err:
        raise TopologyError(f"{source}: {describe_validation(err)}") from None
