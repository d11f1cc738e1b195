"""Keyed pseudonyms: HMAC-SHA256 of (purpose, kind, value) under a secret key with a key id.

The purpose is part of the message so two purposes' pseudonyms for the same citizen differ and
their outputs cannot be joined with each other; only the holder of the key can re-identify. The
key id travels with every pseudonym (``<key id>.<digest>``) and in ``GatedCase.key_id``, so after
a rotation consumers can tell which key made a pseudonym, and the gate retracts what it released
under the old key and releases again under the new one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


class Pseudonymiser:
    def __init__(self, key: bytes, key_id: str) -> None:
        if len(key) < 16:
            raise ValueError("the pseudonymisation key must be at least 16 bytes")
        if not key_id or "." in key_id:
            raise ValueError("the key id must be non-empty and contain no '.'")
        self._key = key
        self.key_id = key_id

    def __repr__(self) -> str:  # never print the key
        return f"Pseudonymiser(key_id={self.key_id!r})"

    def pseudonym(self, purpose: str, kind: str, value: str) -> str:
        digest = hmac.new(self._key, f"{purpose}\x1f{kind}\x1f{value}".encode(), hashlib.sha256).digest()
        return f"{self.key_id}.{base64.b32encode(digest[:20]).decode().lower()}"
