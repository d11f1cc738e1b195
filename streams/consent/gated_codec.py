"""GatedCase messages written as the view's bytes followed by its policy label and time.

The gate decides whether a view changed by comparing a digest of it with the digest of what it
released before, for every purpose of every citizen a change touches; most comparisons find
nothing changed. The digest used to be SHA-256 over a JSON dump of the view, 12-15 µs a view, and a
released view was then Avro-encoded as well. Avro writes a record as its fields one after another,
and a GatedCase ends with the two fields that are not the view (``policy_version``,
``released_at``), so the view's fields are encoded once, digested (BLAKE2b over those bytes), and
the same bytes become the message when the view is released. The message is exactly what
``AvroSerde.encode("GatedCase", view.record(...))`` writes (tests/unit/test_gated_codec.py).
"""

from __future__ import annotations

import hashlib
from datetime import datetime

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

    def view_bytes(self, view: View) -> bytes:
        return self._view.write({"citizen_ref": view.citizen_ref, "purpose": view.purpose, "basis": view.basis,
                                 "pseudonymised": view.pseudonymised, "key_id": view.key_id,
                                 "members": view.members})

    @staticmethod
    def digest(view_bytes: bytes) -> str:
        return DIGEST_PREFIX + hashlib.blake2b(view_bytes, digest_size=16).hexdigest()

    def message(self, view_bytes: bytes, policy_label: str, released_at: datetime) -> bytes:
        return b"".join((self.header, view_bytes,
                         self._tail.write({"policy_version": policy_label, "released_at": released_at})))
