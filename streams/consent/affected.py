"""Which purposes a change of a citizen's linked case can affect, so the gate evaluates only those.

Every change of a citizen used to be evaluated for every purpose. Most changes touch a few of a
record's fields (a corrected name, a new phone number, a case opened), and a purpose that reads
none of them cannot see a difference: its view, digest and all, would come out the same. So when a
citizen's records are the same records as before (same agencies, record ids, match weights and
identifiers, so the same consents reach the same records) and only person fields or cases differ,
the purposes to evaluate are those whose fields read what changed. Anything else (a record
joining or leaving, a weight or identifier changing, a merge, a retirement) affects every
purpose. tests/unit/test_gate_incremental.py holds the result to a full re-evaluation.
"""

from __future__ import annotations

from typing import Any

from caselink.streams.consent.policy import Policy

# The parts of a member each policy field reads: person attributes, or the member's cases.
READS: dict[str, str] = {
    "given_names": "given_names", "family_name": "family_name", "other_names": "other_names",
    "date_of_birth": "date_of_birth", "year_of_birth": "date_of_birth", "sex": "sex",
    "identifiers": "identifiers", "address": "addresses", "postcode": "addresses",
    "postcode_district": "addresses", "phones": "phones", "emails": "emails", "cases": "cases",
}
PERSON_PARTS = ("given_names", "family_name", "other_names", "date_of_birth", "sex", "addresses", "phones", "emails")


def part_read_by(field: str) -> str:
    return "identifiers" if field.startswith("identifiers.") else READS[field]


def readers(policy: Policy) -> dict[str, frozenset[str]]:
    """Member part -> the purposes whose fields read it."""
    found: dict[str, set[str]] = {}
    for name, purpose in policy.purposes.items():
        for field in purpose.fields:
            found.setdefault(part_read_by(field), set()).add(name)
    return {part: frozenset(names) for part, names in found.items()}


def changed_parts(old: dict[str, Any], new: dict[str, Any]) -> set[str] | None:
    """The member parts that differ between two versions of a citizen's case; None when the
    records themselves differ (then every purpose is affected)."""
    if old["citizen_id"] != new["citizen_id"] or old["merged_from"] != new["merged_from"]:
        return None
    before, after = old["members"], new["members"]
    if len(before) != len(after):
        return None
    changed: set[str] = set()
    for a, b in zip(before, after, strict=True):
        if (a["agency"], a["source_record_id"], a["match_weight"]) != (b["agency"], b["source_record_id"],
                                                                       b["match_weight"]):
            return None
        pa, pb = a.get("person") or {}, b.get("person") or {}
        if (pa.get("identifiers") or {}) != (pb.get("identifiers") or {}):
            return None  # consents about identifiers may reach other records now
        for part in PERSON_PARTS:
            if pa.get(part) != pb.get(part):
                changed.add(part)
        if (a.get("cases") or []) != (b.get("cases") or []):
            changed.add("cases")
    return changed


def affected_purposes(old: dict[str, Any] | None, new: dict[str, Any] | None,
                      read_by: dict[str, frozenset[str]]) -> frozenset[str] | None:
    """The purposes to evaluate after ``old`` became ``new``; None: all of them."""
    if old is None or new is None:
        return None
    parts = changed_parts(old, new)
    if parts is None:
        return None
    return frozenset().union(*(read_by.get(part, frozenset()) for part in parts))
