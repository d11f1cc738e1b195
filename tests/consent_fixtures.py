"""Builders for consent-gate tests: linked cases, consent events and a fixed policy."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from caselink.schemas import default_serde
from caselink.streams.consent.gate_core import GateCore
from caselink.streams.consent.policy import Policy, bundled_policy_path, load_policy
from caselink.streams.consent.pseudonym import Pseudonymiser

T0 = datetime(2026, 11, 1, tzinfo=UTC)
KEY = b"test-key-0123456789abcdef"
_ids = itertools.count(1)


def policy() -> Any:
    return load_policy(bundled_policy_path())


def pseudonymiser(key_id: str = "k1", key: bytes = KEY) -> Pseudonymiser:
    return Pseudonymiser(key, key_id)


def member(agency: str, rid: str, weight: float = 20.0, *, given: str = "Amelia", family: str = "Okafor",
           dob: str = "2014-03-09", nhs: str | None = "9434765919", postcode: str = "LS6 2AB",
           cases: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    identifiers = {"nhs_number": nhs} if nhs else {}
    identifiers[f"{agency}_id"] = rid
    return {
        "agency": agency, "source_record_id": rid, "source_version": 1, "match_weight": weight, "linked_at": T0,
        "person": {"given_names": given, "family_name": family, "other_names": ["Smith"], "date_of_birth": dob,
                   "sex": "F", "identifiers": identifiers,
                   "addresses": [{"lines": ["12 Hyde Park Road"], "locality": "Leeds", "region": None,
                                  "postcode": postcode, "country": "GB", "valid_from": None, "valid_to": None}],
                   "phones": ["07700 900123"], "emails": ["amelia@example.org"]},
        "cases": cases if cases is not None else [
            {"case_id": f"{rid}-c1", "case_type": "referral", "status": "open", "opened_at": "2026-10-01",
             "closed_at": None, "sensitivity": "normal"}],
    }


def linked_case(citizen_id: str, members: list[dict[str, Any]], merged_from: list[str] | None = None,
                version: int = 1) -> dict[str, Any]:
    return {"citizen_id": citizen_id, "version": version, "members": members, "merged_from": merged_from or [],
            "model_version": "test", "updated_at": T0}


def encode_case(case: dict[str, Any]) -> bytes:
    return default_serde().encode("LinkedCase", case)


def consent(kind: str = "CITIZEN", *, citizen_id: str | None = None, agency: str | None = None,
            record: str | None = None, scheme: str | None = None, value: str | None = None,
            purpose: str = "research", decision: str = "PERMIT", opt_out: bool = False,
            agencies: list[str] | None = None, fields: list[str] | None = None, status: str = "ACTIVE",
            consent_id: str | None = None, recorded_at: datetime | None = None,
            valid_from: datetime | None = None, valid_to: datetime | None = None) -> dict[str, Any]:
    return {
        "event_id": f"e{next(_ids)}", "consent_id": consent_id or f"c{next(_ids)}", "status": status,
        "subject": {"kind": kind, "citizen_id": citizen_id, "agency": agency, "source_record_id": record,
                    "scheme": scheme, "value": value},
        "purpose": purpose, "decision": decision, "national_opt_out": opt_out, "basis": None,
        "agencies": agencies or [], "fields": fields or [], "valid_from": valid_from, "valid_to": valid_to,
        "recorded_by": "test", "recorded_at": recorded_at or T0 + timedelta(seconds=next(_ids)),
    }


def fed_gate(policy_: dict[str, Any], history: list[tuple[str, dict[str, Any] | None]], events: list[dict[str, Any]],
             pseudonyms: Pseudonymiser, now: datetime) -> GateCore:
    """A gate core given ``history`` (linked cases, None for a retirement) and then every consent
    event it accepts (a rejected one changes nothing, as on Kafka)."""
    core = GateCore(Policy.model_validate(policy_), pseudonyms, clock=lambda: now)
    for cid, value in history:
        core.apply_linked_case(cid, encode_case(value) if value is not None else None)
    for event in events:
        try:
            core.apply_consent(event)
        except ValueError:  # ConsentRejected
            pass
    return core
