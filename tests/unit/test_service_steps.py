"""The pure steps of the HTTP ingest and the worker's web API, without a server or a broker."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from caselink.connectors.http_ingest import ConsentIn, consent_event_of, namespaced, person_event_of
from caselink.connectors.mapping import MappedRow
from caselink.schemas import default_serde
from caselink.streams.app import jsonable, review_decisions, review_request

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def test_a_pushed_row_without_a_version_is_versioned_by_its_arrival() -> None:
    event = person_event_of("health", MappedRow("H1", None, False, {"family_name": "Lee"}, []), [], None, NOW)
    assert event["source_version"] == int(NOW.timestamp() * 1000)
    assert event["occurred_at"] == NOW and event["source"] == {"connector": "http"}
    deleted = person_event_of("health", MappedRow("H1", 7, True, {"family_name": "Lee"}, []), [{"case_id": "c"}],
                              None, NOW)
    assert (deleted["op"], deleted["person"], deleted["cases"], deleted["source_version"]) == ("DELETE", None, [], 7)


def test_a_consent_names_exactly_one_subject_and_its_id_is_the_agencys() -> None:
    consent = ConsentIn.model_validate({"subject": {"source_record_id": "H1"}, "purpose": "research",
                                        "decision": "DENY", "recorded_by": "clinic", "consent_id": "c1"})
    event = namespaced("health", consent_event_of("health", consent))
    assert event["subject"]["kind"] == "RECORD" and event["subject"]["agency"] == "health"
    assert event["consent_id"] == "health:c1" and namespaced("health", event)["consent_id"] == "health:c1"
    default_serde().encode("ConsentEvent", event, check=True)
    two = ConsentIn.model_validate({"subject": {"citizen_id": "C1", "source_record_id": "H1"}, "purpose": "*",
                                    "decision": "DENY", "recorded_by": "clinic"})
    with pytest.raises(ValueError, match="exactly one"):
        consent_event_of("health", two)


def test_a_review_decision_is_recorded_under_who_signed_in_with_the_pair_in_order() -> None:
    review = review_request({"left": "b:2", "right": "a:1", "same_person": False, "decided_by": "typed"})
    assert (review.left, review.right, review.action) == ("a:1", "b:2", "decide")
    (decision,) = review_decisions(review, [(review.left, review.right)], "A. Reviewer", NOW)
    assert (decision["left_record"], decision["right_record"], decision["decided_by"]) == ("a:1", "b:2", "A. Reviewer")
    assert decision["action"] is None
    default_serde().encode("ReviewDecision", decision, check=True)
    with pytest.raises(ValueError):
        review_request({"left": "a", "right": "b", "same_person": "yes"})
    with pytest.raises(KeyError):
        review_request({"left": "a"})


def test_a_review_request_says_what_is_wrong_with_it() -> None:
    with pytest.raises(ValueError, match="action"):
        review_request({"left": "a", "right": "b", "action": "maybe"})
    with pytest.raises(ValueError, match="note"):
        review_request({"left": "a", "right": "b", "action": "not_sure", "reason": "  "})
    with pytest.raises(ValueError, match="2,000"):
        review_request({"left": "a", "right": "b", "same_person": True, "reason": "x" * 2001})
    unsure = review_request({"left": "a", "right": "b", "action": "not_sure", "reason": "ask the school"})
    (decision,) = review_decisions(unsure, [("a", "b")], "A. Reviewer", NOW)
    assert decision["action"] == "not_sure" and decision["reason"] == "ask the school"
    default_serde().encode("ReviewDecision", decision, check=True)


def test_jsonable_writes_moments_in_utc() -> None:
    assert jsonable({"at": [NOW], "n": 1}) == {"at": ["2026-11-30T12:00:00+00:00"], "n": 1}
