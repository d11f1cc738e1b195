"""Deterministic ids: RFC 4122 name-based (version 5) UUIDs, as text.

Identical to ``str(uuid.uuid5(namespace, name))``, without building a ``UUID`` object: the
linker makes one per decision and the connectors one per event, and ``uuid.UUID.__init__`` was
the largest single cost of making them.
"""

from __future__ import annotations

import hashlib
import uuid
from functools import lru_cache

_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}  # RFC 4122 variant bits


@lru_cache(maxsize=64)
def _namespace_bytes(namespace: uuid.UUID) -> bytes:
    return namespace.bytes  # a property that converts the UUID's int each time


def uuid5_text(namespace: uuid.UUID, name: str) -> str:
    h = hashlib.sha1(_namespace_bytes(namespace) + name.encode("utf-8")).hexdigest()
    # The version nibble (12) set to 5 and the variant bits (two high bits of nibble 16) to 10.
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"
