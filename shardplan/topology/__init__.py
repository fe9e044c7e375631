"""The machine as data: `load_topology` reads any source into one `Topology`."""

from __future__ import annotations

from pathlib import Path

from shardplan.errors import TopologyError, names_hint
from shardplan.textfile import read_text
from shardplan.topology.cluster import build
from shardplan.topology.schema import Gpu, Topology
from shardplan.topology.sources.file import parse_declared
from shardplan.topology.sources.nccl_xml import looks_like_nccl_xml, parse_nccl_xml
from shardplan.topology.sources.nvidia_smi import (
    apply_nvlink_status,
    looks_like_topo,
    parse_nvlink_status,
    parse_topo,
)
from shardplan.topology.sources.presets import preset_names, read_preset
from shardplan.topology.spec import TopologySpec

__all__ = ["Gpu", "Topology", "TopologySpec", "load_topology", "preset_names", "read_spec"]


def read_spec(source: str | Path, *, nvlink_status: str | Path | None = None) -> TopologySpec:
    """The declared form of `source`: 'live', a preset name, a YAML/JSON file, or saved
    `nvidia-smi topo -m` text or NCCL topology XML (recognised by content)."""
    text_source = str(source)
    if text_source == "live":
        from shardplan.topology.sources.nvml import read_live

        spec = read_live()
    elif text_source in preset_names():
        spec = read_preset(text_source)
    else:
        path = Path(text_source)
        if not path.is_file():
            hint = names_hint(text_source, preset_names(), "presets")
            raise TopologyError(f"{text_source}: not a file, 'live', or a preset{hint}")
        text = read_text(path, TopologyError)
        if path.suffix.lower() in (".yaml", ".yml", ".json"):
            spec = parse_declared(text, text_source)
        elif "ROCm System Management Interface" in text or "between two GPUs" in text:
            raise TopologyError(
                f"{text_source}: `rocm-smi --showtopo` output (AMD GPUs); shardplan plans NVIDIA GPUs over NCCL "
                "and reads `nvidia-smi topo -m`, NCCL topology XML or a .yaml/.json topology"
            )
        elif looks_like_topo(text):
            spec = parse_topo(text, text_source)
        elif looks_like_nccl_xml(text):
            spec = parse_nccl_xml(text, text_source)
        else:
            raise TopologyError(
                f"{text_source}: neither `nvidia-smi topo -m` output (no header row starting GPU0), "
                "NCCL topology XML (no <system> element) nor a .yaml/.json topology"
            )
    if nvlink_status is not None:
        path = Path(nvlink_status)
        text = read_text(path, TopologyError, what="saved `nvidia-smi nvlink -s`")
        spec = apply_nvlink_status(spec, parse_nvlink_status(text, str(path)))
    return spec


def load_topology(
    source: str | Path | Topology,
    *,
    nodes: int = 1,
    gpu: str | None = None,
    nvlink_status: str | Path | None = None,
    nic_gbit: float | None = None,
) -> Topology:
    """A `Topology` from 'live', a preset name, a YAML/JSON file, saved `nvidia-smi topo -m` text or
    NCCL topology XML (`NCCL_TOPO_FILE`, `NCCL_TOPO_DUMP_FILE`).

    `nodes=N` makes N copies of the source joined by its network; `gpu` names the GPU model where
    the source does not say it (one that contradicts the source is an error); `nvlink_status` is a saved
    `nvidia-smi nvlink -s` for the same box; `nic_gbit` the line rate (Gb/s) of NICs the source gives
    no speed, as a saved `nvidia-smi topo -m` does (a node that lists no NICs leaves through one such NIC;
    a speed that contradicts the source is an error). A `Topology` already built is returned as it is, and takes
    none of these.

    >>> load_topology("dgx-h100").num_gpus
    8
    """
    if isinstance(source, Topology):
        options = {"nodes": nodes != 1, "gpu": gpu, "nvlink_status": nvlink_status, "nic_gbit": nic_gbit}
        if given := [name for name, value in options.items() if value]:
            verb = "apply" if len(given) > 1 else "applies"
            raise TopologyError(
                f"{' and '.join(given)} {verb} to a topology's source (a preset, a file, 'live'); {source.name} is "
                "built already: load it from its source with them"
            )
        return source
    return build(read_spec(source, nvlink_status=nvlink_status), nodes=nodes, gpu=gpu, nic_gbit=nic_gbit)
