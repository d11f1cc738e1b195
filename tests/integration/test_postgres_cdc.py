"""PostgreSQL change data capture against a real PostgreSQL server and the real broker."""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from caselink.connectors.mapping import parse_mapping
from caselink.connectors.postgres import PostgresCdcConnector, leftover_slots, lsn_number, parse_change
from caselink.infra.postgres import LocalPostgres
from caselink.infra.topics import caselink_topics, ensure_topics, person_events_topic
from caselink.schemas import default_serde

from caselink.core.kafka import read_to_end
from caselink.core.settings import Settings

pytestmark = pytest.mark.integration

MAPPING = parse_mapping({
    "agency": "housing", "record_id": "tenant_id",
    "fields": {"given_names": "forename", "family_name": "surname", "date_of_birth": "dob",
               "addresses": [{"lines": "address", "postcode": "postcode"}]},
}, "housing.yaml")


def test_parse_test_decoding_lines() -> None:
    table, op, cols = parse_change("table public.tenant: INSERT: tenant_id[integer]:7 surname[text]:'O''Neill' "
                                   "dob[date]:'1990-04-03' postcode[text]:null")
    assert (table, op) == ("public.tenant", "INSERT")
    assert cols == {"tenant_id": "7", "surname": "O'Neill", "dob": "1990-04-03", "postcode": None}
    assert parse_change("BEGIN 1234") is None
    assert lsn_number("1/0000000A") == (1 << 32) + 10


@pytest.fixture
def postgres() -> Iterator[LocalPostgres]:
    directory = Path(tempfile.mkdtemp(prefix="caselink-pg-"))
    pg = LocalPostgres(directory).start()
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE tenant (tenant_id integer PRIMARY KEY, forename text, surname text, dob date, "
                     "address text, postcode text)")
    try:
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(directory, ignore_errors=True)


def _events(settings: Settings) -> list[dict]:
    serde = default_serde()
    return [serde.decode(m.value())[1] for m in read_to_end(settings, [person_events_topic("housing")])]


def _sql(pg: LocalPostgres, *statements: str) -> None:
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def test_snapshot_then_inserts_updates_deletes(settings: Settings, admin, postgres: LocalPostgres) -> None:
    ensure_topics(admin, caselink_topics(["housing"], []))
    _sql(postgres, "INSERT INTO tenant VALUES (1, 'Ann', 'Lee', '1990-04-03', '1 High St', 'LS1 1AA')",
         "INSERT INTO tenant VALUES (2, 'Bob', 'Stone', '1971-11-30', '9 Elm Way', 'B1 1AA')")
    connector = PostgresCdcConnector(settings, MAPPING, postgres.dsn, "tenant", "caselink_housing_t1")
    connector.run(until_idle=True)
    assert connector.stats.snapshot_rows == 2
    _sql(postgres, "INSERT INTO tenant VALUES (3, 'Cy', 'Moss', '2001-01-01', '3 Oak Rd', 'M1 1AA')",
         "UPDATE tenant SET surname = 'Marsh' WHERE tenant_id = 1",
         "DELETE FROM tenant WHERE tenant_id = 2")
    connector.run(until_idle=True)
    events = [e for e in _events(settings) if e["source_record_id"] in {"1", "2", "3"}]
    latest: dict[str, dict] = {}
    for e in events:
        if e["source_record_id"] not in latest or latest[e["source_record_id"]]["source_version"] < e["source_version"]:
            latest[e["source_record_id"]] = e
    assert latest["1"]["person"]["family_name"] == "Marsh"
    assert latest["2"]["op"] == "DELETE"
    assert latest["3"]["person"]["given_names"] == "Cy"
    snapshot_version = min(e["source_version"] for e in events)
    assert all(e["source_version"] > snapshot_version for e in events if e["source_record_id"] == "3")
    # A restarted connector (same slot) reads nothing twice: the slot moved past what Kafka holds.
    again = PostgresCdcConnector(settings, MAPPING, postgres.dsn, "tenant", "caselink_housing_t1")
    again.run(until_idle=True)
    assert again.stats.events == 0 and again.stats.snapshot_rows == 0
    assert [s["slot"] for s in leftover_slots(postgres.dsn, "caselink_housing_t1")] == ["caselink_housing_t1"]


def test_postgres_restart_during_cdc_loses_nothing(settings: Settings, admin, postgres: LocalPostgres) -> None:
    ensure_topics(admin, caselink_topics(["housing"], []))
    connector = PostgresCdcConnector(settings, MAPPING, postgres.dsn, "tenant", "caselink_housing_t2")
    connector.run(until_idle=True)  # creates the slot on an empty table
    stop = threading.Event()
    runner = threading.Thread(target=lambda: connector.run(stop_after=120, idle_sleep=0.1, stop=stop))
    runner.start()
    _sql(postgres, *[f"INSERT INTO tenant VALUES ({i}, 'A{i}', 'Lee', '1990-01-01', 'x', 'LS1 1AA')"
                     for i in range(100, 300)])
    postgres.stop()  # the server goes away mid-stream ...
    postgres.resume()  # ... and comes back
    _sql(postgres, *[f"INSERT INTO tenant VALUES ({i}, 'A{i}', 'Lee', '1990-01-01', 'x', 'LS1 1AA')"
                     for i in range(300, 400)])
    wanted = {str(i) for i in range(100, 400)}
    ids: set[str] = set()
    for _ in range(120):
        ids = {e["source_record_id"] for e in _events(settings)} & wanted
        if len(ids) >= 300:
            break
        threading.Event().wait(0.5)
    stop.set()
    runner.join(timeout=70)
    assert ids == wanted
    assert connector.stats.reconnects >= 1  # it really lost the server and came back
