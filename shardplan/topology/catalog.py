"""The GPU models shardplan knows (memory, peak compute, NVLink and PCIe), read from data/gpus.yaml."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shardplan.errors import TopologyError, names_hint
from shardplan.topology.sources import yaml_data


class GpuModel(BaseModel):
    """Datasheet facts of one GPU model; each value's source is on its line in data/gpus.yaml."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str = Field(description="Lower-case hyphenated name, e.g. 'h100-sxm'.")
    memory_bytes: int = Field(gt=0, description="Device memory, bytes.")
    bf16_dense_tflops: float = Field(gt=0, description="Dense BF16 tensor peak, TFLOP/s.")
    fp8_dense_tflops: float = Field(0.0, ge=0, description="Dense FP8 tensor peak, TFLOP/s (0: no FP8 tensor cores).")
    hbm_gbps: float = Field(gt=0, description="Memory bandwidth, GB/s.")
    nvlink_links: int = Field(ge=0, description="NVLink links per GPU.")
    nvlink_gbps_per_link: float = Field(ge=0, description="GB/s per link per direction.")
    pcie_gen: int = Field(ge=1, description="PCIe generation of the GPU's host link.")
    pcie_p2p: bool = Field(
        True, description="Peer-to-peer over PCIe under NVIDIA's stock driver (no: NCCL copies through host memory)."
    )
    architecture: Literal["volta", "ampere", "ada", "hopper", "blackwell", "rtx-blackwell"] = Field(
        description="GPU architecture: which tensor-core instructions its kernels can use (rtx-blackwell: the "
        "GeForce RTX 50 and RTX PRO Blackwell cards, sm_120, without the data-centre parts' tcgen05)."
    )
    nvml_names: tuple[str, ...] = Field(description="Regexes matched against the product name.")
    pci_device_ids: tuple[str, ...] = Field(
        (), description="PCI device ids (`0x2330`), as NCCL's topology XML gives them."
    )


@cache
def gpu_models() -> dict[str, GpuModel]:
    """All catalogue entries by key."""
    text = resources.files("shardplan").joinpath("data/gpus.yaml").read_text()
    return {key: GpuModel(key=key, **fields) for key, fields in yaml_data(text).items()}


def gpu_model(key: str) -> GpuModel:
    """The catalogue entry for `key`, or a `TopologyError` listing the known names."""
    models = gpu_models()
    if key not in models:
        raise TopologyError(f"unknown GPU model {key!r}{names_hint(key, models, 'known')}")
    return models[key]


def match_product_name(name: str, memory_bytes: int | None = None) -> str | None:
    """The catalogue key whose NVML name pattern matches `name`, or None.

    Where several match (an 'A100' name without its memory size), the one whose memory is closest
    to `memory_bytes` wins; without a memory figure an ambiguous name gives None.

    >>> match_product_name("NVIDIA H100 80GB HBM3")
    'h100-sxm'
    """
    hits = [m for m in gpu_models().values() if any(re.search(p, name) for p in m.nvml_names)]
    if len(hits) == 1:
        return hits[0].key
    if hits and memory_bytes:
        return min(hits, key=lambda m: (abs(m.memory_bytes - memory_bytes), m.key)).key
    return None


# Max NVLink links of any single GPU so far (H100/H200/B200 datasheets: 18). A clique of GPUs that
# shows more links per GPU than this in total must go through an NVSwitch.
MAX_DIRECT_NVLINKS_PER_GPU = 18


def candidates_for_links(links_per_gpu: int) -> list[str]:
    """Catalogue keys whose GPUs have exactly this many NVLink links (for 'which GPU is this?')."""
    return sorted(k for k, m in gpu_models().items() if m.nvlink_links == links_per_gpu)
