"""Fetching JVM components from Maven Central into caselink's cache, once.

The machines this project runs on reach Maven Central and nothing else, so every JVM part (the
Kafka broker, the schema registry, the Kafka Connect worker and its plugins) is an ordinary Maven
artifact, resolved by ``mvn`` into ``~/.cache/caselink`` on first use. ``-DskipExternalRepos``
keeps Apicurio's parent pom from adding repositories of its own; a pom that still names another
repository (Debezium's names Confluent's) fails over to Central, where everything used here is.
A directory is used only once a resolution into it completed (its ``.complete`` marker).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path


class MavenError(RuntimeError):
    """Maven could not resolve something; the message says what, and where its log is."""


def _mvn() -> str:
    mvn = shutil.which("mvn")
    if not mvn:
        raise MavenError("Maven (mvn) was not found and the jars are not cached yet: "
                         "install Maven (Debian: apt-get install maven)")
    return mvn


def _resolve(target: Path, what: str, args: list[str], progress: Callable[[str], None] | None) -> Path:
    marker = target / ".complete"
    if marker.exists():
        return target
    mvn = _mvn()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f"{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    log_path = target.parent / f"{target.name}.maven.log"
    if progress:
        progress(f"resolving {what} from Maven Central ...")
    with log_path.open("w") as log:
        done = subprocess.run([mvn, "-B", "-q", "-DskipExternalRepos", *args, f"-DoutputDirectory={staging}"],
                              stdout=log, stderr=subprocess.STDOUT, check=False, cwd=target.parent)
    if done.returncode != 0 or not any(staging.iterdir()):
        shutil.rmtree(staging, ignore_errors=True)
        raise MavenError(f"Maven could not resolve {what} (log: {log_path}); check that Maven Central is "
                         "reachable (proxy settings in ~/.m2/settings.xml)")
    (staging / ".complete").write_text(what)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def copy_dependencies(pom: Path, target: Path, what: str, progress: Callable[[str], None] | None = None,
                      exclude_groups: str = "", properties: dict[str, str] | None = None) -> Path:
    """The runtime dependencies of ``pom`` (and what it names) as jars in ``target``."""
    args = ["-f", str(pom), "dependency:copy-dependencies", "-DincludeScope=runtime"]
    args += [f"-D{k}={v}" for k, v in (properties or {}).items()]
    if exclude_groups:
        args.append(f"-DexcludeGroupIds={exclude_groups}")
    return _resolve(target, what, args, progress)


def copy_artifact(coordinates: str, target: Path, progress: Callable[[str], None] | None = None) -> Path:
    """One artifact (``group:artifact:version[:type[:classifier]]``) copied into ``target``."""
    return _resolve(target, coordinates, ["dependency:copy", f"-Dartifact={coordinates}"], progress)
