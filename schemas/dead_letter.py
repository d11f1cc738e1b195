"""Building a DeadLetter record (schemas/avro/DeadLetter.avsc): what failed, where, and why.

Every stage that gives up on an input writes one: the connectors, the normaliser, the linker and
the consent gate.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

# A dead letter keeps at most this many bytes of what failed (the broker's default message limit is
# 1 MiB, and the letter must fit in it with its other fields). A longer payload keeps its start, and
# the letter's error says so, with the whole payload's length and SHA-256.
DEAD_LETTER_MAX_PAYLOAD = 512 * 1024
TRUNCATED_MARK = "[payload truncated:"


def dead_letter(origin: str, stage: str, error: Exception | str, payload: bytes, original_size: int | None = None,
                **where: Any) -> dict[str, Any]:
    """A DeadLetter record. ``payload`` is what failed, as it arrived; ``original_size`` is its whole
    length when the caller already holds only its start (a row too long to read whole)."""
    message = str(error)
    size = max(len(payload), original_size or 0)
    if size > len(payload) or len(payload) > DEAD_LETTER_MAX_PAYLOAD:
        kept = payload[:DEAD_LETTER_MAX_PAYLOAD]
        digest = f", sha256 {hashlib.sha256(payload).hexdigest()}" if len(payload) == size else ""
        message += f" {TRUNCATED_MARK} the first {len(kept):,} of {size:,} bytes are kept{digest}]"
        payload = kept
    return {
        "origin": origin,
        "origin_topic": where.get("topic"),
        "origin_partition": where.get("partition"),
        "origin_offset": where.get("offset"),
        "origin_key": where.get("key"),
        "stage": stage,
        "error_type": type(error).__name__ if isinstance(error, Exception) else "Rejected",
        "error": message,
        "payload": payload,
        "attempts": 1,
        "failed_at": datetime.now(UTC),
    }
