"""Kafka Connect's REST API, and the connector configurations caselink hands a stock worker.

Nothing here runs a connector: the worker does. These are the settings an operator would POST
by hand (README "With your existing Kafka tools" shows them as curl commands); `caselink connect`
puts them for the local worker.

* ``debezium_postgres``: Debezium's PostgreSQL source with ``pgoutput``, one table, its changes on
  ``<prefix>.<schema>.<table>`` as registry-framed Avro; a snapshot first (``op: r``), deletes
  followed by tombstones. ``time.precision.mode=connect`` gives dates as Avro ``date`` and
  ``decimal.handling.mode=string`` keeps numbers exact, so a caselink mapping reads them as it
  reads a CSV cell (connectors/debezium.py).
* ``jdbc_sink``: Debezium's JDBC sink landing a purpose topic (``caselink.cases.<purpose>``) in a
  table: upserts keyed by the message key (the citizen's reference, made a one-field struct by
  the stock ``HoistField$Key``), a tombstone (the gate's retraction) deletes the row. The view's
  ``members`` (an array of records holding maps) has no column type a JDBC sink writes, and no
  stock transform reaches inside an array, so ``ReplaceField$Value`` leaves it out: the table
  holds the view's own fields (citizen_ref, purpose, basis, pseudonymised, key_id,
  policy_version, released_at); the members stay on the topic for consumers that read Avro.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlparse

from caselink.infra.connect_runtime import avro_converter
from caselink.infra.topics import DEAD_LETTER_TOPIC


class ConnectError(RuntimeError):
    """The Connect worker refused or failed a connector; the message carries its reason."""


def _call(method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 30.0) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json",
                                                                           "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read()
            return json.loads(text) if text else None
    except urllib.error.HTTPError as exc:
        raise ConnectError(f"{method} {url}: {exc.code} {exc.read().decode(errors='replace')[:500]}") from None


def put_connector(connect_url: str, name: str, config: dict[str, Any]) -> Any:
    """Create or update connector ``name`` (PUT is idempotent)."""
    return _call("PUT", f"{connect_url}/connectors/{name}/config", {k: str(v) for k, v in config.items()})


def delete_connector(connect_url: str, name: str) -> None:
    try:
        _call("DELETE", f"{connect_url}/connectors/{name}")
    except ConnectError as exc:
        if " 404 " not in str(exc):
            raise


def pause(connect_url: str, name: str) -> None:
    _call("PUT", f"{connect_url}/connectors/{name}/pause")


def resume(connect_url: str, name: str) -> None:
    _call("PUT", f"{connect_url}/connectors/{name}/resume")


def status(connect_url: str, name: str) -> dict[str, Any]:
    return dict(_call("GET", f"{connect_url}/connectors/{name}/status"))


def wait_running(connect_url: str, name: str, timeout: float = 90.0) -> float:
    """Seconds until the connector and all its tasks run; ConnectError with the trace if one failed."""
    started = time.monotonic()
    while True:
        try:
            state = status(connect_url, name)
        except ConnectError:
            state = {}
        tasks = state.get("tasks") or []
        failed = [t for t in tasks if t.get("state") == "FAILED"]
        if state.get("connector", {}).get("state") == "FAILED" or failed:
            trace = (failed[0] if failed else state["connector"]).get("trace", "")
            raise ConnectError(f"connector {name} failed: {trace[:1500]}")
        if state.get("connector", {}).get("state") == "RUNNING" and tasks and all(
                t.get("state") == "RUNNING" for t in tasks):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise ConnectError(f"connector {name} not running after {timeout:.0f}s: {state}")
        time.sleep(0.3)


def _pg(dsn: str) -> dict[str, str]:
    """host, port, user, dbname, password of a libpq key=value DSN or a postgresql:// URL."""
    if dsn.startswith(("postgres://", "postgresql://")):
        u = urlparse(dsn)
        return {"host": u.hostname or "127.0.0.1", "port": str(u.port or 5432), "user": u.username or "",
                "password": u.password or "", "dbname": (u.path or "/postgres")[1:]}
    parts = dict(p.split("=", 1) for p in dsn.split())
    return {"host": parts.get("host", "127.0.0.1"), "port": parts.get("port", "5432"), "user": parts.get("user", ""),
            "password": parts.get("password", ""), "dbname": parts.get("dbname", "postgres")}


def debezium_postgres(dsn: str, table: str, topic_prefix: str, slot: str, registry_url: str,
                      snapshot_mode: str = "initial") -> dict[str, Any]:
    """Debezium's PostgreSQL source for one ``schema.table``; its topic is ``<topic_prefix>.<schema>.<table>``."""
    pg = _pg(dsn)
    table = table if "." in table else f"public.{table}"
    return {
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "tasks.max": 1,
        "plugin.name": "pgoutput",
        "database.hostname": pg["host"], "database.port": pg["port"], "database.user": pg["user"],
        "database.password": pg["password"], "database.dbname": pg["dbname"],
        "topic.prefix": topic_prefix,
        "table.include.list": table,
        "slot.name": slot,
        "publication.name": f"{slot}_publication",
        "publication.autocreate.mode": "filtered",
        "snapshot.mode": snapshot_mode,  # initial: the table's rows first (op r); no_data: changes only
        "time.precision.mode": "connect",
        "decimal.handling.mode": "string",
        "tombstones.on.delete": "true",
        # The broker creates no topic by itself: the worker makes the change topic, with the
        # cluster's default replication.
        "topic.creation.default.replication.factor": -1,
        "topic.creation.default.partitions": 1,
        **avro_converter(registry_url, "key.converter"),
        **avro_converter(registry_url, "value.converter"),
    }


def debezium_topic(topic_prefix: str, table: str) -> str:
    return f"{topic_prefix}.{table if '.' in table else 'public.' + table}"


def jdbc_url(dsn: str) -> tuple[str, str, str]:
    """(JDBC URL, user, password) of a PostgreSQL DSN."""
    pg = _pg(dsn)
    return f"jdbc:postgresql://{pg['host']}:{pg['port']}/{pg['dbname']}", pg["user"], pg["password"]


def jdbc_sink(topic: str, dsn: str, table: str, registry_url: str) -> dict[str, Any]:
    """Debezium's JDBC sink: ``topic`` (a purpose topic) into ``table``, upsert by key, tombstones delete."""
    url, user, password = jdbc_url(dsn)
    return {
        "connector.class": "io.debezium.connector.jdbc.JdbcSinkConnector",
        "tasks.max": 1,
        "topics": topic,
        "connection.url": url, "connection.username": user, "connection.password": password,
        "insert.mode": "upsert",
        "delete.enabled": "true",
        "primary.key.mode": "record_key",
        "primary.key.fields": "citizen_ref",
        "schema.evolution": "basic",
        "collection.name.format": table,
        "table.name.format": table,
        # The key is the citizen's reference as text (or a pseudonym): a string, made a one-field
        # struct (the sink takes its primary key from a struct's fields; a bare string failed with
        # a ClassCastException).
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        **avro_converter(registry_url, "value.converter"),
        "transforms": "keyStruct,dropMembers",
        "transforms.keyStruct.type": "org.apache.kafka.connect.transforms.HoistField$Key",
        "transforms.keyStruct.field": "citizen_ref",
        "transforms.dropMembers.type": "org.apache.kafka.connect.transforms.ReplaceField$Value",
        "transforms.dropMembers.exclude": "members",
        # Only committed views: the gate releases in transactions, and an aborted one (a gate killed
        # mid-transaction) is in the log too; a read_uncommitted sink would land views never released.
        "consumer.override.isolation.level": "read_committed",
        # A record the sink cannot convert or transform goes to caselink's dead letters, as Connect's
        # reporter writes them (the record's own key and value, why in __connect.errors.* headers), and
        # the sink goes on; a failure to write to the database still stops the task (Connect's rule).
        "errors.tolerance": "all",
        "errors.deadletterqueue.topic.name": DEAD_LETTER_TOPIC,
        "errors.deadletterqueue.context.headers.enable": "true",
        "errors.log.enable": "true",
    }
