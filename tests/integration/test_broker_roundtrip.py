"""Every event contract survives a trip through the real broker."""

import pytest
from caselink.schemas import SCHEMA_NAMES, UndecodableEventError, default_serde
from confluent_kafka import Consumer, Producer

from tests.samples import sample

pytestmark = pytest.mark.integration


def test_every_schema_round_trips_through_kafka(kafka_cluster: str, make_topic) -> None:
    topic = make_topic("roundtrip")
    serde = default_serde()
    producer = Producer({"bootstrap.servers": kafka_cluster, "enable.idempotence": True, "acks": "all"})
    for name in SCHEMA_NAMES:
        producer.produce(topic, serde.encode(name, sample(name)), key=name.encode())
    assert producer.flush(30) == 0

    consumer = Consumer({"bootstrap.servers": kafka_cluster, "group.id": topic, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    received = {}
    for _ in range(60):
        msg = consumer.poll(1.0)
        if msg is None or msg.error():
            if len(received) == len(SCHEMA_NAMES):
                break
            continue
        name, record = serde.decode(msg.value(), topic=msg.topic(), partition=msg.partition(), offset=msg.offset())
        assert msg.key().decode() == name
        received[name] = record
        if len(received) == len(SCHEMA_NAMES):
            break
    consumer.close()
    assert received == {name: sample(name) for name in SCHEMA_NAMES}


def test_garbage_on_a_topic_raises_with_its_offset(kafka_cluster: str, make_topic) -> None:
    topic = make_topic("garbage")
    producer = Producer({"bootstrap.servers": kafka_cluster})
    producer.produce(topic, default_serde().encode("DeadLetter", sample("DeadLetter")))
    producer.produce(topic, b"not avro at all")
    producer.flush(30)
    consumer = Consumer({"bootstrap.servers": kafka_cluster, "group.id": topic, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    messages = []
    for _ in range(30):
        msg = consumer.poll(1.0)
        if msg is not None and not msg.error():
            messages.append(msg)
        if len(messages) == 2:
            break
    consumer.close()
    default_serde().decode(messages[0].value())
    bad = messages[1]
    with pytest.raises(UndecodableEventError) as err:
        default_serde().decode(bad.value(), topic=bad.topic(), partition=bad.partition(), offset=bad.offset())
    assert f"{topic}[0]@1" in str(err.value)
