"""Test events built one way: the PersonEvents the linker, pipeline, fault and fuzz tests send.

``event_id`` defaults to ``<agency>-<record>-<version>-<op>``; ``emitted_at`` to ``at``. A person
given as a partial dict is sent as it is (the schema's defaults fill the rest when encoded).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from caselink.schemas import default_serde

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def person_event(agency: str, record_id: str, person: dict[str, Any] | None, *, version: int = 1,
                 op: str = "UPSERT", cases: Iterable[dict[str, Any]] = (), at: datetime = T0,
                 emitted_at: datetime | None = None, event_id: str | None = None) -> dict[str, Any]:
    return {"event_id": event_id or f"{agency}-{record_id}-{version}-{op}", "agency": agency,
            "source_record_id": record_id, "source_version": version, "op": op, "occurred_at": at,
            "emitted_at": emitted_at or at, "person": person, "cases": list(cases), "source": {}}


def encoded_person_event(agency: str, record_id: str, person: dict[str, Any] | None, **fields: Any) -> bytes:
    """``person_event`` in caselink's Avro single-object encoding, as it travels on an agency topic."""
    return default_serde().encode("PersonEvent", person_event(agency, record_id, person, **fields))


def synthetic_person_event(i: int, item: dict[str, Any], at: datetime = T0) -> bytes:
    """The ``i``-th record of ``linkage.synthetic.records_for_size`` as an encoded PersonEvent."""
    return encoded_person_event(item["agency"], item["source_record_id"], item["person"], event_id=f"e{i}", at=at)
