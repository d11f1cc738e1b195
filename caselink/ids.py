"""Deterministic ids: RFC 4122 name-based (version 5) UUIDs, as text.

Identical to ``str(uuid.uuid5(namespace, name))``, without building a ``UUID`` object: the
linker makes one per decision and the connectors one per event, and ``uuid.UUID.__init__`` was
the largest single cost of making them.
"""

from __future__ import annotations

import hashlib
import uuid


def uuid5_text(namespace: uuid.UUID, name: str) -> str:
    digest = bytearray(hashlib.sha1(namespace.bytes + name.encode("utf-8")).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
