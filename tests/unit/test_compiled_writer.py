"""The compiled Avro writers must write exactly fastavro's bytes, and refuse whatever fastavro refuses.

Records are generated from each caselink schema itself: valid values of every type (boundary
longs, non-ASCII text, aware datetimes in several zones, absent fields that have defaults), with
a share of wrong values mixed in (a float for a long, 1 for a boolean, a naive datetime, a string
for an array, a str subclass, a symbol the enum lacks). For every record, either the compiled
writer refuses it, or fastavro, reading the schema as written, writes the same bytes.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import fastavro
import pytest
from caselink.schemas import SCHEMA_NAMES, default_serde
from caselink.schemas.compiled_writer import WRITE_ERRORS, compile_writer, write_long
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.depth import examples
from tests.samples import sample

LONG = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-200, 70_000),
                 st.sampled_from([0, -1, 63, 64, 8191, 8192, 16383, 16384, 65535, 65536, 2**63 - 1, -(2**63)]))
ZONES = st.sampled_from([UTC, timezone(timedelta(hours=1)), timezone(timedelta(hours=-5, minutes=-30))])
AWARE = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=ZONES)


class Text(str):
    """A str subclass: fastavro takes it as a string; the compiled writer may refuse it."""


WRONG = st.sampled_from([1.5, 1, True, "x", b"x", None, [], {}, Text("t"), 2**70, datetime(2020, 1, 1)])


def _value(schema: Any, named: dict[str, Any], space: str | None, wrong: bool) -> st.SearchStrategy[Any]:
    """Values for ``schema``; with ``wrong``, sometimes a value of the wrong type."""
    right = _right(schema, named, space, wrong)
    return st.one_of(right, right, right, WRONG) if wrong else right


def _right(schema: Any, named: dict[str, Any], space: str | None, wrong: bool) -> st.SearchStrategy[Any]:
    if isinstance(schema, list):
        return st.one_of(*[_value(branch, named, space, wrong) for branch in schema])
    if isinstance(schema, str):
        if schema in named:
            return _right(named[schema], named, space, wrong)
        full = f"{space}.{schema}" if space else schema
        if full in named:
            return _right(named[full], named, space, wrong)
        return {"string": st.text(max_size=12), "long": LONG, "int": st.integers(-(2**31), 2**31 - 1),
                "double": st.floats(allow_nan=False), "float": st.floats(width=32, allow_nan=False),
                "boolean": st.booleans(), "bytes": st.binary(max_size=12), "null": st.none()}[schema]
    kind = schema["type"]
    if schema.get("logicalType") == "timestamp-millis":
        return st.one_of(AWARE, LONG)
    if kind == "record":
        name = schema["name"] if "." in schema["name"] else f"{schema.get('namespace', space)}.{schema['name']}"
        named[name] = schema
        inner = name.rsplit(".", 1)[0]
        fields = {f["name"]: _value(f["type"], named, inner, wrong) for f in schema["fields"]}
        optional = [f["name"] for f in schema["fields"] if "default" in f]
        return st.builds(lambda d, drop: {k: v for k, v in d.items() if k not in drop},
                         st.fixed_dictionaries(fields), st.sets(st.sampled_from(optional or [""])))
    if kind == "enum":
        name = schema["name"] if "." in schema["name"] else f"{schema.get('namespace', space)}.{schema['name']}"
        named[name] = schema
        return st.sampled_from(schema["symbols"] + (["NOT_A_SYMBOL"] if wrong else []))
    if kind == "array":
        return st.lists(_value(schema["items"], named, space, wrong), max_size=3)
    if kind == "map":
        return st.dictionaries(st.text(max_size=6), _value(schema["values"], named, space, wrong), max_size=3)
    return _right(kind, named, space, wrong)


def _fastavro_bytes(name: str, record: Any) -> bytes | None:
    """fastavro's encoding of ``record`` (no tuple notation) with the registry framing, or None if it refuses."""
    version = default_serde().schema(name)
    buf = io.BytesIO()
    try:
        fastavro.schemaless_writer(buf, version.parsed, record)
    except Exception:  # noqa: BLE001 - whatever fastavro refuses with
        return None
    return default_serde().header(name) + buf.getvalue()


def _strategy(name: str, wrong: bool) -> st.SearchStrategy[Any]:
    return _right(default_serde().schema(name).raw, {}, None, wrong)


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_every_caselink_schema_compiles(name: str) -> None:
    assert default_serde().writer(name) is not None


@pytest.mark.parametrize("name", SCHEMA_NAMES)
@settings(max_examples=examples(150), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_valid_records_encode_to_fastavro_bytes(name: str, data: st.DataObject) -> None:
    record = data.draw(_strategy(name, wrong=False))
    expected = _fastavro_bytes(name, record)
    assert expected is not None
    assert default_serde().writer(name)(record) == expected  # type: ignore[misc]


@pytest.mark.parametrize("name", SCHEMA_NAMES)
@settings(max_examples=examples(150), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_a_record_the_writer_takes_is_written_as_fastavro_writes_it(name: str, data: st.DataObject) -> None:
    record = data.draw(_strategy(name, wrong=True))
    writer = default_serde().writer(name)
    assert writer is not None
    try:
        written = writer(record)
    except WRITE_ERRORS:
        return  # refused: the serde hands it to fastavro
    assert written == _fastavro_bytes(name, record)


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_serde_encodes_the_sample_through_the_compiled_writer(name: str) -> None:
    serde = default_serde()
    record = sample(name)
    assert serde.writer(name)(record) == serde.encode(name, record) == _fastavro_bytes(name, record)  # type: ignore[misc]


def test_a_record_the_writer_refuses_still_encodes_through_fastavro() -> None:
    serde = default_serde()
    record = sample("PersonEvent")
    record["occurred_at"] = datetime(2026, 3, 1, 12, 0)  # naive: fastavro reads it as local time
    with pytest.raises(TypeError):
        serde.writer("PersonEvent")(record)  # type: ignore[misc]
    assert serde.encode("PersonEvent", record) == _fastavro_bytes("PersonEvent", record)


@given(LONG)
def test_long_encoding_is_avro_zigzag_varint(n: int) -> None:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, "long", n)
    assert write_long(n) == buf.getvalue()


def test_unsupported_schemas_stay_with_fastavro() -> None:
    fixed = {"type": "record", "name": "F",
             "fields": [{"name": "f", "type": {"type": "fixed", "name": "X", "size": 2}}]}
    union = {"type": "record", "name": "U", "fields": [{"name": "u", "type": ["string", "long"]}]}
    assert compile_writer(fixed) is None and compile_writer(union) is None
    assert compile_writer(json.loads('{"type": "record", "name": "E", "fields": []}'))({}) == b""
