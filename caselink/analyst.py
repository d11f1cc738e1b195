"""The analyst's Python API: a purpose topic as a pandas DataFrame.

    from caselink.analyst import read_purpose
    members = read_purpose("planning")                 # one row per released member record
    members = read_purpose("research", since="7d")     # only views released in the last 7 days
    members.to_parquet("planning.parquet")

A purpose topic is compacted and keyed by citizen (or pseudonym): the latest value per key is the
current view, a tombstone means it was retracted, so retracted citizens are not in the frame.

Columns are typed (``typed_members``): dates as dates, years and counts as integers, lists as
lists; a released field's dotted name (``identifiers.nhs_number``) becomes ``identifier_nhs_number``,
a name every tool takes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from caselink.core.kafka import read_to_end
from caselink.core.settings import Settings, get_settings
from caselink.infra.topics import purpose_topic
from caselink.ops import parse_since
from caselink.schemas import default_serde

BASE_COLUMNS = ["citizen_ref", "purpose", "basis", "pseudonymised", "key_id", "policy_version", "released_at",
                "agency", "record_ref", "n_cases", "case_types"]


LIST_FIELDS = ("other_names", "phones", "emails")


class NoSuchPurposeError(ValueError):
    """There is no topic for the purpose asked for."""


def current_views(purpose: str, settings: Settings | None = None,
                  progress: Callable[[int, int], None] | None = None) -> dict[str, dict[str, Any]]:
    """The live GatedCase per citizen reference on ``caselink.cases.<purpose>``."""

    settings = settings or get_settings()
    require_purpose_topic(purpose, settings)
    serde = default_serde()
    latest: dict[str, dict[str, Any] | None] = {}
    for msg in read_to_end(settings, [purpose_topic(purpose)], progress=progress):
        latest[msg.key().decode()] = None if msg.value() is None else serde.decode(msg.value(), expect="GatedCase")[1]
    return {k: v for k, v in latest.items() if v is not None}


def require_purpose_topic(purpose: str, settings: Settings) -> str:
    """The purpose's topic, or NoSuchPurposeError naming the purposes that have one."""
    from caselink.core.kafka import consumer
    from caselink.infra.topics import purpose_topic

    topic = purpose_topic(purpose)
    c = consumer(settings, "caselink-reader-meta")
    try:
        topics = c.list_topics(timeout=10).topics
    finally:
        c.close()
    if topic not in topics:
        known = sorted(t.removeprefix("caselink.cases.") for t in topics if t.startswith("caselink.cases."))
        raise NoSuchPurposeError(f"no purpose {purpose!r}: there is no topic {topic}; purposes with a topic: "
                                 f"{', '.join(known) or 'none (has the consent gate run?)'}")
    return topic


def why_empty(purpose: str, settings: Settings | None = None) -> str:
    """Why a purpose topic holds no views, as far as can be told from here: the policy, and the
    consent gate's own /health (an invalid policy, a missing pseudonymisation key, not running)."""
    from caselink.ops import gate_health
    from caselink.streams.consent.gate_loop import policy_path
    from caselink.streams.consent.policy import PolicyError, load_policy

    settings = settings or get_settings()
    try:
        policy = load_policy(policy_path(settings))
    except PolicyError as exc:
        return f"the consent policy does not validate, so the gate releases nothing: {exc.problems[0]}"
    if purpose not in policy.purposes:
        return f"{purpose!r} is not a purpose of the policy {policy.label} ({', '.join(sorted(policy.purposes))})"
    health = gate_health(settings)
    if health.get("status") == "unreachable":
        return (f"the consent gate does not answer at {health['url']} ({health.get('error')}): "
                "is `caselink gate` running?")
    if health.get("reason"):
        return f"the consent gate says: {health['reason']}"
    spec = policy.purposes[purpose]
    needs = "a recorded consent" if spec.consent == "required" else "a linked record of an agency it may receive"
    return (f"the consent gate ({health.get('status')}, {health.get('released', '?')} views out over all purposes) "
            f"has released nothing to {purpose}: each citizen needs {needs} ({', '.join(spec.agencies)})")


def read_purpose(purpose: str, since: str | datetime | None = None, settings: Settings | None = None,
                 progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """One row per released member record, its fields as typed columns; ``since`` keeps views
    released at or after it."""

    cutoff = parse_since(since) if isinstance(since, str) else since
    rows = []
    for view in current_views(purpose, settings, progress).values():
        if cutoff is not None and view["released_at"] < cutoff:
            continue
        for m in view["members"]:
            rows.append({
                "citizen_ref": view["citizen_ref"], "purpose": view["purpose"], "basis": view["basis"],
                "pseudonymised": view["pseudonymised"], "key_id": view["key_id"],
                "policy_version": view["policy_version"], "released_at": view["released_at"],
                "agency": m["agency"], "record_ref": m["record_ref"], "n_cases": len(m["cases"]),
                "case_types": sorted({c["case_type"] or "?" for c in m["cases"]}),
                **{column_name(k): v for k, v in m["fields"].items()},
            })
    return typed_members(pd.DataFrame(rows))


def column_name(field: str) -> str:
    """``identifiers.nhs_number`` -> ``identifier_nhs_number``: no dots, which SQL, pandas'
    attribute access and most BI tools trip over."""
    return field.replace("identifiers.", "identifier_").replace(".", "_")


def typed_members(frame: pd.DataFrame) -> pd.DataFrame:
    """The released members with each column of its own type (strings stay strings): dates of
    birth as dates (a value that is no calendar date, kept as digits upstream, is left empty),
    years and counts as integers, lists of names, phones, emails and case types as lists."""
    if frame.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in BASE_COLUMNS})
    frame = frame.sort_values(["citizen_ref", "agency", "record_ref"], ignore_index=True)
    frame["released_at"] = pd.to_datetime(frame["released_at"], utc=True)
    frame["n_cases"] = frame["n_cases"].astype("int64")
    frame["pseudonymised"] = frame["pseudonymised"].astype(bool)
    if "date_of_birth" in frame:
        given = frame["date_of_birth"].notna() & (frame["date_of_birth"] != "")
        dates = pd.to_datetime(frame["date_of_birth"], format="%Y-%m-%d", errors="coerce")
        frame.attrs["dates_not_calendar_dates"] = int((given & dates.isna()).sum())
        frame["date_of_birth"] = [d.date() if not pd.isna(d) else None for d in dates]
    if "year_of_birth" in frame:
        frame["year_of_birth"] = pd.to_numeric(frame["year_of_birth"], errors="coerce").astype("Int64")
    for name in LIST_FIELDS:
        if name in frame:
            frame[name] = [[] if not isinstance(v, str) or not v else v.split(", ") for v in frame[name]]
    return frame


def export(frame: pd.DataFrame, path: str | Path) -> Path:
    """Parquet (typed, lists as list columns) or CSV (lists as JSON arrays), by the file's extension."""
    path = Path(path)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    elif path.suffix == ".csv":
        out = frame.copy()
        for name in ("case_types", *LIST_FIELDS):
            if name in out:
                out[name] = [json.dumps(list(v)) for v in out[name]]
        out.to_csv(path, index=False)
    else:
        raise ValueError(f"export to .parquet or .csv, not {path.suffix or 'no extension'}")
    return path
