"""Printing for people (rich) or for machines (--json), chosen per command."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

from rich.console import Console

# Piped or redirected, lines are not wrapped at 80 columns (a log or a script reads them whole).
console = Console(stderr=False, soft_wrap=not sys.stdout.isatty())
err_console = Console(stderr=True, soft_wrap=not sys.stderr.isatty())


def emit(data: Any, as_json: bool, human: str | None = None) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    elif human is not None:
        console.print(human)


def fail(message: str, code: int = 1) -> NoReturn:
    """One clear line on stderr, then exit."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise SystemExit(code)
