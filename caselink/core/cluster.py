"""The records of what ``caselink infra up`` started: the local cluster (``<run_dir>/state.json``)
and each other service, such as the schema registry (``<run_dir>/<name>.json``).

Kept in core because every client finds the local broker and registry through them
(``core.kafka``, ``schemas.registry``), while ``infra``, which starts and stops them, writes them.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from caselink.core.private import ensure_private_dir


@dataclass
class Node:
    node_id: int
    port: int
    controller_port: int
    directory: str
    pid: int | None = None

    @property
    def log_path(self) -> Path:
        return Path(self.directory) / "logs" / "server.log"

    @property
    def stdout_path(self) -> Path:
        return Path(self.directory) / "logs" / "stdout.log"


@dataclass
class ClusterState:
    """What ``infra up`` started, saved as JSON so ``down`` and ``status`` work from another shell."""

    directory: str
    cluster_id: str
    nodes: list[Node] = field(default_factory=list)
    sasl: bool = False  # SASL/SCRAM on the client listener, StandardAuthorizer with ACLs

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def save(self, path: Path) -> None:
        ensure_private_dir(path.parent)
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> ClusterState:
        data = json.loads(path.read_text())
        return cls(
            directory=data["directory"],
            cluster_id=data["cluster_id"],
            nodes=[Node(**n) for n in data["nodes"]],
            sasl=bool(data.get("sasl", False)),
        )


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); look at its state to be sure.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


@dataclass
class ServiceState:
    name: str
    url: str  # what clients use
    ready_url: str  # answers 200 once the service is ready
    pid: int
    directory: str
    seconds_to_ready: float = 0.0

    def save(self, path: Path) -> None:
        ensure_private_dir(path.parent)
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> ServiceState | None:
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))

    @property
    def alive(self) -> bool:
        return pid_alive(self.pid)


def local_service_url(run_dir: Path, name: str) -> str:
    """The URL of the service ``name`` that `caselink infra up` started, if it is running; else ''."""
    state = ServiceState.load(run_dir / f"{name}.json")
    return state.url if state is not None and state.alive else ""
