"""`caselink infra ...`: the local Kafka broker, and `caselink topics ...`."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from caselink.output import console, emit, fail

if TYPE_CHECKING:
    from caselink.core.cluster import ClusterState

# Each command imports what it drives inside its body, so that `caselink --help` and every other
# command start without loading settings, Kafka clients, pandas or Faust (CLI start-up time,
# docs/benchmarks.md). Imports for type annotations only sit under TYPE_CHECKING.

infra_app = typer.Typer(
    help="Start, stop and inspect the local Apache Kafka (KRaft) broker.", no_args_is_help=True
)
topics_app = typer.Typer(
    help="Create or update caselink's topics as declared in infra/topics.py.", no_args_is_help=True
)


def start_local(brokers: int = 1, port: int | None = None, directory: Path | None = None,
                admin_password: str | None = None) -> tuple[ClusterState, float]:
    """Start a detached local cluster and record it, so later commands find it."""
    from caselink.core.kafka import state_file
    from caselink.core.settings import get_settings
    from caselink.infra.kafka_runtime import LocalKafka

    settings = get_settings()
    started = time.monotonic()
    run_dir = directory or settings.infra.run_dir / time.strftime("run-%Y%m%d-%H%M%S")
    kafka = LocalKafka(settings.infra, run_dir, brokers=brokers, port=port, admin_password=admin_password,
                       progress=lambda m: console.print(f"[dim]{m}[/]"))
    state = kafka.start()
    state.save(state_file(settings))
    return state, time.monotonic() - started


@infra_app.command("up")
def up(
    brokers: Annotated[int, typer.Option(help="nodes (3 gives RF 3, min ISR 2)")] = 1,
    port: Annotated[int | None, typer.Option(help="first listener port; free ports when omitted")] = None,
    secure: Annotated[bool, typer.Option("--secure", help="SASL/SCRAM logins and ACLs (StandardAuthorizer)")] = False,
    full: Annotated[bool, typer.Option("--full", help="also a Kafka Connect worker with Debezium's PostgreSQL "
                                                      "source and JDBC sink (docs/operations.md)")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Start Kafka in KRaft combined mode and the schema registry (Apicurio), each timed to ready."""
    from caselink.core.kafka import local_cluster
    from caselink.core.settings import get_settings
    from caselink.infra.jvm import JavaNotFoundError
    from caselink.infra.kafka_runtime import KafkaRuntimeError
    from caselink.infra.maven import MavenError
    from caselink.infra.service import ServiceError, rss_mb
    from caselink.infra.stack import start_connect, start_registry

    settings = get_settings()
    say = (lambda _m: None) if as_json else console.print
    progress = lambda m: say(f"[dim]{m}[/]")  # noqa: E731
    rows: list[dict[str, object]] = []
    running = local_cluster(settings)
    if running:
        run_dir = Path(running.directory)
        say(f"Kafka already running at [bold]{running.bootstrap_servers}[/] (caselink infra down to stop)")
        rows.append({"component": "kafka", "url": running.bootstrap_servers, "seconds_to_ready": 0.0,
                     "rss_mb": None, "status": "already running"})
        state = running
    else:
        admin_password = secrets.token_urlsafe(24) if secure else None
        try:
            state, seconds = start_local(brokers, port, admin_password=admin_password)
        except KafkaRuntimeError as exc:
            fail(str(exc))
        run_dir = Path(state.directory)
        rows.append({"component": "kafka", "url": state.bootstrap_servers, "seconds_to_ready": round(seconds, 2),
                     "rss_mb": sum(rss_mb(n.pid) or 0 for n in state.nodes if n.pid) or None, "status": "ready"})
        say(f"Kafka {settings.infra.kafka_version} ready at [bold]{state.bootstrap_servers}[/] "
                      f"in {seconds:.1f}s ({brokers} node(s); data and logs in {state.directory})")
        if admin_password is not None:
            env = _write_private(Path(state.directory) / "admin.env", _env_lines("admin", admin_password))
            say(f"SASL/SCRAM is on. Admin credentials: [bold]source {env}[/] "
                          "(then `caselink infra principals` creates the other principals and their ACLs)")
    try:
        parts = [start_registry(settings, run_dir, progress)]
        if full:
            parts.append(start_connect(settings, run_dir, state.bootstrap_servers, parts[0].url, progress))
    except (JavaNotFoundError, MavenError, ServiceError) as exc:
        fail(str(exc))
    for part in parts:
        rows.append({"component": part.name, "url": part.url, "seconds_to_ready": part.seconds_to_ready,
                     "rss_mb": round(part.rss_mb, 1) if part.rss_mb else None,
                     "status": "ready" if part.seconds_to_ready else "already running"})
        memory = f", {part.rss_mb:.0f} MiB resident" if part.rss_mb else ""
        say(f"{part.name} ready at [bold]{part.url}[/] in {part.seconds_to_ready:.1f}s{memory}" if part.seconds_to_ready
            else f"{part.name} already running at [bold]{part.url}[/]{memory}")
    emit({"status": "ready", "bootstrap_servers": state.bootstrap_servers, "directory": state.directory,
          "kafka_version": settings.infra.kafka_version, "seconds_to_ready": rows[0]["seconds_to_ready"],
          "components": rows}, as_json, None)


@infra_app.command("down")
def down(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Stop the local cluster cleanly (its data and logs stay on disk)."""
    from caselink.core.cluster import ClusterState
    from caselink.core.kafka import state_file
    from caselink.core.settings import get_settings
    from caselink.infra.kafka_runtime import LocalKafka

    settings = get_settings()
    path = state_file(settings)
    if not path.exists():
        emit({"status": "not running"}, as_json, "no local Kafka recorded")
        return
    from caselink.infra.stack import stop_all

    others = stop_all(settings)
    state = ClusterState.load(path)
    nodes = [(n.node_id, n.pid, n.port, n.controller_port) for n in state.nodes]
    kafka = LocalKafka(settings.infra, Path(state.directory), brokers=len(state.nodes))
    kafka.state = state
    started = time.monotonic()
    kafka.stop()
    still = _wait_until_gone(nodes)
    seconds = time.monotonic() - started
    if still:
        fail(f"Kafka not stopped after {seconds:.1f}s: {'; '.join(still)} (state kept in {path})")
    path.unlink()
    emit({"status": "stopped", "directory": state.directory, "seconds": round(seconds, 2), "also_stopped": others,
          "nodes": [{"node_id": i, "pid": pid, "ports_closed": [p, c]} for i, pid, p, c in nodes]}, as_json,
         f"Kafka stopped in {seconds:.1f}s: " + ", ".join(f"node {i} (pid {pid}) exited, ports {p} and {c} closed"
                                                         for i, pid, p, c in nodes)
         + (f"; also stopped {', '.join(others)}" if others else "") + f"; logs kept in {state.directory}")


def _wait_until_gone(nodes: list[tuple[int, int | None, int, int]], timeout: float = 15.0) -> list[str]:
    """Until every node's process has exited and its ports refuse connections; what is left, if anything.
    (The process may stay a zombie until init reaps it: it has exited, and that is what counts.)"""
    import socket

    from caselink.core.cluster import pid_alive

    def port_open(port: int) -> bool:
        with socket.socket() as probe:
            probe.settimeout(0.5)
            return probe.connect_ex(("127.0.0.1", port)) == 0

    deadline = time.monotonic() + timeout
    while True:
        left = [f"node {i} pid {pid} still running" for i, pid, _p, _c in nodes if pid_alive(pid)]
        left += [f"node {i} port {port} still open" for i, _pid, p, c in nodes for port in (p, c) if port_open(port)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


@infra_app.command("status")
def status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Is the local cluster up? Exit code 1 when it is not."""
    from caselink.core.cluster import ClusterState, pid_alive
    from caselink.core.kafka import state_file
    from caselink.core.settings import get_settings

    settings = get_settings()
    path = state_file(settings)
    if not path.exists():
        emit({"running": False}, as_json, "no local Kafka recorded (caselink infra up)")
        raise typer.Exit(1)
    state = ClusterState.load(path)
    nodes = [{"node_id": n.node_id, "port": n.port, "pid": n.pid, "alive": pid_alive(n.pid)} for n in state.nodes]
    healthy = all(n["alive"] for n in nodes)
    from caselink.infra.stack import recorded

    services = [{"name": s.name, "url": s.url, "pid": s.pid, "alive": s.alive} for s in recorded(settings)]
    healthy = healthy and all(s["alive"] for s in services)
    emit({"running": healthy, "bootstrap_servers": state.bootstrap_servers, "nodes": nodes,
          "services": services, "directory": state.directory}, as_json,
         "\n".join([f"bootstrap: {state.bootstrap_servers}"] +
                   [f"node {n['node_id']}: port {n['port']} pid {n['pid']} {'up' if n['alive'] else 'DOWN'}"
                    for n in nodes] +
                   [f"{s['name']}: {s['url']} pid {s['pid']} {'up' if s['alive'] else 'DOWN'}" for s in services]))
    if not healthy:
        raise typer.Exit(1)


def _env_lines(user: str, password: str) -> str:
    from caselink.infra.kafka_runtime import SASL_MECHANISM

    return (f"export CASELINK_KAFKA__SECURITY_PROTOCOL=SASL_PLAINTEXT\n"
            f"export CASELINK_KAFKA__SASL_MECHANISM={SASL_MECHANISM}\n"
            f"export CASELINK_KAFKA__SASL_USERNAME={user}\n"
            f"export CASELINK_KAFKA__SASL_PASSWORD={password}\n")


def _write_private(path: Path, text: str) -> Path:
    """Write a secret file readable only by its owner."""
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(text)
    return path


@infra_app.command("principals")
def principals(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Create the worker, ingest, connector-<agency> and analyst-<purpose> logins and their ACLs.

    Needs admin credentials in the environment (see `infra up --secure`). Each principal's
    credentials are written to an owner-only env file beside the cluster's data.
    """
    from caselink.core.kafka import admin_client, local_cluster
    from caselink.core.settings import get_settings
    from caselink.infra.acls import provision, standard_principals

    settings = get_settings()
    if not settings.kafka.sasl_username:
        fail("set the admin credentials first: source the admin.env that `caselink infra up --secure` wrote")
    created = standard_principals(settings.agencies, settings.purposes, settings.worker.app_id)
    provision(admin_client(settings), created)
    state = local_cluster(settings)
    folder = Path(state.directory) / "principals" if state else Path.cwd() / "principals"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    files = {p.name: str(_write_private(folder / f"{p.name}.env", _env_lines(p.name, p.password))) for p in created}
    emit({"principals": files}, as_json, "\n".join(f"{name:<28} {path}" for name, path in files.items()))


@topics_app.command("ensure")
def topics_ensure(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Create missing topics and fix drifted configs; safe to run any number of times."""
    from caselink.core.kafka import admin_client
    from caselink.core.settings import get_settings
    from caselink.infra.topics import caselink_topics, ensure_topics

    settings = get_settings()
    from caselink.schemas.registry import RegistryError, ensure_subjects, registry_from_settings

    specs = caselink_topics(settings.agencies, settings.purposes, settings.kafka.default_partitions)
    report = ensure_topics(admin_client(settings), specs, settings.kafka.replication_factor,
                           settings.kafka.min_insync_replicas)
    try:
        subjects = ensure_subjects(registry_from_settings(settings), specs)
    except RegistryError as exc:
        fail(str(exc))
    emit({**report.__dict__, "subjects": subjects}, as_json,
         f"created {len(report.created)}, repartitioned {len(report.repartitioned)}, "
         f"reconfigured {len(report.reconfigured)}, unchanged {len(report.unchanged)}; "
         f"{len(subjects)} registry subjects, BACKWARD compatible")


@topics_app.command("list")
def topics_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The declared topics and their settings."""
    from caselink.core.settings import get_settings
    from caselink.infra.topics import caselink_topics

    settings = get_settings()
    specs = caselink_topics(settings.agencies, settings.purposes, settings.kafka.default_partitions)
    isr = settings.kafka.min_insync_replicas
    rows = [{"name": s.name, "partitions": s.partitions, **s.configs(isr)} for s in specs]
    emit(rows, as_json, "\n".join(f"{r['name']:<40} p={r['partitions']} {r['cleanup.policy']}" for r in rows))
