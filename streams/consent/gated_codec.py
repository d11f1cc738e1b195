"""GatedCase messages written as the view's bytes followed by its policy label and time.

The gate decides whether a view changed by comparing a digest of it with the digest of what it
released before, for every purpose of every citizen a change touches; most comparisons find
nothing changed. The digest used to be SHA-256 over a JSON dump of the view, 12-15 µs a view, and a
released view was then Avro-encoded as well. Avro writes a record as its fields one after another,
and a GatedCase ends with the two fields that are not the view (``policy_version``,
``released_at``), so the view's fields are encoded once, digested (BLAKE2b over those bytes), and
the same bytes become the message when the view is released. The message is exactly what
``AvroSerde.encode("GatedCase", view.record(...))`` writes (tests/unit/test_gated_codec.py).

Every release and retraction also writes a Disclosure, whose fields mostly repeat from one record
to the next (the purpose, the action, the agencies and fields, the basis, the reason, the policy,
the topic, the time of the flush): ``DisclosureCodec`` writes the id, the citizen and its
reference each time, and takes the bytes of each run of fields between them from a memory of the
values seen recently. Its bytes are exactly ``AvroSerde.encode("Disclosure", record)``'s (the
same test).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from caselink.schemas.compiled_writer import write_long
from caselink.schemas.serde import AvroSerde
from caselink.streams.case_codec import SchemaPart
from caselink.streams.consent.evaluate import View

DIGEST_PREFIX = "b2:"  # marks a digest of the view's bytes; older bookkeeping holds View.legacy_digest()
TAIL = ["policy_version", "released_at"]


class GatedCodec:
    def __init__(self, serde: AvroSerde) -> None:
        version = serde.schema("GatedCase")
        fields = version.raw["fields"]
        if [f["name"] for f in fields[-len(TAIL):]] != TAIL:
            raise ValueError(f"GatedCase no longer ends with {TAIL}: the gate's codec must follow the schema")
        namespace = version.raw.get("namespace", "")
        self.header = serde.header("GatedCase")  # the registry framing
        self._view = SchemaPart({"type": "record", "name": "GatedView", "namespace": namespace,
                                 "fields": fields[:-len(TAIL)]})
        self._tail = SchemaPart({"type": "record", "name": "GatedTail", "namespace": namespace,
                                 "fields": fields[-len(TAIL):]})
        self._last: tuple[tuple[str, datetime] | None, bytes] = (None, b"")  # the tail written last

    def view_bytes(self, view: View) -> bytes:
        return self._view.write({"citizen_ref": view.citizen_ref, "purpose": view.purpose, "basis": view.basis,
                                 "pseudonymised": view.pseudonymised, "key_id": view.key_id,
                                 "members": view.members})

    @staticmethod
    def digest(view_bytes: bytes) -> str:
        return DIGEST_PREFIX + hashlib.blake2b(view_bytes, digest_size=16).hexdigest()

    def message(self, view_bytes: bytes, policy_label: str, released_at: datetime) -> bytes:
        if self._last[0] != (policy_label, released_at):  # the same for every view of a flush
            self._last = ((policy_label, released_at),
                          self._tail.write({"policy_version": policy_label, "released_at": released_at}))
        return b"".join((self.header, view_bytes, self._last[1]))


# The bytes before a string's length, by the field's type: none, or the union's string branch.
_STRING_PREFIX = {json.dumps("string"): b"", json.dumps(["null", "string"]): b"\x02"}


class DisclosureCodec:
    """Disclosure records as the concatenation of their fields' encodings (Avro writes a record as
    its fields one after another). The fields whose values are new in every record (``UNIQUE``,
    strings) are written here; every run of other fields between them is written as one record of
    those fields by its compiled writer, and its bytes are kept for the values seen recently (at
    most ``MEMO`` per run, then forgotten). Arrays given as tuples are hashed as they are."""

    MEMO = 1024
    UNIQUE = frozenset({"disclosure_id", "citizen_id", "recipient_key"})

    def __init__(self, serde: AvroSerde) -> None:
        self.serde = serde
        version = serde.schema("Disclosure")
        namespace = version.raw.get("namespace", "")
        self.header = serde.header("Disclosure")
        runs: list[list[dict[str, Any]]] = []
        for spec in version.raw["fields"]:
            if spec["name"] in self.UNIQUE or not runs or runs[-1][-1]["name"] in self.UNIQUE:
                runs.append([spec])
            else:
                runs[-1].append(spec)
        # (field names, their writer, the bytes of recent values or None, a unique string's prefix)
        self._runs: list[tuple[tuple[str, ...], SchemaPart, dict[Any, bytes] | None, bytes | None]] | None = []
        try:
            for i, run in enumerate(runs):
                names = tuple(spec["name"] for spec in run)
                part = SchemaPart({"type": "record", "name": f"DisclosurePart{i}", "namespace": namespace,
                                   "fields": run})
                unique = names[0] in self.UNIQUE
                prefix = _STRING_PREFIX.get(json.dumps(run[0]["type"])) if unique else None
                self._runs.append((names, part, None if unique else {}, prefix))
        except Exception:  # noqa: BLE001 - e.g. a field naming a type another run defines
            self._runs = None  # every record through the serde

    def encode(self, record: dict[str, Any]) -> bytes:
        if self._runs is None:
            return self.serde.encode("Disclosure", record)
        out = [self.header]
        for names, part, memo, prefix in self._runs:
            if memo is None:
                value = record[names[0]]
                if prefix is not None and value.__class__ is str:
                    raw = value.encode()
                    out += (prefix, write_long(len(raw)), raw)
                else:
                    out.append(part.write(record))
                continue
            key = tuple(map(record.__getitem__, names))
            try:
                encoded = memo.get(key)
            except TypeError:  # a list: its tuple stands for it
                key = tuple([tuple(v) if v.__class__ is list else v for v in key])
                encoded = memo.get(key)
            if encoded is None:
                encoded = part.write(record)
                if len(memo) >= self.MEMO:
                    memo.clear()
                memo[key] = encoded
            out.append(encoded)
        return b"".join(out)
