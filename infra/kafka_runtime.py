"""A real Apache Kafka broker (or a small cluster) in KRaft mode, run straight from Maven Central.

Why not a download script or Docker: the machines this project runs on reach Maven Central but not
the Apache download mirrors, and have no container engine. Kafka's broker is published as an
ordinary Maven artifact, so ``mvn dependency:copy-dependencies`` fetches it (once, into a cache
outside the repository) and we run ``kafka.Kafka`` on the local JDK.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from caselink.core.cluster import ClusterState, Node, pid_alive
from caselink.core.private import ensure_private_dir
from caselink.core.settings import InfraSettings

INFRA_DIR = Path(__file__).resolve().parent / "kafka"
POM = INFRA_DIR / "pom.xml"
LOG4J_CONFIG = INFRA_DIR / "log4j2.properties"


class KafkaRuntimeError(RuntimeError):
    """The local broker could not be resolved or started; the message says what to do."""

    def __init__(self, message: str, log_path: Path | None = None) -> None:
        self.log_path = log_path
        super().__init__(message + (f" (log: {log_path})" if log_path else ""))


SASL_ADMIN = "admin"
SASL_MECHANISM = "SCRAM-SHA-512"
PRIVATE_UMASK = 0o077  # the broker's files and directories: owner only


def _private_open(path: Path, mode: str) -> Any:
    """Open a log file the broker's output goes to, created 0600 (its output may quote data)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    return os.fdopen(os.open(path, flags, 0o600), mode)


def _argfile_quote(arg: str) -> str:
    """One argument as a line of a java @argument file (quoted; backslashes and quotes escaped)."""
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def find_java(settings: InfraSettings) -> str:
    """The java executable: settings, then JAVA_HOME, then PATH."""
    candidates = []
    if settings.java_home:
        candidates.append(settings.java_home / "bin" / "java")
    if os.environ.get("JAVA_HOME"):
        candidates.append(Path(os.environ["JAVA_HOME"]) / "bin" / "java")
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    found = shutil.which("java")
    if not found:
        raise KafkaRuntimeError(
            "Java was not found: install a JDK 17+ (Debian: apt-get install openjdk-17-jre-headless) "
            "or set JAVA_HOME / CASELINK_INFRA__JAVA_HOME"
        )
    return found


def resolve_jars(settings: InfraSettings, progress: Callable[[str], None] | None = None) -> Path:
    """Directory holding the broker's jars, fetched with Maven into the cache on first use."""
    libs = settings.cache_dir / f"kafka-{settings.kafka_version}" / "libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    mvn = shutil.which("mvn")
    if not mvn:
        raise KafkaRuntimeError(
            "Maven (mvn) was not found, and the Kafka jars are not cached yet: "
            "install Maven (Debian: apt-get install maven)"
        )
    libs.parent.mkdir(parents=True, exist_ok=True)
    staging = libs.parent / f"libs.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    log_path = libs.parent / "maven.log"
    if progress:
        progress(f"resolving Apache Kafka {settings.kafka_version} from Maven Central ...")
    with log_path.open("w") as log:
        result = subprocess.run(
            [
                mvn, "-B", "-q", "-f", str(POM), "dependency:copy-dependencies",
                "-DincludeScope=runtime", f"-DoutputDirectory={staging}",
                f"-Dkafka.version={settings.kafka_version}",
            ],
            stdout=log, stderr=subprocess.STDOUT, check=False,
        )
    if result.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
        raise KafkaRuntimeError(
            f"Maven could not resolve org.apache.kafka:kafka_2.13:{settings.kafka_version}; "
            "check that Maven Central is reachable (proxy settings in ~/.m2/settings.xml)",
            log_path,
        )
    (staging / ".complete").write_text(settings.kafka_version)
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    return libs


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def kafka_uuid() -> str:
    """A cluster id in Kafka's own format (URL-safe base64 of 16 random bytes, no padding).

    Like Kafka's ``Uuid.randomUuid`` it never starts with '-', which command lines would take for an option.
    """
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not value.startswith("-"):
            return value


class LocalKafka:
    """One to N combined broker+controller nodes on loopback, with free ports chosen for them."""

    def __init__(
        self,
        settings: InfraSettings,
        directory: Path,
        brokers: int = 1,
        port: int | None = None,
        progress: Callable[[str], None] | None = None,
        admin_password: str | None = None,
    ) -> None:
        """``admin_password`` turns on SASL/SCRAM-SHA-512 and ACLs, with ``admin`` as super user."""
        if brokers < 1:
            raise ValueError("brokers must be at least 1")
        self.settings = settings
        self.directory = directory
        self.brokers = brokers
        self.requested_port = port
        self.progress = progress or (lambda _msg: None)
        self.admin_password = admin_password
        self.state: ClusterState | None = None
        self._procs: dict[int, subprocess.Popen[bytes]] = {}

    # ----------------------------------------------------------------- configuration
    def _plan_nodes(self) -> list[Node]:
        if self.requested_port is not None and port_in_use(self.requested_port):
            raise KafkaRuntimeError(
                f"port {self.requested_port} is already in use: stop what holds it "
                "(`ss -ltnp | grep {self.requested_port}`) or choose another with --port"
            )
        nodes = []
        for i in range(self.brokers):
            port = self.requested_port + i if self.requested_port is not None else free_port()
            nodes.append(
                Node(
                    node_id=i + 1,
                    port=port,
                    controller_port=free_port(),
                    directory=str(self.directory / f"node-{i + 1}"),
                )
            )
        return nodes

    def _properties(self, node: Node, nodes: list[Node]) -> str:
        n = len(nodes)
        voters = ",".join(f"{x.node_id}@127.0.0.1:{x.controller_port}" for x in nodes)
        props = {
            "process.roles": "broker,controller",
            "node.id": node.node_id,
            "listeners": f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(Path(node.directory) / "data"),
            "num.partitions": 1,
            "default.replication.factor": n,
            "min.insync.replicas": min(2, n),
            "offsets.topic.replication.factor": n,
            "offsets.topic.num.partitions": 10,
            "transaction.state.log.replication.factor": n,
            "transaction.state.log.min.isr": min(2, n),
            "share.coordinator.state.topic.replication.factor": n,
            "share.coordinator.state.topic.min.isr": min(2, n),
            "group.initial.rebalance.delay.ms": 0,
            "auto.create.topics.enable": "false",
            "log.retention.check.interval.ms": 60000,
        }
        if n == 1:
            props["controller.quorum.bootstrap.servers"] = f"127.0.0.1:{node.controller_port}"
        else:
            props["controller.quorum.voters"] = voters
        if self.admin_password is not None:
            props.update(self._sasl_properties(node))
        return "".join(f"{k}={v}\n" for k, v in props.items())

    def _sasl_properties(self, node: Node) -> dict[str, object]:
        """Clients and brokers authenticate with SCRAM; the StandardAuthorizer enforces ACLs.

        The controller listener stays PLAINTEXT on loopback (KRaft controllers cannot use SCRAM,
        whose credentials live in the metadata they serve), so its ANONYMOUS principal is a super
        user; it is never advertised to clients. A production cluster would put TLS or
        SASL/PLAIN on that listener too (docs/operations.md).
        """
        jaas = ('org.apache.kafka.common.security.scram.ScramLoginModule required '
                f'username="{SASL_ADMIN}" password="{self.admin_password}";')
        return {
            "listeners": f"SASL_PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"SASL_PLAINTEXT://127.0.0.1:{node.port}",
            "inter.broker.listener.name": "SASL_PLAINTEXT",
            "listener.security.protocol.map": "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT",
            "sasl.enabled.mechanisms": SASL_MECHANISM,
            "sasl.mechanism.inter.broker.protocol": SASL_MECHANISM,
            "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config": jaas,
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{SASL_ADMIN};User:ANONYMOUS",
            "allow.everyone.if.no.acl.found": "false",
        }

    def admin_config(self) -> dict[str, str]:
        """librdkafka settings for the ``admin`` super user (empty extras without SASL)."""
        assert self.state is not None
        conf = {"bootstrap.servers": self.state.bootstrap_servers}
        if self.admin_password is not None:
            conf.update({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": SASL_MECHANISM,
                         "sasl.username": SASL_ADMIN, "sasl.password": self.admin_password})
        return conf

    def _java_cmd(self, node: Node, main: list[str]) -> list[str]:
        libs = resolve_jars(self.settings, self.progress)
        return [
            find_java(self.settings),
            *self._jvm_options(node, libs),
            *main,
        ]

    def _jvm_options(self, node: Node, libs: Path) -> list[str]:
        return [
            f"-Xmx{self.settings.heap}",
            f"-Xms{self.settings.heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={Path(node.directory) / 'logs'}",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            "-cp",
            f"{libs}/*",
        ]

    def _format(self, node: Node, props: Path, cluster_id: str, out: Any) -> int:
        """Format a node's storage. With SASL the admin's SCRAM credential is bootstrapped here; its
        password goes to the JVM through an argument file (``java @file``, mode 0600, removed after),
        never on the command line, where any local user could read it in ``ps``."""
        args = ["kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", f"--config={props}"]
        if self.admin_password is not None:
            # The first SCRAM credential must exist before any client can log in to create more.
            args += ["--add-scram", f"{SASL_MECHANISM}=[name={SASL_ADMIN},password={self.admin_password}]"]
        if self.state is not None and len(self.state.nodes) == 1:
            args.append("--standalone")
        argfile = Path(node.directory) / "format.args"
        fd = os.open(argfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                libs = resolve_jars(self.settings, self.progress)
                f.write("\n".join(_argfile_quote(a) for a in [*self._jvm_options(node, libs), *args]) + "\n")
            return subprocess.run([find_java(self.settings), f"@{argfile}"], stdout=out, stderr=subprocess.STDOUT,
                                  check=False, umask=PRIVATE_UMASK).returncode
        finally:
            argfile.unlink(missing_ok=True)

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> ClusterState:
        """Format storage, launch every node and wait until all brokers answer metadata."""
        nodes = self._plan_nodes()
        cluster_id = kafka_uuid()
        self.state = ClusterState(str(self.directory), cluster_id, nodes, sasl=self.admin_password is not None)
        # Every topic's segments are kept here, personal data included: 0700 directories and
        # 0600 files (the broker runs with umask 077), so no other local user reads around the ACLs.
        ensure_private_dir(self.directory)
        for node in nodes:
            node_dir = Path(node.directory)
            (node_dir / "logs").mkdir(parents=True, exist_ok=True, mode=0o700)
            node_dir.chmod(0o700)
            props = node_dir / "server.properties"
            props.touch(mode=0o600)
            props.chmod(0o600)  # it holds the admin password when SASL is on
            props.write_text(self._properties(node, nodes))
            fmt_log = node_dir / "logs" / "format.log"
            with _private_open(fmt_log, "wb") as out:
                rc = self._format(node, props, cluster_id, out)
            if rc != 0:
                raise KafkaRuntimeError(f"formatting KRaft storage for node {node.node_id} failed", fmt_log)
        for node in nodes:
            self.start_node(node.node_id, wait=False)
        self.wait_ready()
        return self.state

    def start_node(self, node_id: int, wait: bool = True) -> None:
        """(Re)start one node; its storage is kept, as after a crash or maintenance."""
        assert self.state is not None
        node = self._node(node_id)
        props = Path(node.directory) / "server.properties"
        with _private_open(node.stdout_path, "ab") as out:
            proc = subprocess.Popen(
                self._java_cmd(node, ["kafka.Kafka", str(props)]),
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, umask=PRIVATE_UMASK,
            )
        self._procs[node_id] = proc
        node.pid = proc.pid
        if wait:
            self.wait_ready()

    def _node(self, node_id: int) -> Node:
        assert self.state is not None
        for node in self.state.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(node_id)

    def wait_ready(self, timeout: float | None = None) -> float:
        """Block until every node is registered and answering; return seconds waited."""

        assert self.state is not None
        timeout = timeout or self.settings.ready_timeout_s
        started = time.monotonic()
        want = len(self.state.nodes)
        admin = AdminClient({**self.admin_config(), "logger": _QUIET})  # type: ignore[dict-item]  # stubs omit logger
        while True:
            for node in self.state.nodes:
                if not pid_alive(node.pid):
                    raise KafkaRuntimeError(
                        f"Kafka node {node.node_id} exited during start-up: "
                        f"{_last_error_line(node)}", node.log_path,
                    )
            try:
                md = admin.list_topics(timeout=1.0)
                if len(md.brokers) >= want and self._controller_ready(admin):
                    return time.monotonic() - started
            except Exception:  # noqa: BLE001 - not ready yet, any error means "try again"
                pass
            if time.monotonic() - started > timeout:
                raise KafkaRuntimeError(
                    f"Kafka did not become ready within {timeout:.0f}s",
                    self.state.nodes[0].log_path,
                )
            time.sleep(0.2)

    @staticmethod
    def _controller_ready(admin: object) -> bool:
        assert isinstance(admin, AdminClient)
        cluster = admin.describe_cluster(request_timeout=2).result(timeout=3)
        return cluster.controller is not None

    def stop_node(self, node_id: int, kill: bool = False, timeout: float = 30.0) -> None:
        node = self._node(node_id)
        _terminate(node.pid, kill=kill, timeout=timeout)
        proc = self._procs.pop(node_id, None)
        if proc is not None:
            proc.wait(timeout=5)
        node.pid = None

    def stop(self, timeout: float = 30.0) -> None:
        """Clean shutdown of every node (SIGTERM, then SIGKILL after ``timeout``)."""
        if not self.state:
            return
        for node in self.state.nodes:
            if node.pid is not None and pid_alive(node.pid):
                os.kill(node.pid, signal.SIGTERM)  # all at once, so they shut down in parallel
        for node in self.state.nodes:
            _terminate(node.pid, kill=False, timeout=timeout)
            proc = self._procs.pop(node.node_id, None)
            if proc is not None:
                proc.wait(timeout=5)
            node.pid = None


def _terminate(pid: int | None, kill: bool, timeout: float) -> None:
    if not pid or not pid_alive(pid):
        return
    os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
        time.sleep(0.1)
        try:  # reap if it is our child
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def _last_error_line(node: Node) -> str:
    for path in (node.stdout_path, node.log_path):
        if path.exists():
            lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
            errors = [ln for ln in lines if "ERROR" in ln or "Exception" in ln]
            if errors:
                return errors[-1][:300]
            if lines:
                return lines[-1][:300]
    return "no output"


# librdkafka logs every refused connection while the broker boots; readiness polling stays quiet.
_QUIET = logging.getLogger("caselink.infra.readiness")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False
