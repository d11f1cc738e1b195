"""The compiled Avro readers must read what fastavro reads, and refuse what they cannot read.

Records are generated from each caselink schema (the generator of test_compiled_writer), written
by fastavro, and read back by both readers. Then the bytes are damaged (a byte changed, bytes cut
off or added): whenever the compiled reader still accepts a message (it reads to exactly its
end), fastavro must read the same record from it; otherwise the serde hands it to fastavro.
"""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest
from caselink.schemas import SCHEMA_NAMES, UndecodableEventError, default_serde
from caselink.schemas.compiled_reader import READ_ERRORS, read_long
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.depth import examples
from tests.unit.test_compiled_writer import LONG, _strategy

CHECKS = settings(max_examples=examples(150), deadline=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _fastavro_read(name: str, body: bytes) -> Any:
    version = default_serde().schema(name)
    buf = io.BytesIO(body)
    record = fastavro.schemaless_reader(buf, version.parsed, version.parsed)
    if buf.tell() != len(body):
        raise ValueError("trailing bytes")
    return record


def _body(name: str, record: Any) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, default_serde().schema(name).parsed, record)
    return buf.getvalue()


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_every_caselink_schema_has_a_compiled_reader(name: str) -> None:
    assert default_serde().schema(name).reader is not None


@pytest.mark.parametrize("name", SCHEMA_NAMES)
@CHECKS
@given(data=st.data())
def test_compiled_reader_reads_what_fastavro_reads(name: str, data: st.DataObject) -> None:
    body = _body(name, data.draw(_strategy(name, wrong=False)))
    reader = default_serde().schema(name).reader
    try:
        expected = _fastavro_read(name, body)
    except OverflowError:  # a timestamp outside datetime's years 1-9999: neither can read it
        with pytest.raises(OverflowError):
            reader(body, 0)  # type: ignore[misc]
        return
    record, end, spans = reader(body, 0)  # type: ignore[misc]
    assert end == len(body)
    assert record == expected
    # Each top-level field's bytes are that field's encoding, as fastavro writes the field alone.
    fields = default_serde().schema(name).raw["fields"]
    assert len(spans) == len(fields) + 1 and spans[0] == 0 and spans[-1] == end
    for i, spec in enumerate(fields):
        alone = {"type": "record", "name": "One", "namespace": "caselink", "fields": [spec]}
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, fastavro.parse_schema(alone, named_schemas={}), record)
        assert body[spans[i]:spans[i + 1]] == buf.getvalue()


@pytest.mark.parametrize("name", SCHEMA_NAMES)
@CHECKS
@given(data=st.data())
def test_damaged_bytes_the_compiled_reader_accepts_read_as_fastavro_reads_them(name: str,
                                                                               data: st.DataObject) -> None:
    body = bytearray(_body(name, data.draw(_strategy(name, wrong=False))))
    damage = data.draw(st.sampled_from(["change", "cut", "add"]))
    if damage == "change" and body:
        body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    elif damage == "cut" and body:
        del body[data.draw(st.integers(0, len(body) - 1)):]
    else:
        body += data.draw(st.binary(min_size=1, max_size=3))
    try:
        record, end, _spans = default_serde().schema(name).reader(bytes(body), 0)  # type: ignore[misc]
    except READ_ERRORS:
        return  # refused: the serde hands it to fastavro
    if end != len(body):
        return  # not read to its end: refused too
    assert _same(record, _fastavro_read(name, bytes(body)))


def _same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN (damage can turn a double into one)."""
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def test_the_serde_still_reports_damaged_messages_with_their_origin() -> None:
    serde = default_serde()
    data = serde.encode("PersonEvent", {
        "event_id": "e", "agency": "health", "source_record_id": "R1", "source_version": 1, "op": "DELETE",
        "occurred_at": 0, "emitted_at": 0, "person": None, "cases": [], "source": {}})
    with pytest.raises(UndecodableEventError, match=r"agency\.health\.person-events"):
        serde.decode(data[:-3], topic="agency.health.person-events", partition=0, offset=7)
    with pytest.raises(UndecodableEventError, match="trailing"):
        serde.decode(data + b"\x00", topic="agency.health.person-events", partition=0, offset=7)


@given(LONG)
def test_long_decoding_reads_avro_zigzag_varints(n: int) -> None:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, "long", n)
    assert read_long(buf.getvalue() + b"\x05", 0) == (n, len(buf.getvalue()))
