"""Identifier schemes: which identifiers count as evidence, how they are checked, how far to trust them.

A deployment's identifiers differ from country to country and agency to agency: a check digit
catches a mistyped NHS number, but a 9-digit social-security number has none, so one digit apart is
most likely the same number mistyped; a person holds one NHS number for life but several passport
numbers. None of that belongs in code, so each scheme is a small piece of configuration
(``linkage.identifier_schemes`` in the settings, see docs/identifier-schemes.md) and the built-in
catalogue below is only the default: the UK schemes and one non-UK example.

Names an agency gives its own record numbers (``health_patient_id`` in the health mapping) are
*local*: they travel with the event and are never compared. Any other name must be a configured
scheme; an unknown one is an error where it is first seen, never silently ignored.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Enforcement = Literal["strict", "soft", "none"]
Cleaning = Literal["digits", "alphanumeric"]

_NON_DIGITS = re.compile(r"\D")
_NON_ALNUM = re.compile(r"[^0-9A-Z]")
_SCHEME_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class SchemeError(ValueError):
    """A scheme definition or an identifier naming a scheme that is not configured."""


def nhs_modulus_11(value: str) -> bool:
    """NHS (and CHI) number check digit: weights 10..2 over the first nine digits; 10 is invalid."""
    if len(value) != 10 or not value.isdigit():
        return False
    if value.isascii():  # the usual case, as byte arithmetic: the digits are bytes 48-57
        b = value.encode()
        total = (10 * b[0] + 9 * b[1] + 8 * b[2] + 7 * b[3] + 6 * b[4] + 5 * b[5] + 4 * b[6] + 3 * b[7]
                 + 2 * b[8] - 48 * 54)
    else:  # other scripts' digits, which isdigit() accepts too
        total = sum(int(d) * w for d, w in zip(value[:9], range(10, 1, -1), strict=True))
    check = 11 - total % 11
    if check == 11:
        check = 0
    return check != 10 and check == int(value[9])


_UPN_LETTERS = "ABCDEFGHJKLMNPQRTUVWXYZ"  # the DfE's 23 check letters (no I, O or S)


def upn_modulus_23(value: str) -> bool:
    """Unique Pupil Number: a check letter, then 12 characters (digits, or a letter in the last
    place for temporary UPNs); the letter is the weighted sum (weights 2..13) modulo 23."""
    if len(value) != 13 or value[0] not in _UPN_LETTERS:
        return False
    body = value[1:]
    if not body[:11].isdigit():
        return False
    last = body[11]
    digits = [int(c) for c in body[:11]] + [int(last) if last.isdigit() else _UPN_LETTERS.index(last)
                                             if last in _UPN_LETTERS else -1]
    if digits[-1] < 0:
        return False
    total = sum(d * w for d, w in zip(digits, range(2, 14), strict=True))
    return _UPN_LETTERS[total % 23] == value[0]


def luhn(value: str) -> bool:
    if not value.isdigit() or len(value) < 2:
        return False
    total = 0
    for i, ch in enumerate(reversed(value)):
        d = int(ch)
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def no_check(value: str) -> bool:
    return True


CHECKS: dict[str, Callable[[str], bool]] = {
    "none": no_check,
    "nhs_modulus_11": nhs_modulus_11,
    "upn_modulus_23": upn_modulus_23,
    "luhn": luhn,
}


def check_function(name: str) -> Callable[[str], bool]:
    """A built-in check by name, or ``stdnum.<country>.<number>``: any validator of python-stdnum
    (the Netherlands' BSN is ``stdnum.nl.bsn``, a US SSN with its issuing rules ``stdnum.us.ssn``)."""
    if name in CHECKS:
        return CHECKS[name]
    if name.startswith("stdnum."):
        try:
            module = importlib.import_module(name)
        except ImportError:
            module = None
        is_valid = getattr(module, "is_valid", None)
        if callable(is_valid):
            return is_valid  # type: ignore[no-any-return]
    raise SchemeError(f"check_digit {name!r}: not one of {', '.join(CHECKS)} nor a python-stdnum validator "
                      f"such as stdnum.nl.bsn")


@dataclass(frozen=True)
class IdentifierScheme:
    """One kind of identifier.

    * ``pattern``: a regular expression the cleaned value must match in full to be valid.
    * ``check_digit``: an algorithm the cleaned value must pass to be valid: a built-in one
      (``CHECKS``) or any python-stdnum validator (``stdnum.nl.bsn``).
    * ``typos``: whether two valid values one edit apart are likely the same number mistyped
      (no check digit to catch it): then they are strong but not exact evidence, and not a
      conflict. Defaults to True exactly when there is no check digit.
    * ``one_per_citizen``: ``strict``: two different valid values never join one citizen (a
      reviewer can still say they are one person); ``soft``: they may, but only through a link
      whose own two records carry both values (so the disagreement was weighed in that pair's
      score), never through a third record; ``none``: people hold several (passport numbers).
    * ``placeholders``: values that mean "not known" (``000000000``), treated as missing.
    """

    name: str
    description: str = ""
    cleaning: Cleaning = "alphanumeric"
    pattern: str | None = None
    check_digit: str = "none"
    typos: bool | None = None
    one_per_citizen: Enforcement = "strict"
    placeholders: tuple[str, ...] = ()
    shared: bool = True

    def __post_init__(self) -> None:
        if not _SCHEME_NAME.match(self.name):
            raise SchemeError(f"scheme name {self.name!r}: lower-case letters, digits and _, starting with a letter")
        try:
            check = check_function(self.check_digit)
        except SchemeError as exc:
            raise SchemeError(f"{self.name}: {exc}") from None
        if self.one_per_citizen not in ("strict", "soft", "none"):
            raise SchemeError(f"{self.name}: one_per_citizen must be strict, soft or none")
        if self.cleaning not in ("digits", "alphanumeric"):
            raise SchemeError(f"{self.name}: cleaning must be digits or alphanumeric")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise SchemeError(f"{self.name}: pattern {self.pattern!r}: {exc}") from None
        if self.typos is None:
            object.__setattr__(self, "typos", self.check_digit == "none")
        object.__setattr__(self, "placeholders", tuple(self.clean(p) or "" for p in self.placeholders))
        object.__setattr__(self, "_regex", re.compile(self.pattern) if self.pattern else None)
        object.__setattr__(self, "_check", check)

    def clean(self, raw: object) -> str | None:
        """The comparable form: separators and case removed (digits only for numeric schemes)."""
        if raw is None:
            return None
        text = str(raw).strip().upper()
        text = _NON_DIGITS.sub("", text) if self.cleaning == "digits" else _NON_ALNUM.sub("", text)
        return text or None

    def problem(self, value: str) -> str | None:
        """Why a cleaned value is not a valid identifier of this scheme, or None when it is."""
        if value in self.placeholders:
            return "a placeholder meaning 'not known'"
        regex: re.Pattern[str] | None = self._regex  # type: ignore[attr-defined]
        if regex is not None and not regex.fullmatch(value):
            return f"does not match {self.pattern}"
        if not self._check(value):  # type: ignore[attr-defined]
            return f"fails the {self.check_digit} check digit"
        return None

    def as_config(self) -> dict[str, Any]:
        """The scheme's settings, as ``scheme_from_config`` takes them (its name is the key)."""
        out = asdict(self)
        del out["name"]
        out["placeholders"] = list(self.placeholders)
        return out


def _uk_and_example_schemes() -> dict[str, IdentifierScheme]:
    schemes = [
        IdentifierScheme("nhs_number", "NHS number (England, Wales, Isle of Man): 10 digits, modulus 11",
                         cleaning="digits", pattern=r"\d{10}", check_digit="nhs_modulus_11"),
        IdentifierScheme("chi_number", "Community Health Index number (Scotland): 10 digits, modulus 11",
                         cleaning="digits", pattern=r"\d{10}", check_digit="nhs_modulus_11"),
        IdentifierScheme("ni_number", "National Insurance number: two letters, six digits, A-D; no check digit",
                         pattern=r"(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]\d{6}[A-D]"),
        IdentifierScheme("upn", "Unique Pupil Number (England): a check letter and 12 characters",
                         pattern=r"[A-Z]\d{11}[0-9A-Z]", check_digit="upn_modulus_23"),
        IdentifierScheme("passport", "Passport number: renewed over a lifetime, so several per person",
                         pattern=r"[A-Z0-9]{6,12}", one_per_citizen="none"),
        IdentifierScheme("ssn", "Example of a non-UK scheme: a 9-digit social-security number with no check "
                         "digit, sometimes mistyped and sometimes borrowed from a household member",
                         cleaning="digits", pattern=r"\d{9}", one_per_citizen="soft",
                         placeholders=("000000000", "111111111", "999999999", "123456789")),
    ]
    return {s.name: s for s in schemes}


BUILT_IN = _uk_and_example_schemes()
SCHEME_KEYS = {f for f in IdentifierScheme.__dataclass_fields__ if f != "name"}


def scheme_from_config(name: str, config: Mapping[str, Any], base: IdentifierScheme | None = None) -> IdentifierScheme:
    """A scheme from its settings; keys not given are taken from ``base`` (a built-in one being
    adjusted) or the defaults. Unknown keys are errors."""
    unknown = set(config) - SCHEME_KEYS
    if unknown:
        raise SchemeError(f"identifier scheme {name}: unknown key(s) {', '.join(sorted(unknown))}; "
                          f"allowed: {', '.join(sorted(SCHEME_KEYS))}")
    values: dict[str, Any] = base.as_config() if base is not None else {}
    values.update(config)
    if "placeholders" in values:
        values["placeholders"] = tuple(str(p) for p in values["placeholders"] or ())
    try:
        return IdentifierScheme(name, **values)
    except TypeError as exc:
        raise SchemeError(f"identifier scheme {name}: {exc}") from None


@dataclass(frozen=True)
class SchemeCatalogue:
    """The schemes a deployment uses. ``is_local`` names the agency-own numbers that need no entry."""

    schemes: Mapping[str, IdentifierScheme] = field(default_factory=lambda: dict(BUILT_IN))

    @classmethod
    def from_config(cls, config: Mapping[str, Mapping[str, Any] | None] | None,
                    include_built_in: bool = True) -> SchemeCatalogue:
        """The built-in schemes, adjusted or added to by ``config`` (scheme -> settings; a scheme
        set to ``null`` is removed)."""
        schemes = dict(BUILT_IN) if include_built_in else {}
        for name, settings in (config or {}).items():
            if settings is None:
                schemes.pop(name, None)
                continue
            schemes[name] = scheme_from_config(name, settings, schemes.get(name))
        return cls(schemes)

    @property
    def shared(self) -> dict[str, IdentifierScheme]:
        return {n: s for n, s in self.schemes.items() if s.shared}

    def is_local(self, name: str, agency: str | None = None) -> bool:
        """An agency's own record number, named after the agency (``health_patient_id``)."""
        scheme = self.schemes.get(name)
        if scheme is not None:
            return not scheme.shared
        return agency is not None and name.startswith(f"{agency}_")

    def unknown(self, names: Iterable[str], agency: str | None = None) -> list[str]:
        return sorted(n for n in names if n not in self.schemes and not self.is_local(n, agency))

    def describe_unknown(self, name: str) -> str:
        return (f"identifier scheme {name!r} is not configured: known schemes are "
                f"{', '.join(sorted(self.schemes))}; add it under linkage.identifier_schemes in caselink.yaml "
                f"(docs/identifier-schemes.md), or name an agency's own record number after the agency "
                f"(e.g. health_{name}) to keep it without comparing it")

    def config(self) -> dict[str, dict[str, Any]]:
        return {name: s.as_config() for name, s in sorted(self.schemes.items())}

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.config(), sort_keys=True).encode()).hexdigest()[:16]


DEFAULT_CATALOGUE = SchemeCatalogue()
