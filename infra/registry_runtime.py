"""A real schema registry beside the local broker: Apicurio Registry 3.3.3, from Maven Central.

Why Apicurio: its Confluent-compatible API (``/apis/ccompat/v7``) is what every stock Avro
serializer, converter and deserializer speaks, and Maven Central publishes the runnable Quarkus
application (``io.apicurio:apicurio-registry-app:3.3.3``, classifier ``all``, a tar.gz), so it
installs the way the broker does, with no container engine. Confluent's own registry is not on
Maven Central. It needs Java 21+ (infra/jvm.py finds one, or says what to install).

Subjects are kept in an H2 file in the run directory, so they survive a restart of the registry;
its HTTP and management ports listen on loopback only.
"""

from __future__ import annotations

import tarfile
import time
from collections.abc import Callable
from pathlib import Path

from caselink.infra.jvm import find_java
from caselink.infra.kafka_runtime import free_port
from caselink.infra.maven import copy_artifact
from caselink.infra.service import spawn, stop, wait_ready

from caselink.core.cluster import ServiceState, local_service_url
from caselink.core.private import ensure_private_dir
from caselink.core.settings import InfraSettings, Settings

CCOMPAT = "/apis/ccompat/v7"
MINIMUM_JAVA = 21


def state_path(settings: Settings) -> Path:
    return settings.infra.run_dir / "registry.json"


def local_registry_url(settings: Settings) -> str:
    """The registry `caselink infra up` started, if it is running; else ''."""
    return local_service_url(settings.infra.run_dir, "registry")


def resolve_app(infra: InfraSettings, progress: Callable[[str], None] | None = None) -> Path:
    """The unpacked application (its ``quarkus-run.jar``), fetched and unpacked once."""
    home = infra.cache_dir / f"apicurio-registry-{infra.registry_version}"
    app = home / "app"
    if (app / ".complete").exists():
        return app
    download = copy_artifact(f"io.apicurio:apicurio-registry-app:{infra.registry_version}:tar.gz:all",
                             home / "download", progress)
    archive = next(download.glob("*.tar.gz"))
    staging = home / "app.tmp"
    with tarfile.open(archive) as tar:
        tar.extractall(staging, filter="data")
    runner = next(staging.rglob("quarkus-run.jar"))
    (runner.parent / ".complete").write_text(infra.registry_version)
    if app.exists():
        import shutil

        shutil.rmtree(app)
    runner.parent.rename(app)
    return app


class LocalRegistry:
    """One registry process, in ``directory``."""

    def __init__(self, infra: InfraSettings, directory: Path, port: int | None = None,
                 progress: Callable[[str], None] | None = None) -> None:
        self.infra = infra
        self.directory = directory
        self.port = port or free_port()
        self.progress = progress
        self.state: ServiceState | None = None

    @property
    def log_path(self) -> Path:
        return self.directory / "registry.log"

    def command(self, java: str, app: Path) -> list[str]:
        management = free_port()
        props = {
            "quarkus.http.host": "127.0.0.1",
            "quarkus.http.port": self.port,
            "quarkus.management.host": "127.0.0.1",
            "quarkus.management.port": management,
            "apicurio.datasource.url": f"jdbc:h2:file:{self.directory / 'h2' / 'registry'}",
            "quarkus.log.console.json": "false",
        }
        self._ready_url = f"http://127.0.0.1:{management}/health/ready"
        return [java, f"-Xmx{self.infra.registry_heap}", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                *(f"-D{k}={v}" for k, v in props.items()), "-jar", str(app / "quarkus-run.jar")]

    def start(self) -> ServiceState:
        java = find_java(MINIMUM_JAVA, f"Apicurio Registry {self.infra.registry_version}",
                         self.infra.registry_java_home, "CASELINK_INFRA__REGISTRY_JAVA_HOME")
        app = resolve_app(self.infra, self.progress)
        ensure_private_dir(self.directory)
        cmd = self.command(java, app)
        started = time.monotonic()
        pid = spawn(cmd, self.log_path, cwd=self.directory)
        url = f"http://127.0.0.1:{self.port}{CCOMPAT}"
        seconds = wait_ready("Apicurio Registry", pid, self._ready_url, self.log_path,
                             self.infra.ready_timeout_s, started)
        self.state = ServiceState("registry", url, self._ready_url, pid, str(self.directory), round(seconds, 2))
        return self.state

    def stop(self) -> None:
        if self.state is not None:
            stop(self.state.pid)
