"""End to end through stock Kafka tools: PostgreSQL -> Debezium -> caselink -> consent gate ->
purpose topic -> Debezium's JDBC sink -> the analysts' PostgreSQL table.

Every part is real: a PostgreSQL server (the agency's database and the analysts'), the broker, the
schema registry, a stock Kafka Connect worker running Debezium's PostgreSQL source (pgoutput) and
JDBC sink from Maven Central, caselink's Debezium mapping, the worker (normalise + link) and the
consent gate as processes. A row inserted, updated and deleted in the agency's table arrives,
changes and disappears in the analysts' table; every Kafka value on the way is decoded with
confluent-kafka's stock AvroDeserializer against the registry.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from caselink.connectors.debezium import DebeziumConnector
from caselink.connectors.mapping import parse_mapping
from caselink.infra.connect_api import debezium_postgres, debezium_topic, jdbc_sink, put_connector, wait_running
from caselink.infra.connect_runtime import LocalConnect
from caselink.infra.postgres import LocalPostgres
from caselink.infra.topics import (
    LINK_DECISIONS_TOPIC,
    LINK_INPUT_TOPIC,
    LINKED_CASES_TOPIC,
    person_events_topic,
    purpose_topic,
)
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from caselink.core.settings import Settings
from caselink.demo import start_gate, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MAPPING = parse_mapping({
    "agency": "housing", "record_id": "tenant_id",
    "fields": {"given_names": "forename", "family_name": "surname", "date_of_birth": "dob", "sex": "sex",
               "addresses": [{"lines": "address", "postcode": "postcode"}]},
}, "housing-debezium.yaml")
PURPOSE = "safeguarding"  # releases every linked citizen of every agency, no consent needed (bundled policy)


def wait_for(what: str, condition: Callable[[], Any], timeout: float = 120.0,
             diagnose: Callable[[], str] = lambda: "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s; {diagnose()}")
        time.sleep(0.5)


def where_things_are(settings: Settings, topics: list[str], connect_url: str) -> str:
    """Message counts per topic and the connectors' states, for a failure's message."""
    from caselink.infra.connect_api import status

    c = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": "diagnose"})
    counts = {}
    for topic in topics:
        meta = c.list_topics(topic, timeout=10).topics.get(topic)
        counts[topic] = sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                            for p in (meta.partitions if meta else {}))
    c.close()
    states = {}
    for name in ("agency-housing", f"sink-{PURPOSE}"):
        try:
            st = status(connect_url, name)
            states[name] = [st["connector"]["state"]] + [
                t["state"] + " " + " | ".join(line for line in t.get("trace", "").splitlines()
                                              if "Caused by" in line or "Exception" in line)[:1500]
                for t in st["tasks"]]
        except Exception as exc:  # noqa: BLE001 - a diagnosis, never a failure of its own
            states[name] = [str(exc)[:200]]
    return f"messages {counts}; connectors {states}"


@pytest.fixture
def postgres() -> Iterator[LocalPostgres]:
    directory = Path(tempfile.mkdtemp(prefix="caselink-e2e-pg-"))
    pg = LocalPostgres(directory).start()
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE tenant (tenant_id integer PRIMARY KEY, forename text, surname text, dob date, "
                     "sex text, address text, postcode text)")
        conn.execute("CREATE DATABASE analysts")
    try:
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def connect(pipeline_settings: Settings, schema_registry: str, tmp_path: Path) -> Iterator[str]:
    worker = LocalConnect(Settings().infra, tmp_path / "connect", pipeline_settings.kafka.bootstrap_servers,
                          schema_registry)
    worker.start()
    try:
        yield worker.url
    finally:
        worker.stop()


def analysts_rows(pg: LocalPostgres, table: str) -> list[dict[str, Any]]:
    with psycopg.connect(pg.dsn.replace("dbname=postgres", "dbname=analysts"), autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
        if not exists or exists[0] is None:
            return []
        cur = conn.execute(f"SELECT * FROM {table}")
        names = [d.name for d in cur.description or []]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def stock_decode_all(settings: Settings, registry_url: str, topics: list[str]) -> dict[str, int]:
    """Every value on ``topics`` through confluent-kafka's own AvroDeserializer; count per topic."""
    deserializer = AvroDeserializer(SchemaRegistryClient({"url": registry_url, "timeout": 10}))
    counts: dict[str, int] = {}
    c = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": "stock-reader",
                  "enable.auto.commit": False, "isolation.level": "read_committed"})
    try:
        for topic in topics:
            meta = c.list_topics(topic, timeout=30).topics[topic]
            for p in meta.partitions:
                lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
                if hi <= lo:
                    continue
                c.assign([TopicPartition(topic, p, lo)])
                idle_since = time.monotonic()
                # Until the position passes the end (a transaction's commit marker takes an offset
                # of its own: the gate writes purpose topics in transactions).
                while c.position([TopicPartition(topic, p)])[0].offset < hi:
                    msg = c.poll(1)
                    if msg is None:
                        assert time.monotonic() - idle_since < 15, f"{topic}[{p}] stalled before {hi}"
                        continue
                    idle_since = time.monotonic()
                    assert msg.error() is None, msg.error()
                    if msg.value() is None:  # a tombstone (a delete's, a retraction's): no value to decode
                        continue
                    value = deserializer(msg.value(), SerializationContext(topic, MessageField.VALUE))
                    assert isinstance(value, dict), f"{topic}@{msg.offset()} decoded to {value!r}"
                    counts[topic] = counts.get(topic, 0) + 1
    finally:
        c.close()
    return counts


@pytest.mark.timeout(900)
def test_a_row_travels_from_the_agency_database_to_the_analysts_table(
        pipeline_settings: Settings, schema_registry: str, postgres: LocalPostgres, connect: str) -> None:
    settings = pipeline_settings
    table = "cases_" + PURPOSE
    sql = psycopg.connect(postgres.dsn, autocommit=True)
    # A row already there before capture starts: Debezium's snapshot (op r).
    sql.execute("INSERT INTO tenant VALUES (1, 'Amelia', 'Okafor', '1984-02-29', 'F', '1 High St', 'LS1 4AB')")

    put_connector(connect, "agency-housing", debezium_postgres(postgres.dsn, "tenant", "housingdb", "housing_e2e",
                                                               schema_registry))
    wait_running(connect, "agency-housing")
    source_topic = debezium_topic("housingdb", "tenant")
    stop = threading.Event()
    dbz = DebeziumConnector(settings, MAPPING, source_topic, name="housing-e2e")
    reader = threading.Thread(target=dbz.run, kwargs={"stop": stop}, daemon=True)
    reader.start()
    worker = start_worker(settings.model_copy(update={"linkage": settings.linkage.model_copy(
        update={"bundled_model": True})}), app_id="e2e")
    gate = start_gate(settings, app_id="e2e")
    try:
        put_connector(connect, f"sink-{PURPOSE}", jdbc_sink(purpose_topic(PURPOSE),
                                                            postgres.dsn.replace("dbname=postgres", "dbname=analysts"),
                                                            table, schema_registry))
        wait_running(connect, f"sink-{PURPOSE}")

        # Insert: the snapshot row and a new one both land.
        sql.execute("INSERT INTO tenant VALUES (2, 'Tomasz', 'Nowak', '1971-11-05', 'M', '9 Mill Lane', 'M1 2CD')")
        topics = [source_topic, person_events_topic("housing"), LINK_INPUT_TOPIC, LINKED_CASES_TOPIC,
                  purpose_topic(PURPOSE), "caselink.dead-letters"]
        rows = wait_for("two citizens in the analysts' table", lambda: len(r := analysts_rows(postgres, table)) == 2
                        and r, 240, lambda: where_things_are(settings, topics, connect) + f"; {dbz.stats}")
        assert {r["purpose"] for r in rows} == {PURPOSE}
        released = {r["citizen_ref"]: r["released_at"] for r in rows}

        # Update: the view is released again; the row is replaced, not added to.
        sql.execute("UPDATE tenant SET surname = 'Nowak-Smith', address = '10 Mill Lane' WHERE tenant_id = 2")
        wait_for("the updated view in the table", lambda: any(
            r["released_at"] != released.get(r["citizen_ref"]) for r in analysts_rows(postgres, table)), 120)
        assert len(analysts_rows(postgres, table)) == 2

        # Delete: the record leaves its citizen, the gate retracts (a tombstone) and the row goes.
        sql.execute("DELETE FROM tenant WHERE tenant_id = 2")
        remaining = wait_for("the deleted citizen's row gone", lambda: len(r := analysts_rows(postgres, table)) == 1
                             and r, 120)
        assert remaining[0]["citizen_ref"] in released
        assert dbz.stats.snapshot_rows == 1 and dbz.stats.changes == 2 and dbz.stats.deletes == 1
        assert dbz.stats.tombstones >= 1 and dbz.stats.dead_letters == 0
    finally:
        stop.set()
        reader.join(30)
        gate.stop()
        worker.stop()
        sql.close()

    counts = stock_decode_all(settings, schema_registry, [
        source_topic, person_events_topic("housing"), LINK_INPUT_TOPIC, LINKED_CASES_TOPIC, LINK_DECISIONS_TOPIC,
        purpose_topic(PURPOSE)])
    assert counts[source_topic] == 4  # r, c, u, d
    assert counts[person_events_topic("housing")] == 4
    assert counts[purpose_topic(PURPOSE)] >= 3
