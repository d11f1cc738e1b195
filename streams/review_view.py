"""What the review screen shows of each open pair, gathered from the linker's core under its lock.

Kept apart from the HTML (``review_page``) and from the web server (``app``): the caller holds
``LinkerLoop.lock`` while ``open_pairs`` reads the index, then renders without it.

For each pair: both records whole (person and cases), the citizen each already belongs to with
its other records, what agrees and what conflicts (``review_compare``), why a person is asked
(the score between the thresholds, the household rule, the size guard), the reviewers' notes so
far, and the score's parts for those who want the numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from caselink.linkage.model import HOUSEHOLD_FIELD
from caselink.streams.linker_core import LinkerCore
from caselink.streams.review_compare import compare, scheme_name

CITIZEN_RECORDS_SHOWN = 20
# Bands of the model's probability, for the filter (the page shows the number too).
STRENGTHS = (("strong", 0.8), ("medium", 0.6), ("weak", 0.0))
FIELD_WORDS = {"prior": "starting point", "given_name": "first name", "family_name": "family name",
               "date_of_birth": "date of birth", "sex": "sex", "location": "address", "postcode": "postcode",
               "address": "address lines", "locality": "town", "contact": "phone or email",
               HOUSEHOLD_FIELD: "family rule", "match weight": "total"}
LEVEL_WORDS = {"exact": "same", "else": "different", "missing": "not on both records", "prior": "before any evidence",
               "one_edit": "one character apart", "nickname_or_swapped": "short form, or names swapped",
               "day_month_swapped": "day and month swapped", "total": "all evidence together"}


def plain_field(field: str) -> str:
    if field.startswith("identifier:"):
        return scheme_name(field.split(":", 1)[1])
    return FIELD_WORDS.get(field, field.replace("_", " "))


def plain_level(level: str) -> str:
    adjusted = "(term frequency adjusted)" in level
    base = level.replace("(term frequency adjusted)", "").strip()
    words = LEVEL_WORDS.get(base, base.replace("_", " "))
    return f"{words}, counted by how common the value is" if adjusted else words


def strength(probability: float) -> str:
    return next(name for name, floor in STRENGTHS if probability >= floor)


def record_view(core: LinkerCore, key: str) -> dict[str, Any]:
    """One record: its person and cases, and the citizen it belongs to with that citizen's other records."""
    index = core.index
    agency, _, record_id = key.partition(":")
    member: Mapping[str, Any] = core.member(key) or {}
    citizen_id = index.citizen_of(key)
    others = [k for k in index.members(citizen_id) if k != key] if citizen_id else []
    shown = []
    for other in others[:CITIZEN_RECORDS_SHOWN]:
        person = core.person(other)
        theirs: Mapping[str, Any] = core.member(other) or {}
        shown.append({"key": other, "agency": other.partition(":")[0],
                      "name": " ".join(x for x in (person.get("given_names"), person.get("family_name")) if x),
                      "date_of_birth": person.get("date_of_birth"),
                      "case_types": sorted({c.get("case_type") or "case" for c in theirs.get("cases") or []})})
    return {"key": key, "agency": agency, "record_id": record_id, "person": member.get("person") or {},
            "cases": member.get("cases") or [], "citizen_id": citizen_id, "citizen_records": shown,
            "citizen_more": max(0, len(others) - CITIZEN_RECORDS_SHOWN)}


def why_asked(core: LinkerCore, left: str, right: str, probability: float,
              explanation: list[dict[str, Any]]) -> list[str]:
    """Why this pair waits for a person, in words."""
    model = core.model
    reasons = []
    household = [f for f in explanation if f["field"] == HOUSEHOLD_FIELD]
    if household:
        reasons.append("They share a family name and an address, but their first names or dates of birth point to "
                       "two people of one family, so the computer does not join them on its own.")
    limit = core.index.max_citizen_records
    sizes = [len(core.index.members(c)) for c in {core.index.citizen_of(left), core.index.citizen_of(right)} if c]
    if limit is not None and probability >= model.link_threshold and sum(sizes) > limit:
        reasons.append(f"Joining them would make one person of {sum(sizes)} records, more than the "
                       f"{limit} allowed without a person checking.")
    if not reasons:
        reasons.append(f"The computer's estimate ({_chance(probability)}) is between the point where it asks a person "
                       f"({_chance(model.review_threshold)}) and the point where it joins records on its own "
                       f"({_chance(model.link_threshold)}).")
    return reasons


def _chance(probability: float) -> str:
    return f"{math.floor(probability * 100)} in 100"


def open_pairs(core: LinkerCore, limit: int = 200) -> tuple[list[dict[str, Any]], int]:
    """The open pairs, one per two citizens (their strongest record pair, the others listed in
    ``also``), strongest first, at most ``limit``; and how many such pairs are open. A pair whose
    records are already one citizen (a merge settled it) is not shown. Hold the linker's lock."""
    index = core.index
    items: list[dict[str, Any]] = []
    groups: dict[frozenset[str | None], dict[str, Any] | None] = {}
    for (left, right), weight in sorted(index.review.items(), key=lambda kv: (-kv[1], kv[0])):
        citizens = frozenset((index.citizen_of(left), index.citizen_of(right)))
        if len(citizens) == 1:
            continue
        probability = core.model.probability(weight)
        if citizens in groups:
            shown = groups[citizens]
            if shown is not None:
                shown["also"].append({"left": left, "right": right, "chance": _chance(probability)})
            continue
        if len(items) >= limit:
            groups[citizens] = None  # counted, not shown
            continue
        explanation = [f.__dict__ for f in core.model.explain(core.values(left), core.values(right))]
        records = [record_view(core, left), record_view(core, right)]
        item = {
            "left": left, "right": right, "pair_key": f"{left}|{right}", "match_weight": weight,
            "match_probability": probability, "chance": _chance(probability), "strength": strength(probability),
            "agencies": sorted({records[0]["agency"], records[1]["agency"]}),
            "explanation": explanation, "records": records,
            "findings": [f.as_dict() for f in compare(records[0]["person"], records[1]["person"])],
            "why": why_asked(core, left, right, probability, explanation),
            "notes": list(core.review_notes.get(f"{left}|{right}", [])), "also": [],
        }
        items.append(item)
        groups[citizens] = item
    return items, len(groups)


def pairs_between(core: LinkerCore, left: str, right: str, action: str, same: bool | None) -> list[tuple[str, str]]:
    """The record pairs one decision on the screen stands for: "different people" keeps apart every
    open pair between the two citizens (else the next card would ask about the same two people
    again), and its undo takes all of them back; "same person", "not sure" and their undo, the pair.
    Hold the linker's lock."""
    index = core.index
    pair = (left, right) if left < right else (right, left)
    citizens = {index.citizen_of(left), index.citizen_of(right)}
    if len(citizens) != 2:
        return [pair]
    if action == "decide" and same is False:
        between = [p for p in index.review if {index.citizen_of(p[0]), index.citizen_of(p[1])} == citizens]
    elif action == "undo" and pair in index.cannot_link:
        between = [p for p in index.cannot_link if {index.citizen_of(p[0]), index.citizen_of(p[1])} == citizens]
    else:
        return [pair]
    return [pair, *sorted(p for p in between if p != pair)]
