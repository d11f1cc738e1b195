"""Turning whatever a source system holds into comparable values.

Every function here is pure and total: bad input gives ``None`` (missing) or a flagged value,
never an exception, so one odd field cannot stop a record from being linked on the others.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache, wraps
from typing import Any, TypeVar

_NON_ALPHA = re.compile(r"[^a-z ]+")
_SPACES = re.compile(r"\s+")
_NAME_PARTICLES = {"van", "von", "de", "der", "den", "la", "le", "du", "da", "di", "del", "st", "mc", "mac"}
_NAME_TITLES = {"mr", "mrs", "ms", "miss", "dr", "prof", "master", "rev", "sir", "dame", "mx"}
_SEX_CODES = {
    "f": "F", "female": "F", "w": "F", "woman": "F", "girl": "F", "2": "F",
    "m": "M", "male": "M", "man": "M", "boy": "M", "1": "M",
    "x": "X", "i": "X", "indeterminate": "X", "other": "X", "9": "X",
    "u": "U", "unknown": "U", "0": "U", "": "U", "not known": "U", "not specified": "U",
}
_NON_POSTCODE = re.compile(r"[^A-Z0-9]")
_LETTERS = re.compile(r"[A-Z]+")
_NON_ADDRESS = re.compile(r"[^a-z0-9 ]+")
_IDENTIFIER_SEPARATORS = re.compile(r"[\s\-/.]")
_NON_DIGITS = re.compile(r"\D")
_UK_POSTCODE = re.compile(r"^([A-Z]{1,2}[0-9][A-Z0-9]?)([0-9][A-Z]{2})$")
_ADDRESS_ABBREVIATIONS = {
    "rd": "road", "st": "street", "str": "street", "ave": "avenue", "av": "avenue", "ln": "lane",
    "cres": "crescent", "cr": "crescent", "ct": "court", "crt": "court", "dr": "drive", "pl": "place",
    "sq": "square", "tce": "terrace", "ter": "terrace", "gdns": "gardens", "gr": "grove", "cl": "close",
    "hwy": "highway", "pde": "parade", "cct": "circuit", "apt": "flat", "apartment": "flat", "unit": "flat",
    "nth": "north", "sth": "south", "e": "east", "w": "west", "n": "north", "s": "south",
}


F = TypeVar("F", bound=Callable[..., Any])


def remembered(func: F) -> F:
    """Remember results for text input: names, dates, postcodes and towns repeat across records
    (a few thousand surnames cover most people), and each record is standardised in the normaliser,
    again in the linker and on every replay. Only for functions that return immutable values; other
    input types (numbers, NaN) are computed each time."""
    cached = lru_cache(maxsize=16_384)(func)

    @wraps(func)
    def wrapper(value: object, *args: Any, **kwargs: Any) -> Any:
        if type(value) is str and not kwargs:
            return cached(value, *args)
        return func(value, *args, **kwargs)

    wrapper.cache_info = cached.cache_info  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def strip_accents(text: str) -> str:
    if text.isascii():  # ASCII is unchanged by NFKD and has no combining marks: most input, at no cost
        return text
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def is_missing(value: object) -> bool:
    """None, NaN (pandas' missing value) or blank."""
    if value is None:
        return True
    if isinstance(value, float) and value != value:
        return True
    return isinstance(value, str) and not value.strip()


@remembered
def clean_text(value: object) -> str | None:
    """Lower case, no accents or punctuation, single spaces; ``None`` when nothing is left."""
    if is_missing(value):
        return None
    text = strip_accents(str(value)).lower().replace("-", " ").replace("'", "")
    text = _SPACES.sub(" ", _NON_ALPHA.sub(" ", text)).strip()
    return text or None


def name_tokens(value: object) -> list[str]:
    """Name parts without titles; particles (van, de, mc ...) glued to the part that follows."""
    text = clean_text(value)
    if not text:
        return []
    tokens = [t for t in text.split(" ") if t not in _NAME_TITLES]
    merged: list[str] = []
    carry = ""
    for token in tokens:
        if token in _NAME_PARTICLES and len(tokens) > 1:
            carry += token
            continue
        merged.append(carry + token)
        carry = ""
    if carry:
        merged.append(carry)
    return merged


_NO_FILLERS: frozenset[str] = frozenset()


def _without_fillers(value: object, fillers: frozenset[str]) -> list[str]:
    """Name tokens, or none when the field is a filler ("BABY GIRL", "UNKNOWN"); leading filler
    tokens ("Baby Maria") are dropped too."""
    tokens = name_tokens(value)
    if not tokens or not fillers:
        return tokens
    if " ".join(tokens) in fillers or clean_text(value) in fillers:
        return []
    while tokens and tokens[0] in fillers:
        tokens = tokens[1:]
    return tokens


@remembered
def standardise_given(value: object, fillers: frozenset[str] = _NO_FILLERS) -> tuple[str | None, str | None]:
    """(first given name, middle names joined) from a full given-names field."""
    tokens = _without_fillers(value, fillers)
    if not tokens:
        return None, None
    return tokens[0], " ".join(tokens[1:]) or None


@remembered
def standardise_family(value: object, fillers: frozenset[str] = _NO_FILLERS) -> tuple[str | None, tuple[str, ...]]:
    """(family name as one token, its parts) — 'O'Neill-Smith' gives ('oneillsmith', ('oneill','smith')).
    A lone letter is an initial, not a family name, and counts as missing."""
    tokens = _without_fillers(value, fillers)
    if not tokens:
        return None, ()
    family = "".join(tokens)
    if len(family) == 1:
        return None, ()
    return family, tuple(tokens)


def standardise_sex(value: object) -> str | None:
    if is_missing(value):
        return None
    code = _SEX_CODES.get(str(value).strip().lower())
    return None if code in (None, "U") else code


@dataclass(frozen=True, slots=True)
class StdDate:
    """A date of birth as an 8-digit string, kept even when not a real calendar date (typos)."""

    digits: str  # YYYYMMDD
    valid: bool
    # Sliced once here rather than on every comparison and blocking key (a property was 4% of
    # linking time at a million records). Dates are shared between records, so this costs little.
    year: str = field(init=False, compare=False, repr=False)
    month: str = field(init=False, compare=False, repr=False)
    day: str = field(init=False, compare=False, repr=False)
    year_number: int = field(init=False, compare=False, repr=False)  # -1 when not digits

    def __post_init__(self) -> None:
        digits = self.digits
        object.__setattr__(self, "year", digits[:4])
        object.__setattr__(self, "month", digits[4:6])
        object.__setattr__(self, "day", digits[6:8])
        object.__setattr__(self, "year_number", int(digits[:4]) if digits[:4].isdigit() else -1)


_ISO = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})")
_DIGITS8 = re.compile(r"^\d{8}$")


@remembered
def standardise_date(value: object) -> StdDate | None:
    """ISO ``YYYY-MM-DD`` or ``YYYYMMDD`` (a mapping's ``format`` turns a source's own layout into
    these); None when unreadable. Digits that make no calendar date are kept, flagged invalid."""
    if is_missing(value):
        return None
    text = str(value).strip()
    if not text:
        return None
    digits: str | None = None
    m = _ISO.match(text)
    if m:
        digits = f"{m.group(1)}{int(m.group(2)):02d}{int(m.group(3)):02d}"
    elif _DIGITS8.match(text):
        digits = text
    if digits is None or len(digits) != 8:
        return None
    return StdDate(digits, _real_date(digits))


@lru_cache(maxsize=100_000)
def _real_date(digits: str) -> bool:
    """``YYYYMMDD`` names a day on the calendar (cached: dates of birth repeat, strptime is slow)."""
    try:
        datetime.strptime(digits, "%Y%m%d")
        return True
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class StdPostcode:
    code: str  # no spaces, upper case
    sector: str | None  # UK only: outward + first inward digit
    district: str | None  # UK only: outward code
    area: str | None  # UK only: leading letters


@remembered
def standardise_postcode(value: object) -> StdPostcode | None:
    """UK postcodes split into sector/district/area; any other postal code kept as cleaned text."""
    if is_missing(value):
        return None
    code = _NON_POSTCODE.sub("", strip_accents(str(value)).upper())
    if not code:
        return None
    m = _UK_POSTCODE.match(code)
    if m:
        outward, inward = m.groups()
        area = _LETTERS.match(outward).group(0)  # type: ignore[union-attr]
        return StdPostcode(code, outward + inward[0], outward, area)
    return StdPostcode(code, None, None, None)


def standardise_address(lines: list[object] | tuple[object, ...]) -> str | None:
    """Address lines as one string of normalised tokens (abbreviations expanded)."""
    tokens: list[str] = []
    for line in lines:
        if is_missing(line):
            continue
        text = strip_accents(str(line)).lower()
        text = _NON_ADDRESS.sub(" ", text)
        for token in text.split():
            tokens.append(_ADDRESS_ABBREVIATIONS.get(token, token))
    return " ".join(tokens) or None


def clean_phone(value: object) -> str | None:
    if is_missing(value):
        return None
    digits = _NON_DIGITS.sub("", str(value))
    if digits.startswith("44") and len(digits) == 12:
        digits = "0" + digits[2:]
    return digits if len(digits) >= 7 else None


def clean_email(value: object) -> str | None:
    if is_missing(value):
        return None
    text = str(value).strip().lower()
    return text if "@" in text else None
