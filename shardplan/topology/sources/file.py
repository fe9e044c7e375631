"""Read a declared topology (YAML or JSON) into a `TopologySpec`, validated by pydantic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from shardplan.errors import TopologyError
from shardplan.topology.spec import TopologySpec


def validation_message(source: str, err: ValidationError) -> str:
    """One line: `file: field.path: message` for the first problem (and how many more)."""
    first = err.errors()[0]
    path = ".".join(str(p) for p in first["loc"]) or "(top level)"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{source}: {path}: {first['msg']}{more}"


def parse_declared(text: str, source: str) -> TopologySpec:
    """A `TopologySpec` from YAML or JSON text; errors name the file and the field."""
    try:
        data: Any = json.loads(text) if source.endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        if isinstance(exc, json.JSONDecodeError):
            line = f"line {exc.lineno}: "
        raise TopologyError(f"{source}: {line}not valid {'JSON' if source.endswith('.json') else 'YAML'}") from None
    if not isinstance(data, dict):
        raise TopologyError(f"{source}: expected a mapping with 'nodes', found {type(data).__name__}")
    try:
        return TopologySpec.model_validate(data)
    except ValidationError as err:
        raise TopologyError(validation_message(source, err)) from None


def read_declared(path: Path) -> TopologySpec:
    """Read a YAML/JSON topology file."""
    return parse_declared(path.read_text(), str(path))
