"""Reading source dates without losing the record over one bad one.

A date of birth that does not parse is still evidence: ``05/o8/|993`` is 5 August 1993 typed on a
scanner, and ``19/06/1968`` where ``%m/%d/%Y`` was expected is 19 June with day and month in the
other order. Linkage compares dates digit by digit and knows about swapped days and months, so
what matters is to keep the digits where they stand, say what was wrong, and never guess a
different date. In order:

1. each of the field's formats, as given (``strptime``);
2. the same after reading characters that scanners and keyboards confuse with digits
   (``o``/``O`` for 0, ``l``/``I``/``|`` for 1, ...) as those digits;
3. the digits read by position, by the shape of each format, even when they do not make a real
   calendar date (month 19): kept as ``YYYY-MM-DD`` digits for comparison, flagged;
4. otherwise nothing: the field is missing, flagged with the text that was there.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache

# What a mistyped or mis-scanned digit most often is.
_LOOK_ALIKES = str.maketrans({"o": "0", "O": "0", "Q": "0", "D": "0", "l": "1", "I": "1", "i": "1", "|": "1",
                              "!": "1", "L": "1", "z": "2", "Z": "2", "S": "5", "s": "5", "b": "6", "G": "6",
                              "B": "8", "g": "9", "q": "9"})
_DIRECTIVES = {"%d": r"(?P<d>\d{1,2})", "%m": r"(?P<m>\d{1,2})", "%Y": r"(?P<Y>\d{4})", "%y": r"(?P<y>\d{2})",
               "%H": r"\d{1,2}", "%M": r"\d{1,2}", "%S": r"\d{1,2}", "%f": r"\d{1,6}", "%z": r"[+-]\d{2}:?\d{2}|Z",
               "%%": "%"}


class DateFormatError(ValueError):
    """A ``format`` that cannot be used to read dates."""


def check_format(fmt: str) -> None:
    """Raise DateFormatError unless ``fmt`` is a strptime format naming a year, month and day."""
    try:
        datetime(2000, 1, 2).strftime(fmt)
    except ValueError as exc:
        raise DateFormatError(f"{fmt!r}: {exc}") from None
    if not (("%Y" in fmt or "%y" in fmt) and ("%m" in fmt or "%b" in fmt or "%B" in fmt) and "%d" in fmt):
        raise DateFormatError(f"{fmt!r} does not name a year, a month and a day")


@lru_cache(maxsize=64)
def _shape(fmt: str) -> re.Pattern[str] | None:
    """A pattern that reads a text of ``fmt``'s shape digit group by digit group (None when the
    format has a part, such as a month name, that has no digits to read)."""
    out = []
    i = 0
    while i < len(fmt):
        if fmt[i] == "%" and i + 1 < len(fmt):
            part = _DIRECTIVES.get(fmt[i:i + 2])
            if part is None:
                return None
            out.append(part)
            i += 2
        elif fmt[i].isspace():
            out.append(r"\s*")
            i += 1
        else:
            out.append(r"\s*" + re.escape(fmt[i]) + r"\s*")
            i += 1
    return re.compile("".join(out))


def _strict(text: str, formats: Sequence[str]) -> str | None:
    for fmt in formats:
        try:
            return datetime.strptime(text, fmt).date().isoformat()
        except ValueError:
            continue
    return None


def _by_position(text: str, formats: Sequence[str]) -> str | None:
    for fmt in formats:
        shape = _shape(fmt)
        m = shape.fullmatch(text) if shape is not None else None
        if m is None:
            continue
        parts = m.groupdict()
        if parts.get("Y"):
            year = int(parts["Y"])
        elif parts.get("y"):
            yy = int(parts["y"])
            year = 1900 + yy if yy >= 69 else 2000 + yy  # strptime's rule for %y
        else:
            continue
        month, day = int(parts.get("m") or 0), int(parts.get("d") or 0)
        if month == 0 or day == 0:
            continue
        return f"{year:04d}-{month:02d}-{day:02d}"
    return None


@lru_cache(maxsize=200_000)
def read_date(text: str, formats: tuple[str, ...]) -> tuple[str | None, str | None]:
    """(``YYYY-MM-DD`` or None, what was wrong or None) for one source text; cached, as dates of
    birth repeat. The digits may not make a calendar date when a problem is reported."""
    found = _strict(text, formats)
    if found is not None:
        return found, None
    wanted = " or ".join(formats)
    fixed = text.translate(_LOOK_ALIKES)
    if fixed != text:
        found = _strict(fixed, formats)
        if found is not None:
            return found, f"{text!r} read as {fixed!r} (characters taken for the digits they resemble)"
    found = _by_position(fixed, formats)
    if found is not None:
        return found, (f"{text!r} is not a date in format {wanted}; its digits are kept as {found} for comparison "
                       f"(not a calendar date)" if _strict(found, ("%Y-%m-%d",)) is None else
                       f"{text!r} is not a date in format {wanted}; read as {found}")
    return None, f"{text!r} is not a date in format {wanted}; left out"
