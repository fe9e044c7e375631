"""Garbled copies of every topology fixture (`nvidia-smi topo`, NCCL topology XML) give a Topology or a
ShardplanError, never another exception."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATA, fixture_body

from shardplan import load_topology
from shardplan.errors import ShardplanError

FILES = sorted((DATA / "topo").glob("*.txt")) + sorted((DATA / "nccl-xml").glob("nccl-topo-*.txt"))


def _truncate(text: str, rng: random.Random) -> str:
    return text[: rng.randrange(len(text) + 1)]


def _delete_column(text: str, rng: random.Random) -> str:
    col = rng.randrange(1, 8)
    out = []
    for line in text.splitlines():
        cells = line.split("\t") if "\t" in line else line.split()
        if len(cells) > col:
            del cells[col]
        out.append(("\t" if "\t" in line else "  ").join(cells))
    return "\n".join(out)


def _flip_bytes(text: str, rng: random.Random) -> str:
    data = bytearray(text.encode())
    for _ in range(rng.randrange(1, 6)):
        if data:
            data[rng.randrange(len(data))] = rng.randrange(256)
    return data.decode(errors="replace")


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_garbled_fixture_reads_or_fails_cleanly(path: Path, tmp_path: Path):
    rng = random.Random(path.stem)  # seeded per file: the same garbling every run
    body = fixture_body(path)
    for k in range(12):
        garble = (_truncate, _delete_column, _flip_bytes)[k % 3]
        target = tmp_path / f"{k}-{path.name}"
        target.write_text(garble(body, rng))
        try:
            topo = load_topology(target)
        except ShardplanError as exc:
            assert "\n" not in str(exc)
            continue
        assert topo.num_gpus >= 1


def test_cli_error_is_one_line_naming_file_and_line(tmp_path: Path):
    bad = tmp_path / "topo.txt"
    bad.write_text("\tGPU0\tGPU1\tGPU2\nGPU0\t X \tNV4\tSYS\nGPU1\tNV4\t X \nGPU2\tSYS\tSYS\t X \n")
    run = subprocess.run(
        [sys.executable, "-m", "shardplan.cli", "topo", str(bad)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 2
    assert run.stderr == f"error: {bad}: line 3: expected 3 cells after GPU1, found 2\n"
    assert run.stdout == ""


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8-sig"])
def test_a_saved_output_in_windows_encodings_reads_as_the_original(encoding: str, tmp_path: Path):
    """`nvidia-smi topo -m > topo.txt` in Windows PowerShell writes UTF-16 with a byte-order mark and CRLF line ends;
    other tools a UTF-8 byte-order mark: each reads as the UTF-8 original does."""
    original = DATA / "topo" / "nvidia-smi-topo-hopper-8gpu-nv18-12nic-1.txt"
    saved = tmp_path / "topo.txt"
    saved.write_text(fixture_body(original).replace("\n", "\r\n"), encoding=encoding, newline="")
    plain = tmp_path / "plain.txt"
    plain.write_text(fixture_body(original))
    read, expected = (load_topology(p, gpu="h100-sxm").model_dump(exclude={"name", "source"}) for p in (saved, plain))
    assert read == expected and len(read["nics"]) == 12
