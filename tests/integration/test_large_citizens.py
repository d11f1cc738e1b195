"""A citizen too large for one message, and one that would grow past the size guard, against a real
broker: the linker publishes what fits, holds further links for review, and goes on linking."""

from __future__ import annotations

import pytest
from caselink.infra.topics import LINK_INPUT_TOPIC, LINKED_CASES_TOPIC, REVIEW_TOPIC, person_events_topic
from caselink.schemas import default_serde
from confluent_kafka import Producer

from caselink.core.kafka import read_to_end
from caselink.core.settings import Settings
from caselink.demo import start_worker, wait_for_worker
from tests.events import encoded_person_event

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GUARD = 40
HISTORY = "x" * 9_000  # each member carries about 27 KB of case history: 40 members are over 1 MB


def _event(i: int, person: dict, cases: list[dict]) -> bytes:
    return encoded_person_event("health", f"H{i}", person, cases=cases, event_id=f"e{i}")


def test_a_huge_citizen_is_published_within_the_message_size_and_the_linker_goes_on(
        pipeline_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = pipeline_settings
    monkeypatch.setenv("CASELINK_LINKAGE__MAX_CITIZEN_RECORDS", str(GUARD))
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers, "enable.idempotence": True})
    ann = {"given_names": "Ann", "family_name": "Lee", "date_of_birth": "1990-04-03",
           "identifiers": {"nhs_number": "9434765919"},
           "addresses": [{"lines": ["12 Mill Lane"], "postcode": "LS6 2AB", "locality": "Leeds"}]}
    total = GUARD + 20
    for i in range(total):
        cases = [{"case_id": f"C{i}-{j}", "case_type": "attendance", "status": HISTORY} for j in range(3)]
        producer.produce(person_events_topic("health"), _event(i, ann, cases), key=f"health:H{i}".encode())
    # After the huge citizen, an ordinary record of someone else.
    bob = {"given_names": "Bob", "family_name": "Ray", "date_of_birth": "1971-02-13",
           "addresses": [{"lines": ["3 Oak Road"], "postcode": "M1 1AA", "locality": "Manchester"}]}
    producer.produce(person_events_topic("health"), _event(total, bob, []), key=f"health:H{total}".encode())
    assert producer.flush(60) == 0

    worker = start_worker(settings, app_id="large-test")
    try:
        wait_for_worker(worker, total + 1, timeout=180)
        health = worker.health()
        assert health["status"] == "ok", health
        assert health["applied"] == total + 1 == len(read_to_end(settings, [LINK_INPUT_TOPIC]))
        assert health["size_guard_refusals"] > 0
    finally:
        worker.stop()

    serde = default_serde()
    latest: dict[str, bytes | None] = {}
    for msg in read_to_end(settings, [LINKED_CASES_TOPIC]):
        assert msg.value() is None or len(msg.value()) <= settings.kafka.max_message_bytes
        latest[msg.key().decode()] = msg.value()
    views = [serde.decode(v, expect="LinkedCase")[1] for v in latest.values() if v is not None]
    members = {v["citizen_id"]: len(v["members"]) + v["members_omitted"] for v in views}
    # No citizen past the guard; the largest one's view was cut to the message size and says so.
    assert max(members.values()) <= GUARD
    assert sum(members.values()) == total + 1
    assert any(v["members_omitted"] > 0 for v in views)
    assert any(m["source_record_id"] == f"H{total}" for v in views for m in v["members"])  # Bob, linked after
    # The links the guard refused wait for a person, saying why.
    reviews = [serde.decode(m.value(), expect="ReviewItem")[1] for m in read_to_end(settings, [REVIEW_TOPIC])]
    guarded = [r for r in reviews if r["reason"] and "linkage.max_citizen_records" in r["reason"]]
    assert guarded, [r["reason"] for r in reviews][:5]
