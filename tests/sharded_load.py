"""Load for the sharded index's tests on Kafka: records, their changes, and reviewers' verdicts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from caselink.infra.topics import LINK_INPUT_TOPIC, person_events_topic
from caselink.schemas import default_serde
from confluent_kafka import Producer

from caselink.core.settings import Settings
from tests.events import synthetic_person_event

AT = datetime(2026, 11, 2, tzinfo=UTC)


def publish_changes(settings: Settings, items: list[dict[str, Any]], start: int, stop: int, changes: bool) -> int:
    """Synthetic records ``start`` to ``stop``; with ``changes``, then a second version of every
    tenth record and a delete of every twenty-fifth. Returns how many events were sent."""
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers, "enable.idempotence": True})
    serde = default_serde()
    sent = 0
    for i in range(start, stop):
        item = items[i]
        producer.produce(person_events_topic(item["agency"]), synthetic_person_event(i, item),
                         key=f"{item['agency']}:{item['source_record_id']}".encode())
        sent += 1
    for i, item in enumerate(items if changes else []):
        key = f"{item['agency']}:{item['source_record_id']}".encode()
        fields = {"agency": item["agency"], "source_record_id": item["source_record_id"], "occurred_at": AT,
                  "emitted_at": AT, "cases": [], "source": {}}
        if i % 10 == 0:
            person = {**item["person"], "family_name": (item["person"].get("family_name") or "") + "s"}
            producer.produce(person_events_topic(item["agency"]), serde.encode("PersonEvent", {
                **fields, "event_id": f"u{i}", "source_version": 2, "op": "UPSERT", "person": person}), key=key)
            sent += 1
        elif i % 25 == 0:
            producer.produce(person_events_topic(item["agency"]), serde.encode("PersonEvent", {
                **fields, "event_id": f"d{i}", "source_version": 3, "op": "DELETE", "person": None}), key=key)
            sent += 1
    assert producer.flush(60) == 0
    return sent


def publish_verdicts(settings: Settings, pairs: list[tuple[str, str]]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers, "enable.idempotence": True})
    serde = default_serde()
    for i, (a, b) in enumerate(pairs):
        action = "undo" if i % 3 == 2 else "decide"
        producer.produce(LINK_INPUT_TOPIC, serde.encode("ReviewDecision", {
            "decision_id": f"r{i}", "left_record": a, "right_record": b, "same_person": i % 2 == 0,
            "decided_by": "test", "reason": None, "decided_at": AT, "action": action}), key=f"{a}|{b}".encode())
    assert producer.flush(60) == 0
