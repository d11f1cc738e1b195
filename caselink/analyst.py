"""The analyst's Python API: a purpose topic as a pandas DataFrame.

    from caselink.analyst import read_purpose
    members = read_purpose("planning")                 # one row per released member record
    members = read_purpose("research", since="7d")     # only views released in the last 7 days
    members.to_parquet("planning.parquet")

A purpose topic is compacted and keyed by citizen (or pseudonym): the latest value per key is the
current view, a tombstone means it was retracted, so retracted citizens are not in the frame.
"""

from __future__ import annotations

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


def current_views(purpose: str, settings: Settings | None = None) -> dict[str, dict[str, Any]]:
    """The live GatedCase per citizen reference on ``caselink.cases.<purpose>``."""

    serde = default_serde()
    latest: dict[str, dict[str, Any] | None] = {}
    for msg in read_to_end(settings or get_settings(), [purpose_topic(purpose)]):
        latest[msg.key().decode()] = None if msg.value() is None else serde.decode(msg.value(), expect="GatedCase")[1]
    return {k: v for k, v in latest.items() if v is not None}


def read_purpose(purpose: str, since: str | datetime | None = None, settings: Settings | None = None) -> pd.DataFrame:
    """One row per released member record, its fields as columns; ``since`` keeps views released at or after it."""

    cutoff = parse_since(since) if isinstance(since, str) else since
    rows = []
    for view in current_views(purpose, settings).values():
        if cutoff is not None and view["released_at"] < cutoff:
            continue
        for m in view["members"]:
            rows.append({
                "citizen_ref": view["citizen_ref"], "purpose": view["purpose"], "basis": view["basis"],
                "pseudonymised": view["pseudonymised"], "key_id": view["key_id"],
                "policy_version": view["policy_version"], "released_at": view["released_at"],
                "agency": m["agency"], "record_ref": m["record_ref"], "n_cases": len(m["cases"]),
                "case_types": ", ".join(sorted({c["case_type"] or "?" for c in m["cases"]})), **m["fields"],
            })
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=BASE_COLUMNS)
    return frame.sort_values(["citizen_ref", "agency", "record_ref"], ignore_index=True)


def export(frame: pd.DataFrame, path: str | Path) -> Path:
    """Parquet or CSV, by the file's extension."""
    path = Path(path)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    elif path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        raise ValueError(f"export to .parquet or .csv, not {path.suffix or 'no extension'}")
    return path
