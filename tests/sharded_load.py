"""For the sharded index's tests on Kafka: the load (records, their changes, reviewers' verdicts),
the processes' positions, and the outputs compared with the single writer's."""

from __future__ import annotations

import signal
import subprocess
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from caselink.infra.topics import (
    LINK_DECISIONS_TOPIC,
    LINK_INPUT_TOPIC,
    LINKED_CASES_TOPIC,
    REVIEW_TOPIC,
    person_events_topic,
)
from caselink.linkage.models import default_model
from caselink.schemas import default_serde
from caselink.streams.linker_core import LinkerCore
from caselink.streams.normaliser_core import packed_record
from confluent_kafka import Producer

from caselink.core.kafka import read_to_end
from caselink.core.settings import Settings
from caselink.demo import WorkerProcess
from caselink.ops import topic_ends
from tests.events import synthetic_person_event
from tests.waiting import service_json, wait_for

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


OUTPUT_TOPICS = (LINK_DECISIONS_TOPIC, LINKED_CASES_TOPIC, REVIEW_TOPIC)
Outputs = dict[tuple[str, bytes], list[bytes | None]]


def _by_key(messages: list[tuple[str, bytes, bytes | None]]) -> tuple[Outputs, int]:
    """Each topic and key's messages in order, a message repeated later left out; and the count."""
    out: Outputs = defaultdict(list)
    for topic, key, value in messages:
        if value not in out[(topic, key)]:
            out[(topic, key)].append(value)
    return dict(out), len(messages)


def assert_the_single_writers_outputs(settings: Settings, at_least: int) -> LinkerCore:
    """Every message on the decisions, linked-cases and review topics is, key by key, what the
    single writer publishes for the link input (a straight replay through the linker's core),
    repeats after a takeover aside (the linker's outputs are at-least-once). Returns that core."""
    core = LinkerCore(default_model(), max_block_size=settings.linkage.max_block_size,
                      max_citizen_records=settings.linkage.max_citizen_records)
    published = []
    for msg in read_to_end(settings, [LINK_INPUT_TOPIC], timeout=60):
        try:
            out = core.apply(msg.value(), packed=packed_record(msg.headers()))
        except ValueError:
            continue  # dead-lettered
        published += [(o.topic, o.key, o.value) for o in out if o.topic in OUTPUT_TOPICS]
    expected, expected_count = _by_key(published)
    got, count = _by_key([(m.topic(), m.key(), m.value()) for m in read_to_end(settings, list(OUTPUT_TOPICS))])
    assert got.keys() == expected.keys()
    assert all(got[k] == expected[k] for k in expected), [k for k in expected if got[k] != expected[k]][:5]
    assert count >= expected_count > at_least
    return core


def linker_position(worker: WorkerProcess) -> int:
    """How far the worker has linked the link input; -1 unless it holds the linker's role."""
    health = service_json(worker.port)
    return int(health["link_input_position"]) if health.get("role") == "linker" else -1


def kill(process: WorkerProcess) -> None:
    process.proc.send_signal(signal.SIGKILL)
    process.proc.wait()


def link_to_the_end_with_verdicts(settings: Settings, linker: WorkerProcess, items: list[dict[str, Any]],
                                  sent: int) -> None:
    """Once ``linker`` has linked every event the normaliser forwarded (of ``sent``; a few are
    unlinkable): reviewers' verdicts on two pairs of ``items`` and an undo of the first, linked too."""

    def linked_to_the_end() -> int:
        end = topic_ends(settings, [LINK_INPUT_TOPIC])[LINK_INPUT_TOPIC]
        return end if linker_position(linker) >= end else 0

    wait_for(lambda: topic_ends(settings, [LINK_INPUT_TOPIC])[LINK_INPUT_TOPIC] >= sent - 20, 180, pause=0.5)
    before = wait_for(linked_to_the_end, 240, pause=0.5)
    keys = [f"{item['agency']}:{item['source_record_id']}" for item in items[1:5]]
    publish_verdicts(settings, [(keys[0], keys[1]), (keys[2], keys[3]), (keys[0], keys[1])])  # the third an undo
    assert wait_for(linked_to_the_end, 120, pause=0.5) > before


def stop_all(processes: list[WorkerProcess]) -> None:
    """SIGTERM to every process still running (a stopped one let go first), SIGKILL after 30 s."""
    for process in processes:
        if process.proc.poll() is None:
            process.proc.send_signal(signal.SIGCONT)
            process.proc.terminate()
    for process in processes:
        try:
            process.proc.wait(30)
        except subprocess.TimeoutExpired:
            process.proc.kill()


def metric_samples(process: WorkerProcess) -> dict[str, float]:
    """The process's /metrics, each sample's value by name (labels left out)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{process.port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}
