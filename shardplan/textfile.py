"""Reading the files users hand in (saved command output, topology, model config and calibration files) as text."""

from __future__ import annotations

from pathlib import Path

from shardplan.errors import ShardplanError


def read_text(path: Path, error: type[ShardplanError] = ShardplanError, *, what: str = "file") -> str:
    """`path` as text: UTF-8, or UTF-16 where it starts with that byte-order mark (what Windows PowerShell's `>`
    writes); bytes that are neither are replaced, not refused. A file that cannot be read raises `error` naming it
    (`what` it should have been).

    >>> read_text(Path("no-such.json"), what="calibration file")
    Traceback (most recent call last):
    ...
    shardplan.errors.ShardplanError: no-such.json: no such calibration file
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise error(f"{path}: a folder, not a {what}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror})") from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    return data.decode("utf-8-sig", errors="replace")
