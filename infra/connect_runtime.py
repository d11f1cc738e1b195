"""A stock Apache Kafka Connect worker (distributed mode) with Debezium's connectors, from Maven Central.

Why stock: agencies that already run Debezium, and analysts who already run Kafka Connect sinks,
use the same worker and the same connectors here; caselink adds configuration, not code. The
worker is ``org.apache.kafka.connect.cli.ConnectDistributed`` from ``connect-runtime`` 4.3.0, the
Kafka that Debezium 3.6.1 is built against (infra/connect/pom.xml; with 4.4.0 Debezium's source
fails on a class Kafka removed); each plugin is resolved into its own directory on ``plugin.path``
(infra/connect/plugins/*/pom.xml), so Connect gives it its own class loader:

* ``debezium-postgres``: Debezium 3.6.1.Final's PostgreSQL source (logical decoding with the
  server's built-in ``pgoutput``: nothing to install in the database);
* ``debezium-jdbc``: Debezium's JDBC sink, 3.5.0.Final (why not 3.6.x: see its pom);
* ``apicurio-converter``: Apicurio's Kafka Connect Avro converter 2.6.13.Final, which with
  ``apicurio.registry.as-confluent=true`` reads and writes the Confluent framing
  (schemas/registry.py) against the registry's v2 API, with content ids
  (``apicurio.registry.use-id=contentId``) so that an id means the same schema to the converter
  and to every Confluent-compatible client (the ccompat API's ids are content ids).

The worker keeps its configs, offsets and statuses in three compacted topics of the cluster
(``caselink.connect-*``), so connectors survive a restart of the worker. It runs on Java 17+.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from caselink.infra.jvm import find_java
from caselink.infra.kafka_runtime import LOG4J_CONFIG, free_port
from caselink.infra.maven import copy_dependencies
from caselink.infra.service import spawn, stop, wait_ready

from caselink.core.cluster import ServiceState
from caselink.core.private import ensure_private_dir
from caselink.core.settings import InfraSettings

CONNECT_DIR = Path(__file__).resolve().parent / "connect"
# Each plugin with the groups it takes from the worker instead of carrying its own. org.apache.kafka
# always (a plugin's own copy would be shadowed anyway). Jackson's core for the JDBC sink: with its
# own jackson-databind beside the worker's, Java's ServiceLoader handed it the worker's
# BlackbirdModule ("not a subtype") and the sink's task died on its first record.
PLUGINS = {
    "debezium-postgres": "org.apache.kafka",
    "debezium-jdbc": "org.apache.kafka,com.fasterxml.jackson.core",
    "apicurio-converter": "org.apache.kafka",
}
CONNECT_GROUP = "caselink-connect"
AVRO_CONVERTER = "io.apicurio.registry.utils.converter.AvroConverter"


def v2_api(ccompat_url: str) -> str:
    """Apicurio's own v2 API (what the 2.6 converter speaks) beside its ccompat URL."""
    return ccompat_url.split("/apis/")[0] + "/apis/registry/v2"


def avro_converter(registry_url: str, prefix: str) -> dict[str, str]:
    """Connect converter settings (``key.converter`` or ``value.converter``) for registry-framed Avro."""
    return {
        prefix: AVRO_CONVERTER,
        f"{prefix}.apicurio.registry.url": v2_api(registry_url),
        f"{prefix}.apicurio.registry.auto-register": "true",
        f"{prefix}.apicurio.registry.find-latest": "true",
        f"{prefix}.apicurio.registry.as-confluent": "true",
        f"{prefix}.apicurio.registry.use-id": "contentId",
        f"{prefix}.apicurio.registry.headers.enabled": "false",
    }


def resolve(infra: InfraSettings, progress: Callable[[str], None] | None = None) -> tuple[Path, Path]:
    """(the worker's jars, the plugin path), each fetched once into the cache."""
    base = infra.cache_dir / f"connect-{infra.connect_version}"
    libs = copy_dependencies(CONNECT_DIR / "pom.xml", base / "libs", f"Kafka Connect {infra.connect_version}",
                             progress, properties={"kafka.version": infra.connect_version})
    plugins = base / "plugins"
    for name, from_worker in PLUGINS.items():
        copy_dependencies(CONNECT_DIR / "plugins" / name / "pom.xml", plugins / name, f"the {name} plugin",
                          progress, exclude_groups=from_worker)
    return libs, plugins


class LocalConnect:
    """One Kafka Connect worker in distributed mode, its REST API on loopback."""

    def __init__(self, infra: InfraSettings, directory: Path, bootstrap_servers: str, registry_url: str,
                 port: int | None = None, progress: Callable[[str], None] | None = None) -> None:
        self.infra = infra
        self.directory = directory
        self.bootstrap_servers = bootstrap_servers
        self.registry_url = registry_url
        self.port = port or free_port()
        self.progress = progress
        self.state: ServiceState | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "connect.log"

    def properties(self, plugins: Path) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": CONNECT_GROUP,
            "config.storage.topic": "caselink.connect-configs",
            "offset.storage.topic": "caselink.connect-offsets",
            "status.storage.topic": "caselink.connect-status",
            # -1: the cluster's default.replication.factor, as caselink's own topics get
            "config.storage.replication.factor": -1,
            "offset.storage.replication.factor": -1,
            "status.storage.replication.factor": -1,
            "offset.flush.interval.ms": 1000,
            "listeners": self.url,
            "rest.advertised.host.name": "127.0.0.1",
            "rest.advertised.port": self.port,
            "plugin.path": str(plugins),
            "plugin.discovery": "hybrid_warn",
            **avro_converter(self.registry_url, "key.converter"),
            **avro_converter(self.registry_url, "value.converter"),
        }

    def start(self) -> ServiceState:
        java = find_java(17, "Kafka Connect", self.infra.java_home, "CASELINK_INFRA__JAVA_HOME")
        libs, plugins = resolve(self.infra, self.progress)
        ensure_private_dir(self.directory)
        props = self.directory / "connect-distributed.properties"
        props.write_text("".join(f"{k}={v}\n" for k, v in self.properties(plugins).items()))
        cmd = [java, f"-Xmx{self.infra.connect_heap}", "-XX:+UseSerialGC", "-Djava.awt.headless=true",
               f"-Dlog4j2.configurationFile={LOG4J_CONFIG}", f"-Dkafka.logs.dir={self.directory}",
               "-cp", f"{libs}/*", "org.apache.kafka.connect.cli.ConnectDistributed", str(props)]
        started = time.monotonic()
        pid = spawn(cmd, self.log_path, cwd=self.directory)
        # Ready once the worker has joined its group and lists the plugins it loaded.
        seconds = wait_ready("Kafka Connect", pid, f"{self.url}/connectors", self.log_path,
                             self.infra.ready_timeout_s, started)
        self.state = ServiceState("connect", self.url, f"{self.url}/connectors", pid, str(self.directory),
                                  round(seconds, 2))
        return self.state

    def stop(self) -> None:
        if self.state is not None:
            stop(self.state.pid)
