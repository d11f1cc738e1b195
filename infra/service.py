"""Running a JVM service of the local stack (the schema registry, the Kafka Connect worker):
start it detached, wait until its HTTP endpoint says it is ready, measure it, stop it.

Each service records itself in a small JSON state file in the run directory, so `caselink infra
down` and `status` work from another shell, as for the broker.
"""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from caselink.infra.kafka_runtime import PRIVATE_UMASK, _private_open, _terminate

from caselink.core.cluster import pid_alive


class ServiceError(RuntimeError):
    """A service could not start; the message says why and where its log is."""


def spawn(cmd: list[str], log_path: Path, cwd: Path, env: dict[str, str] | None = None) -> int:
    """Start ``cmd`` in its own session, output to a private log; its pid."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with _private_open(log_path, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd,
                                env=env, start_new_session=True, umask=PRIVATE_UMASK)
    return proc.pid


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(200 <= response.status < 300)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_ready(name: str, pid: int, ready_url: str, log_path: Path, timeout: float, started: float) -> float:
    """Seconds from ``started`` until ``ready_url`` answers; raises if the process dies or time runs out."""
    while not http_ok(ready_url):
        if not pid_alive(pid):
            raise ServiceError(f"{name} exited during start-up: {last_error(log_path)} (log: {log_path})")
        if time.monotonic() - started > timeout:
            _terminate(pid, kill=False, timeout=10)
            raise ServiceError(f"{name} was not ready after {timeout:.0f}s (log: {log_path})")
        time.sleep(0.2)
    return time.monotonic() - started


def stop(pid: int | None, timeout: float = 30.0) -> None:
    _terminate(pid, kill=False, timeout=timeout)


def rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid`` in MiB (the JVM's heap, metaspace, code and threads together)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def last_error(log_path: Path) -> str:
    if not log_path.exists():
        return "no output"
    lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if "ERROR" in ln or "Exception" in ln or "Error:" in ln]
    return (errors[-1] if errors else lines[-1] if lines else "no output")[:300]
