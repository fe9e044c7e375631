"""What the commands print: tables at their whole width, notes beside the topology, output written to new files,
a progress bar for long searches."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

from shardplan.files import new_file

if TYPE_CHECKING:
    from shardplan.topology import Topology

# Without console markup: names and paths the user gave ("box[/red].yaml") print as they are, and a table cell or
# line never reads them as rich's style tags (a "[/...]" among them raised MarkupError).
console = Console(markup=False)


def print_heading(name: str, rest: str) -> None:
    """A line that opens with a name in bold."""
    console.print(Text.assemble((name, "bold"), rest), highlight=False)


def print_table(table: Table) -> None:
    """A table at its whole width, in a pipe, a file or a narrow terminal (which wraps the lines): rich would cut
    numbers short ("6.…") to fit a width, and a pipe has none."""
    width = Console(width=10_000, markup=False).measure(table).maximum
    (console if console.is_terminal and console.width >= width else Console(width=width, markup=False)).print(table)


def print_notes(caveats: Iterable[str]) -> None:
    """What the topology's source could not tell, a line each, beside the topology and every plan made on it."""
    for caveat in caveats:
        console.print(f"note      {caveat}", highlight=False)


def print_link_scale(topology: Topology) -> None:
    """The link classes a calibration file set to other rates than shipped, beside the topology."""
    measured = [f"{kind} x{scale:.2f}" for kind, scale in topology.link_scale.model_dump().items() if scale != 1]
    if measured:
        console.print(
            f"links     at the calibration's measured rates: {', '.join(measured)} the shipped", highlight=False
        )


def write_output(text: str, output: Path | None) -> None:
    """Print `text`, or write it to `output` (a new file: `files.new_file`)."""
    if output is None:
        print(text.rstrip("\n"))
        return
    with new_file(output) as out:
        out.write(text if text.endswith("\n") else text + "\n")
    print(f"wrote {output}", file=sys.stderr)


@contextmanager
def progress() -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr for long searches (only on a terminal)."""
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task("costing candidates", total=None)

        def report(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield report
