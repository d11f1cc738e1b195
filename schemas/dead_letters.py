"""Dead letters in Kafka Connect's convention: the original bytes, the reasons in headers.

Kafka Connect's dead letter queue (``errors.deadletterqueue.topic.name``, with
``errors.deadletterqueue.context.headers.enable``) writes the failed record's own key and value,
untouched, and says where it came from and why in ``__connect.errors.*`` headers. Operators'
tools know that shape: any of them (kcat, a stock consumer, a Connect re-drive) can send a dead
letter back where it came from by reading ``__connect.errors.topic`` and producing the bytes as
they are. caselink's dead letters (``caselink.dead-letters``) have the same shape:

* key: the original message's key (for a row of a file: ``<file>:row <n>``, as before);
* value: the original message's value, or the row's own bytes (at most 512 KiB; a longer row keeps
  its start and the exception message says so, with the whole row's length and SHA-256);
* headers, as Connect's ``DeadLetterQueueReporter`` names them: ``__connect.errors.topic``,
  ``.partition``, ``.offset`` (when the failed input was a Kafka message), ``.connector.name``
  (``caselink-<stage>``), ``.task.id``, ``.stage`` (caselink's stage: connector, normalise, link,
  gate ...), ``.class.name``, ``.exception.class.name``, ``.exception.message``; and caselink's
  own ``caselink.dead-letter.*`` (the origin as caselink names it, the time, the attempts), so a
  caselink tool reads back everything the old Avro ``DeadLetter`` record held.

Dead letters written before this (an Avro ``DeadLetter`` value) are still read by ``read_letter``.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from caselink.schemas.serde import AvroSerde

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

PREFIX = "__connect.errors."
TOPIC = PREFIX + "topic"
PARTITION = PREFIX + "partition"
OFFSET = PREFIX + "offset"
CONNECTOR_NAME = PREFIX + "connector.name"
TASK_ID = PREFIX + "task.id"
STAGE = PREFIX + "stage"
EXECUTING_CLASS = PREFIX + "class.name"
EXCEPTION = PREFIX + "exception.class.name"
EXCEPTION_MESSAGE = PREFIX + "exception.message"
ORIGIN = "caselink.dead-letter.origin"
FAILED_AT = "caselink.dead-letter.failed-at"
ATTEMPTS = "caselink.dead-letter.attempts"


def dead_letter_message(letter: dict[str, Any], key: bytes | None = None
                        ) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """(key, value, headers) of the dead-letter message for ``letter`` (connectors/base.py
    ``dead_letter``). ``key``: the failed message's own key bytes, when there was one."""
    headers: list[tuple[str, bytes]] = []
    if letter.get("origin_topic") is not None:
        headers += [(TOPIC, letter["origin_topic"].encode()),
                    (PARTITION, str(letter.get("origin_partition")).encode()),
                    (OFFSET, str(letter.get("origin_offset")).encode())]
    stage = str(letter["stage"])
    failed_at = letter.get("failed_at") or datetime.now(UTC)
    headers += [
        (CONNECTOR_NAME, f"caselink-{stage}".encode()),
        (TASK_ID, b"0"),
        (STAGE, stage.encode()),
        (EXECUTING_CLASS, f"caselink.{stage}".encode()),
        (EXCEPTION, str(letter["error_type"]).encode()),
        (EXCEPTION_MESSAGE, str(letter["error"]).encode()),
        (ORIGIN, str(letter["origin"]).encode()),
        (FAILED_AT, failed_at.isoformat().encode()),
        (ATTEMPTS, str(letter.get("attempts", 1)).encode()),
    ]
    if key is None:
        origin_key = letter.get("origin_key")
        if isinstance(origin_key, bytes):
            key = origin_key
        else:
            key = origin_key.encode() if origin_key is not None else str(letter["origin"]).encode()
    return key, letter.get("payload"), headers


def read_letter(msg: Any, serde: AvroSerde) -> dict[str, Any]:
    """The dead letter a message of the dead-letter topic holds, as ``dead_letter`` built it."""
    return read_parts(msg.key(), msg.value(), msg.headers(), serde)


def read_parts(key: bytes | None, value: bytes | None, header_list: list[tuple[str, bytes]] | None,
               serde: AvroSerde) -> dict[str, Any]:
    """``read_letter`` of a message's parts."""
    headers = {k: v for k, v in (header_list or [])}
    if EXCEPTION not in headers:  # written before the Connect convention: an Avro DeadLetter
        return serde.decode(value, expect="DeadLetter")[1]

    def text(name: str) -> str | None:
        value = headers.get(name)
        return None if value is None else value.decode("utf-8", "replace")

    topic = text(TOPIC)
    failed_at = text(FAILED_AT)
    return {
        "origin": text(ORIGIN) or (f"{topic}[{text(PARTITION)}]@{text(OFFSET)}" if topic else ""),
        "origin_topic": topic,
        "origin_partition": int(text(PARTITION) or 0) if topic else None,
        "origin_offset": int(text(OFFSET) or 0) if topic else None,
        "origin_key": key if topic else None,
        "stage": text(STAGE) or "",
        "error_type": text(EXCEPTION) or "",
        "error": text(EXCEPTION_MESSAGE) or "",
        "payload": value or b"",
        "attempts": int(text(ATTEMPTS) or 1),
        "failed_at": datetime.fromisoformat(failed_at) if failed_at else None,
    }
