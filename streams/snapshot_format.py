"""The linker snapshot's file format: data that cannot run code when read, checked before it is decoded.

Why not pickle (what the snapshot was): loading a pickle runs whatever the file says, so a file
planted in the data directory ran code in the worker at start. This format is MessagePack, a data
format: reading it builds dicts, lists, strings, numbers and bytes, and nothing else except the
few classes below, rebuilt field by field from an allow-list (``SnapshotTypes``), never by
calling code named in the file.

Layout (``write_file``/``read_file``):

* a header block of ``HEADER_BYTES``: a magic line, then JSON with the format, the code and
  model fingerprints, the body's length and SHA-256, and the caller's own fields (position ...).
  The reader checks the format and fingerprints, then the length and checksum of the whole body,
  before it decodes anything of the body;
* the body: a stream of MessagePack objects. First the class table (each allowed class's name
  and fields, in the order objects list their values). Then the state, which is a dict whose
  values may be dicts: every dict, set or list at the first two levels is written as a section
  (its path, kind and length) followed by its items one by one, so neither the writer nor the
  reader holds the encoded state whole.

Generic over what ``CitizenIndex.state()`` returns: any mix of dict, list, tuple, set,
frozenset, str, int, float, bool, None, bytes and datetime, and objects of the allowed classes
(their fields are read from the class, so fields added to them are carried without a change
here; the code fingerprint already refuses a snapshot made by other code).
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import fields, is_dataclass
from datetime import datetime
from operator import attrgetter
from pathlib import Path
from typing import IO, Any

import msgpack

MAGIC = b"caselink linker snapshot\n"
HEADER_BYTES = 4096
_CHUNK = 1 << 20

# In-band markers: an object msgpack cannot write becomes a list whose first item is one of these
# (an ext type with no data), which the reader turns back into the object.
TUPLE, SET, FROZENSET, DATETIME, OBJECT = 1, 2, 3, 4, 5


class SnapshotFormatError(ValueError):
    """The file is not a snapshot this code can read: the message says what is wrong."""


class _Mark:
    __slots__ = ("code",)

    def __init__(self, code: int) -> None:
        self.code = code


_MARKS = {code: _Mark(code) for code in (TUPLE, SET, FROZENSET, DATETIME, OBJECT)}
_EXT = {code: msgpack.ExtType(code, b"") for code in _MARKS}


def _field_names(cls: type) -> tuple[str, ...]:
    """The attributes that make up an instance of ``cls``, in a fixed order."""
    if issubclass(cls, tuple) and hasattr(cls, "_fields"):  # a NamedTuple
        return tuple(cls._fields)
    slots: list[str] = []
    for klass in reversed(cls.__mro__):
        declared = klass.__dict__.get("__slots__", ())
        slots += [declared] if isinstance(declared, str) else [s for s in declared if s not in ("__weakref__",)]
    if slots:
        return tuple(dict.fromkeys(slots))
    if is_dataclass(cls):
        return tuple(f.name for f in fields(cls))
    raise TypeError(f"{cls.__name__}: a snapshot type needs __slots__, dataclass fields or NamedTuple fields")


class SnapshotTypes:
    """The classes a snapshot may hold, by name, and how each is taken apart and rebuilt."""

    def __init__(self, classes: list[type]) -> None:
        self.classes = list(classes)
        self.index = {cls: i for i, cls in enumerate(self.classes)}
        self.names = [f"{cls.__module__}.{cls.__qualname__}" for cls in self.classes]
        self.fields = [_field_names(cls) for cls in self.classes]
        self.table = [[name, list(f)] for name, f in zip(self.names, self.fields, strict=True)]
        self._get = [attrgetter(*f) if len(f) > 1 else (lambda o, n=f[0]: (getattr(o, n),)) for f in self.fields]
        self._build = [_builder(cls, f) for cls, f in zip(self.classes, self.fields, strict=True)]

    # ------------------------------------------------------------------ writing
    def default(self, obj: Any) -> Any:
        """msgpack's hook for what it cannot write itself: the markers above, or TypeError."""
        kind = type(obj)
        if kind is tuple:
            return [_EXT[TUPLE], *obj]
        if kind is set:
            return [_EXT[SET], *obj]
        if kind is frozenset:
            return [_EXT[FROZENSET], *obj]
        if kind is datetime:
            return [_EXT[DATETIME], obj.isoformat()]
        i = self.index.get(kind)
        if i is None:
            raise TypeError(f"{kind.__module__}.{kind.__qualname__} may not be written in a snapshot")
        if issubclass(kind, tuple):
            return [_EXT[OBJECT], i, *obj]
        if not hasattr(kind, "__slots__"):
            extra = set(vars(obj)) - set(self.fields[i])
            if extra:
                raise TypeError(f"{kind.__qualname__} has attributes outside its fields: {sorted(extra)}")
        return [_EXT[OBJECT], i, *self._get[i](obj)]

    # ------------------------------------------------------------------ reading
    def ext_hook(self, code: int, data: bytes) -> _Mark:
        mark = _MARKS.get(code)
        if mark is None or data:
            raise SnapshotFormatError(f"unknown ext type {code}")
        return mark

    def list_hook(self, items: list[Any]) -> Any:
        if not items or type(items[0]) is not _Mark:
            return items
        code = items[0].code
        if code == OBJECT:
            i = items[1] if len(items) > 1 else None
            if type(i) is not int or not 0 <= i < len(self.classes):
                raise SnapshotFormatError("an object of a class outside the snapshot's table")
            if len(items) - 2 != len(self.fields[i]):
                raise SnapshotFormatError(f"{self.classes[i].__qualname__} with {len(items) - 2} values "
                                          f"for {len(self.fields[i])} fields")
            return self._build[i](items[2:])
        if code == TUPLE:
            return tuple(items[1:])
        if code == SET:
            return set(items[1:])
        if code == FROZENSET:
            return frozenset(items[1:])
        if len(items) != 2 or not isinstance(items[1], str):  # DATETIME
            raise SnapshotFormatError("a datetime is one ISO string")
        return datetime.fromisoformat(items[1])


def _builder(cls: type, names: tuple[str, ...]) -> Callable[[list[Any]], Any]:
    """Rebuilds an instance of ``cls`` from its field values, without calling any of its code."""
    if issubclass(cls, tuple):
        return cls._make  # type: ignore[attr-defined,no-any-return]
    new = object.__new__
    setattr_ = object.__setattr__  # frozen dataclasses too

    def build(values: list[Any]) -> Any:
        obj = new(cls)
        for name, value in zip(names, values, strict=True):
            setattr_(obj, name, value)
        return obj

    return build


# ---------------------------------------------------------------------- the body
_CONTAINERS = (dict, set, frozenset, list)
_OPEN = object()  # a section that opens a dict whose items follow as sections of their own


def _sections(state: dict[str, Any]) -> Iterator[tuple[list[Any], Any]]:
    """(path, value) for the state's values; a dict holding containers is opened, one level down."""
    for name, value in state.items():
        if type(value) is dict and any(type(v) in _CONTAINERS for v in value.values()):
            yield [name], _OPEN
            for sub, inner in value.items():
                yield [name, sub], inner
        else:
            yield [name], value


def _encode_body(state: dict[str, Any], types: SnapshotTypes, out: Callable[[bytes], None]) -> None:
    packer = msgpack.Packer(default=types.default, strict_types=True, use_bin_type=True, datetime=False)
    out(packer.pack(types.table))
    for path, value in _sections(state):
        kind = type(value)
        if value is _OPEN:
            out(packer.pack([path, "dict", 0]))
        elif kind is dict:
            out(packer.pack([path, "map", len(value)]))
            for key, item in value.items():
                out(packer.pack(key))
                out(packer.pack(item))
        elif kind in (set, frozenset, list):
            out(packer.pack([path, kind.__name__, len(value)]))
            for item in value:
                out(packer.pack(item))
        else:
            out(packer.pack([path, "value", 1]))
            out(packer.pack(value))


def _decode_body(stream: IO[bytes], types: SnapshotTypes) -> dict[str, Any]:
    unpacker = msgpack.Unpacker(stream, ext_hook=types.ext_hook, list_hook=types.list_hook, raw=False,
                                strict_map_key=False, use_list=True, max_buffer_size=1 << 30)
    table = next(unpacker)
    if table != types.table:
        raise SnapshotFormatError("the snapshot's classes or their fields differ from this code's")
    state: dict[str, Any] = {}
    opened: set[str] = set()
    for section in unpacker:
        if (not isinstance(section, list) or len(section) != 3 or not isinstance(section[0], list)
                or not 1 <= len(section[0]) <= 2 or not isinstance(section[2], int) or section[2] < 0):
            raise SnapshotFormatError("a damaged section header")
        path, kind, count = section
        if kind == "map":
            value: Any = {}
            for _ in range(count):
                key = next(unpacker)
                value[key] = next(unpacker)
        elif kind in ("set", "frozenset", "list"):
            items = [next(unpacker) for _ in range(count)]
            value = set(items) if kind == "set" else frozenset(items) if kind == "frozenset" else items
        elif kind == "dict" and count == 0 and len(path) == 1:
            value = {}
            opened.add(path[0])
        elif kind == "value" and count == 1:
            value = next(unpacker)
        else:
            raise SnapshotFormatError(f"a section of unknown kind {kind!r}")
        parent = state
        if len(path) == 2:
            if path[0] not in opened:
                raise SnapshotFormatError(f"section {path} under a dict not opened")
            parent = state[path[0]]
        if path[-1] in parent:
            raise SnapshotFormatError(f"section {path} twice")
        parent[path[-1]] = value
    return state


# ---------------------------------------------------------------------- the file
def write_file(path: Path, state: dict[str, Any], types: SnapshotTypes, header: dict[str, Any]) -> int:
    """Write ``state`` to a new file at ``path`` (mode 0600; it must not exist); returns its size."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(b"\0" * HEADER_BYTES)
        digest = hashlib.sha256()
        length = 0
        pending: list[bytes] = []
        pending_bytes = 0

        def out(data: bytes) -> None:
            nonlocal length, pending_bytes
            pending.append(data)
            pending_bytes += len(data)
            if pending_bytes >= _CHUNK:
                flush()

        def flush() -> None:
            nonlocal length, pending_bytes
            block = b"".join(pending)
            pending.clear()
            digest.update(block)
            f.write(block)
            length += len(block)
            pending_bytes = 0

        _encode_body(state, types, out)
        flush()
        head = json.dumps({**header, "body_bytes": length, "body_sha256": digest.hexdigest()}).encode()
        if len(MAGIC) + len(head) + 1 > HEADER_BYTES:
            raise ValueError("snapshot header too long")
        f.seek(0)
        f.write(MAGIC + head + b"\n" + b" " * (HEADER_BYTES - len(MAGIC) - len(head) - 1))
        f.flush()
        os.fsync(f.fileno())
        return HEADER_BYTES + length


def read_header(f: IO[bytes]) -> dict[str, Any]:
    """The header, read as JSON (data only) from the first block; SnapshotFormatError if it is not one."""
    block = f.read(HEADER_BYTES)
    if len(block) != HEADER_BYTES or not block.startswith(MAGIC):
        raise SnapshotFormatError("not a caselink snapshot (no header)")
    try:
        header = json.loads(block[len(MAGIC):].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise SnapshotFormatError("a damaged header") from None
    if not isinstance(header, dict) or not isinstance(header.get("body_bytes"), int) \
            or not isinstance(header.get("body_sha256"), str):
        raise SnapshotFormatError("a header without the body's length and checksum")
    return header


def verify_body(f: IO[bytes], header: dict[str, Any]) -> None:
    """Check the body's length and SHA-256 against the header, reading it once without decoding it."""
    digest = hashlib.sha256()
    length = 0
    while chunk := f.read(_CHUNK):
        digest.update(chunk)
        length += len(chunk)
    if length != header["body_bytes"] or digest.hexdigest() != header["body_sha256"]:
        raise SnapshotFormatError(f"the body does not match its checksum ({length} bytes, "
                                  f"{header['body_bytes']} expected): a damaged or unfinished file")


def read_body(f: IO[bytes], types: SnapshotTypes) -> dict[str, Any]:
    """The state, decoded from the body (the file positioned after the header)."""
    try:
        return _decode_body(f, types)
    except (msgpack.UnpackException, ValueError, TypeError, StopIteration) as exc:
        raise SnapshotFormatError(f"a damaged body ({type(exc).__name__}: {exc})") from None


def write_replacing(path: Path, state: dict[str, Any], types: SnapshotTypes, header: dict[str, Any]) -> int:
    """``write_file`` to a temporary file beside ``path``, then renamed over it: a reader sees the
    old snapshot or the new one, never part of one; a write that fails leaves nothing behind."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        size = write_file(tmp, state, types, header)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return size


def read_verified_body(f: IO[bytes], header: dict[str, Any], types: SnapshotTypes) -> dict[str, Any]:
    """The body after ``read_header``: its length and checksum checked before anything is decoded.
    Call it, and build the state from what it returns, under ``collector_paused``."""
    verify_body(f, header)
    f.seek(HEADER_BYTES)
    return read_body(f, types)


@contextmanager
def collector_paused() -> Iterator[None]:
    """The garbage collector off while a snapshot is decoded and its state rebuilt: millions of
    long-lived objects at once, so collecting meanwhile is pure cost."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def code_of(files: list[Path]) -> list[bytes]:
    """The files' names and contents, read when the module that asks is imported: the code this
    process runs, not what an upgrade has since put on disk (a process still running the old code
    must not stamp its state with the new code's fingerprint)."""
    return [path.name.encode() + b"\0" + path.read_bytes() for path in files]


def code_fingerprint(code: list[bytes], *extra: bytes) -> str:
    """What a snapshot's meaning depends on: the code that built the state (``code_of``), and
    ``extra``."""
    digest = hashlib.sha256()
    for part in (*code, *extra):
        digest.update(part)
    return digest.hexdigest()[:16]

