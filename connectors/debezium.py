"""A Debezium change topic as an agency source: each change event through the agency's mapping.

Debezium's PostgreSQL connector (run by a stock Kafka Connect worker, infra/connect_runtime.py)
writes one topic per table; each value is an envelope, registry-framed Avro: ``before``, ``after``,
``source`` (with the WAL position ``lsn``), ``op`` (``c`` insert, ``u`` update, ``d`` delete,
``r`` a snapshot row) and ``ts_ms``; a delete is followed by a tombstone (same key, no value) for
compaction. Here:

* ``c``, ``u``, ``r``: the ``after`` image through the mapping, an UPSERT;
* ``d``: a DELETE of the record named by the ``before`` image (at least its key columns, which
  PostgreSQL's default replica identity gives);
* a tombstone: nothing (the ``d`` before it said it all), counted;
* anything that cannot be decoded or mapped: a dead letter holding the message's own bytes.

``source_version`` is the change's LSN, so a record's changes order themselves, and snapshot
rows (all at the snapshot's LSN) sit below every later change. Guarantees are the file
connector's: an idempotent producer, and the position (this connector's consumer group offsets
on the Debezium topic) committed only after every event made from the messages before it is
acknowledged. A crash re-reads at most one batch; its events carry the same event ids and
versions, and the linker absorbs them.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from caselink.connectors.base import ConnectorSink, person_event
from caselink.connectors.mapping import AgencyMapping, RowError
from caselink.schemas.dead_letters import dead_letter
from caselink.schemas.registry import GenericAvroDecoder
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from caselink.core.kafka import consumer
from caselink.core.settings import Settings

OPS = {"c": "UPSERT", "u": "UPSERT", "r": "UPSERT", "d": "DELETE"}
WAITED_OUT = (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART)


@dataclass
class DebeziumStats:
    messages: int = 0
    snapshot_rows: int = 0
    changes: int = 0
    deletes: int = 0
    tombstones: int = 0
    events: int = 0
    dead_letters: int = 0


def _text(value: Any) -> str | None:
    """A column value as the mapping reads it: text, as a CSV cell or the test_decoding capture gives it."""
    if value is None:
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal | int | float):
        return str(value)
    return str(value)


class DebeziumConnector:
    def __init__(self, settings: Settings, mapping: AgencyMapping, topic: str, name: str | None = None,
                 batch: int = 2000) -> None:
        self.mapping = mapping
        self.topic = topic
        self.name = name or f"debezium:{mapping.agency}:{topic}"
        self.group = f"caselink-{self.name.replace(':', '-')}"
        self.batch = batch
        self.sink = ConnectorSink(settings, self.name, mapping.agency)
        self.decoder = GenericAvroDecoder(self.sink.serde.registry)
        self.settings = settings
        self.stats = DebeziumStats()

    def _consumer(self, assigned: threading.Event) -> Consumer:
        c = consumer(self.settings, self.group, **{"enable.auto.commit": False, "auto.offset.reset": "earliest"})
        c.subscribe([self.topic], on_assign=lambda _c, _parts: assigned.set())
        return c

    def run(self, until_idle: bool = False, idle_s: float = 2.0, stop: threading.Event | None = None,
            stop_after: float | None = None) -> DebeziumStats:
        """Read until stopped (or, ``until_idle``, until nothing arrived for ``idle_s``)."""
        assigned = threading.Event()  # "idle" counts only once the group has given us the partitions
        c = self._consumer(assigned)
        deadline = time.monotonic() + stop_after if stop_after else None
        quiet_since = time.monotonic()
        try:
            while not (stop and stop.is_set()) and (deadline is None or time.monotonic() < deadline):
                # Before Debezium's first change the topic may not exist yet: wait for it, as Connect would.
                messages = [m for m in c.consume(self.batch, timeout=0.5)
                            if (failure := m.error()) is None or failure.code() not in WAITED_OUT]
                if not messages:
                    if not assigned.is_set():
                        quiet_since = time.monotonic()
                    elif until_idle and time.monotonic() - quiet_since > idle_s:
                        break
                    continue
                quiet_since = time.monotonic()
                self.handle(messages)
                self.sink.flush()  # every event of the batch acknowledged ...
                positions: dict[tuple[str, int], int] = {}
                for m in messages:
                    topic, partition, offset = m.topic(), m.partition(), m.offset()
                    if m.error() is None and topic is not None and partition is not None and offset is not None:
                        positions[(topic, partition)] = offset + 1
                c.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in positions.items()],
                         asynchronous=False)  # ... before the position moves past them
        finally:
            self.sink.flush()
            c.close()
        return self.stats

    def handle(self, messages: list[Message]) -> None:
        for m in messages:
            if m.error() is not None:
                raise RuntimeError(f"reading {self.topic}: {m.error()}")
            self.stats.messages += 1
            origin = f"{m.topic()}[{m.partition()}]@{m.offset()}"
            value = m.value()
            if value is None:
                self.stats.tombstones += 1
                continue
            try:
                envelope = self.decoder.decode(value)
                self._apply(envelope, origin)
            except (RowError, ValueError, KeyError, TypeError) as exc:
                self.sink.send_dead_letter(dead_letter(origin, "connector", exc, value, topic=m.topic(),
                                                       partition=m.partition(), offset=m.offset(), key=_key(m)),
                                           key=m.key())
                self.stats.dead_letters += 1

    def _apply(self, envelope: dict[str, Any], origin: str) -> None:
        op = envelope.get("op")
        if op not in OPS:
            raise ValueError(f"Debezium op {op!r} is not one of c, u, d, r")
        source = envelope.get("source") or {}
        lsn = source.get("lsn")
        if lsn is None:
            raise ValueError("a change without source.lsn (not Debezium's PostgreSQL connector?)")
        image = envelope.get("before") if op == "d" else envelope.get("after")
        if not isinstance(image, dict):
            raise ValueError(f"op {op} without its {'before' if op == 'd' else 'after'} image "
                             "(for deletes, set the table's REPLICA IDENTITY)")
        row = {k: _text(v) for k, v in image.items() if v is not None}
        version = int(lsn)
        if op == "d":
            if self.mapping.record_id.scalar(row, "record_id") is None:
                raise RowError("record_id", "a delete without the key column (set REPLICA IDENTITY)")
            mapped = self.mapping.apply(row)
            mapped.deleted = True
            self.stats.deletes += 1
        else:
            mapped = self.mapping.apply(row)
            if op == "r":
                self.stats.snapshot_rows += 1
            else:
                self.stats.changes += 1
        mapped.version = version
        occurred = source.get("ts_ms")
        occurred_at = datetime.fromtimestamp(occurred / 1000, UTC) if isinstance(occurred, int) else datetime.now(UTC)
        event = person_event(self.mapping, mapped, version,
                             {"connector": self.name, "lsn": str(lsn), "op": op, "origin": origin}, occurred_at)
        self.sink.send_event(event)
        self.stats.events += 1


def _key(m: Message) -> str | None:
    key = m.key()
    if key is None:
        return None
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return json.dumps(key.hex())
