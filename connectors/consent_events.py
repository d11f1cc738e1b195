"""Building ConsentEvents: one place for the CLI, the HTTP endpoint and FHIR Consent resources."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

CONSENT_NAMESPACE = uuid.UUID("6a1d2c57-93c4-4f0e-9a43-1f3b8e1e7c10")


def subject_from(citizen: str | None = None, record: str | None = None,
                 identifier: str | None = None) -> dict[str, Any]:
    """Exactly one of: a citizen id, ``agency:record id``, or ``scheme:value``."""
    given = [x for x in (citizen, record, identifier) if x]
    if len(given) != 1:
        raise ValueError("give exactly one subject: a citizen id, an agency:record or a scheme:value identifier")
    subject: dict[str, Any] = {"kind": "CITIZEN", "citizen_id": None, "agency": None, "source_record_id": None,
                               "scheme": None, "value": None}
    if citizen:
        subject["citizen_id"] = citizen
    elif record:
        if ":" not in record:
            raise ValueError(f"a record subject is agency:record_id, not {record!r}")
        subject.update(kind="RECORD", agency=record.split(":", 1)[0], source_record_id=record.split(":", 1)[1])
    else:
        assert identifier is not None
        if ":" not in identifier:
            raise ValueError(f"an identifier subject is scheme:value, not {identifier!r}")
        subject.update(kind="IDENTIFIER", scheme=identifier.split(":", 1)[0], value=identifier.split(":", 1)[1])
    return subject


def consent_event(subject: dict[str, Any], purpose: str, permit: bool, recorded_by: str, *,
                  consent_id: str | None = None, national_opt_out: bool = False, basis: str | None = None,
                  agencies: list[str] | None = None, fields: list[str] | None = None,
                  valid_from: datetime | None = None, valid_to: datetime | None = None,
                  withdrawn: bool = False, recorded_at: datetime | None = None) -> dict[str, Any]:
    recorded_at = recorded_at or datetime.now(UTC)
    consent_id = consent_id or str(uuid.uuid4())
    status = "WITHDRAWN" if withdrawn else "ACTIVE"
    return {
        "event_id": str(uuid.uuid5(CONSENT_NAMESPACE, f"{consent_id}|{status}|{recorded_at.isoformat()}")),
        "consent_id": consent_id, "status": status, "subject": subject, "purpose": purpose,
        "decision": "PERMIT" if permit else "DENY", "national_opt_out": national_opt_out, "basis": basis,
        "agencies": agencies or [], "fields": fields or [], "valid_from": valid_from, "valid_to": valid_to,
        "recorded_by": recorded_by, "recorded_at": recorded_at,
    }


def withdrawal_of(event: dict[str, Any], recorded_by: str, at: datetime | None = None) -> dict[str, Any]:
    """The same consent, withdrawn: same id and subject, a later ``recorded_at``."""
    at = at or datetime.now(UTC)
    return {**event, "event_id": str(uuid.uuid5(CONSENT_NAMESPACE, f"{event['consent_id']}|WITHDRAWN|{at}")),
            "status": "WITHDRAWN", "recorded_by": recorded_by, "recorded_at": at}
