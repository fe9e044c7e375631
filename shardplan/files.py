"""The files shardplan writes for its user (`-o`, `--draw`): new ones only, so a file the user has stays theirs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from shardplan.errors import ShardplanError


def check_new_file(path: Path) -> None:
    """Refuse `path` before any work is done for it: a file already there, or no folder to put it in."""
    if path.exists():
        raise ShardplanError(f"{path}: already exists; choose another file name")
    if not path.absolute().parent.is_dir():
        raise ShardplanError(f"{path}: no folder {path.absolute().parent} to write it in")


@contextmanager
def new_file(path: Path, mode: str = "x") -> Iterator[IO[Any]]:
    """`path` opened for writing (`mode` "x" or "xb"), only where no file is there yet; what stops the writing is a
    one-line `ShardplanError`."""
    try:
        with path.open(mode) as out:
            yield out
    except FileExistsError:
        raise ShardplanError(f"{path}: already exists; choose another file name") from None
    except OSError as e:
        raise ShardplanError(f"{path}: cannot write it ({e.strerror})") from None
