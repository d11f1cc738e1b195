"""`caselink infra ...`: the local Kafka broker, and `caselink topics ...`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from caselink.kafka import admin_client, local_cluster, state_file
from caselink.output import console, emit, fail
from caselink.settings import get_settings
from infra.kafka_runtime import ClusterState, KafkaRuntimeError, LocalKafka, pid_alive
from infra.topics import caselink_topics, ensure_topics

infra_app = typer.Typer(
    help="Start, stop and inspect the local Apache Kafka (KRaft) broker.", no_args_is_help=True
)
topics_app = typer.Typer(
    help="Create or update caselink's topics as declared in infra/topics.py.", no_args_is_help=True
)


def start_local(brokers: int = 1, port: int | None = None, directory: Path | None = None) -> tuple[ClusterState, float]:
    """Start a detached local cluster and record it, so later commands find it."""
    settings = get_settings()
    started = time.monotonic()
    run_dir = directory or settings.infra.run_dir / time.strftime("run-%Y%m%d-%H%M%S")
    kafka = LocalKafka(settings.infra, run_dir, brokers=brokers, port=port,
                       progress=lambda m: console.print(f"[dim]{m}[/]"))
    state = kafka.start()
    state.save(state_file(settings))
    return state, time.monotonic() - started


@infra_app.command("up")
def up(
    brokers: Annotated[int, typer.Option(help="nodes (3 gives RF 3, min ISR 2)")] = 1,
    port: Annotated[int | None, typer.Option(help="first listener port; free ports when omitted")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Start Kafka in KRaft combined mode and wait until it answers metadata."""
    settings = get_settings()
    running = local_cluster(settings)
    if running:
        emit({"status": "already running", "bootstrap_servers": running.bootstrap_servers}, as_json,
             f"Kafka already running at [bold]{running.bootstrap_servers}[/] (caselink infra down to stop)")
        return
    try:
        state, seconds = start_local(brokers, port)
    except KafkaRuntimeError as exc:
        fail(str(exc))
        return
    emit({"status": "ready", "bootstrap_servers": state.bootstrap_servers, "seconds_to_ready": round(seconds, 2),
          "directory": state.directory, "kafka_version": settings.infra.kafka_version}, as_json,
         f"Kafka {settings.infra.kafka_version} ready at [bold]{state.bootstrap_servers}[/] "
         f"in {seconds:.1f}s ({brokers} node(s); data and logs in {state.directory})")


@infra_app.command("down")
def down(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Stop the local cluster cleanly (its data and logs stay on disk)."""
    settings = get_settings()
    path = state_file(settings)
    if not path.exists():
        emit({"status": "not running"}, as_json, "no local Kafka recorded")
        return
    state = ClusterState.load(path)
    kafka = LocalKafka(settings.infra, Path(state.directory), brokers=len(state.nodes))
    kafka.state = state
    kafka.stop()
    path.unlink()
    emit({"status": "stopped", "directory": state.directory}, as_json,
         f"Kafka stopped; logs kept in {state.directory}")


@infra_app.command("status")
def status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Is the local cluster up? Exit code 1 when it is not."""
    settings = get_settings()
    path = state_file(settings)
    if not path.exists():
        emit({"running": False}, as_json, "no local Kafka recorded (caselink infra up)")
        raise typer.Exit(1)
    state = ClusterState.load(path)
    nodes = [{"node_id": n.node_id, "port": n.port, "pid": n.pid, "alive": pid_alive(n.pid)} for n in state.nodes]
    healthy = all(n["alive"] for n in nodes)
    emit({"running": healthy, "bootstrap_servers": state.bootstrap_servers, "nodes": nodes,
          "directory": state.directory}, as_json,
         "\n".join([f"bootstrap: {state.bootstrap_servers}"] +
                   [f"node {n['node_id']}: port {n['port']} pid {n['pid']} {'up' if n['alive'] else 'DOWN'}"
                    for n in nodes]))
    if not healthy:
        raise typer.Exit(1)


@topics_app.command("ensure")
def topics_ensure(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Create missing topics and fix drifted configs; safe to run any number of times."""
    settings = get_settings()
    report = ensure_topics(
        admin_client(settings),
        caselink_topics(settings.agencies, settings.purposes, settings.kafka.default_partitions),
        settings.kafka.replication_factor,
        settings.kafka.min_insync_replicas,
    )
    emit(report.__dict__, as_json,
         f"created {len(report.created)}, repartitioned {len(report.repartitioned)}, "
         f"reconfigured {len(report.reconfigured)}, unchanged {len(report.unchanged)}")


@topics_app.command("list")
def topics_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The declared topics and their settings."""
    settings = get_settings()
    specs = caselink_topics(settings.agencies, settings.purposes, settings.kafka.default_partitions)
    isr = settings.kafka.min_insync_replicas
    rows = [{"name": s.name, "partitions": s.partitions, **s.configs(isr)} for s in specs]
    emit(rows, as_json, "\n".join(f"{r['name']:<40} p={r['partitions']} {r['cleanup.policy']}" for r in rows))
