"""PostgreSQL change data capture through logical decoding, with the slot as the checkpoint.

On first start the connector creates a logical replication slot (built-in ``test_decoding``
output plugin, so nothing needs installing on the server), then loads a snapshot of the table;
from then on it reads the slot's changes. Inserts and updates become UPSERTs, deletes become
DELETEs, and the WAL position (LSN) is the ``source_version``, so snapshot rows and later changes
order themselves. The slot is advanced only after Kafka acknowledged the events before that
position, so a crash or a PostgreSQL restart re-reads, never skips. Changes of other tables are
passed over; rows the mapping cannot handle go to dead letters.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from caselink.connectors.base import ConnectorSink, person_event
from caselink.connectors.mapping import AgencyMapping, RowError
from caselink.schemas.dead_letters import dead_letter

from caselink.core.settings import Settings

_CHANGE = re.compile(r"^table (?P<table>[^:]+): (?P<op>INSERT|UPDATE|DELETE): (?P<rest>.*)$", re.S)
_COLUMN = re.compile(r"(?P<name>[^\s\[]+)\[(?P<type>[^\]]+)\]:(?P<value>'(?:[^']|'')*'|null|\S+)")


def lsn_number(lsn: str) -> int:
    high, low = lsn.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def parse_change(data: str) -> tuple[str, str, dict[str, str | None]] | None:
    """(table, op, columns) of one test_decoding line; None for BEGIN/COMMIT."""
    m = _CHANGE.match(data)
    if not m:
        return None
    rest = m.group("rest")
    if "new-tuple:" in rest:  # UPDATE with old key shown: keep the new values
        rest = rest.split("new-tuple:", 1)[1]
    columns: dict[str, str | None] = {}
    for col in _COLUMN.finditer(rest):
        value = col.group("value")
        if value == "null":
            columns[col.group("name")] = None
        elif value.startswith("'"):
            columns[col.group("name")] = value[1:-1].replace("''", "'")
        else:
            columns[col.group("name")] = value
    return m.group("table"), m.group("op"), columns


@dataclass
class CdcStats:
    snapshot_rows: int = 0
    changes: int = 0
    events: int = 0
    dead_letters: int = 0
    reconnects: int = 0


class PostgresCdcConnector:
    def __init__(self, settings: Settings, mapping: AgencyMapping, dsn: str, table: str, slot: str,
                 name: str | None = None) -> None:
        self.mapping, self.dsn, self.slot = mapping, dsn, slot
        self.table = table if "." in table else f"public.{table}"
        self.name = name or f"postgres:{mapping.agency}:{slot}"
        self.sink = ConnectorSink(settings, self.name, mapping.agency)
        self.stats = CdcStats()

    # ------------------------------------------------------------------ setup
    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn, autocommit=True)

    def ensure_slot(self) -> bool:
        """Create the slot and load the snapshot if this is the first start; True if it did."""
        with self._connect() as conn:
            exists = conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (self.slot,)).fetchone()
            if exists:
                return False
            created = conn.execute("SELECT lsn FROM pg_create_logical_replication_slot(%s, 'test_decoding')",
                                   (self.slot,)).fetchone()
            assert created is not None  # the function returns one row
            (lsn,) = created
            # Changes after the slot's consistent point start *at* that LSN: snapshot rows sit just below.
            version = lsn_number(str(lsn)) - 1
            conn.autocommit = False  # a server-side cursor streams the table inside one transaction
            with conn.cursor(name="caselink_snapshot") as cur:
                cur.execute(f"SELECT * FROM {self.table}")
                names = [d.name for d in cur.description or []]
                for number, values in enumerate(cur, start=1):
                    row = {k: None if v is None else str(v) for k, v in zip(names, values, strict=True)}
                    self._emit(row, "INSERT", version, f"{self.table} snapshot row {number}")
                    self.stats.snapshot_rows += 1
                conn.commit()
        self.sink.flush()
        return True

    # ------------------------------------------------------------------ streaming
    def _changes(self, conn: psycopg.Connection[Any], batch: int) -> Iterator[tuple[str, str]]:
        rows = conn.execute("SELECT lsn::text, data FROM pg_logical_slot_peek_changes(%s, NULL, %s)",
                            (self.slot, batch)).fetchall()
        yield from rows

    def poll_once(self, batch: int = 5000) -> int:
        """Read up to ``batch`` changes, publish them, then advance the slot. Returns changes read."""
        with self._connect() as conn:
            last = None
            n = 0
            for lsn, data in self._changes(conn, batch):
                n += 1
                last = lsn
                parsed = parse_change(data)
                if parsed is None:
                    continue
                table, op, columns = parsed
                if table != self.table:
                    continue
                self.stats.changes += 1
                self._emit(columns, op, lsn_number(lsn), f"{self.table} @ {lsn}")
            if last is not None:
                self.sink.flush()  # everything up to ``last`` is on Kafka ...
                conn.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (self.slot, last))  # ... so move on
            return n

    def run(self, stop_after: float | None = None, idle_sleep: float = 0.2, until_idle: bool = False,
            stop: threading.Event | None = None) -> CdcStats:
        """Snapshot if new, then stream until stopped; reconnects when PostgreSQL goes away."""
        deadline = time.monotonic() + stop_after if stop_after else None
        snapshot_done = False
        while (deadline is None or time.monotonic() < deadline) and not (stop and stop.is_set()):
            try:
                if not snapshot_done:
                    self.ensure_slot()
                    snapshot_done = True
                read = self.poll_once()
                if read == 0:
                    if until_idle:
                        break
                    time.sleep(idle_sleep)
            except psycopg.OperationalError:
                self.stats.reconnects += 1
                time.sleep(1.0)
        self.sink.flush()
        return self.stats

    def _emit(self, columns: dict[str, str | None], op: str, version: int, origin: str) -> None:
        try:
            if op == "DELETE":
                record_id = self.mapping.record_id.scalar(columns, "record_id")
                if record_id is None:
                    raise RowError("record_id", "a delete without the key column (set REPLICA IDENTITY)")
                mapped = self.mapping.apply({k: v for k, v in columns.items() if v is not None})
                mapped.deleted = True
            else:
                mapped = self.mapping.apply({k: v for k, v in columns.items() if v is not None})
            mapped.version = version
            event = person_event(self.mapping, mapped, version, {"connector": self.name, "lsn": origin},
                                 datetime.now(UTC))
            self.sink.send_event(event)
            self.stats.events += 1
        except (RowError, ValueError) as exc:
            payload = repr(columns).encode()
            self.sink.send_dead_letter(dead_letter(origin, "connector", exc, payload))
            self.stats.dead_letters += 1


def leftover_slots(dsn: str, prefix: str = "") -> list[dict[str, Any]]:
    """Replication slots that hold WAL back: inactive ones are what a removed connector left behind."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT slot_name, active, pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) "
            "FROM pg_replication_slots WHERE slot_type = 'logical' AND slot_name LIKE %s", (prefix + "%",)).fetchall()
    return [{"slot": s, "active": a, "retained_wal_bytes": int(b or 0)} for s, a, b in rows]
