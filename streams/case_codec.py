"""LinkedCase messages assembled from each member's own Avro encoding.

A LinkedCase carries every member's full record, and the linker publishes one on every change of a
citizen. Encoding all members again each time, and keeping each member's source payload as Python
dicts only so that it could be encoded again, cost the linker much of its CPU and a worker much of
its memory (docs/benchmarks.md). Avro writes a record as its fields one after another and an array
as a count, its items and a zero, so a member encoded once, when its record changes, can be copied
into every LinkedCase it appears in. The one member field that changes without its record changing
is ``match_weight`` (the member's strongest link), so a member is kept as the bytes before it and
the bytes after it.

The bytes are exactly what ``AvroSerde.encode("LinkedCase", ...)`` writes for the same case
(``tests/unit/test_case_codec.py`` holds the two to each other). Each part is written by a writer
compiled from its slice of the schema (``schemas/compiled_writer.py``), with fastavro for a value
that writer does not take.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple, cast

import fastavro
from caselink.schemas.compiled_writer import WRITE_ERRORS, compile_writer, timestamp_millis, write_long
from caselink.schemas.records import Member
from caselink.schemas.serde import AvroSerde
from fastavro.schema import to_parsing_canonical_form


class MemberParts(NamedTuple):
    """One member's encoding without its match weight, and when it was first linked."""

    head: bytes  # agency, source_record_id, source_version
    tail: bytes  # linked_at, person, cases
    linked_at: datetime


class SchemaPart:
    """A slice of the LinkedCase schema as a record of its own, with its compiled writer."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.parsed = fastavro.parse_schema(raw, named_schemas={})
        self.compiled = compile_writer(raw)

    def write(self, datum: Mapping[str, Any]) -> bytes:
        if self.compiled is not None:
            try:
                return self.compiled(datum)
            except WRITE_ERRORS:
                pass  # fastavro encodes it, or says what is wrong
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, self.parsed, datum)
        return buf.getvalue()


_DOUBLE = struct.Struct("<d")


def _canonical(schema: Any) -> str:
    return to_parsing_canonical_form(fastavro.parse_schema(schema, named_schemas={}))


def _splice_fields(serde: AvroSerde, member: dict[str, Any]) -> tuple[int, int] | None:
    """Where ``person`` and ``cases`` are among a PersonEvent's fields, if a member's tail can
    be its linked_at followed by those two fields' bytes copied from a PersonEvent: the member
    must end in linked_at, person, cases; the PersonEvent must have person (``["null", Person]``)
    and cases side by side, with the same types. None otherwise (then members are encoded)."""
    names = [f["name"] for f in member["fields"]]
    if names[-3:] != ["linked_at", "person", "cases"]:
        return None
    event = serde.schema("PersonEvent").raw
    event_names = [f["name"] for f in event["fields"]]
    if "person" not in event_names or event_names.index("cases") != event_names.index("person") + 1:
        return None
    person_at = event_names.index("person")
    union = event["fields"][person_at]["type"]
    if not isinstance(union, list) or len(union) != 2 or union[0] != "null":
        return None
    member_types = [f["type"] for f in member["fields"][-2:]]
    event_types = [union[1], event["fields"][person_at + 1]["type"]]
    if [_canonical(t) for t in member_types] != [_canonical(t) for t in event_types]:
        return None
    return person_at, person_at + 1


class LinkedCaseCodec:
    def __init__(self, serde: AvroSerde) -> None:
        version = serde.schema("LinkedCase")
        self.header = serde.header("LinkedCase")  # the registry framing
        fields = version.raw["fields"]
        at = [f["name"] for f in fields].index("members")
        member = fields[at]["type"]["items"]
        weight = [f["name"] for f in member["fields"]].index("match_weight")
        namespace = version.raw.get("namespace", "")

        def part(name: str, part_fields: list[dict[str, Any]]) -> SchemaPart:
            return SchemaPart({"type": "record", "name": name, "namespace": namespace, "fields": part_fields})

        self._event_fields = _splice_fields(serde, member)
        self._case_head = part("CaseHead", fields[:at])
        self._case_tail = part("CaseTail", fields[at + 1:])
        self._member_head = part("MemberHead", member["fields"][:weight])
        self._member_tail = part("MemberTail", member["fields"][weight + 1:])
        self._member = fastavro.parse_schema({**member, "namespace": namespace}, named_schemas={})

    def member(self, agency: str, source_record_id: str, source_version: int, linked_at: datetime,
               person: Mapping[str, Any] | None, cases: Sequence[Mapping[str, Any]],
               event: bytes | None = None, spans: tuple[int, ...] | None = None) -> MemberParts:
        """A member's parts. Given the PersonEvent's bytes and their ``spans`` (from
        ``AvroSerde.decode_spans``), its person and cases are copied from them as they are,
        not encoded again: a member ends in the same two fields, with the same types, as a
        PersonEvent, so those bytes are already the member's."""
        head = self._member_head.write({"agency": agency, "source_record_id": source_record_id,
                                        "source_version": source_version})
        if event is not None and spans is not None and self._event_fields is not None:
            person_at, cases_at = self._event_fields
            if event[spans[person_at]] == 2:  # the union's Person branch; null is 0
                copied = event[spans[person_at] + 1:spans[cases_at + 1]]
                return MemberParts(head, timestamp_millis(linked_at) + copied, linked_at)
        tail = self._member_tail.write({"linked_at": linked_at, "person": person, "cases": cases})
        return MemberParts(head, tail, linked_at)

    def encode(self, citizen_id: str, version: int, members: list[tuple[MemberParts, float]],
               merged_from: list[str], model_version: str, updated_at: datetime,
               max_bytes: int | None = None) -> bytes:
        """The LinkedCase, at most ``max_bytes`` long: a citizen too large for one Kafka message
        lists its oldest members that fit and says in ``members_omitted`` how many it left out
        (the contract for large citizens, docs/architecture.md)."""
        head = self.header + self._case_head.write({"citizen_id": citizen_id, "version": version})
        encoded = [parts.head + _DOUBLE.pack(weight) + parts.tail for parts, weight in members]
        omitted = 0
        if max_bytes is not None:
            # The count, the closing zero and the tail take at most this much besides the members.
            budget = max_bytes - len(head) - len(self._tail(merged_from, model_version, updated_at, len(members)))
            budget -= 12
            size = sum(map(len, encoded))
            while encoded and size > budget:
                size -= len(encoded.pop())
                omitted += 1
        out = [head]
        if encoded:
            out.append(write_long(len(encoded)))
            out += encoded
        out.append(b"\x00")
        out.append(self._tail(merged_from, model_version, updated_at, omitted))
        return b"".join(out)

    def _tail(self, merged_from: list[str], model_version: str, updated_at: datetime, omitted: int) -> bytes:
        return self._case_tail.write({"merged_from": merged_from, "model_version": model_version,
                                      "updated_at": updated_at, "members_omitted": omitted})

    def decode_member(self, parts: MemberParts, weight: float) -> Member:
        """The member as a dict (for the web API), read back from its bytes."""
        data = parts.head + _DOUBLE.pack(weight) + parts.tail
        return cast(Member, fastavro.schemaless_reader(io.BytesIO(data), self._member, self._member))
