"""The local stack beside the broker, each part started, timed and recorded: the schema registry
(always: every value is framed against it) and, with ``--full``, a Kafka Connect worker with
Debezium's PostgreSQL source and JDBC sink (infra/connect_runtime.py).

Each part's start-to-ready time is measured from launching its JVM to its readiness endpoint
answering; its memory is the process's resident set once ready.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from caselink.infra.service import rss_mb, stop

from caselink.core.cluster import ServiceState
from caselink.core.settings import Settings

Progress = Callable[[str], None]


@dataclass
class Started:
    name: str
    url: str
    seconds_to_ready: float
    rss_mb: float | None
    pid: int


def _record(settings: Settings, state: ServiceState) -> Started:
    state.save(settings.infra.run_dir / f"{state.name}.json")
    return Started(state.name, state.url, state.seconds_to_ready, rss_mb(state.pid), state.pid)


def start_registry(settings: Settings, run_dir: Path, progress: Progress | None = None) -> Started:
    from caselink.infra.registry_runtime import LocalRegistry, state_path

    running = ServiceState.load(state_path(settings))
    if running is not None and running.alive:
        return Started(running.name, running.url, 0.0, rss_mb(running.pid), running.pid)
    return _record(settings, LocalRegistry(settings.infra, run_dir / "registry", progress=progress).start())


def stop_all(settings: Settings) -> list[str]:
    """Stop every recorded part but the broker (Connect first: it writes to the others)."""
    stopped = []
    for name in ("connect", "registry"):
        path = settings.infra.run_dir / f"{name}.json"
        state = ServiceState.load(path)
        if state is None:
            continue
        stop(state.pid)
        path.unlink()
        stopped.append(name)
    return stopped


def recorded(settings: Settings) -> list[ServiceState]:
    found = []
    for name in ("registry", "connect"):
        state = ServiceState.load(settings.infra.run_dir / f"{name}.json")
        if state is not None:
            found.append(state)
    return found


def elapsed(started: float) -> float:
    return round(time.monotonic() - started, 2)


def start_connect(settings: Settings, run_dir: Path, bootstrap_servers: str, registry_url: str,
                  progress: Progress | None = None) -> Started:
    from caselink.infra.connect_runtime import LocalConnect

    running = ServiceState.load(settings.infra.run_dir / "connect.json")
    if running is not None and running.alive:
        return Started(running.name, running.url, 0.0, rss_mb(running.pid), running.pid)
    connect = LocalConnect(settings.infra, run_dir / "connect", bootstrap_servers, registry_url, progress=progress)
    return _record(settings, connect.start())
