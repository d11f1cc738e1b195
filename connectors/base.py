"""What every connector shares: the idempotent producer, event building, dead letters, checkpoints.

Delivery guarantee: events are produced with idempotence and acks=all; a checkpoint (the source
position) is written to the agency's compacted checkpoint topic (``connectors/checkpoints.py``)
only after every event before it is acknowledged. A crash therefore re-sends at most the rows since the last
checkpoint, never skips one; the re-sent events carry the same event_id and source_version, so
the linker absorbs them.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from caselink.connectors.mapping import AgencyMapping, MappedRow
from caselink.infra.topics import DEAD_LETTER_TOPIC, connector_checkpoints_topic, person_events_topic
from caselink.schemas import default_serde
from caselink.schemas.dead_letters import dead_letter_message
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from prometheus_client import Counter

from caselink.core.ids import uuid5_text
from caselink.core.kafka import idempotent_producer, produce
from caselink.core.settings import Settings

EVENT_NAMESPACE = uuid.UUID("6f1c3a52-7d1e-4c55-9a38-1d2f6a9e4b10")

EVENTS_OUT = Counter("caselink_connector_events_total", "PersonEvents produced", ["connector", "agency"])
DEAD_LETTERS = Counter("caselink_connector_dead_letters_total", "rows sent to dead letters", ["connector", "reason"])


def event_id(agency: str, record_id: str, version: int, op: str) -> str:
    """Deterministic, so a re-sent row is recognisably the same event."""
    return uuid5_text(EVENT_NAMESPACE, f"{agency}:{record_id}:{version}:{op}")


def now_utc() -> datetime:
    return datetime.now(UTC)


def person_event(
    mapping: AgencyMapping, row: MappedRow, fallback_version: int, source: dict[str, str], occurred_at: datetime
) -> dict[str, Any]:
    version = row.version if row.version is not None else fallback_version
    op = "DELETE" if row.deleted else "UPSERT"
    return {
        "event_id": event_id(mapping.agency, row.record_id, version, op),
        "agency": mapping.agency,
        "source_record_id": row.record_id,
        "source_version": version,
        "op": op,
        "occurred_at": occurred_at,
        "emitted_at": now_utc(),
        "person": None if row.deleted else row.person,
        "cases": [] if row.deleted else row.cases,
        "source": source,
    }


@dataclass
class DeliveryStats:
    produced: int = 0
    dead_letters: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


AGENCY_HEADER = "caselink.dead-letter.agency"  # on a connector's dead letters: whose row it is


class ConnectorSink:
    """Produces one connector's events and dead letters, and keeps its checkpoint."""

    def __init__(self, settings: Settings, name: str, agency: str) -> None:
        self.settings = settings
        self.name = name
        self.agency = agency
        self.topic = person_events_topic(agency)
        self.serde = default_serde()
        self.stats = DeliveryStats()
        self._events_out = EVENTS_OUT.labels(name, agency)
        self._counted = 0  # events already added to the Prometheus counter

    @cached_property
    def producer(self) -> Producer:
        """Made on first use: a connector that only hands a file to worker processes has none,
        so it can fork them (librdkafka's threads do not survive a fork)."""
        # Delivery reports for failures only: a Python callback per acknowledged message cost the
        # file connector time, and success is what flush() already confirms. One
        # callback for the producer, rather than one attached to every message.
        return idempotent_producer(self.settings, **{"delivery.report.only.error": True, "linger.ms": 50,
                                                     "on_delivery": self._on_delivery})

    @property
    def started(self) -> bool:
        return "producer" in self.__dict__

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self.stats.failed += 1
            self.stats.errors.append(str(err))

    def send_event(self, event: dict[str, Any]) -> None:
        value = self.serde.encode("PersonEvent", event)
        self._produce(self.topic, f"{event['agency']}:{event['source_record_id']}".encode(), value)
        self.stats.produced += 1
        if self.stats.produced - self._counted >= 1000:  # the counter takes a lock: not per event
            self._count()

    def _count(self) -> None:
        self._events_out.inc(self.stats.produced - self._counted)
        self._counted = self.stats.produced

    def send_dead_letter(self, letter: dict[str, Any], headers: list[tuple[str, bytes]] | None = None,
                         key: bytes | None = None) -> None:
        """The failed row or message's own bytes, its reasons in Kafka Connect's error headers
        (schemas/dead_letters.py), and the agency whose connector wrote it (``AGENCY_HEADER``:
        `caselink dlq redrive --mapping` must not re-drive one agency's row through another's
        mapping); ``key``: the failed message's own key, if it had one."""
        dead_key, value, letter_headers = dead_letter_message(letter, key)
        self._produce(DEAD_LETTER_TOPIC, dead_key or letter["origin"].encode(), value or b"",
                      [*letter_headers, *(headers or []), (AGENCY_HEADER, self.agency.encode())])
        self.stats.dead_letters += 1
        DEAD_LETTERS.labels(self.name, letter["error_type"]).inc()

    def _produce(self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]] | None = None) -> None:
        if headers:
            produce(self.producer, topic, key, value, headers=headers)
        else:
            produce(self.producer, topic, key, value)

    def flush(self, timeout: float = 60.0) -> None:
        self._count()
        if not self.started:
            return
        remaining = self.producer.flush(timeout)
        if remaining or self.stats.failed:
            raise KafkaException(
                f"{remaining} event(s) unacknowledged, {self.stats.failed} failed: "
                f"{'; '.join(self.stats.errors[-3:])}"
            )

    def commit_checkpoint(self, position: dict[str, Any]) -> None:
        """Record ``position`` once everything produced before it is acknowledged."""
        self.flush()
        self.producer.produce(connector_checkpoints_topic(self.agency), json.dumps(position).encode(),
                              key=self.name.encode())
        self.flush()
