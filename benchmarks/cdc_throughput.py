"""PostgreSQL change data capture throughput: changes/s from the table into Kafka.

    python benchmarks/cdc_throughput.py [--rows 50000]

Starts its own PostgreSQL (logical WAL) and Kafka, creates the slot on an empty table, inserts
--rows rows (one transaction per 1,000), then updates every row, and times the connector draining
the slot into Kafka (mapping, Avro, idempotent acks=all producer, slot advanced after each ack).
Results: benchmarks/results/cdc_throughput.json.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import psycopg
from caselink.connectors.mapping import parse_mapping
from caselink.connectors.postgres import PostgresCdcConnector
from caselink.infra.postgres import LocalPostgres
from common import local_broker, save

MAPPING = {"agency": "housing", "record_id": "tenant_id",
           "fields": {"given_names": "forename", "family_name": "surname", "date_of_birth": "dob",
                      "addresses": [{"lines": "address", "postcode": "postcode"}]}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50_000)
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
            with psycopg.connect(pg.dsn) as conn:
                for start in range(0, args.rows, 1000):
                    conn.execute("INSERT INTO tenant SELECT i, 'Ann', 'Lee' || i::text, date '1990-01-01' + "
                                 "(i %% 9000), i::text || ' High Street', 'LS1 1AA' "
                                 "FROM generate_series(%s::int, %s::int) i", (start, min(start + 999, args.rows - 1)))
                    conn.commit()
                conn.execute("UPDATE tenant SET surname = surname || 'x'")
                conn.commit()
            started = time.perf_counter()
            stats = connector.run(until_idle=True)
            seconds = time.perf_counter() - started
    finally:
        pg.stop()
        shutil.rmtree(pg_dir, ignore_errors=True)
    rate = stats.changes / seconds
    print(f"PostgreSQL CDC: {stats.changes:,} changes -> {stats.events:,} events in {seconds:.1f}s = "
          f"{rate:,.0f} changes/s")
    print(f"saved {save('cdc_throughput', {'changes': stats.changes, 'seconds': seconds, 'changes_per_s': rate})}")


if __name__ == "__main__":
    main()
