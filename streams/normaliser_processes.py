"""The normaliser in processes of its own, supervised by the worker.

Why: in one process the normaliser and the linker thread take turns on one interpreter lock, and
the linker waited for it (docs/benchmarks.md). Each normaliser process runs one member of the app's
normaliser consumer group (``streams.normaliser_loop``), so the processes, and those of other
workers, share the agency topics' partitions.

The worker process keeps the linker and the web API. It restarts a normaliser process that dies
(its uncommitted input is redelivered to whichever process holds the partition next, and the
linker absorbs repeats), reports them in ``/health``, and adds their counters to ``/metrics``.
A normaliser process whose worker is gone (kill -9) exits within a second.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from caselink.streams.normaliser_loop import NormaliserLoop
from prometheus_client import REGISTRY
from prometheus_client.samples import Sample

from caselink.core.settings import Settings

log = logging.getLogger(__name__)

# Counter families the normaliser processes report to the worker's /metrics.
FORWARDED = ("caselink_events_in", "caselink_events_out", "caselink_dead_letters")
Snapshot = dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]


def _sample_key(sample: Sample) -> tuple[str, tuple[tuple[str, str], ...]]:
    return sample.name, tuple(sorted(sample.labels.items()))


def counter_snapshot() -> Snapshot:
    """This process's forwarded counters: family -> (sample name, labels) -> value."""
    found: Snapshot = {}
    for family in REGISTRY.collect():
        if family.name in FORWARDED:
            found[family.name] = {_sample_key(s): s.value for s in family.samples
                                  if not s.name.endswith("_created")}
    return found


def _add(total: Snapshot, more: Snapshot) -> None:
    for name, samples in more.items():
        into = total.setdefault(name, {})
        for key, value in samples.items():
            into[key] = into.get(key, 0.0) + value


def run_normaliser(settings: Settings, index: int, parent_pid: int, reports: Any, loglevel: str) -> None:
    """A normaliser process: one member of the app's normaliser group (``streams.normaliser_loop``).

    SIGTERM (the worker stopping it) ends the loop after its batch: outputs flushed, offsets
    committed, the group left. A process whose worker is gone (kill -9) exits within a second."""

    from caselink.core.logs import configure

    configure(settings, loglevel, role=f"normaliser-{index}")
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())

    def report_and_watch_parent() -> None:
        if os.getppid() != parent_pid:  # the worker is gone: so are we (Kafka redelivers what we held)
            os._exit(0)
        try:
            reports.put_nowait((index, os.getpid(), counter_snapshot()))
        except queue.Full:
            pass

    try:
        NormaliserLoop(settings).run(stopping.is_set, every_second=report_and_watch_parent)
    finally:
        report_and_watch_parent()  # the last counts, so the worker's totals include every event handled


class NormaliserProcesses:
    """Starts, watches and restarts the worker's normaliser processes."""

    def __init__(self, settings: Settings, count: int, loglevel: str = "info") -> None:
        self.settings = settings
        self.count = count
        self.loglevel = loglevel
        self._context = mp.get_context("spawn")
        self._reports = self._context.Queue(maxsize=1000)
        self._procs: list[Any] = [None] * count
        self._latest: dict[int, Snapshot] = {}
        self._retired: Snapshot = {}  # counters of processes that died, so totals never go down
        self.restarts = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="caselink-normalisers", daemon=True)

    def start(self) -> None:
        for i in range(self.count):
            self._spawn(i)
        self._watcher.start()

    def _spawn(self, i: int) -> None:
        proc = self._context.Process(target=run_normaliser, name=f"caselink-normaliser-{i}", daemon=False,
                                     args=(self.settings, i, os.getpid(), self._reports, self.loglevel))
        proc.start()
        self._procs[i] = proc

    def _watch(self) -> None:
        while not self._stopping.is_set():
            try:
                i, _pid, snapshot = self._reports.get(timeout=0.5)
                with self._lock:
                    self._latest[i] = snapshot
            except queue.Empty:
                pass
            for i, proc in enumerate(self._procs):
                if proc is not None and not proc.is_alive() and not self._stopping.is_set():
                    log.error("normaliser process %d (pid %s) exited with %s; restarting it", i, proc.pid,
                              proc.exitcode)
                    with self._lock:
                        _add(self._retired, self._latest.pop(i, {}))
                        self.restarts += 1
                    self._spawn(i)

    def totals(self) -> Snapshot:
        with self._lock:
            total: Snapshot = {}
            _add(total, self._retired)
            for snapshot in self._latest.values():
                _add(total, snapshot)
            return total

    def status(self) -> dict[str, Any]:
        return {"processes": [{"pid": p.pid, "alive": p.is_alive()} for p in self._procs if p is not None],
                "restarts": self.restarts}

    def stop(self, timeout: float = 15.0) -> None:
        self._stopping.set()
        for proc in self._procs:
            if proc is not None and proc.is_alive():
                proc.terminate()  # the loop stops on SIGTERM after its batch: flushes, commits, leaves the group
        deadline = time.monotonic() + timeout
        for proc in self._procs:
            if proc is not None:
                proc.join(max(0.1, deadline - time.monotonic()))
                if proc.is_alive():
                    proc.kill()


def merged_families(extra: Snapshot) -> Iterator[Any]:
    """Every family of this process, with ``extra`` counter samples added in."""
    for family in REGISTRY.collect():
        add = extra.get(family.name)
        if add:
            merged = {_sample_key(s): s for s in family.samples}
            for key, value in add.items():
                mine = merged.get(key)
                merged[key] = (mine._replace(value=mine.value + value) if mine is not None
                               else Sample(key[0], dict(key[1]), value))
            family.samples = list(merged.values())
        yield family


class MergedRegistry:
    """What the worker's /metrics renders: its own metrics plus its normaliser processes'."""

    def __init__(self, normalisers: NormaliserProcesses | None) -> None:
        self.normalisers = normalisers

    def collect(self) -> Iterable[Any]:
        if self.normalisers is None:
            return REGISTRY.collect()
        return merged_families(self.normalisers.totals())
