"""Keyed pseudonyms: HMAC-SHA256 of (purpose, kind, value) under a secret key with a key id.

The purpose is part of the message so two purposes' pseudonyms for the same citizen differ and
their outputs cannot be joined with each other; only the holder of the key can re-identify. The
key id travels with every pseudonym (``<key id>.<digest>``) and in ``GatedCase.key_id``, so after
a rotation consumers can tell which key made a pseudonym, and the gate retracts what it released
under the old key and releases again under the new one.

The digest is the first 20 bytes (160 bits) of the HMAC in lower-case RFC 4648 base32: 32
characters, no padding. It is computed from the key's inner and outer SHA-256 states, hashed once
when the key is loaded (RFC 2104's own optimisation), and written out fifteen bits (three
characters) at a time from a table, the last ten bits from a second one: the same string ``hmac``
and ``base64.b32encode`` give (tests/unit/test_pseudonym.py), in 2.3 µs instead of 6.5 (3 µs
with ten bits at a time). A pseudonymised view needs one for the citizen and one for each record and
case, so this was a third of evaluating such a purpose.
"""

from __future__ import annotations

import hashlib

_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
_PAIRS = [_ALPHABET[i >> 5] + _ALPHABET[i & 31] for i in range(1024)]  # ten bits -> two characters
_TRIPLES = [p + c for p in _PAIRS for c in _ALPHABET]  # fifteen bits -> three characters (32,768 strings)
_SHIFTS = tuple(range(145, 9, -15))  # bits 159..10, fifteen at a time; then the last ten
_BLOCK = 64  # SHA-256's block size, as HMAC pads the key to


class Pseudonymiser:
    def __init__(self, key: bytes, key_id: str) -> None:
        if len(key) < 16:
            raise ValueError("the pseudonymisation key must be at least 16 bytes")
        if not key_id or "." in key_id:
            raise ValueError("the key id must be non-empty and contain no '.'")
        self.key_id = key_id
        block = (hashlib.sha256(key).digest() if len(key) > _BLOCK else key).ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def __repr__(self) -> str:  # never print the key
        return f"Pseudonymiser(key_id={self.key_id!r})"

    def pseudonym(self, purpose: str, kind: str, value: str) -> str:
        inner = self._inner.copy()
        inner.update(f"{purpose}\x1f{kind}\x1f{value}".encode())
        outer = self._outer.copy()
        outer.update(inner.digest())
        n = int.from_bytes(outer.digest()[:20], "big")
        return f"{self.key_id}.{''.join([_TRIPLES[(n >> s) & 32767] for s in _SHIFTS])}{_PAIRS[n & 1023]}"
