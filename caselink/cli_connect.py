"""`caselink connect ...`: stock connectors on the local Kafka Connect worker (`caselink infra up --full`).

These only PUT configurations (infra/connect_api.py) on the worker's REST API: the same an
operator would send with curl to their own worker.
"""

from __future__ import annotations

from typing import Annotated

import typer

from caselink.core.settings import get_settings
from caselink.output import emit, fail

connect_app = typer.Typer(help="Debezium sources and JDBC sinks on the local Kafka Connect worker.",
                          no_args_is_help=True)


def _urls() -> tuple[str, str]:
    from caselink.core.cluster import ServiceState
    from caselink.schemas.registry import RegistryError, registry_url

    settings = get_settings()
    state = ServiceState.load(settings.infra.run_dir / "connect.json")
    if state is None or not state.alive:
        fail("no Kafka Connect worker: start one with `caselink infra up --full`")
        raise SystemExit(1)
    try:
        return state.url, registry_url(settings)
    except RegistryError as exc:
        fail(str(exc))
        raise SystemExit(1) from None


@connect_app.command("debezium")
def debezium(
    name: Annotated[str, typer.Argument(help="connector name")],
    dsn: Annotated[str, typer.Option(help="the agency database (libpq DSN or postgresql:// URL)")],
    table: Annotated[str, typer.Option(help="schema.table to capture")],
    topic_prefix: Annotated[str, typer.Option(help="the change topic is <prefix>.<schema>.<table>")],
    slot: Annotated[str, typer.Option(help="the replication slot (and <slot>_publication)")] = "",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Debezium's PostgreSQL source (pgoutput) for one table; a caselink mapping of kind debezium reads it."""
    from caselink.infra.connect_api import ConnectError, debezium_postgres, debezium_topic, put_connector, wait_running

    connect_url, registry = _urls()
    try:
        put_connector(connect_url, name, debezium_postgres(dsn, table, topic_prefix, slot or name.replace("-", "_"),
                                                           registry))
        seconds = wait_running(connect_url, name)
    except ConnectError as exc:
        fail(str(exc))
    topic = debezium_topic(topic_prefix, table)
    emit({"connector": name, "topic": topic, "seconds_to_running": round(seconds, 2)}, as_json,
         f"{name} running in {seconds:.1f}s; changes of {table} on {topic}")


@connect_app.command("sink")
def sink(
    purpose: Annotated[str, typer.Argument(help="the purpose whose topic (caselink.cases.<purpose>) to land")],
    dsn: Annotated[str, typer.Option(help="the analysts' database (libpq DSN or postgresql:// URL)")],
    table: Annotated[str, typer.Option(help="the table (made and evolved by the sink)")] = "",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Debezium's JDBC sink: a purpose topic into a PostgreSQL table; a retraction deletes the row."""
    from caselink.infra.connect_api import ConnectError, jdbc_sink, put_connector, wait_running
    from caselink.infra.topics import purpose_topic

    connect_url, registry = _urls()
    name = f"caselink-sink-{purpose}"
    try:
        put_connector(connect_url, name, jdbc_sink(purpose_topic(purpose), dsn, table or f"cases_{purpose}",
                                                   registry))
        seconds = wait_running(connect_url, name)
    except ConnectError as exc:
        fail(str(exc))
    emit({"connector": name, "seconds_to_running": round(seconds, 2)}, as_json,
         f"{name} running in {seconds:.1f}s: {purpose_topic(purpose)} -> {table or f'cases_{purpose}'}")
