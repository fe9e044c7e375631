"""The model as data: `load_model` reads a preset or a Hugging Face config into a `ModelSpec`."""

from __future__ import annotations

from pathlib import Path

from shardplan.errors import ModelSpecError, names_hint
from shardplan.model.hf_config import SUPPORTED, read_config, spec_from_config
from shardplan.model.presets import model_preset_names, read_model_preset
from shardplan.model.schema import LayerSpec, ModelSpec, MoeSpec

__all__ = ["SUPPORTED", "LayerSpec", "ModelSpec", "MoeSpec", "load_model", "model_from_module", "model_preset_names"]


def load_model(source: str | Path | ModelSpec) -> ModelSpec:
    """A `ModelSpec` from a preset name, a `config.json`, or a directory holding one.

    >>> load_model("llama3-8b").num_params
    8030261248
    """
    if isinstance(source, ModelSpec):
        return source
    text = str(source)
    if text in model_preset_names():
        data, cite = read_model_preset(text)
        return spec_from_config(data, cite, name=text)
    path = Path(text)
    if not path.exists():
        raise ModelSpecError(
            f"{text}: not a file, a directory, or a model preset{names_hint(text, model_preset_names(), 'presets')}"
        )
    file = path / "config.json" if path.is_dir() else path
    return spec_from_config(read_config(path), str(file), name=path.stem if path.is_file() else path.name)


def model_from_module(module: object, *, seq_len: int = 2048, name: str | None = None) -> ModelSpec:
    """A `ModelSpec` read from a `torch.nn.Module` (meta device is fine); see `model.module`."""
    from shardplan.model.module import spec_from_module

    return spec_from_module(module, seq_len=seq_len, name=name)
