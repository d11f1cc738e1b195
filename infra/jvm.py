"""Finding a Java runtime new enough for a component, without a hard-coded path.

Kafka and Kafka Connect run on Java 17; Apicurio Registry 3 needs Java 21 or newer. A machine
often has several JDKs (a distribution's default and another beside it), so each component asks
for the lowest version it needs and gets the first that qualifies among: the setting given for
it, ``JAVA_HOME``, ``java`` on the PATH, then every JDK under the usual install roots
(``/usr/lib/jvm``, ``/usr/java``, ``/opt/java``, ``/opt``, ``~/.sdkman/candidates/java``,
``~/.jdks``). A JDK's version is read from its ``release`` file, or asked of ``java -version``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

ROOTS = ("/usr/lib/jvm", "/usr/java", "/opt/java", "/opt", "~/.sdkman/candidates/java", "~/.jdks")


class JavaNotFoundError(RuntimeError):
    """No Java runtime of the version a component needs; the message says what to install."""


def _home_of(java: Path) -> Path:
    return java.resolve().parent.parent


def java_version(java: Path) -> int | None:
    """The feature version (17, 21, 25 ...) of the runtime whose ``bin/java`` is ``java``."""
    release = _home_of(java) / "release"
    if release.exists():
        m = re.search(r'^JAVA_VERSION="(\d+)(?:\.(\d+))?', release.read_text(errors="replace"), re.M)
        if m:
            return int(m.group(2)) if m.group(1) == "1" else int(m.group(1))
    try:
        out = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not m:
        return None
    return int(m.group(2)) if m.group(1) == "1" else int(m.group(1))


def candidates(preferred: Path | None = None) -> list[Path]:
    """Every ``bin/java`` worth trying, in order of preference, each once."""
    found: list[Path] = []
    if preferred:
        found.append(preferred / "bin" / "java")
    if os.environ.get("JAVA_HOME"):
        found.append(Path(os.environ["JAVA_HOME"]) / "bin" / "java")
    on_path = shutil.which("java")
    if on_path:
        found.append(Path(on_path))
    for root in ROOTS:
        base = Path(root).expanduser()
        if base.is_dir():
            found += sorted(base.glob("*/bin/java"), reverse=True)
    unique: list[Path] = []
    seen: set[Path] = set()
    for java in found:
        if java.exists() and java.resolve() not in seen:
            seen.add(java.resolve())
            unique.append(java)
    return unique


def find_java(minimum: int, component: str, preferred: Path | None = None, setting: str = "") -> str:
    """The first ``java`` of version ``minimum`` or newer; a one-line error naming what to install."""
    seen = []
    for java in candidates(preferred):
        version = java_version(java)
        if version is not None and version >= minimum:
            return str(java)
        seen.append(f"Java {version if version is not None else '?'} ({java})")
    where = f"; found only {', '.join(seen)}" if seen else "; found no Java at all"
    hint = f", or set {setting} to one" if setting else ""
    raise JavaNotFoundError(f"{component} needs Java {minimum} or newer{where}: install a JDK {minimum}+ "
                            f"(e.g. Eclipse Temurin {minimum} from your distribution or adoptium){hint}")
