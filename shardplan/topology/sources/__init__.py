"""Readers: each turns one kind of source into a plain `TopologySpec`."""

from typing import Any

import yaml


def yaml_data(text: str) -> Any:
    """YAML text as plain data, through libyaml where PyYAML has it (ten times faster: start-up reads the GPU
    catalogue and a preset); raises `yaml.YAMLError` on bad input either way."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def decimal(text: str) -> int | None:
    """A non-negative decimal field of a reader's input, or None (empty, -1, N/A or garbled)."""
    return int(text) if text.isascii() and text.isdigit() else None


def cpu_maker(vendor_id: str) -> str:
    """A CPUID vendor string (/proc/cpuinfo's vendor_id, NCCL's `<cpu vendor>`) as `NodeSpec.cpu`, the makers NCCL
    tells apart (src/graph/topo.cc, ncclTopoCpuType)."""
    return {"GenuineIntel": "intel", "AuthenticAMD": "amd"}.get(vendor_id, "other")
