"""CSV and JSONL extracts: one-shot loads and watching a folder.

Files are streamed row by row (never loaded whole). A row in the wrong encoding, a malformed CSV
row or JSON line, or a row the mapping cannot handle becomes a dead letter naming the file and
row; every other row still arrives. The checkpoint is (file, size, mtime, rows done), so a
restarted load resumes after the last acknowledged row.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from multiprocessing.context import ForkContext, SpawnContext
from pathlib import Path
from typing import Any

from caselink.connectors.base import ConnectorSink, person_event
from caselink.connectors.checkpoints import Damaged, load_checkpoint, read_checkpoints
from caselink.connectors.mapping import AgencyMapping, RowError
from caselink.connectors.readers import (
    SOURCE_HEADER_HEADER,
    SOURCE_KIND_HEADER,
    SourceRow,
    csv_header_bytes,
    read_csv,
    read_jsonl,
)
from caselink.schemas.dead_letters import dead_letter
from tqdm import tqdm

from caselink.core.settings import Settings

# tqdm's monitor thread only tunes how often a bar redraws; without it a process can still fork
# its load workers (see _process_context).
tqdm.monitor_interval = 0

def source_kind(path: Path, mapping: AgencyMapping) -> str:
    return str(mapping.source.get("kind") or ("jsonl" if path.suffix in (".jsonl", ".ndjson", ".json") else "csv"))


def iter_source(path: Path, mapping: AgencyMapping, skip: int = 0) -> Iterator[SourceRow]:
    kind = source_kind(path, mapping)
    encoding = mapping.source.get("encoding", "utf-8")
    if kind == "jsonl":
        return read_jsonl(path, encoding, skip)
    if kind == "csv":
        return read_csv(path, mapping.source.get("delimiter", ","), encoding, skip)
    raise ValueError(f"{mapping.path}: source.kind {kind!r} is not a file kind (csv, jsonl)")


class SourceMismatchError(ValueError):
    """The file does not have the columns the mapping reads: nothing was sent, nothing checkpointed."""


JSON_ROWS_CHECKED = 100


def check_source(path: Path, mapping: AgencyMapping) -> list[str]:
    """Compare the file's columns with the mapping before anything is produced; raise
    SourceMismatchError naming each column the mapping reads and the file lacks (with the mapping
    file's line) and the file's own columns; return warnings about alternative columns missing.

    A CSV is checked against its header. A JSONL file has no header: its first rows' keys stand
    in, and only the record id, version and op columns are required of them (a field absent from
    a hundred rows may still be on others)."""
    kind = source_kind(path, mapping)
    columns: set[str] = set()
    if kind == "csv":
        from caselink.connectors.readers import parse_csv_row

        header = csv_header_bytes(path, mapping.source.get("encoding", "utf-8"))
        if not header.strip():
            raise SourceMismatchError(f"{path}: empty file (no header line)")
        try:
            names = parse_csv_row(header, header, mapping.source.get("delimiter", ","),
                                  mapping.source.get("encoding", "utf-8"))
        except ValueError:
            return []  # a header csv cannot read: its rows become dead letters with the reason
        columns = {c.strip() for c in names}
    else:
        for i, row in enumerate(iter_source(path, mapping)):
            if i >= JSON_ROWS_CHECKED:
                break
            if row.data is not None:
                columns |= set(row.data)
        if not columns:
            return []
    errors, warnings = mapping.missing_columns(columns, partial=kind != "csv")
    if errors:
        shown = ", ".join(sorted(columns)[:40]) + (" ..." if len(columns) > 40 else "")
        raise SourceMismatchError("; ".join(errors) + f". {path.name} has: {shown}. Nothing was sent.")
    return warnings


@dataclass
class LoadReport:
    path: str
    rows: int = 0
    events: int = 0
    dead_letters: int = 0
    resumed_from: int = 0
    seconds: float = 0.0
    workers: int = 1
    last_row: int = 0
    damaged_checkpoints: list[dict[str, Any]] = field(default_factory=list)  # skipped, with why
    warnings: list[str] = field(default_factory=list)


def shard_of(key: str, shards: int) -> int:
    """Which of ``shards`` worker processes handles a record: every row of one record goes to the
    same worker, so a record's changes keep their order on its partition."""
    return zlib.crc32(key.encode("utf-8", "surrogateescape")) % shards


def _identity(path: Path, stat: os.stat_result | None = None) -> dict[str, Any]:
    """What a checkpoint is about: a file, as long as its size and modification time stay the same."""
    stat = stat or path.stat()
    return {"file": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _matches(state: dict[str, Any] | None, identity: dict[str, Any]) -> bool:
    if not state:
        return False
    return bool(state.get("size") == identity["size"] and state.get("mtime_ns") == identity["mtime_ns"])


def resume_point(checkpoints: dict[str, dict[str, Any]], name: str, identity: dict[str, Any]) -> int:
    """The data row after which a load of ``identity`` by ``name`` may start.

    A connector's own checkpoint says exactly where it got to. Without one (a first parallel run
    after a single-process one, or the reverse, or a different number of workers) only positions
    that vouch for *every* row before them count: the base name's checkpoint, or the smallest
    position of a complete set of ``#i/n`` shard checkpoints (a shard vouches for its own rows
    only, so a set with a shard missing proves nothing). The furthest such position is safe; rows
    after it may be sent again, and the linker absorbs them by (record, source_version).
    """
    def position(key: str) -> int | None:
        state = checkpoints.get(key, {}).get("files", {}).get(identity["file"])
        return int(state["rows"]) if _matches(state, identity) else None

    own = position(name)
    if own is not None:
        return own
    base = name.split("#", 1)[0]
    safe = [p for p in [position(base)] if p is not None]
    shard_counts = {key.rsplit("/", 1)[1] for key in checkpoints if key.startswith(base + "#") and "/" in key}
    for count in shard_counts:
        if not count.isdigit() or int(count) < 1:
            continue
        shards = [position(f"{base}#{i}/{count}") for i in range(int(count))]
        known = [p for p in shards if p is not None]
        if len(known) == len(shards):
            safe.append(min(known))
    return max(safe) if safe else 0


class FileConnector:
    """Loads one agency's extract files through its mapping into Kafka.

    ``shard=(i, n)`` makes this one of ``n`` worker processes over the same file: it reads every
    row but maps and sends only the records whose ``shard_of`` is ``i``, and keeps its own
    checkpoint (``<name>#i/n``). ``load_parallel`` runs the ``n`` workers and records the file as
    complete under the base name.
    """

    def __init__(self, settings: Settings, mapping: AgencyMapping, name: str | None = None,
                 shard: tuple[int, int] | None = None) -> None:
        self.settings = settings
        self.mapping = mapping
        self.base_name = name or f"file:{mapping.agency}"
        self.shard = shard
        self.name = f"{self.base_name}#{shard[0]}/{shard[1]}" if shard else self.base_name
        self.sink = ConnectorSink(settings, self.name, mapping.agency)
        self._path = Path()
        self._source_headers: list[tuple[str, bytes]] | None = None  # for dead letters, made on the first
        self.damaged_checkpoints: list[Damaged] = []

    def _owner(self, row: SourceRow) -> int:
        assert self.shard is not None
        key = None
        if row.data is not None:
            try:
                key = self._record_id(row.data)
            except (RowError, ValueError):
                key = None
        return shard_of(str(key).strip() if key is not None else f"row {row.number}", self.shard[1])

    def load(self, path: Path, progress: bool = False, resume: bool = True,
             progress_counter: Any = None, checkpoints: dict[str, dict[str, Any]] | None = None) -> LoadReport:
        """Load one file. ``checkpoints`` (every connector's, as ``read_checkpoints`` returns
        them) saves reading the topic again when the caller has just read it."""
        started = time.monotonic()
        path = Path(path)
        warnings = check_source(path, self.mapping) if self.shard is None else []  # load_parallel checked
        stat = path.stat()
        identity = _identity(path, stat)
        # An idempotent producer's first acknowledgement takes half a second (librdkafka asks
        # for a producer id on a timer); start it now so it overlaps with the work.
        _ = self.sink.producer
        if checkpoints is None:
            checkpoints = self._read_checkpoints()
        self._files_state = checkpoints.get(self.name, {}).get("files", {})
        skip = resume_point(checkpoints, self.name, identity) if resume else 0
        report = LoadReport(str(path), resumed_from=skip,
                            damaged_checkpoints=[asdict(d) for d in self.damaged_checkpoints], warnings=warnings)
        fallback_version = int(stat.st_mtime * 1000)
        occurred_at = datetime.fromtimestamp(stat.st_mtime, UTC)
        bar = tqdm(total=stat.st_size, unit="B", unit_scale=True, disable=not progress,
                   desc=f"{self.mapping.agency} {path.name}")
        self._record_id = self.mapping.record_id.compile_scalar("record_id")
        self._path, self._source_headers = path, None
        mine = self.shard[0] if self.shard else None
        every = self.settings.connector.checkpoint_every_rows
        interval = self.settings.connector.checkpoint_interval_s
        last = skip
        progressed = seen = 0
        checkpointed_at = time.monotonic()
        for row in iter_source(path, self.mapping, skip=skip):
            progressed += row.length + 1
            if mine is None or self._owner(row) == mine:
                self._send(row, path.name, report, fallback_version, occurred_at)
            # Only now is this row done (sent, or another worker's): a checkpoint naming it must
            # come after, or a kill between the two would skip it on restart.
            last = row.number
            seen += 1
            if seen % every == 0:
                if time.monotonic() - checkpointed_at >= interval:
                    self._checkpoint(identity, last)
                    checkpointed_at = time.monotonic()
                bar.update(progressed)
                _add(progress_counter, progressed)
                progressed = 0
        bar.update(progressed)
        _add(progress_counter, progressed)
        bar.close()
        self._checkpoint(identity, last, complete=True)
        report.seconds = time.monotonic() - started
        report.last_row = last
        return report

    def _send(self, row: SourceRow, file_name: str, report: LoadReport, fallback_version: int,
              occurred_at: datetime) -> None:
        report.rows += 1
        if row.data is None:
            self._dead_letter(row, file_name, RowError("row", row.error or "?"))
            report.dead_letters += 1
            return
        try:
            mapped = self.mapping.apply(row.data)
            event = person_event(self.mapping, mapped, fallback_version,
                                 {"connector": self.base_name, "file": file_name, "row": str(row.number)},
                                 occurred_at)
            self.sink.send_event(event)
            report.events += 1
        except (RowError, ValueError, RecursionError) as exc:
            self._dead_letter(row, file_name, exc)
            report.dead_letters += 1

    def _dead_letter(self, row: SourceRow, file_name: str, error: Exception) -> None:
        """The row's own bytes, with what `caselink dlq redrive --mapping` needs to read them again
        (the file kind and, for CSV, the header line) in the message's headers."""
        if self._source_headers is None:
            kind, encoding = source_kind(self._path, self.mapping), self.mapping.source.get("encoding", "utf-8")
            self._source_headers = [(SOURCE_KIND_HEADER, kind.encode())]
            if kind == "csv":
                self._source_headers.append((SOURCE_HEADER_HEADER, csv_header_bytes(self._path, encoding)))
        self.sink.send_dead_letter(dead_letter(f"{file_name}:row {row.number}", "connector", error, row.raw,
                                               original_size=row.length), headers=self._source_headers)

    def load_parallel(self, path: Path, workers: int, progress: bool = False, resume: bool = True) -> LoadReport:
        """``load`` split over ``workers`` processes by record (see ``shard_of``).

        Mapping and Avro encoding take one core per 30,000 rows/s or so; this spreads them over
        the machine's cores. Each worker has its own idempotent producer and checkpoint; once all
        finish, the file is recorded as complete under this connector's name, which is what
        ``watch`` and ``caselink connector status`` read.
        """
        if workers <= 1:
            return self.load(path, progress, resume)
        path = Path(path)
        warnings = check_source(path, self.mapping)
        started = time.monotonic()
        checkpoints = self._read_checkpoints()  # once here, not once per worker
        damaged = self.damaged_checkpoints
        context = _process_context(self.sink)
        counter = context.Value("q", 0)
        results = context.Queue()
        procs = [context.Process(target=_load_shard, name=f"{self.base_name}#{i}/{workers}",
                                 args=(self.settings, self.mapping, self.base_name, (i, workers),
                                       path, resume, counter, results, checkpoints))
                 for i in range(workers)]
        for proc in procs:
            proc.start()
        _ = self.sink.producer  # only now (no more forks): its producer id comes while they work
        identity = _identity(path)
        total = identity["size"] * workers
        bar = tqdm(total=identity["size"], unit="B", unit_scale=True, disable=not progress,
                   desc=f"{self.mapping.agency} {path.name} ({workers} workers)")
        outcomes: list[Any] = []
        while len(outcomes) < workers:
            try:
                outcomes.append(results.get(timeout=0.5))
            except queue.Empty:
                if all(not p.is_alive() for p in procs) and results.empty():
                    break
            bar.n = min(counter.value * bar.total // max(total, 1), bar.total)
            bar.refresh()
        for proc in procs:
            proc.join()
        bar.close()
        failures = [o for o in outcomes if isinstance(o, str)]
        if len(outcomes) < workers or failures:
            lost = [p.name for p in procs if p.exitcode != 0]
            why = "; ".join(failures) or "worker(s) died: " + ", ".join(lost)
            raise RuntimeError(f"{path}: parallel load failed ({why}); run it again to resume from the checkpoints")
        reports = [o for o in outcomes if isinstance(o, LoadReport)]
        self._files_state = self._read_checkpoints().get(self.name, {}).get("files", {})
        self._checkpoint(identity, max(r.last_row for r in reports), complete=True)
        return LoadReport(str(path), rows=sum(r.rows for r in reports), events=sum(r.events for r in reports),
                          dead_letters=sum(r.dead_letters for r in reports),
                          resumed_from=min(r.resumed_from for r in reports),
                          seconds=time.monotonic() - started, workers=workers,
                          damaged_checkpoints=[asdict(d) for d in damaged], warnings=warnings)

    def _read_checkpoints(self) -> dict[str, dict[str, Any]]:
        """This agency's checkpoints; damaged ones are skipped and kept in ``damaged_checkpoints``."""
        self.damaged_checkpoints = []
        return read_checkpoints(self.settings, self.mapping.agency, damaged=self.damaged_checkpoints)

    def _checkpoint(self, identity: dict[str, Any], rows: int, complete: bool = False) -> None:
        self._files_state[identity["file"]] = {**identity, "rows": rows, "complete": complete,
                                              "at": datetime.now(UTC).isoformat(timespec="seconds")}
        self.sink.commit_checkpoint({"connector": self.name, "files": self._files_state})

    def watch(self, folder: Path, pattern: str = "*", poll_seconds: float = 2.0,
              stop_after: float | None = None, workers: int = 1) -> list[LoadReport]:
        """Load every file that appears (or changes) in ``folder`` until stopped."""
        reports = []
        deadline = time.monotonic() + stop_after if stop_after else None
        while deadline is None or time.monotonic() < deadline:
            state = (load_checkpoint(self.settings, self.mapping.agency, self.name) or {}).get("files", {})
            for path in sorted(folder.glob(pattern)):
                if not path.is_file() or path.name.startswith("."):
                    continue
                identity = _identity(path)
                seen = state.get(identity["file"])
                if _matches(seen, identity) and seen.get("complete"):
                    continue
                reports.append(self.load_parallel(path, workers))
            time.sleep(poll_seconds)
        return reports


def _process_context(sink: ConnectorSink) -> ForkContext | SpawnContext:
    """Fork while this process runs no other thread (a fork copies only the calling thread, so a
    lock another thread holds would stay locked in the child); spawn otherwise.

    A forked worker starts at once with everything already imported and compiled. A spawned one
    imports caselink and compiles its mapping and schemas again: about half a second of CPU each,
    a sixth of loading 100,000 rows.
    """
    if sink.started or threading.active_count() > 1 or "fork" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    return mp.get_context("fork")


def _add(counter: Any, amount: int) -> None:
    if counter is not None:
        with counter.get_lock():
            counter.value += amount


def _load_shard(settings: Settings, mapping: AgencyMapping, name: str, shard: tuple[int, int], path: Path,
                resume: bool, counter: Any, results: Any, checkpoints: dict[str, dict[str, Any]]) -> None:
    """One worker process of ``FileConnector.load_parallel``; reports a LoadReport or the error."""
    try:
        connector = FileConnector(settings, mapping, name=name, shard=shard)
        results.put(connector.load(path, resume=resume, progress_counter=counter, checkpoints=checkpoints))
    except Exception as exc:  # noqa: BLE001 - the parent reports it with the worker's name
        results.put(f"worker {shard[0]}/{shard[1]}: {type(exc).__name__}: {exc}")


def resolve_source_path(mapping: AgencyMapping, override: Path | None = None) -> Path:
    if override is not None:
        return override
    rel: str | None = mapping.source.get("path")
    if not rel:
        raise ValueError(f"{mapping.path}: no source.path; pass the file explicitly")
    return (Path(mapping.path).parent / rel).resolve()


__all__ = ["FileConnector", "LoadReport", "SourceMismatchError", "check_source", "iter_source", "read_csv",
           "read_jsonl", "resolve_source_path",
           "resume_point", "shard_of"]
