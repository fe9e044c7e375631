"""The one exception family a user can cause.

Every message says what to fix. The CLI catches `ShardplanError` only, prints its message as one line
on stderr and exits with code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from pydantic import ValidationError


class ShardplanError(Exception):
    """Base of every error that bad input, an unknown name or an impossible request can cause."""


class TopologyError(ShardplanError):
    """A topology source could not be read, or does not say what planning needs."""


class ParseError(TopologyError):
    """A text source is malformed; the message names the file, the line and what was expected."""

    def __init__(self, source: str, line: int | None, message: str) -> None:
        where = f"{source}: line {line}: " if line is not None else f"{source}: "
        super().__init__(where + message)
        self.source = source
        self.line = line


class ModelSpecError(ShardplanError):
    """A model source is unknown or its config is inconsistent."""


class PlanError(ShardplanError):
    """A layout or request cannot be planned (degrees, memory, permutation)."""


class TrainingError(ShardplanError, ValueError):
    """`Training` settings out of range, or that do not go together (a ValueError too, as pydantic's are)."""


def describe_validation(err: ValidationError) -> str:
    """One line for a pydantic error: `field.path: message` of the first problem (and how many more); the message
    alone where it concerns no one field (a check across fields)."""
    first = err.errors()[0]
    path = ".".join(str(p) for p in first["loc"])
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{path}: {first['msg']}{more}" if path else f"{first['msg']}{more}"


def names_hint(text: str, names: Iterable[str], label: str) -> str:
    """'; did you mean NAME? LABEL: the names' for a mistyped `text`: the `names` it begins, else the closest one
    (no guess where none is close), then every name.

    >>> names_hint("llama-3-8b", ["llama3-8b", "llama3-70b", "mistral-7b"], "presets")
    "; did you mean 'llama3-8b'? presets: llama3-70b, llama3-8b, mistral-7b"
    >>> names_hint("a100", ["a10", "a100-pcie-40gb", "a100-sxm-80gb"], "known")
    "; did you mean 'a100-pcie-40gb' or 'a100-sxm-80gb'? known: a10, a100-pcie-40gb, a100-sxm-80gb"
    """
    key, names = text.lower(), sorted(names)
    close = [name for name in names if name.startswith(key)]
    if not 0 < len(close) <= 4:  # more are no hint: the list of names follows
        close = difflib.get_close_matches(key, names, n=1)
    guess = ""
    if close:
        *rest, last = map(repr, close)
        guess = f" did you mean {', '.join(rest) + ' or ' if rest else ''}{last}?"
    return f";{guess} {label}: {', '.join(names)}"
