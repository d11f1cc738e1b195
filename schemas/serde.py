"""Avro single-object encoding for every caselink event.

Each message carries the 2-byte marker ``C3 01`` and the 8-byte CRC-64-AVRO fingerprint of its
writer schema, then the Avro binary body (the Avro specification's "single object encoding").
That makes every message self-describing without a schema registry: a consumer finds the writer
schema by fingerprint among the current and historic schemas in ``schemas/``, and resolves it to
the current (reader) version of the same record, so old messages stay readable after a compatible
change. The Confluent wire format (magic 0 + registry id) is recognised and refused with a clear
message, since no registry client is wired in yet.
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
from fastavro.schema import fingerprint, to_parsing_canonical_form
from fastavro.validation import validate

SCHEMA_DIR = Path(__file__).resolve().parent / "avro"
HISTORY_DIR = Path(__file__).resolve().parent / "history"
MAGIC = b"\xc3\x01"
HEADER_LEN = 10

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
    writer: Writer | None = None  # compiled single-object writer; None leaves it to fastavro
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
    raw = json.loads(path.read_text())
    parsed = fastavro.parse_schema(raw, named_schemas={})
    fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
    name = raw["name"]
    return SchemaVersion(name, raw, parsed, fp, path, _optional_records(raw), compile_writer(raw, MAGIC + fp),
                         compile_reader(raw))


class AvroSerde:
    """Encodes and decodes caselink events; one instance serves every schema."""

    def __init__(self, schema_dir: Path = SCHEMA_DIR, history_dir: Path = HISTORY_DIR) -> None:
        self.current: dict[str, SchemaVersion] = {}
        self.by_fingerprint: dict[bytes, SchemaVersion] = {}
        for path in sorted(schema_dir.glob("*.avsc")):
            version = _load(path)
            self.current[version.name] = version
            self.by_fingerprint[version.fingerprint] = version
        for path in sorted(history_dir.glob("*/*.avsc")):
            version = _load(path)
            self.by_fingerprint.setdefault(version.fingerprint, version)

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
        """Single-object encoding of ``record`` under the current ``name`` schema.

        The compiled writer (schemas/compiled_writer.py) writes the same bytes as fastavro in a
        fraction of the time; a record it refuses goes to fastavro.

        The writer itself rejects data that does not fit; only then (or always, with ``check``)
        does the full validator run, to name every offending field path. Validating every message
        up front cost a fifth of the linker's time, for messages that were almost always valid.
        """
        version = self.schema(name)
        if check:
            self.validate(name, record)
        if version.writer is not None:
            try:
                return version.writer(record)
            except WRITE_ERRORS:
                pass  # a value the compiled writer does not take: fastavro encodes it or says why not
        buf = io.BytesIO()
        buf.write(MAGIC)
        buf.write(version.fingerprint)
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
        """(schema name, record) read with the current schema of the writer's record name."""
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
        if len(data) < HEADER_LEN:
            raise fail(f"{len(data)} bytes is shorter than the 10-byte single-object header")
        if data[:2] != MAGIC:
            if data[0] == 0:
                raise fail("Confluent wire format (schema registry id) is not supported here")
            raise fail(f"no Avro single-object marker (first bytes {data[:4].hex()})")
        writer = self.by_fingerprint.get(data[2:HEADER_LEN])
        if writer is None:
            raise fail(f"unknown writer schema fingerprint {data[2:HEADER_LEN].hex()}")
        if expect is not None and writer.name != expect:
            raise fail(f"expected {expect}, got {writer.name}")
        reader = self.current.get(writer.name, writer)
        if reader is writer and reader.reader is not None:
            try:
                record, end, spans = reader.reader(data, HEADER_LEN)
                if end == len(data):
                    return writer.name, record, spans
            except READ_ERRORS:
                pass  # fastavro reads it, or says what is wrong with it
        buf = io.BytesIO(data[HEADER_LEN:])
        try:
            record = cast(dict[str, Any], fastavro.schemaless_reader(buf, writer.parsed, reader.parsed))
        except Exception as exc:  # noqa: BLE001 - fastavro raises many types for corrupt input
            raise fail(f"corrupt {writer.name} body: {type(exc).__name__}: {exc}") from None
        if buf.tell() != len(data) - HEADER_LEN:
            raise fail(f"{len(data) - HEADER_LEN - buf.tell()} trailing bytes after the {writer.name} body")
        return writer.name, record, None


def _describe(error: str) -> str:
    """fastavro's messages name the failing field path; keep them, drop its repr noise."""
    return str(error).replace("\n", " ")


@lru_cache(maxsize=1)
def default_serde() -> AvroSerde:
    return AvroSerde()
