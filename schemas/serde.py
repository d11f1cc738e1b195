"""Avro for every caselink event, framed for a schema registry.

Each message is the Confluent wire format: a zero byte, the 4-byte big-endian id of its writer
schema in the registry (schemas/registry.py), then the Avro binary body. Stock tools read that
(a Kafka Connect Avro converter, ksqlDB, confluent-kafka's ``AvroDeserializer``). The body is
written and, for the current schema versions, read by code compiled from the schema
(schemas/compiled_writer.py, schemas/compiled_reader.py); only the framing depends on the
registry, and a schema's id is asked for once per process, when the first message of that schema
is written (or a message with an id not seen before is read).

Messages written before the registry (Avro single-object encoding: ``C3 01`` and the 8-byte
CRC-64-AVRO fingerprint of the writer schema) are still read, by fingerprint among the current and
historic schemas in ``schemas/``, and nothing writes them any more. Why keep reading them: the
link input is kept for ever and is the log the index is rebuilt from, so a replay meets every
message ever written; a consumer of caselink's own never has to care which framing a message has.
Either way the writer schema is resolved to the current (reader) version of the same record.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

import fastavro
from caselink.schemas.compiled_reader import READ_ERRORS, Reader, compile_reader
from caselink.schemas.compiled_writer import WRITE_ERRORS, Writer, compile_writer
from caselink.schemas.registry import RegistryError, SchemaNotFoundError, SchemaRegistry, full_name
from fastavro.schema import fingerprint, to_parsing_canonical_form
from fastavro.validation import validate

SCHEMA_DIR = Path(__file__).resolve().parent / "avro"
HISTORY_DIR = Path(__file__).resolve().parent / "history"
MAGIC = b"\xc3\x01"  # Avro single-object encoding: read, never written any more
HEADER_LEN = 10  # of a single-object message: the marker and the fingerprint
FRAME_LEN = 5  # of a registry-framed message: the zero byte and the schema id


def frame(schema_id: int) -> bytes:
    """The Confluent wire format's header for ``schema_id``."""
    return b"\x00" + schema_id.to_bytes(4, "big")

SCHEMA_NAMES = (
    "PersonEvent",
    "ConsentEvent",
    "LinkedCase",
    "LinkDecision",
    "ReviewItem",
    "GatedCase",
    "Disclosure",
    "DeadLetter",
    "ReviewDecision",
)


class SchemaValidationError(ValueError):
    """A record does not fit its schema; ``errors`` lists each offending field path."""

    def __init__(self, schema_name: str, errors: list[str]) -> None:
        self.schema_name = schema_name
        self.errors = errors
        super().__init__(f"invalid {schema_name}: " + "; ".join(errors))


class UndecodableEventError(ValueError):
    """Bytes that are not a caselink event we can read, with where they came from."""

    def __init__(
        self,
        reason: str,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        self.reason = reason
        self.topic = topic
        self.partition = partition
        self.offset = offset
        where = f"{topic}[{partition}]@{offset}" if topic is not None else "unknown origin"
        super().__init__(f"undecodable event at {where}: {reason}")


@dataclass(frozen=True)
class SchemaVersion:
    name: str
    raw: dict[str, Any]
    parsed: Any
    fingerprint: bytes
    source: Path
    optional_records: tuple[tuple[str, str], ...] = ()  # (field, record name) of ["null", record] fields
    reader: Reader | None = None  # compiled reader of bodies written with this very schema


def _optional_records(raw: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """Top-level fields typed ``["null", <one record>]``.

    fastavro picks a union branch for a dict by validating it against every record branch, which
    was a third of the cost of encoding a PersonEvent; naming the branch (fastavro's tuple
    notation) skips that search.
    """
    found = []
    namespace = raw.get("namespace")
    for spec in raw["fields"]:
        branches = spec["type"] if isinstance(spec["type"], list) else []
        records = [b for b in branches if isinstance(b, dict) and b.get("type") == "record"]
        if len(branches) == 2 and "null" in branches and len(records) == 1:
            name = records[0]["name"]
            space = records[0].get("namespace", namespace)
            found.append((spec["name"], f"{space}.{name}" if space and "." not in name else name))
    return tuple(found)


def _load(path: Path) -> SchemaVersion:
    return _version(json.loads(path.read_text()), path)


def _version(raw: dict[str, Any], source: Path) -> SchemaVersion:
    parsed = fastavro.parse_schema(raw, named_schemas={})
    fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
    return SchemaVersion(raw["name"], raw, parsed, fp, source, _optional_records(raw), compile_reader(raw))


class AvroSerde:
    """Encodes and decodes caselink events; one instance serves every schema.

    ``registry`` None: the registry of the settings (``registry.url``, else the local one from
    ``caselink infra up``), found when it is first needed, so a process that never writes an
    event or reads a new schema id never asks for one."""

    def __init__(self, schema_dir: Path = SCHEMA_DIR, history_dir: Path = HISTORY_DIR,
                 registry: SchemaRegistry | None = None) -> None:
        self.current: dict[str, SchemaVersion] = {}
        self.by_fingerprint: dict[bytes, SchemaVersion] = {}
        for path in sorted(schema_dir.glob("*.avsc")):
            version = _load(path)
            self.current[version.name] = version
            self.by_fingerprint[version.fingerprint] = version
        for path in sorted(history_dir.glob("*/*.avsc")):
            version = _load(path)
            self.by_fingerprint.setdefault(version.fingerprint, version)
        self._registry = registry
        self._writers: dict[str, tuple[bytes, Writer | None]] = {}  # name -> (framing, compiled writer)
        self.by_id: dict[int, SchemaVersion] = {}

    # ------------------------------------------------------------------ the registry
    @property
    def registry(self) -> SchemaRegistry:
        if self._registry is None:
            from caselink.schemas.registry import registry_from_settings

            from caselink.core.settings import Settings

            self._registry = registry_from_settings(Settings())
        return self._registry

    def bind(self, registry: SchemaRegistry) -> None:
        """Frame against ``registry`` from now on (ids already looked up are forgotten)."""
        self._registry = registry
        self._writers.clear()
        self.by_id.clear()

    def _writer(self, name: str) -> tuple[bytes, Writer | None]:
        found = self._writers.get(name)
        if found is None:
            from caselink.schemas.registry import register_lineage

            version = self.schema(name)
            schema_id = register_lineage(self.registry, full_name(version.raw), name)
            self.by_id[schema_id] = version
            header = frame(schema_id)
            found = self._writers[name] = (header, compile_writer(version.raw, header))
        return found

    def schema_id(self, name: str) -> int:
        """The registry id of the current ``name`` schema (registered if it is new)."""
        return int.from_bytes(self._writer(name)[0][1:], "big")

    def header(self, name: str) -> bytes:
        """The 5 bytes every message of the current ``name`` schema starts with."""
        return self._writer(name)[0]

    def writer(self, name: str) -> Writer | None:
        """The compiled writer of ``name`` (framing included); None if the schema is not compilable."""
        return self._writer(name)[1]

    def _by_id(self, schema_id: int) -> SchemaVersion | None:
        """The schema a framed message names, from the registry if not seen before; None if unknown."""
        try:
            raw = json.loads(self.registry.schema_text(schema_id))
        except SchemaNotFoundError:
            return None
        if not isinstance(raw, dict) or raw.get("type") != "record":
            return None
        version = _version(raw, Path(f"registry:{schema_id}"))
        version = self.by_fingerprint.get(version.fingerprint, version)  # a known one keeps its compiled reader
        self.by_id[schema_id] = version
        return version

    def schema(self, name: str) -> SchemaVersion:
        try:
            return self.current[name]
        except KeyError:
            raise KeyError(f"unknown schema {name!r}; known: {', '.join(sorted(self.current))}") from None

    def validate(self, name: str, record: dict[str, Any]) -> None:
        version = self.schema(name)
        try:
            validate(record, version.parsed, raise_errors=True)
        except fastavro.validation.ValidationError as exc:
            raise SchemaValidationError(name, [_describe(e) for e in exc.errors]) from None

    def encode(self, name: str, record: dict[str, Any], check: bool = False) -> bytes:
        """``record`` under the current ``name`` schema, framed with its registry id.

        The compiled writer (schemas/compiled_writer.py) writes the same bytes as fastavro in a
        fraction of the time; a record it refuses goes to fastavro.

        The writer itself rejects data that does not fit; only then (or always, with ``check``)
        does the full validator run, to name every offending field path. Validating every message
        up front cost a fifth of the linker's time, for messages that were almost always valid.
        """
        version = self.schema(name)
        header, writer = self._writers.get(name) or self._writer(name)
        if check:
            self.validate(name, record)
        if writer is not None:
            try:
                return writer(record)
            except WRITE_ERRORS:
                pass  # a value the compiled writer does not take: fastavro encodes it or says why not
        buf = io.BytesIO()
        buf.write(header)
        datum = record
        for field_name, record_name in version.optional_records:
            value = record.get(field_name)
            if isinstance(value, dict):
                if datum is record:
                    datum = dict(record)
                datum[field_name] = (record_name, value)
        try:
            fastavro.schemaless_writer(buf, version.parsed, datum)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            self.validate(name, record)  # raises with field paths when it can find them
            raise SchemaValidationError(name, [str(exc)]) from None
        return buf.getvalue()

    def decode(
        self,
        data: bytes | None,
        expect: str | None = None,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """(schema name, record) read with the current schema of the writer's record name.

        Raises UndecodableEventError for bytes that are not a caselink event (a dead letter's
        matter), and RegistryError when the registry could not be asked about a new schema id (a
        stage should stop and retry, not dead-letter a good message)."""
        name, record, _spans = self.decode_spans(data, expect, topic, partition, offset)
        return name, record

    def decode_spans(
        self,
        data: bytes | None,
        expect: str | None = None,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> tuple[str, dict[str, Any], tuple[int, ...] | None]:
        """``decode``, plus where in ``data`` each top-level field's encoding lies, when the
        message was written with the current schema: field i of the schema is
        ``data[spans[i]:spans[i + 1]]``. None for a message of an older schema version."""

        def fail(reason: str) -> UndecodableEventError:
            return UndecodableEventError(reason, topic, partition, offset)

        if data is None:
            raise fail("empty message (tombstone) where an event was expected")
        if len(data) >= FRAME_LEN and data[0] == 0:
            schema_id = int.from_bytes(data[1:FRAME_LEN], "big")
            writer = self.by_id.get(schema_id) or self._by_id(schema_id)
            if writer is None:
                raise fail(f"schema id {schema_id} is not in the registry (or is not a record schema)")
            start = FRAME_LEN
        elif data[:2] == MAGIC:
            if len(data) < HEADER_LEN:
                raise fail(f"{len(data)} bytes is shorter than the 10-byte single-object header")
            found = self.by_fingerprint.get(data[2:HEADER_LEN])
            if found is None:
                raise fail(f"unknown writer schema fingerprint {data[2:HEADER_LEN].hex()}")
            writer, start = found, HEADER_LEN
        else:
            raise fail(f"neither the registry framing (a zero byte and a schema id) nor Avro single-object "
                       f"encoding (first bytes {data[:5].hex()})")
        if expect is not None and writer.name != expect:
            raise fail(f"expected {expect}, got {writer.name}")
        reader = self.current.get(writer.name, writer)
        if reader is writer and reader.reader is not None:
            try:
                record, end, spans = reader.reader(data, start)
                if end == len(data):
                    return writer.name, record, spans
            except READ_ERRORS:
                pass  # fastavro reads it, or says what is wrong with it
        buf = io.BytesIO(data[start:])
        try:
            record = cast(dict[str, Any], fastavro.schemaless_reader(buf, writer.parsed, reader.parsed))
        except Exception as exc:  # noqa: BLE001 - fastavro raises many types for corrupt input
            raise fail(f"corrupt {writer.name} body: {type(exc).__name__}: {exc}") from None
        if buf.tell() != len(data) - start:
            raise fail(f"{len(data) - start - buf.tell()} trailing bytes after the {writer.name} body")
        return writer.name, record, None


def _describe(error: str) -> str:
    """fastavro's messages name the failing field path; keep them, drop its repr noise."""
    return str(error).replace("\n", " ")


@lru_cache(maxsize=1)
def default_serde() -> AvroSerde:
    return AvroSerde()


__all__ = ["FRAME_LEN", "MAGIC", "AvroSerde", "RegistryError", "SchemaVersion", "default_serde", "frame"]
