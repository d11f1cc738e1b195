"""Snapshots of the linker's state, so that a restart replays the link input only since the last one.

Why: the index is a deterministic function of the link-input log, and a worker that starts
without a standby replayed all of it, for minutes at a million records. A snapshot is that state at
a position of the log whose outputs are all acknowledged and committed; a worker that starts
with one loads it (the blocking index, keyed by this process's string hashes, is rebuilt) and
then continues exactly as a hot standby that had followed the log to that position: it replays
silently up to the group's committed offset and publishes from there. Kafka Streams keeps its
state stores on local disk for the same reason.

Writing does not stop the linker: it forks, and the child writes its copy-on-write view of the
state while the parent goes on linking. Writing touches every object's reference count, so the
child's pages are copied as it goes: up to the index's memory again, for as long as the write
takes. ``worker.snapshot_interval_s: 0`` turns snapshots off.

The file is MessagePack data with a checked header (``streams/snapshot_format.py``), not a pickle:
reading it cannot run code (a planted pickle ran code in the worker at start). It is written 0600
in the worker's data directory (0700, checked at start: ``caselink.core.private``), and a file
owned by another user or writable by others is not read.

A snapshot is refused, and the log replayed from the start as before, when its format, the code
that made it (the linkage modules, the linker's, the LinkedCase schema) or the model version
differ (checked in the header, before the body is read), when its body does not match its
length and SHA-256 (checked before anything of it is decoded), or when it cannot be read; the
linker also ignores one beyond the group's committed offset (a rewound group, ``caselink rebuild
--switch``).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import stat
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from caselink.linkage.index import Citizen, CitizenIndex, IdsOnly, RecordState
from caselink.linkage.model import LinkageModel
from caselink.linkage.record import LinkRecord
from caselink.linkage.standardise import StdDate, StdPostcode
from caselink.schemas import default_serde
from caselink.schemas.serde import AvroSerde
from caselink.streams.case_codec import MemberParts
from caselink.streams.linker_core import LinkerCore
from caselink.streams.snapshot_format import (
    SnapshotFormatError,
    SnapshotTypes,
    code_of,
    collector_paused,
    read_header,
    read_verified_body,
    write_replacing,
)
from caselink.streams.snapshot_format import code_fingerprint as fingerprint_of

from caselink import linkage
from caselink.core.private import ensure_private_dir

log = logging.getLogger(__name__)

FORMAT = "caselink-linker-snapshot/2"  # /1 was a pickle
# Every class a snapshot may rebuild; anything else in the state makes the write fail (logged, the
# previous snapshot kept) rather than being written in a form the reader would not take.
TYPES = SnapshotTypes([LinkRecord, StdDate, StdPostcode, RecordState, Citizen, MemberParts, IdsOnly])
_LINKAGE = Path(linkage.__file__).resolve().parent
_STREAMS = Path(__file__).resolve().parent


_CODE = code_of(sorted(_LINKAGE.glob("*.py")) + [
    _STREAMS / name for name in ("linker_core.py", "case_codec.py", "snapshot.py", "snapshot_format.py",
                                 "values_store.py")])


def code_fingerprint(serde: AvroSerde) -> str:
    """What the snapshot's meaning depends on besides the model: the code that built the state
    and the schema its member bytes are written in."""
    return fingerprint_of(_CODE, serde.schema("LinkedCase").fingerprint)


def core_state(core: LinkerCore) -> dict[str, Any]:
    return {"index": core.index.state(), "members": core.members, "citizen_versions": core.citizen_versions,
            "applied": core.applied, "review_notes": core.review_notes}


def restore_core(model: LinkageModel, state: dict[str, Any],
                 empty: Callable[[], LinkerCore] | None = None) -> LinkerCore:
    """The core a snapshot's state came from; ``empty`` makes a core with the deployment's guards."""
    core = empty() if empty is not None else LinkerCore(model)
    core.index = CitizenIndex.from_state(model, state["index"], max_block_size=core.index.blocking.max_block_size,
                                         max_citizen_records=core.index.max_citizen_records, resolver=core.resolver)
    core.members = state["members"]
    core.citizen_versions = state["citizen_versions"]
    core.applied = state["applied"]
    core.review_notes = state["review_notes"]
    return core


@dataclass
class Loaded:
    core: LinkerCore
    position: int  # the link-input offset the state has applied everything before
    taken_at: float
    seconds: float  # how long loading took
    header: dict[str, Any]


def write(path: Path, core: LinkerCore, position: int, extra: dict[str, Any] | None = None) -> int:
    """Write the snapshot atomically (a temporary file, synced, then renamed); returns its size.
    ``extra``: more the loader needs to carry on, kept in the header."""
    header = {"format": FORMAT, "fingerprint": code_fingerprint(core.serde), "model_version": core.model.version,
              "position": position, "taken_at": time.time(), "values_store": store_id(core), **(extra or {})}
    return write_replacing(path, core_state(core), TYPES, header)


def store_id(core: LinkerCore) -> str | None:
    """A resolver's store of values, which its snapshot is only good with (None: a single writer)."""
    return getattr(core.store, "store_id", None) if core.resolver else None


def open_private(path: Path) -> Any:
    """The file for reading, if it is a regular file of this user that nobody else may write."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        os.close(fd)
        raise SnapshotFormatError(f"not a private file of this user (mode {stat.filemode(info.st_mode)}, "
                                  f"owner uid {info.st_uid}): not trusted")
    return os.fdopen(fd, "rb")


def read(path: Path, model: LinkageModel, empty: Callable[[], LinkerCore] | None = None,
         values_store: str | None = None) -> Loaded | None:
    """The snapshot at ``path`` as a core, or None (logged) when there is none fit to use;
    ``empty`` makes a core with the deployment's guards; ``values_store``: a resolver's store's
    ``store_id``, which the snapshot must have been taken with.

    Nothing of the body is decoded until the header's format, code fingerprint and model version
    match and the body matches its length and checksum."""
    if not path.exists():
        return None
    started = time.monotonic()
    try:
        with open_private(path) as f:
            header = read_header(f)
            wanted = {"format": FORMAT, "fingerprint": code_fingerprint(default_serde()),
                      "model_version": model.version, "values_store": values_store}
            differs = {k: (header.get(k), v) for k, v in wanted.items() if header.get(k) != v}
            if differs:
                log.warning("linker snapshot %s not used (made by other code, model or store of values: %s); "
                            "replaying the log", path, differs)
                return None
            with collector_paused():
                core = restore_core(model, read_verified_body(f, header, TYPES), empty)
    except Exception as exc:  # noqa: BLE001 - any failure to read means: replay instead
        log.warning("linker snapshot %s could not be read (%s: %s); replaying the log", path,
                    type(exc).__name__, exc)
        return None
    return Loaded(core, int(header["position"]), float(header["taken_at"]), time.monotonic() - started, header)


class SnapshotWriter:
    """Writes snapshots in a forked child, one at a time, and keeps what ``/health`` reports.
    ``writer`` writes a state at a position (the linker's by default; a shard's:
    ``shard_snapshot.write``); ``what`` names it in the log."""

    def __init__(self, path: Path, writer: Callable[[Path, Any, int, dict[str, Any] | None], int] | None = None,
                 what: str = "linker", max_seconds: float = 3600.0) -> None:
        self.path = path
        self.writer = writer or write
        self.what = what
        self.max_seconds = max_seconds  # a child writing longer than this is stuck: killed, and counted
        self.child: int | None = None
        self.child_position = 0
        self.started = 0.0
        self.last: dict[str, Any] = {}
        self.failures = 0
        self.fork_ms = 0.0

    @property
    def busy(self) -> bool:
        self.poll()
        return self.child is not None

    def start(self, core: Any, position: int, extra: dict[str, Any] | None = None) -> None:
        """Fork a child that writes ``core`` at ``position``. Call it between batches, from the
        thread that owns ``core``: the child sees the state exactly as it is at the fork."""
        ensure_private_dir(self.path.parent)
        for stale in self.path.parent.glob(f"{self.path.name}.*.tmp"):  # from a writer killed part way
            stale.unlink(missing_ok=True)
        # Only this thread exists in the child, so it must not need a lock another thread may hold:
        # it touches nothing but the state and its file, and leaves with os._exit (no clean-up, no
        # Kafka client). Python 3.12 warns about forking a threaded process for that reason.
        forking = time.monotonic()
        pid = os.fork()
        if pid == 0:  # the child: only this thread exists; touch nothing but the state and the file
            code = 1
            try:
                gc.disable()
                self.writer(self.path, core, position, extra)
                code = 0
            except BaseException:  # noqa: BLE001 - said on stderr (the process's log), then the exit status
                traceback.print_exc()
            finally:
                os._exit(code)
        self.child, self.child_position, self.started = pid, position, time.monotonic()
        self.fork_ms = round((self.started - forking) * 1000, 1)  # the linker's pause: copying page tables

    def poll(self) -> None:
        if self.child is None:
            return
        pid, status = os.waitpid(self.child, os.WNOHANG)
        if pid == 0:
            if time.monotonic() - self.started > self.max_seconds:
                log.error("%s snapshot at %d still writing after %.0f s: stopped; the previous one is kept",
                          self.what, self.child_position, self.max_seconds)
                os.kill(self.child, signal.SIGKILL)
                os.waitpid(self.child, 0)
                self.child = None
                self.failures += 1
            return
        self.child = None
        seconds = time.monotonic() - self.started
        if os.waitstatus_to_exitcode(status) == 0:
            self.last = {"position": self.child_position, "seconds": round(seconds, 3), "at": time.time(),
                         "bytes": self.path.stat().st_size if self.path.exists() else 0, "fork_ms": self.fork_ms}
            log.info("%s snapshot at %d written in %.1f s", self.what, self.child_position, seconds)
        else:
            self.failures += 1
            log.error("%s snapshot at %d failed (exit status %s); the previous one is kept",
                      self.what, self.child_position, status)

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.busy and time.monotonic() < deadline:
            time.sleep(0.05)

    def status(self) -> dict[str, Any]:
        return {"last": self.last, "writing": self.child is not None, "failures": self.failures}
