"""The linker's logic between Kafka messages: bytes in, the messages to publish out.

Kept apart from Kafka so it can be tested without a broker and replayed on recovery
(``caselink.streams.linker_loop``) and by ``caselink.rebuild``. Everything it emits is derived
from the input (timestamps come from the events, ids are hashes of the input), so applying the
same link-input log in the same order always produces the same index and the same output
messages.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, cast

from caselink.infra.topics import LINK_DECISIONS_TOPIC, LINKED_CASES_TOPIC, REVIEW_TOPIC
from caselink.linkage.index import DEFAULT_MAX_CITIZEN_RECORDS, CitizenIndex, LinkResult
from caselink.linkage.model import LinkageModel
from caselink.linkage.packed import unpack
from caselink.linkage.record import LinkRecord
from caselink.schemas import default_serde
from caselink.schemas.records import LinkDecision, LinkedCase, LinkOutcome, Member, PersonEvent, ReviewDecision
from caselink.streams.case_codec import LinkedCaseCodec, MemberParts
from caselink.streams.decision_codec import DecisionCodec
from caselink.streams.shard_core import NO_ANSWER, Nothing, Upsert, change_of_event, resolve

from caselink.core.ids import uuid5_text
from caselink.core.settings import Settings

DECISION_NAMESPACE = uuid.UUID("0d5f3f0e-2b7a-4c1e-8e55-7f0c2a9b6d41")
# The producer's default largest message (librdkafka message.max.bytes); kafka.max_message_bytes.
DEFAULT_MAX_MESSAGE_BYTES = 1_000_000
# What a record batch adds to a message's key and value, with room to spare (headers, lengths).
MESSAGE_OVERHEAD = 512
# A decision lists at most this many candidates, the strongest (each with its field weights, about
# 600 bytes): a record that blocks with thousands under an unfit model cannot make it too large.
MAX_DECISION_CANDIDATES = 200


class RecordValues(Protocol):
    """Where a resolver keeps the records' values (``streams.values_store.ValuesStore``)."""

    def get(self, key: str) -> LinkRecord | None: ...

    def put(self, record: LinkRecord, packed: bytes | None = None, seq: int = -1) -> None: ...

    def delete(self, key: str, seq: int = -1) -> None: ...


@dataclass(frozen=True)
class Outgoing:
    topic: str
    key: bytes
    value: bytes | None  # None: a tombstone
    headers: list[tuple[str, bytes]] | None = None  # a dead letter's reasons (schemas/dead_letters.py)


def new_core(settings: Settings, model: LinkageModel, store: RecordValues | None = None) -> LinkerCore:
    """An empty core with the deployment's guards (``linkage.*``, ``kafka.max_message_bytes``);
    with ``store``, a sharded index's resolver keeping the records' values there."""
    return LinkerCore(model, max_block_size=settings.linkage.max_block_size,
                      max_citizen_records=settings.linkage.max_citizen_records,
                      max_message_bytes=settings.kafka.max_message_bytes, resolver=store is not None, store=store)


class LinkerCore:
    """Applies PersonEvents and ReviewDecisions to a CitizenIndex and says what to publish."""

    def __init__(self, model: LinkageModel, max_block_size: int = 200,
                 max_citizen_records: int | None = DEFAULT_MAX_CITIZEN_RECORDS,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, resolver: bool = False,
                 store: RecordValues | None = None) -> None:
        """``resolver``: the ordered resolver of a sharded index (``streams.shard_core``): each
        upsert comes with the record shards' merged answer, and the records' values, which a
        resolver does not hold, are kept in ``store`` as each change is applied and read from it
        where an output needs them (a review item's field weights, an undo's score)."""
        self.model = model
        self.resolver = resolver
        self.store = store
        self._changed: LinkRecord | None = None  # the record the change being applied carries
        self._changed_packed: bytes | None = None  # and the normaliser's bytes it came from
        self._offset = -1  # the link-input offset being applied (-1: not given)
        self.index = CitizenIndex(model, max_block_size=max_block_size, max_citizen_records=max_citizen_records,
                                  resolver=resolver)
        self.max_message_bytes = max_message_bytes
        self.serde = default_serde()
        # Each record's LinkedCase member, Avro-encoded once per change (streams/case_codec.py).
        self.codec = LinkedCaseCodec(self.serde)
        # Each decision's candidates with their field weights, from cached encodings (streams/decision_codec.py).
        self.decisions = DecisionCodec(self.serde, model)
        self.members: dict[str, MemberParts] = {}
        self.citizen_versions: dict[str, int] = {}
        self.applied = 0
        self.last_outcome = ""
        self.last_reason: str | None = None  # why, when the last outcome was REJECTED
        # What reviewers said about each pair, in order ("left|right" -> [{by, action, same_person,
        # note, at}]): shown beside the pair on the review page (a "not sure" note, an undo).
        self.review_notes: dict[str, list[dict[str, Any]]] = {}
        self.last_review: ReviewDecision | None = None  # the last ReviewDecision applied, for the log

    # ------------------------------------------------------------------ input
    def apply(self, value: bytes | None, topic: str | None = None, partition: int | None = None,
              offset: int | None = None, packed: bytes | None = None, scored: Any = NO_ANSWER) -> list[Outgoing]:
        """``packed``: the normaliser's standardised record and blocking keys (``linkage.packed``),
        used instead of standardising the event again when they were made by this code.
        ``scored``: a resolver's merged answer from the record shards for this message."""
        name, record, spans = self.serde.decode_spans(value, topic=topic, partition=partition, offset=offset)
        self.applied += 1
        self.last_review = None
        self._changed, self._changed_packed = None, None
        self._offset = offset if offset is not None else -1
        if name == "PersonEvent":  # the serde checked it against the schema these classes are generated from
            return self._person_event(cast(PersonEvent, record), value, spans, packed, scored)
        if name == "ReviewDecision":
            return self._review_decision(cast(ReviewDecision, record))
        raise ValueError(f"{name} does not belong on the link input")

    def _person_event(self, event: PersonEvent, value: bytes | None = None,
                      spans: tuple[int, ...] | None = None, packed: bytes | None = None,
                      scored: Any = NO_ANSWER) -> list[Outgoing]:
        key = f"{event['agency']}:{event['source_record_id']}"
        at: datetime = event["emitted_at"]
        version = int(event["source_version"])
        if self.resolver:
            change = change_of_event(event, packed, self.model.rules)
            if isinstance(change, Nothing):  # the single writer's index raises here too: a dead letter
                raise ValueError(change.reason)
            if isinstance(change, Upsert):
                self._changed, self._changed_packed = change.record, change.packed
            result = resolve(self.index, change, scored)
        elif event["op"] == "DELETE":
            result = self.index.delete(key, version)
        else:
            unpacked = (unpack(packed, key, self.model.rules) if packed is not None and event["person"] is not None
                        else None)
            if unpacked is not None:
                result = self.index.upsert(key, unpacked[0], version, keys=unpacked[1])
            else:  # an UPSERT without a person fails in the index; the linker dead-letters the event
                result = self.index.upsert(key, event["person"], version)  # type: ignore[arg-type]
        if key not in self.index.records:  # deleted, or rejected (an earlier version it had is out too)
            self.members.pop(key, None)
        elif result.outcome not in ("IGNORED_STALE", "REJECTED"):
            previous = self.members.get(key)
            self.members[key] = self.codec.member(
                event["agency"], event["source_record_id"], version,
                previous.linked_at if previous else at, event["person"], event["cases"], value, spans)
        out = self._outputs(result, event["event_id"], version, at)
        self._keep_values(key, self._changed, result.outcome)
        return out

    def _review_decision(self, decision: ReviewDecision) -> list[Outgoing]:
        """A verdict (must-link or cannot-link), an undo of the pair's verdict, or "not sure" (a note
        on the pair, which stays open). Each is kept in ``review_notes``."""
        left, right = sorted((decision["left_record"], decision["right_record"]))
        action = decision.get("action") or "decide"
        self.last_review = decision
        note = {"by": decision["decided_by"], "action": action, "same_person": decision["same_person"],
                "note": decision.get("reason"), "at": decision["decided_at"].isoformat(),
                "decision_id": decision["decision_id"]}
        if action == "not_sure":
            if left not in self.index.records or right not in self.index.records:
                self.last_outcome, self.last_reason = "REJECTED", "both records must be in the index"
                return []
            self.review_notes.setdefault(f"{left}|{right}", []).append(note)
            self.last_outcome, self.last_reason = "NOTED", None
            return []
        if action == "undo":
            both = left in self.index.records and right in self.index.records
            score = self.model.score(self.values(left), self.values(right)) if self.resolver and both else None
            result = self.index.undo_review(left, right, score)
        elif action == "decide":
            result = self.index.apply_review(left, right, decision["same_person"])
        else:
            result = LinkResult(left, "REJECTED", self.index.citizen_of(left), reason=f"unknown action {action!r}")
        if result.outcome != "REJECTED":
            self.review_notes.setdefault(f"{left}|{right}", []).append(note)
        return self._outputs(result, decision["decision_id"], 0, decision["decided_at"])

    # ------------------------------------------------------------------ output
    def _outputs(self, result: LinkResult, event_id: str, version: int, at: datetime) -> list[Outgoing]:
        self.last_outcome, self.last_reason = result.outcome, result.reason
        out = [self._decision(result, event_id, version, at)]
        if result.outcome == "IGNORED_STALE" or (result.outcome == "REJECTED" and not result.changed
                                                  and not result.retired):
            return out
        for cid in result.changed:
            if cid in self.index.citizens:
                out.append(self._linked_case(cid, at))
        for retired in result.retired:
            out.append(Outgoing(LINKED_CASES_TOPIC, retired.encode(), None))
        for record_key, other, weight in result.review:
            out.append(self._review_item(record_key, other, weight, at))
        for record_key, other, weight in result.guarded:
            out.append(self._review_item(record_key, other, weight, at, reason=(
                f"linking them would make a citizen of more than {self.index.max_citizen_records} records "
                f"(linkage.max_citizen_records): a person must decide")))
        return out

    def _decision(self, result: LinkResult, event_id: str, version: int, at: datetime) -> Outgoing:
        candidates = result.candidates[:MAX_DECISION_CANDIDATES]  # strongest first
        decision: LinkDecision = {
            "decision_id": uuid5_text(DECISION_NAMESPACE, f"{event_id}:{result.outcome}"),
            "record_key": result.record_key,
            "event_id": event_id,
            "source_version": version,
            "outcome": cast(LinkOutcome, result.outcome),
            "citizen_id": result.citizen_id,
            "affected_citizens": sorted(set(result.changed) | set(result.retired)),
            "reason": result.reason,
            "model_version": self.model.version,
            "decided_at": at,
            "candidates_omitted": len(result.candidates) - len(candidates),
            "candidates": [],  # written by the codec from ``candidates``
        }
        record = self._record(result.record_key) if candidates else None  # the candidates' field weights need it
        value = self.decisions.encode(decision, candidates, record, _finite)
        return Outgoing(LINK_DECISIONS_TOPIC, result.record_key.encode(), value)

    def _record(self, key: str) -> Any:
        state = self.index.records.get(key)
        if state is None:
            return None
        return self.values(key) if self.resolver else state.record

    def values(self, key: str) -> LinkRecord:
        """A record's standardised values: the index's, or a resolver's from the change being
        applied or from its store of values."""
        if self._changed is not None and self._changed.key == key:
            return self._changed
        if not self.resolver:
            return self.index.values(key)
        found = self.store.get(key) if self.store is not None else None
        if found is None:
            raise ValueError(f"no values for {key!r}: a resolver reads them from its store of record values")
        return found

    def _keep_values(self, key: str, record: LinkRecord | None, outcome: str) -> None:
        """A resolver's store follows the index: each record's values as last applied."""
        if self.store is None:
            return
        if key not in self.index.records:
            self.store.delete(key, self._offset)
        elif record is not None and outcome not in ("IGNORED_STALE", "REJECTED"):
            self.store.put(record, self._changed_packed, self._offset)

    def _weighted_members(self, citizen_id: str) -> list[tuple[MemberParts, float]]:
        """Each member's parts with its match weight (its strongest link), oldest record first."""
        out = []
        for key in self.index.members(citizen_id):
            edges = self.index.edges.get(key)
            out.append((self.members[key], _finite(max(edges.values())) if edges else 0.0))
        return out

    def linked_case(self, citizen_id: str, at: datetime | None = None) -> LinkedCase:
        """The LinkedCase view of a live citizen (also served by the web API)."""
        citizen = self.index.citizens[citizen_id]
        return {
            "citizen_id": citizen_id,
            "version": self.citizen_versions.get(citizen_id, 0),
            "members": [self.codec.decode_member(parts, weight)
                        for parts, weight in self._weighted_members(citizen_id)],
            "merged_from": list(citizen.merged_from),
            "model_version": self.model.version,
            "updated_at": at or datetime.now(UTC),
            "members_omitted": 0,
        }

    def member(self, record_key: str) -> Member | None:
        """The record's LinkedCase member (person and cases) as last applied, or None."""
        parts = self.members.get(record_key)
        return self.codec.decode_member(parts, 0.0) if parts else None

    def person(self, record_key: str) -> Mapping[str, Any]:
        """The source record's person, as last applied (empty when the record is not held)."""
        parts = self.members.get(record_key)
        return self.codec.decode_member(parts, 0.0)["person"] if parts else {}

    def _linked_case(self, citizen_id: str, at: datetime) -> Outgoing:
        version = self.citizen_versions[citizen_id] = self.citizen_versions.get(citizen_id, 0) + 1
        value = self.codec.encode(citizen_id, version, self._weighted_members(citizen_id),
                                  list(self.index.citizens[citizen_id].merged_from), self.model.version, at,
                                  max_bytes=self.max_message_bytes - len(citizen_id) - MESSAGE_OVERHEAD)
        return Outgoing(LINKED_CASES_TOPIC, citizen_id.encode(), value)

    def _review_item(self, record_key: str, other: str, weight: float, at: datetime,
                     reason: str | None = None) -> Outgoing:
        left, right = sorted((record_key, other))
        pair_key = f"{left}|{right}"
        explanation = self.model.explain(self.values(left), self.values(right))
        item = {
            "pair_key": pair_key, "left_record": left, "right_record": right,
            "left_citizen": self.index.citizen_of(left) or "", "right_citizen": self.index.citizen_of(right) or "",
            "match_weight": weight, "match_probability": self.model.probability(weight),
            "field_weights": [{"field": f.field, "level": f.level, "weight": f.weight} for f in explanation],
            "status": "OPEN", "model_version": self.model.version, "created_at": at, "reason": reason,
        }
        return Outgoing(REVIEW_TOPIC, pair_key.encode(), self.serde.encode("ReviewItem", item))


def _finite(weight: float) -> float:
    """Reviewer must-links carry an infinite weight; Avro doubles can, JSON cannot: cap it."""
    return 99.0 if math.isinf(weight) else weight
