"""The rule that keeps old events readable: every schema change must be backward compatible.

"Backward" here is Avro's reader/writer resolution: the new (current) schema, as a reader, must be
able to read data written with every earlier version kept under ``schemas/history/<Name>/``.
Apache Avro's own ``ReaderWriterCompatibilityChecker`` decides it. ``caselink schemas check``
runs it, and so do the tests; ``caselink schemas snapshot`` records the current versions as
history once they are released.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from caselink.schemas.serde import HISTORY_DIR, SCHEMA_DIR, SCHEMA_NAMES


@dataclass(frozen=True)
class CompatProblem:
    schema: str
    old_version: str
    messages: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.schema}: cannot read data written by {self.old_version}: " + "; ".join(self.messages)


def check_pair(reader_text: str, writer_text: str) -> list[str]:
    """Empty when ``reader`` can read everything ``writer`` wrote; otherwise why not."""
    reader = avro.schema.parse(reader_text)
    writer = avro.schema.parse(writer_text)
    result = ReaderWriterCompatibilityChecker().get_compatibility(reader, writer)
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    return [f"{m} at {'/'.join(result.locations) or '/'}" for m in sorted(result.messages)] or [
        str(result.incompatibilities)
    ]


def check_all(schema_dir: Path = SCHEMA_DIR, history_dir: Path = HISTORY_DIR) -> list[CompatProblem]:
    problems = []
    for name in SCHEMA_NAMES:
        current = (schema_dir / f"{name}.avsc").read_text()
        for old in sorted((history_dir / name).glob("*.avsc")):
            messages = check_pair(current, old.read_text())
            if messages:
                problems.append(CompatProblem(name, old.name, tuple(messages)))
    return problems


def snapshot(version: str, schema_dir: Path = SCHEMA_DIR, history_dir: Path = HISTORY_DIR) -> list[Path]:
    """Record the current schemas as released version ``version`` (only those that changed)."""
    written = []
    for name in SCHEMA_NAMES:
        current = (schema_dir / f"{name}.avsc").read_text()
        target_dir = history_dir / name
        existing = sorted(target_dir.glob("*.avsc"))
        if existing and existing[-1].read_text() == current:
            continue
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / f"{version}.avsc"
        target.write_text(current)
        written.append(target)
    return written
