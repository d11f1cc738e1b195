"""Dead letters in Kafka Connect's convention, re-driven by a stock consumer and producer."""

from __future__ import annotations

import pytest
from caselink.connectors.debezium import DebeziumConnector
from caselink.connectors.mapping import parse_mapping
from caselink.infra.topics import DEAD_LETTER_TOPIC, caselink_topics, ensure_topics
from caselink.schemas.dead_letters import EXCEPTION, EXCEPTION_MESSAGE, OFFSET, PARTITION, STAGE, TOPIC
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from caselink.core.kafka import read_to_end
from caselink.core.settings import Settings

pytestmark = pytest.mark.integration

MAPPING = parse_mapping({"agency": "housing", "record_id": "tenant_id",
                         "fields": {"given_names": "forename", "family_name": "surname"}}, "housing.yaml")


def test_a_dead_letter_keeps_the_original_bytes_and_a_stock_tool_re_drives_it(
        settings: Settings, admin: AdminClient, make_topic) -> None:  # type: ignore[no-untyped-def]
    ensure_topics(admin, caselink_topics(["housing"], []))
    source = make_topic("dbz")
    original_key, original_value = b"\x00\x00\x00\x00\x07{\"tenant_id\": 1}", b"\x00\x7f\xff\xff\xf0 not Avro at all"
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    producer.produce(source, original_value, key=original_key)
    assert producer.flush(30) == 0
    before = len(read_to_end(settings, [DEAD_LETTER_TOPIC]))

    stats = DebeziumConnector(settings, MAPPING, source, name=f"dlq-{source}").run(until_idle=True, idle_s=1.0)
    assert stats.dead_letters == 1 and stats.events == 0

    letter = read_to_end(settings, [DEAD_LETTER_TOPIC])[before]
    assert (letter.key(), letter.value()) == (original_key, original_value)  # untouched
    headers = {k: v.decode() for k, v in letter.headers()}
    assert headers[TOPIC] == source and headers[PARTITION] == "0" and headers[OFFSET] == "0"
    assert headers[STAGE] == "connector" and headers[EXCEPTION] == "ValueError"
    assert "not in the registry" in headers[EXCEPTION_MESSAGE]

    # What any operator's tool does: read the letter, produce its key and value to the topic its
    # headers name. Here a plain consumer and producer, nothing of caselink's.
    c = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": "redrive"})
    c.assign([TopicPartition(DEAD_LETTER_TOPIC, letter.partition(), letter.offset())])
    msg = c.poll(10)
    c.close()
    assert msg is not None
    target = dict(msg.headers())[TOPIC].decode()
    producer.produce(target, msg.value(), key=msg.key())
    assert producer.flush(30) == 0
    again = read_to_end(settings, [source])
    assert [(m.key(), m.value()) for m in again] == [(original_key, original_value)] * 2

    # caselink's own tools read the same letter: `tail` shows its stage and reason, not "undecodable".
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "CASELINK_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
           "CASELINK_CONFIG": "/nonexistent"}
    tail = subprocess.run([sys.executable, "-m", "caselink.cli", "tail", DEAD_LETTER_TOPIC, "--json"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert tail.returncode == 0, tail.stderr
    shown = [json.loads(line) for line in tail.stdout.splitlines()]
    ours = next(x for x in shown if x["offset"] == letter.offset() and x["partition"] == letter.partition())
    assert ours["type"] == "DeadLetter" and ours["value"]["stage"] == "connector"
    assert "not in the registry" in ours["value"]["error"]
