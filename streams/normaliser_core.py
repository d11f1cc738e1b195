"""What the normaliser does with one agency message, apart from how the message was fetched.

Both ways of running the normaliser call it: the confluent-kafka loop of the normaliser processes
(``streams.normaliser_loop``, the default) and the Faust agent in the worker process
(``streams.app``, with ``worker.normaliser_processes: 0``). It decodes and validates a PersonEvent
and says where it goes: unchanged to the single-partition link input, keyed by its record, or to
the dead letters with its origin, the error and the payload. Nothing is dropped.
"""

from __future__ import annotations

import logging
from typing import Any

from caselink.infra.topics import DEAD_LETTER_TOPIC, LINK_INPUT_TOPIC, person_events_topic
from caselink.linkage.blocking import blocking_keys
from caselink.linkage.packed import pack
from caselink.linkage.record import UnknownSchemeError, UnlinkableRecordError, standardise_person
from caselink.linkage.rules import DEFAULT_RULES, LinkageRules
from caselink.schemas import SchemaValidationError, UndecodableEventError, default_serde
from caselink.schemas.dead_letters import dead_letter, dead_letter_message
from caselink.streams import metrics

log = logging.getLogger(__name__)

Output = tuple[str, bytes, bytes, list[tuple[str, bytes]] | None]  # topic, key, value, headers

# The header of a link-input message that carries its standardised record and blocking keys
# (``linkage.packed``): made here, where there is CPU to spare, instead of again in the linker.
PACKED_HEADER = "caselink-link-record"
# The header that says what a PersonEvent on the link input does, "<op> <source_version>", so the
# sharded index's tiers (streams/shard_core.py) need not decode the event to know: decoding it was
# a fifth of a block shard's time and more of the resolver's.
CHANGE_HEADER = "caselink-link-change"

REJECTED = (UndecodableEventError, SchemaValidationError, UnlinkableRecordError, UnknownSchemeError)


class Normaliser:
    """Routes agency messages; counts dead letters as it makes them (they are rare).

    ``rules`` are the deployment model's (identifier schemes, filler names): the linker uses a
    packed record only if it was made under the same rules."""

    def __init__(self, rules: LinkageRules = DEFAULT_RULES) -> None:
        self.serde = default_serde()
        self.rules = rules
        self.typo_schemes = rules.typo_schemes

    def route(self, value: bytes | None, topic: str, partition: int, offset: int, key: bytes | None) -> Output:
        """Where one message goes: ``(LINK_INPUT_TOPIC, record key, value, headers)`` or a dead letter."""
        try:
            record_key, packed, change = self.check(value, topic, partition, offset)
        except REJECTED as exc:
            return self.dead_letter(exc, value, topic, partition, offset, key)
        headers = [(CHANGE_HEADER, change)]
        if packed is not None:
            headers.append((PACKED_HEADER, packed))
        return LINK_INPUT_TOPIC, record_key.encode(), value, headers  # type: ignore[return-value]

    def check(self, value: bytes | None, topic: str, partition: int, offset: int) -> tuple[str, bytes | None, bytes]:
        """The record key (``agency:source_record_id``) of a PersonEvent fit to link, with an
        UPSERT's standardised record and blocking keys packed, and what it does (``CHANGE_HEADER``);
        raises one of ``REJECTED`` otherwise. The event itself goes on unchanged: the linker uses the
        packed record only if this very code made it (``linkage.packed``), and standardises the
        event otherwise."""
        _, record = self.serde.decode(value, expect="PersonEvent", topic=topic, partition=partition, offset=offset)
        if person_events_topic(record["agency"]) != topic:
            raise SchemaValidationError("PersonEvent", [f"agency {record['agency']!r} published on {topic}"])
        key = f"{record['agency']}:{record['source_record_id']}"
        change = f"{record['op']} {int(record['source_version'])}".encode()
        if record["op"] == "UPSERT":
            if record["person"] is None:
                raise SchemaValidationError("PersonEvent", ["person is required for UPSERT"])
            standardised = standardise_person(key, record["person"], self.rules)
            return key, pack(standardised, blocking_keys(standardised, self.typo_schemes), self.rules), change
        return key, None, change

    def dead_letter(self, error: Exception, value: bytes | None, topic: str, partition: int, offset: int,
                    key: bytes | None) -> Output:
        origin = f"{topic}[{partition}]@{offset}"
        letter = dead_letter(origin, "normalise", error, value or b"", topic=topic, partition=partition,
                             offset=offset, key=key)
        metrics.DEAD_LETTERS.labels("normalise", type(error).__name__).inc()
        log.warning("dead letter from normalise at %s: %s", origin, error)
        dead_key, dead_value, headers = dead_letter_message(letter, key)
        return DEAD_LETTER_TOPIC, dead_key or origin.encode(), dead_value or b"", headers


def packed_record(headers: Any) -> bytes | None:
    """The packed record among a link-input message's headers (``Message.headers()``: (name, bytes)
    pairs as read from a topic), if any."""
    return _header(headers, PACKED_HEADER)


def change_header(headers: Any) -> bytes | None:
    """What a link-input PersonEvent does (``CHANGE_HEADER``), if the normaliser said."""
    return _header(headers, CHANGE_HEADER)


def _header(headers: Any, wanted: str) -> bytes | None:
    if headers:
        for name, value in headers:
            if name == wanted:
                found: bytes = value
                return found
    return None
