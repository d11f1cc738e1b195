"""Printing for people or for machines, by one rule for every command.

* ``--json``: JSON on stdout, for scripts.
* stdout not a terminal (piped, redirected, a log): plain aligned text, never wrapped, no colour,
  so ``grep``, ``cut`` and a log file read each row whole.
* a terminal: Rich, with colour; a table too wide for the window is printed as one block per row
  (``column: value`` lines) instead of being squeezed into columns a few characters wide.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

# Piped or redirected, lines are not wrapped at 80 columns (a log or a script reads them whole).
console = Console(stderr=False, soft_wrap=not sys.stdout.isatty())
err_console = Console(stderr=True, soft_wrap=not sys.stderr.isatty())

Cell = str | Text | int | float | None


def emit(data: Any, as_json: bool, human: str | None = None) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    elif human is not None:
        console.print(human)


def fail(message: str, code: int = 1) -> NoReturn:
    """One clear line on stderr, then exit."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise SystemExit(code)


def note(message: str) -> None:
    """A remark for the person running the command (stderr, so it never mixes with the data)."""
    err_console.print(message, highlight=False)


def _plain(cell: Cell) -> str:
    if cell is None:
        return ""
    return cell.plain if isinstance(cell, Text) else str(cell)


def plain_table(columns: Sequence[str], rows: Sequence[Sequence[Cell]], right: frozenset[str] = frozenset()) -> str:
    """Columns padded to their widest cell, two spaces apart; the last column is not padded.
    A newline inside a cell becomes a space: one row is one line."""
    text = [[_plain(c).replace("\n", " ") for c in row] for row in rows]
    widths = [max([len(col), *(len(r[i]) for r in text)]) for i, col in enumerate(columns)]

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, (cell, width) in enumerate(zip(cells, widths, strict=True)):
            last = i == len(cells) - 1
            out.append(cell.rjust(width) if columns[i] in right else cell if last else cell.ljust(width))
        return "  ".join(out).rstrip()

    return "\n".join([line(list(columns)), *(line(r) for r in text)])


def show_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Cell]],
               right: Sequence[str] = (), empty: str | None = None) -> None:
    """Print a table by the rule above. ``rows`` hold strings (printed as they are, never read as
    markup) or ``rich.text.Text`` for colour. ``empty``: what to say when there are no rows."""
    aligned = frozenset(right)
    if not rows and empty is not None:
        console.print(empty, highlight=False, markup=False)
        return
    if not console.is_terminal:
        if title:
            console.print(title, highlight=False, markup=False)
        console.print(plain_table(columns, rows, aligned), highlight=False, markup=False, soft_wrap=True)
        return
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, justify="right" if column in aligned else "left", no_wrap=True)
    for row in rows:
        table.add_row(*(c if isinstance(c, Text) else Text(_plain(c)) for c in row))
    if Measurement.get(console, console.options, table).maximum <= console.width:
        console.print(table)
        return
    # Too wide for the window: one block per row, every value whole.
    if title:
        console.print(Text(title, style="bold"))
    label = max(len(c) for c in columns)
    for row in rows:
        for column, cell in zip(columns, row, strict=True):
            value = cell if isinstance(cell, Text) else Text(_plain(cell))
            console.print(Text(f"{column:>{label}}: ", style="dim") + value, soft_wrap=False)
        console.print()


@contextmanager
def reading(what: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr while ``what`` is read, in a terminal (nothing when piped, so a
    script's output stays clean); yields the ``progress(done, total)`` callback the readers take."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True, disable=not err_console.is_terminal) as bar:
        task = bar.add_task(what, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)
