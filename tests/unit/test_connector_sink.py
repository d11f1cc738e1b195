"""A connector must not report success for events the broker never acknowledged."""

from typing import Any

import caselink.connectors.base as base
import pytest
from caselink.connectors.base import ConnectorSink
from confluent_kafka import KafkaException

from caselink.core.kafka import idempotent_producer
from caselink.core.settings import KafkaSettings, Settings

NOWHERE = Settings(kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"))  # nothing listens on port 1


def test_an_undelivered_event_fails_the_flush_with_its_error(monkeypatch: Any) -> None:
    # The sink's own producer, with only the message timeout shortened: the event times out, and
    # only the failure callback (delivery reports are for errors only) can tell the sink.
    monkeypatch.setattr(base, "idempotent_producer", lambda settings, **conf: idempotent_producer(
        settings, **conf, **{"message.timeout.ms": 300, "log_level": 0}))
    sink = ConnectorSink(NOWHERE, "t-undelivered", "health")
    sink.send_event({"event_id": "e1", "agency": "health", "source_record_id": "R1", "source_version": 1,
                     "op": "DELETE", "occurred_at": 0, "emitted_at": 0, "person": None, "cases": [], "source": {}})
    with pytest.raises(KafkaException, match=r"1 failed.*timed out"):
        sink.flush(10)
    assert sink.stats.failed == 1 and sink.stats.produced == 1


def test_a_sink_makes_no_producer_until_it_sends() -> None:
    """So that a process that only hands a file to workers can fork them (connectors/files.py)."""
    sink = ConnectorSink(NOWHERE, "t", "health")
    sink.flush()
    assert not sink.started
