"""Readers: each turns one kind of source into a plain `TopologySpec`."""


def decimal(text: str) -> int | None:
    """A non-negative decimal field of a reader's input, or None (empty, -1, N/A or garbled)."""
    return int(text) if text.isascii() and text.isdigit() else None
