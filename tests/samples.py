"""One valid example of every event type, for round-trip tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

NOW = datetime(2026, 11, 25, 12, 0, 0, 123000, tzinfo=UTC)

PERSON = {
    "given_names": "Amelia Rose",
    "family_name": "O'Neill-Smith",
    "other_names": ["Smith"],
    "date_of_birth": "2014-03-07",
    "sex": "F",
    "identifiers": {"nhs_number": "9434765919", "upn": "A123456789012"},
    "addresses": [{"lines": ["12 Mill Lane"], "locality": "Leeds", "region": None, "postcode": "LS6 2AB",
                   "country": "GB", "valid_from": "2020-01-01", "valid_to": None}],
    "phones": ["07700 900123"],
    "emails": [],
    "quality": [{"field": "addresses[0].valid_to", "problem": "'ongoing' is not a date in format %Y-%m-%d; left out",
                 "raw": "ongoing"}],
}
CASE = {"case_id": "SC-1", "case_type": "child_in_need", "status": "open", "opened_at": "2026-10-01",
        "closed_at": None, "sensitivity": "restricted"}
FIELD_WEIGHTS = [{"field": "family_name", "level": "exact", "weight": 8.5},
                 {"field": "date_of_birth", "level": "transposed", "weight": 3.1}]


def sample(name: str) -> dict[str, Any]:
    samples: dict[str, dict[str, Any]] = {
        "PersonEvent": {
            "event_id": "e-1", "agency": "social_care", "source_record_id": "SC-0001", "source_version": 3,
            "op": "UPSERT", "occurred_at": NOW, "emitted_at": NOW, "person": PERSON, "cases": [CASE],
            "source": {"file": "children.csv", "row": "2"},
        },
        "ConsentEvent": {
            "event_id": "e-2", "consent_id": "c-1", "status": "ACTIVE",
            "subject": {"kind": "IDENTIFIER", "citizen_id": None, "agency": None, "source_record_id": None,
                        "scheme": "nhs_number", "value": "9434765919"},
            "purpose": "research", "decision": "DENY", "national_opt_out": True, "basis": None,
            "agencies": [], "fields": [], "valid_from": NOW, "valid_to": None,
            "recorded_by": "gp-surgery", "recorded_at": NOW,
        },
        "LinkedCase": {
            "citizen_id": "C1", "version": 2, "merged_from": ["C7"], "model_version": "m1", "updated_at": NOW,
            "members_omitted": 0,
            "members": [{"agency": "health", "source_record_id": "H1", "source_version": 1, "match_weight": 14.2,
                         "linked_at": NOW, "person": PERSON, "cases": [CASE]}],
        },
        "LinkDecision": {
            "decision_id": "d-1", "record_key": "health:H1", "event_id": "e-1", "source_version": 1,
            "outcome": "MERGED", "citizen_id": "C1", "affected_citizens": ["C7"],
            "candidates": [{"record_key": "police:P9", "citizen_id": "C7", "match_weight": 11.0,
                            "match_probability": 0.999, "field_weights": FIELD_WEIGHTS}],
            "reason": None, "model_version": "m1", "decided_at": NOW, "candidates_omitted": 0,
        },
        "ReviewItem": {
            "pair_key": "health:H1|police:P9", "left_record": "health:H1", "right_record": "police:P9",
            "left_citizen": "C1", "right_citizen": "C7", "match_weight": 2.0, "match_probability": 0.8,
            "field_weights": FIELD_WEIGHTS, "status": "OPEN", "model_version": "m1", "created_at": NOW,
            "reason": None,
        },
        "GatedCase": {
            "citizen_ref": "p:abc", "purpose": "research", "basis": "consent", "pseudonymised": True,
            "key_id": "k1", "policy_version": "p1", "released_at": NOW,
            "members": [{"agency": "health", "record_ref": "p:def", "fields": {"sex": "F"}, "cases": [CASE]}],
        },
        "Disclosure": {
            "disclosure_id": "x-1", "citizen_id": "C1", "purpose": "research", "action": "RETRACT",
            "agencies": ["health"], "fields": ["sex"], "basis": "consent", "reason": "consent withdrawn",
            "overrides": ["obj-1"], "policy_version": "p1", "recipient_topic": "caselink.cases.research",
            "recipient_key": "k1.abc", "at": NOW,
        },
        "DeadLetter": {
            "origin": "agency.health.person-events[0]@17", "origin_topic": "agency.health.person-events",
            "origin_partition": 0, "origin_offset": 17, "origin_key": b"health:H1", "stage": "normalise",
            "error_type": "UndecodableEventError", "error": "bad bytes", "payload": b"\x00\x01",
            "attempts": 1, "failed_at": NOW,
        },
        "ReviewDecision": {
            "decision_id": "r-1", "left_record": "health:H1", "right_record": "police:P9", "same_person": True,
            "decided_by": "analyst@council", "reason": "same NHS number on paper file", "decided_at": NOW,
            "action": None,
        },
    }
    return samples[name]
