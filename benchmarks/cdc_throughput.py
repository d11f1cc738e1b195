"""PostgreSQL change data capture throughput: changes/s from the table into Kafka, two ways.

    python benchmarks/cdc_throughput.py [--rows 50000] [--no-debezium]

Starts its own PostgreSQL (logical WAL), Kafka and schema registry, and a Kafka Connect worker with
Debezium. Both captures get their slot on the empty table first (Debezium with
``snapshot.mode=no_data``, then paused), then --rows rows are inserted (one transaction per
1,000) and every row updated, so each has the same 2 x --rows changes waiting in its slot.

1. test_decoding (connectors/postgres.py): the connector drains its slot into PersonEvents
   (mapping, Avro, idempotent acks=all producer, slot advanced after each ack).
2. Debezium: the connector is resumed, and the time runs until caselink's Debezium mapping
   (connectors/debezium.py, running beside it as it would in production) has produced every
   PersonEvent; also when Debezium's own change topic had them all (pgoutput -> Avro -> Kafka).
Results: benchmarks/results/cdc_throughput.json.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from caselink.connectors.mapping import parse_mapping
from caselink.connectors.postgres import PostgresCdcConnector
from caselink.infra.postgres import LocalPostgres
from common import local_broker, save

MAPPING = {"agency": "housing", "record_id": "tenant_id",
           "fields": {"given_names": "forename", "family_name": "surname", "date_of_birth": "dob",
                      "addresses": [{"lines": "address", "postcode": "postcode"}]}}


def topic_size(settings: Any, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": "bench-size"})
    try:
        meta = c.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            return 0
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in meta.partitions)
    finally:
        c.close()


def debezium_run(settings: Any, pg: LocalPostgres, directory: Path, load: Any, changes: int) -> dict[str, Any]:
    """Debezium's capture of the same changes (see the module's docstring); its figures."""
    import os
    import threading

    from caselink.connectors.debezium import DebeziumConnector
    from caselink.infra.connect_api import debezium_postgres, debezium_topic, pause, put_connector, resume, wait_running
    from caselink.infra.connect_runtime import LocalConnect
    from caselink.infra.service import rss_mb

    registry = os.environ["CASELINK_REGISTRY__URL"]
    worker = LocalConnect(settings.infra, directory / "connect", settings.kafka.bootstrap_servers, registry)
    state = worker.start()
    try:
        put_connector(worker.url, "bench", debezium_postgres(pg.dsn, "tenant", "bench", "bench_debezium", registry,
                                                             snapshot_mode="no_data"))
        wait_running(worker.url, "bench")
        pause(worker.url, "bench")
        time.sleep(3)  # the task stopped: nothing read from here on until resumed
        load()
        topic = debezium_topic("bench", "tenant")
        mapping = parse_mapping({**MAPPING, "agency": "housing"}, "bench-debezium")
        connector = DebeziumConnector(settings, mapping, topic, name="bench-debezium")
        before_events = topic_size(settings, "agency.housing.person-events")
        stop = threading.Event()
        reader = threading.Thread(target=connector.run, kwargs={"stop": stop}, daemon=True)
        started = time.perf_counter()
        resume(worker.url, "bench")
        reader.start()
        topic_done = None
        while connector.stats.events < changes:
            if topic_done is None and topic_size(settings, topic) >= changes:
                topic_done = time.perf_counter() - started
            time.sleep(0.05)
            if time.perf_counter() - started > 1800:
                raise RuntimeError(f"Debezium: {connector.stats} after 30 min")
        seconds = time.perf_counter() - started
        stop.set()
        reader.join(30)
        assert topic_size(settings, "agency.housing.person-events") - before_events >= changes
        return {"changes": changes, "seconds": seconds, "changes_per_s": changes / seconds,
                "change_topic_seconds": topic_done or seconds,
                "change_topic_per_s": changes / (topic_done or seconds),
                "connect_start_s": state.seconds_to_ready, "connect_rss_mb": rss_mb(state.pid)}
    finally:
        worker.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--no-debezium", action="store_true")
    args = parser.parse_args()
    pg_dir = Path(tempfile.mkdtemp(prefix="caselink-cdc-pg-"))  # its own folder: the server may run as postgres
    pg = LocalPostgres(pg_dir).start()
    try:
        with local_broker(["housing"]) as (settings, _directory):
            with psycopg.connect(pg.dsn, autocommit=True) as conn:
                conn.execute("CREATE TABLE tenant (tenant_id integer PRIMARY KEY, forename text, surname text, "
                             "dob date, address text, postcode text)")
            connector = PostgresCdcConnector(settings, parse_mapping(MAPPING, "bench"), pg.dsn, "tenant", "bench")
            connector.run(until_idle=True)

            def load() -> None:
                with psycopg.connect(pg.dsn) as conn:
                    for start in range(0, args.rows, 1000):
                        conn.execute("INSERT INTO tenant SELECT i, 'Ann', 'Lee' || i::text, date '1990-01-01' + "
                                     "(i %% 9000), i::text || ' High Street', 'LS1 1AA' FROM "
                                     "generate_series(%s::int, %s::int) i", (start, min(start + 999, args.rows - 1)))
                        conn.commit()
                    conn.execute("UPDATE tenant SET surname = surname || 'x'")
                    conn.commit()

            debezium: dict[str, Any] = {}
            if args.no_debezium:
                load()
            else:
                # Debezium's slot is made (and the connector paused) before the load, so both slots hold it.
                debezium = debezium_run(settings, pg, _directory, load, 2 * args.rows)
            started = time.perf_counter()
            stats = connector.run(until_idle=True)
            seconds = time.perf_counter() - started
    finally:
        pg.stop()
        shutil.rmtree(pg_dir, ignore_errors=True)
    rate = stats.changes / seconds
    print(f"PostgreSQL CDC, test_decoding: {stats.changes:,} changes -> {stats.events:,} events in {seconds:.1f}s = "
          f"{rate:,.0f} changes/s")
    result: dict[str, Any] = {"changes": stats.changes, "seconds": seconds, "changes_per_s": rate}
    if debezium:
        print(f"PostgreSQL CDC, Debezium (pgoutput -> Avro change topic -> caselink mapping): "
              f"{debezium['changes']:,} changes -> events in {debezium['seconds']:.1f}s = "
              f"{debezium['changes_per_s']:,.0f} changes/s (ratio to test_decoding "
              f"{debezium['changes_per_s'] / rate:.2f}); Debezium's change topic complete after "
              f"{debezium['change_topic_seconds']:.1f}s ({debezium['change_topic_per_s']:,.0f}/s); Connect worker "
              f"ready in {debezium['connect_start_s']:.1f}s, {debezium['connect_rss_mb'] or 0:.0f} MiB resident")
        result["debezium"] = debezium
    print(f"saved {save('cdc_throughput', result)}")


if __name__ == "__main__":
    main()
