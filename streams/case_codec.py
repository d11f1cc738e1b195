"""LinkedCase messages assembled from each member's own Avro encoding.

A LinkedCase carries every member's full record, and the linker publishes one on every change of
a citizen. Encoding all members again each time was 15% of the linker thread's samples (py-spy),
and keeping each member's source payload as Python dicts, only so that it could be encoded again,
was about half of a million-record worker's memory and most of the objects its garbage collector
walked. Avro writes a record as its fields one after another and an array as a count, its items
and a zero, so a member encoded once, when its record changes, can be copied into every LinkedCase
it appears in. The one member field that changes without its record changing is ``match_weight``
(the member's strongest link), so a member is kept as the bytes before it and the bytes after it.

The bytes are exactly what ``AvroSerde.encode("LinkedCase", ...)`` writes for the same case
(``tests/unit/test_case_codec.py`` holds the two to each other).
"""

from __future__ import annotations

import io
import struct
from datetime import datetime
from typing import Any, NamedTuple

import fastavro

from schemas.serde import MAGIC, AvroSerde


class MemberParts(NamedTuple):
    """One member's encoding without its match weight, and when it was first linked."""

    head: bytes  # agency, source_record_id, source_version
    tail: bytes  # linked_at, person, cases
    linked_at: datetime


def _long(n: int) -> bytes:
    """Avro's zig-zag varint."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_DOUBLE = struct.Struct("<d")


class LinkedCaseCodec:
    def __init__(self, serde: AvroSerde) -> None:
        version = serde.schema("LinkedCase")
        self.header = MAGIC + version.fingerprint
        fields = version.raw["fields"]
        at = [f["name"] for f in fields].index("members")
        member = fields[at]["type"]["items"]
        weight = [f["name"] for f in member["fields"]].index("match_weight")
        namespace = version.raw.get("namespace", "")

        def part(name: str, part_fields: list[dict[str, Any]]) -> Any:
            return fastavro.parse_schema({"type": "record", "name": name, "namespace": namespace,
                                          "fields": part_fields}, named_schemas={})

        self._case_head = part("CaseHead", fields[:at])
        self._case_tail = part("CaseTail", fields[at + 1:])
        self._member_head = part("MemberHead", member["fields"][:weight])
        self._member_tail = part("MemberTail", member["fields"][weight + 1:])
        self._member = fastavro.parse_schema({**member, "namespace": namespace}, named_schemas={})

    @staticmethod
    def _write(schema: Any, datum: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, schema, datum)
        return buf.getvalue()

    def member(self, agency: str, source_record_id: str, source_version: int, linked_at: datetime,
               person: dict[str, Any], cases: list[dict[str, Any]]) -> MemberParts:
        head = self._write(self._member_head, {"agency": agency, "source_record_id": source_record_id,
                                               "source_version": source_version})
        tail = self._write(self._member_tail, {"linked_at": linked_at, "person": person, "cases": cases})
        return MemberParts(head, tail, linked_at)

    def encode(self, citizen_id: str, version: int, members: list[tuple[MemberParts, float]],
               merged_from: list[str], model_version: str, updated_at: datetime) -> bytes:
        out = [self.header, self._write(self._case_head, {"citizen_id": citizen_id, "version": version})]
        if members:
            out.append(_long(len(members)))
            for parts, weight in members:
                out += (parts.head, _DOUBLE.pack(weight), parts.tail)
        out.append(b"\x00")
        out.append(self._write(self._case_tail, {"merged_from": merged_from, "model_version": model_version,
                                                 "updated_at": updated_at}))
        return b"".join(out)

    def decode_member(self, parts: MemberParts, weight: float) -> dict[str, Any]:
        """The member as a dict (for the web API), read back from its bytes."""
        data = parts.head + _DOUBLE.pack(weight) + parts.tail
        return fastavro.schemaless_reader(io.BytesIO(data), self._member, self._member)  # type: ignore[return-value]
