"""`caselink connector ...`: run a connector from its mapping file, show where connectors got to."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from caselink.output import emit, err_console, fail

# Each command imports what it drives inside its body, so that `caselink --help` and every other
# command start without loading settings, Kafka clients, pandas or Faust (CLI start-up time,
# docs/benchmarks.md). Imports for type annotations only sit under TYPE_CHECKING.

connector_app = typer.Typer(help="Agency connectors: load extracts into Kafka.", no_args_is_help=True)


@connector_app.command("run")
def run(
    mapping_file: Path,
    path: Annotated[Path | None, typer.Option(help="file or folder (default: the mapping's source.path)")] = None,
    name: Annotated[str | None, typer.Option(help="connector name (checkpoint key)")] = None,
    watch: Annotated[bool, typer.Option(help="keep watching a folder (files) or streaming changes (postgres)")] = False,
    pattern: Annotated[str, typer.Option(help="file glob when watching")] = "*",
    restart: Annotated[bool, typer.Option(help="ignore the checkpoint and load from the start")] = False,
    metrics_port: Annotated[int, typer.Option(help="serve Prometheus metrics on this port (0: off)")] = 0,
    workers: Annotated[int, typer.Option(min=1, help="file loads: processes to map and encode in "
                                                    "(each takes the records that hash to it)")] = 1,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Load a CSV/JSONL extract (or watch a folder) through the agency's mapping."""
    import sys

    from caselink.connectors.files import FileConnector, SourceMismatchError, resolve_source_path
    from caselink.connectors.mapping import MappingError, load_mapping
    from caselink.core.settings import get_settings

    settings = get_settings()
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=settings.worker.web_host)
    try:
        mapping = load_mapping(mapping_file)
    except MappingError as exc:
        fail(str(exc))
    kind = mapping.source.get("kind", "csv")
    if kind == "postgres":
        from caselink.connectors.postgres import PostgresCdcConnector

        src = mapping.source
        missing = [k for k in ("dsn", "table", "slot") if not src.get(k)]
        if missing:
            fail(f"{mapping_file}: source needs {', '.join(missing)} for kind postgres "
                 "(the password comes from PGPASSWORD, never the file)")
        cdc = PostgresCdcConnector(settings, mapping, src["dsn"], src["table"], src["slot"], name=name)
        stats = cdc.run(until_idle=not watch)
        emit(stats.__dict__, as_json, f"snapshot {stats.snapshot_rows} rows, {stats.changes} changes -> "
             f"{stats.events} events, {stats.dead_letters} dead letters, {stats.reconnects} reconnects")
        return
    if kind == "debezium":
        from caselink.connectors.debezium import DebeziumConnector

        topic = mapping.source.get("topic")
        if not topic:
            fail(f"{mapping_file}: source needs topic for kind debezium (Debezium's <prefix>.<schema>.<table>)")
        dbz = DebeziumConnector(settings, mapping, str(topic), name=name)
        dstats = dbz.run(until_idle=not watch)
        emit(dstats.__dict__, as_json, f"{dstats.messages} messages: {dstats.snapshot_rows} snapshot rows, "
             f"{dstats.changes} changes, {dstats.deletes} deletes, {dstats.tombstones} tombstones -> "
             f"{dstats.events} events, {dstats.dead_letters} dead letters")
        return
    if kind not in ("csv", "jsonl"):
        fail(f"{mapping_file}: source.kind {kind!r} is not one of csv, jsonl, postgres, debezium")
    connector = FileConnector(settings, mapping, name=name)
    target = resolve_source_path(mapping, path)
    if not target.exists():
        fail(f"no such file or folder: {target}")
    try:
        if watch or target.is_dir():
            reports = connector.watch(target, pattern, workers=workers)
            emit([r.__dict__ for r in reports], as_json, f"{len(reports)} file(s) loaded")
            return
        report = connector.load_parallel(target, workers, progress=not as_json and sys.stderr.isatty(),
                                         resume=not restart)
    except SourceMismatchError as exc:
        fail(str(exc))
    for warning in report.warnings:
        err_console.print(f"[yellow]warning[/]: {warning}", highlight=False)
    for d in report.damaged_checkpoints:
        err_console.print(f"[yellow]damaged checkpoint skipped[/]: {d['topic']}@{d['offset']} key {d['key']!r}: "
                          f"{d['reason']}", highlight=False)
    emit(report.__dict__, as_json,
         f"{report.path}: {report.rows} rows -> {report.events} events, {report.dead_letters} dead letters "
         f"in {report.seconds:.1f}s ({report.rows / max(report.seconds, 1e-9):,.0f} rows/s"
         + (f", {report.workers} workers)" if report.workers > 1 else ")")
         + (f"; resumed after row {report.resumed_from}" if report.resumed_from else ""))
    if report.rows and not report.events:
        fail(f"every one of the {report.rows:,} rows became a dead letter: `caselink dlq show --stage connector` "
             "says why; fix the mapping, then `caselink dlq redrive --mapping` the fixed file")


@connector_app.command("slots")
def slots(
    dsn: Annotated[str, typer.Option(help="libpq connection string (password from PGPASSWORD)")],
    prefix: Annotated[str, typer.Option(help="only slots whose name starts with this")] = "",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Logical replication slots and the WAL each holds back; inactive ones were left behind."""
    from caselink.connectors.postgres import leftover_slots

    rows = leftover_slots(dsn, prefix)
    emit(rows, as_json, "\n".join(f"{r['slot']}: {'active' if r['active'] else 'INACTIVE (left behind?)'}, "
                                  f"holding {r['retained_wal_bytes']:,} bytes of WAL" for r in rows) or "no slots")


@connector_app.command("status")
def status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every connector's last checkpoint, per agency, and any checkpoint value skipped as damaged."""
    from dataclasses import asdict

    from caselink.connectors.checkpoints import Damaged, read_checkpoints
    from caselink.core.settings import get_settings

    settings = get_settings()
    latest: dict[str, dict] = {}
    damaged: list[Damaged] = []
    for agency in settings.agencies:
        latest.update({name: cp for name, cp in read_checkpoints(settings, agency, damaged=damaged).items() if cp})
    lines = []
    for name, cp in sorted(latest.items()):
        for file, state in cp.get("files", {}).items():
            lines.append(f"{name}: {Path(file).name} rows {state['rows']} "
                         f"{'complete' if state.get('complete') else 'in progress'} at {state.get('at')}")
    lines += [f"damaged checkpoint skipped: {d.topic}@{d.offset} key {d.key!r}: {d.reason}" for d in damaged]
    emit({"checkpoints": latest, "damaged": [asdict(d) for d in damaged]}, as_json,
         "\n".join(lines) or "no connector checkpoints yet")
