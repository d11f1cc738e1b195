"""CSV and JSONL extracts: one-shot loads and watching a folder.

Files are streamed row by row (never loaded whole). A row in the wrong encoding, a malformed CSV
row or JSON line, or a row the mapping cannot handle becomes a dead letter naming the file and
row; every other row still arrives. The checkpoint is (file, size, mtime, rows done), so a
restarted load resumes after the last acknowledged row.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from caselink.settings import Settings
from connectors.base import ConnectorSink, dead_letter, load_checkpoint, person_event
from connectors.mapping import AgencyMapping, RowError

CHECKPOINT_EVERY = 5_000
MAX_ROW_BYTES = 1_000_000


@dataclass
class SourceRow:
    number: int  # 1-based data row (CSV header excluded), or line number for JSONL
    raw: bytes
    data: dict[str, Any] | None
    error: str | None = None


def _decode_check(text: str, encoding: str) -> str | None:
    if any("\udc80" <= ch <= "\udcff" for ch in text):
        return f"bytes that are not valid {encoding}"
    return None


def read_csv(path: Path, delimiter: str = ",", encoding: str = "utf-8", skip: int = 0) -> Iterator[SourceRow]:
    enc = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    with path.open("r", encoding=enc, errors="surrogateescape", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield SourceRow(0, b"", None, f"unreadable header: {exc}")
            return
        header = [h.strip() for h in header]
        number = 0
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                number += 1
                if number > skip:
                    yield SourceRow(number, f"line {reader.line_num}".encode(), None, f"malformed CSV: {exc}")
                continue
            number += 1
            if number <= skip:
                continue
            if not fields or all(not f for f in fields):
                continue
            raw_text = delimiter.join(fields)
            raw = raw_text.encode("utf-8", "surrogateescape")
            problem = _decode_check(raw_text, encoding)
            if problem is None and len(fields) != len(header):
                problem = f"{len(fields)} fields where the header has {len(header)}"
            if problem is None and len(raw) > MAX_ROW_BYTES:
                problem = f"row of {len(raw)} bytes exceeds {MAX_ROW_BYTES}"
            if problem:
                yield SourceRow(number, raw, None, problem)
            else:
                yield SourceRow(number, raw, dict(zip(header, fields, strict=True)))


def read_jsonl(path: Path, encoding: str = "utf-8", skip: int = 0) -> Iterator[SourceRow]:
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if number <= skip or not line.strip():
                continue
            if len(line) > MAX_ROW_BYTES:
                yield SourceRow(number, line[:1000], None, f"line of {len(line)} bytes exceeds {MAX_ROW_BYTES}")
                continue
            try:
                data = json.loads(line.decode(encoding))
            except UnicodeDecodeError:
                yield SourceRow(number, line, None, f"bytes that are not valid {encoding}")
                continue
            except json.JSONDecodeError as exc:
                yield SourceRow(number, line, None, f"malformed JSON: {exc.msg} at column {exc.colno}")
                continue
            if not isinstance(data, dict):
                yield SourceRow(number, line, None, "a JSON object per line is required")
                continue
            yield SourceRow(number, line, data)


def iter_source(path: Path, mapping: AgencyMapping, skip: int = 0) -> Iterator[SourceRow]:
    kind = mapping.source.get("kind") or ("jsonl" if path.suffix in (".jsonl", ".ndjson", ".json") else "csv")
    encoding = mapping.source.get("encoding", "utf-8")
    if kind == "jsonl":
        return read_jsonl(path, encoding, skip)
    if kind == "csv":
        return read_csv(path, mapping.source.get("delimiter", ","), encoding, skip)
    raise ValueError(f"{mapping.path}: source.kind {kind!r} is not a file kind (csv, jsonl)")


@dataclass
class LoadReport:
    path: str
    rows: int = 0
    events: int = 0
    dead_letters: int = 0
    resumed_from: int = 0
    seconds: float = 0.0


class FileConnector:
    """Loads one agency's extract files through its mapping into Kafka."""

    def __init__(self, settings: Settings, mapping: AgencyMapping, name: str | None = None) -> None:
        self.settings = settings
        self.mapping = mapping
        self.name = name or f"file:{mapping.agency}"
        self.sink = ConnectorSink(settings, self.name, mapping.agency)

    def load(self, path: Path, progress: bool = False, resume: bool = True) -> LoadReport:
        path = Path(path)
        stat = path.stat()
        identity = {"file": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        self._files_state = (load_checkpoint(self.settings, self.name) or {}).get("files", {})
        skip = 0
        done = self._files_state.get(identity["file"])
        if resume and done and done.get("size") == identity["size"] and done.get("mtime_ns") == identity["mtime_ns"]:
            skip = int(done.get("rows", 0))
        report = LoadReport(str(path), resumed_from=skip)
        started = time.monotonic()
        fallback_version = int(stat.st_mtime * 1000)
        occurred_at = datetime.fromtimestamp(stat.st_mtime, UTC)
        bar = tqdm(total=stat.st_size, unit="B", unit_scale=True, disable=not progress,
                   desc=f"{self.mapping.agency} {path.name}")
        last = skip
        for row in iter_source(path, self.mapping, skip=skip):
            bar.update(len(row.raw) + 1)
            report.rows += 1
            origin = f"{path.name}:row {row.number}"
            if row.data is None:
                self.sink.send_dead_letter(dead_letter(origin, "connector", RowError("row", row.error or "?"),
                                                       row.raw))
                report.dead_letters += 1
            else:
                try:
                    mapped = self.mapping.apply(row.data)
                    event = person_event(self.mapping, mapped, fallback_version,
                                         {"connector": self.name, "file": path.name, "row": str(row.number)},
                                         occurred_at)
                    self.sink.send_event(event)
                    report.events += 1
                except (RowError, ValueError) as exc:
                    # The parsed row as JSON (not the raw line): `caselink dlq redrive --mapping`
                    # can map it again once the mapping is fixed.
                    self.sink.send_dead_letter(dead_letter(origin, "connector", exc,
                                                           json.dumps(row.data, default=str).encode()))
                    report.dead_letters += 1
            last = row.number
            if report.rows % CHECKPOINT_EVERY == 0:
                self._checkpoint(identity, last)
        bar.close()
        self._checkpoint(identity, last, complete=True)
        report.seconds = time.monotonic() - started
        return report

    def _checkpoint(self, identity: dict[str, Any], rows: int, complete: bool = False) -> None:
        self._files_state[identity["file"]] = {**identity, "rows": rows, "complete": complete,
                                              "at": datetime.now(UTC).isoformat(timespec="seconds")}
        self.sink.commit_checkpoint({"connector": self.name, "files": self._files_state})

    def watch(self, folder: Path, pattern: str = "*", poll_seconds: float = 2.0,
              stop_after: float | None = None) -> list[LoadReport]:
        """Load every file that appears (or changes) in ``folder`` until stopped."""
        reports = []
        deadline = time.monotonic() + stop_after if stop_after else None
        while deadline is None or time.monotonic() < deadline:
            state = (load_checkpoint(self.settings, self.name) or {}).get("files", {})
            for path in sorted(folder.glob(pattern)):
                if not path.is_file() or path.name.startswith("."):
                    continue
                stat = path.stat()
                seen = state.get(str(path.resolve()))
                if seen and seen.get("complete") and seen.get("size") == stat.st_size and \
                        seen.get("mtime_ns") == stat.st_mtime_ns:
                    continue
                reports.append(self.load(path))
            time.sleep(poll_seconds)
        return reports


def resolve_source_path(mapping: AgencyMapping, override: Path | None = None) -> Path:
    if override is not None:
        return override
    rel = mapping.source.get("path")
    if not rel:
        raise ValueError(f"{mapping.path}: no source.path; pass the file explicitly")
    return (Path(mapping.path).parent / rel).resolve()


__all__ = ["FileConnector", "LoadReport", "iter_source", "read_csv", "read_jsonl", "resolve_source_path"]
