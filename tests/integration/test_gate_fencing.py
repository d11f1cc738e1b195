"""What the partitioned gate's safety rests on, checked against the real broker and client: a
transaction that carries a consumer group's read positions with a generation the group has since
left behind is refused, and nothing it wrote reaches a read_committed reader (KIP-447).

A partitioned gate that lost its partitions without noticing (stopped past its session timeout)
holds such a generation; ``GateLoop._fence`` sends it with every transaction."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaException, Producer, TopicPartition

from caselink.core.kafka import consumer as kafka_consumer
from caselink.core.settings import Settings

pytestmark = [pytest.mark.integration]


def _until(condition: Callable[[], bool], pump: Callable[[], None], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s")
        pump()


def _committed_values(settings: Settings, topic: str) -> list[bytes]:
    reader = kafka_consumer(settings, f"fence-reader-{uuid.uuid4().hex[:8]}", **{
        "isolation.level": "read_committed", "enable.partition.eof": False})
    try:
        reader.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        found: list[bytes] = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            found += [m.value() for m in reader.consume(100, timeout=0.2) if not m.error()]
        return found
    finally:
        reader.close()


def test_a_transaction_with_a_stale_generation_is_refused_and_its_records_never_read(
        settings: Settings, make_topic: Callable[..., str]) -> None:
    shared, out = make_topic("fence-in", partitions=2), make_topic("fence-out")
    group = f"fence-{uuid.uuid4().hex[:8]}"
    member = {"enable.partition.eof": False, "session.timeout.ms": 10000, "heartbeat.interval.ms": 1000,
              "partition.assignment.strategy": "cooperative-sticky"}
    first, second = kafka_consumer(settings, group, **member), kafka_consumer(settings, group, **member)
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers,
                         "transactional.id": f"fence-{uuid.uuid4().hex[:8]}", "enable.idempotence": True})
    try:
        first.subscribe([shared])
        _until(lambda: len(first.assignment()) == 2, lambda: first.poll(0.2) and None)
        stale = first.consumer_group_metadata()
        second.subscribe([shared])  # a rebalance: the group moves to a later generation

        def both() -> None:
            first.poll(0.1)
            second.poll(0.1)

        _until(lambda: len(first.assignment()) == 1 and len(second.assignment()) == 1, both)
        producer.init_transactions(30)

        producer.begin_transaction()
        producer.produce(out, b"from the stale member")
        producer.flush(30)
        with pytest.raises(KafkaException) as refused:
            producer.send_offsets_to_transaction([TopicPartition(shared, 0, 1)], stale, 30)
            producer.commit_transaction(30)
        assert refused.value.args[0].txn_requires_abort() or refused.value.args[0].fatal()
        producer.abort_transaction(30)

        both()
        producer.begin_transaction()
        producer.produce(out, b"from the member as it is now")
        producer.send_offsets_to_transaction([TopicPartition(shared, 0, 1)], first.consumer_group_metadata(), 30)
        producer.commit_transaction(30)

        assert _committed_values(settings, out) == [b"from the member as it is now"]
    finally:
        first.close()
        second.close()
