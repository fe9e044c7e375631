"""Shared test helpers: fixture files copied from ../shared/fixtures into tests/data."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
SEPARATOR = "# ===== verbatim output below (everything after this line is copied unchanged from the source) ====="


def fixture_body(path: Path) -> str:
    """The verbatim output of a fixture: everything after its '# =====' header line (fixtures/README)."""
    text = path.read_text()
    _head, sep, body = text.partition(SEPARATOR + "\n")
    return body if sep else text


@pytest.fixture
def body_file(tmp_path: Path):
    """Write a fixture's verbatim body to a temporary file of the same name and return its path."""

    def write(path: Path) -> Path:
        out = tmp_path / path.name
        out.write_text(fixture_body(path))
        return out

    return write


def gpu_available() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        return True
    except Exception:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if gpu_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU and driver")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
