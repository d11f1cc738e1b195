"""What agrees and what conflicts between two records, in words a caseworker uses.

The review screen shows this before any number. The linkage model's weights say how much each
comparison counted; they do not say, in plain terms, that two people were born 74 years apart or
carry two different NHS numbers, which a caseworker must see first. Pure functions over the two
Person records (as PersonEvent holds them), so they are tested without a worker.

Each finding has a ``status``:

* ``conflict``: evidence these are two people that a person should weigh first: born ten or more
  years apart, two different identifiers of one scheme, a different recorded sex;
* ``differ``: different values that people often have for one person (a moved address, a
  married name, a typo in a date);
* ``similar``: not the same text, but the same in substance (Jim and James, a date with day and
  month swapped, a house number and street written differently);
* ``agree``: the same (case, accents and spacing ignored: ``GEORGE RICHARDSON`` is ``George Richardson``);
* ``one_sided``: only one record has it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from caselink.linkage.nicknames import canonical_given_name
from caselink.linkage.standardise import clean_text, name_tokens, standardise_address, standardise_postcode

ORDER = {"conflict": 0, "differ": 1, "similar": 2, "agree": 3, "one_sided": 4}
AGE_GAP_YEARS = 10  # as the model's own level for dates of birth "more than ten years apart"
SCHEME_NAMES = {"nhs_number": "NHS number", "ni_number": "National Insurance number", "upn": "pupil number",
                "ssn": "social security number"}


@dataclass(frozen=True)
class Finding:
    topic: str  # "date of birth", "NHS number", ...
    status: str  # conflict, differ, similar, agree, one_sided
    text: str  # one sentence in plain words

    def as_dict(self) -> dict[str, str]:
        return {"topic": self.topic, "status": self.status, "text": self.text}


def scheme_name(scheme: str) -> str:
    return SCHEME_NAMES.get(scheme, scheme.replace("_", " "))


def compare(left: dict[str, Any], right: dict[str, Any]) -> list[Finding]:
    """Findings about two Person records, conflicts first."""
    findings = [*_dates(left.get("date_of_birth"), right.get("date_of_birth")),
                *_identifiers(left.get("identifiers") or {}, right.get("identifiers") or {}),
                *_names(left, right), *_sex(left.get("sex"), right.get("sex")),
                *_addresses(left.get("addresses") or [], right.get("addresses") or []),
                *_contacts("phone number", left.get("phones") or [], right.get("phones") or []),
                *_contacts("email address", left.get("emails") or [], right.get("emails") or [])]
    return sorted(findings, key=lambda f: ORDER[f.status])


def _date(value: Any) -> date | None:
    try:
        return date.fromisoformat(str(value)[:10])
    except (TypeError, ValueError):
        return None


def years_between(a: date, b: date) -> int:
    """Whole years from the earlier date to the later."""
    first, last = sorted((a, b))
    return last.year - first.year - ((last.month, last.day) < (first.month, first.day))


def _dates(a: Any, b: Any) -> list[Finding]:
    topic = "date of birth"
    if not a or not b:
        return [Finding(topic, "one_sided", f"Only one record has a date of birth ({a or b}).")] if a or b else []
    if a == b:
        return [Finding(topic, "agree", f"Same date of birth: {_day(a)}.")]
    da, db = _date(a), _date(b)
    if da is None or db is None:
        return [Finding(topic, "differ", f"Dates of birth differ: {a} and {b} (one is not a calendar date).")]
    gap = years_between(da, db)
    if gap >= AGE_GAP_YEARS:
        return [Finding(topic, "conflict", f"Born {gap} years apart: {_day(a)} and {_day(b)}. One person cannot "
                                           "have both; a parent and child or grandparent and grandchild can.")]
    if (da.year, da.month, da.day) == (db.year, db.day, db.month):
        return [Finding(topic, "similar", f"Dates of birth {_day(a)} and {_day(b)}: day and month swapped, a common "
                                          "slip.")]
    differing = sum(x != y for x, y in zip(str(a), str(b), strict=False))
    if differing == 1 or sorted(str(a)) == sorted(str(b)):
        return [Finding(topic, "similar", f"Dates of birth {_day(a)} and {_day(b)}: one digit apart, often a typing "
                                          "slip.")]
    days = abs((da - db).days)
    return [Finding(topic, "differ", f"Dates of birth differ by {days:,} days: {_day(a)} and {_day(b)}.")]


def _day(value: Any) -> str:
    parsed = _date(value)
    return parsed.strftime("%-d %B %Y") if parsed else str(value)


def _identifiers(a: dict[str, str], b: dict[str, str]) -> list[Finding]:
    out = []
    for scheme in sorted(set(a) | set(b)):
        name = scheme_name(scheme)
        x, y = a.get(scheme), b.get(scheme)
        if not x or not y:
            # an agency's own record number on one side says nothing about the other agency
            if scheme in SCHEME_NAMES:
                out.append(Finding(name, "one_sided", f"Only one record has {_article(name)} {name}: {x or y}."))
            continue
        if _digits(x) == _digits(y):
            out.append(Finding(name, "agree", f"Same {name}: {x}."))
        else:
            out.append(Finding(name, "conflict", f"Two different {name}s: {x} and {y}. One person normally has "
                                                 "one."))
    return out


def _article(name: str) -> str:
    """'an' before a vowel sound: letters of an abbreviation are read by name ("an NHS number")."""
    spelled = name[:2].isupper()
    return "an" if name[0] in ("AEFHILMNORSX" if spelled else "AEIOUaeiou") else "a"


def _digits(value: str) -> str:
    return "".join(ch for ch in str(value).upper() if ch.isalnum())


def _names(left: dict[str, Any], right: dict[str, Any]) -> list[Finding]:
    out = []
    for field, label in (("given_names", "first name"), ("family_name", "family name")):
        a, b = left.get(field), right.get(field)
        if not a or not b:
            if a or b:
                out.append(Finding(label, "one_sided", f"Only one record has a {label}: {a or b}."))
            continue
        ta, tb = name_tokens(a), name_tokens(b)
        if ta == tb:
            shown = a if a == b else f"{a} / {b}, written differently"
            out.append(Finding(label, "agree", f"Same {label}: {shown}."))
        elif field == "given_names" and ta and tb and (
                canonical_given_name(ta[0]) == canonical_given_name(tb[0])):
            out.append(Finding(label, "similar", f"{a} and {b}: one is a short form of the other."))
        elif set(ta) & set(tb):
            out.append(Finding(label, "similar", f"{label.capitalize()}s share a part: {a} and {b}."))
        elif field == "given_names" and _swapped(left, right):
            out.append(Finding(label, "similar", f"First and family names swapped: {a} {left.get('family_name')} "
                                                 f"and {b} {right.get('family_name')}."))
        else:
            out.append(Finding(label, "differ", f"Different {label}s: {a} and {b}."))
    return out


def _swapped(left: dict[str, Any], right: dict[str, Any]) -> bool:
    return (clean_text(left.get("given_names")) == clean_text(right.get("family_name"))
            and clean_text(left.get("family_name")) == clean_text(right.get("given_names")))


def _sex(a: Any, b: Any) -> list[Finding]:
    if not a or not b:
        return []
    if str(a).upper()[:1] == str(b).upper()[:1]:
        return [Finding("sex", "agree", f"Same recorded sex: {a}.")]
    return [Finding("sex", "conflict", f"Different recorded sex: {a} and {b}.")]


def _address_text(address: dict[str, Any]) -> str:
    return ", ".join(str(x) for x in [*address.get("lines", []), address.get("locality"), address.get("postcode")]
                     if x)


def _addresses(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[Finding]:
    if not a or not b:
        if a or b:
            return [Finding("address", "one_sided", f"Only one record has an address: {_address_text((a or b)[0])}.")]
        return []
    for x in a:
        for y in b:
            same_lines = standardise_address(x.get("lines") or []) == standardise_address(y.get("lines") or [])
            px, py = standardise_postcode(x.get("postcode")), standardise_postcode(y.get("postcode"))
            same_code = px is not None and py is not None and px.code == py.code
            if same_lines and same_code:
                written = "" if _address_text(x) == _address_text(y) else " (written differently)"
                return [Finding("address", "agree", f"Same address: {_address_text(x)}{written}.")]
            if same_code:
                return [Finding("address", "similar", f"Same postcode {x.get('postcode')}, different lines: "
                                                      f"{_address_text(x)} and {_address_text(y)}.")]
    return [Finding("address", "differ", f"Different addresses: {_address_text(a[0])} and {_address_text(b[0])}. "
                                         "People move; this alone says little.")]


def _contacts(label: str, a: list[str], b: list[str]) -> list[Finding]:
    if not a or not b:
        return []
    norm = (lambda v: _digits(v)[-10:]) if label == "phone number" else (lambda v: v.strip().lower())
    shared = sorted({norm(x) for x in a} & {norm(y) for y in b})
    if shared:
        return [Finding(label, "agree", f"Same {label}: {next(x for x in a if norm(x) == shared[0])}.")]
    return [Finding(label, "differ", f"Different {label}s: {', '.join(a)} and {', '.join(b)}.")]
