"""The sharded index's tiers between Kafka messages: a link-input message in, a shard's answer out.

``linkage.shards`` holds the tiers' state and proves them equal to the single writer; this module
is what a shard process does with Kafka's bytes, kept apart from Kafka so it can be tested without
a broker (``streams/shard_loop.py`` runs it):

* ``decode_change``: a link-input message as the index operation the linker would make of it
  (the same decoding, the normaliser's packed record, the same failures);
* ``BlockAnswers`` and ``RecordAnswers``: one shard of each tier applying changes in order and
  answering them;
* ``encode_batch`` and ``decode_batch``: a run of answers as one message (msgpack: answers are
  lists of keys, numbers and bytes, which it writes compactly and reads back exactly);
* ``Coverage``: the answers of one tier gathered until every key partition has answered a
  sequence number (a link-input offset).

Why at-least-once is enough between the tiers: a shard's answer to a change is a function of the
link input up to that change alone (its partitions' blocks or records, rebuilt from the log),
whatever the number of shards or who owned what when. So an answer sent twice, by a restarted
shard or by one that lost its partitions and has not noticed yet, is the same answer, and merging
it again changes nothing (``merge_found`` and ``merge_scored`` are idempotent).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, cast

import msgpack
from caselink.linkage.blocking import blocking_keys
from caselink.linkage.index import CitizenIndex, IdsOnly, LinkResult
from caselink.linkage.model import LinkageModel
from caselink.linkage.packed import pack, unpack, unpack_ids_and_keys
from caselink.linkage.record import LinkRecord, UnlinkableRecordError, standardise_person
from caselink.linkage.rules import LinkageRules
from caselink.linkage.scoring import Scored, ScoredPair
from caselink.linkage.shards import DEFAULT_PARTITIONS, BlockShard, RecordShard, keyed
from caselink.schemas.serde import AvroSerde
from caselink.streams.normaliser_core import change_header, packed_record

BATCH_FORMAT = 1  # the answers' message format; a reader refuses any other


# ---------------------------------------------------------------------- changes
@dataclass(frozen=True, slots=True)
class Upsert:
    key: str
    version: int
    record: LinkRecord | None  # None when decoded without values (a block shard, the resolver)
    keys: list[str]
    ids: Mapping[str, str]
    packed: bytes | None = None  # the normaliser's bytes ``record`` was unpacked from, if it was


@dataclass(frozen=True, slots=True)
class Leave:
    """A delete, or a version that cannot be linked (it leaves the index as a delete would)."""

    key: str
    version: int
    person: Mapping[str, Any] | None  # an unlinkable version's person, for the resolver to reject alike


@dataclass(frozen=True, slots=True)
class Verdict:
    a: str
    b: str
    same: bool


@dataclass(frozen=True, slots=True)
class Undo:
    a: str
    b: str


@dataclass(frozen=True, slots=True)
class Nothing:
    """A message that changes no index: a "not sure" note, an unknown action, or one the linker
    dead-letters (``reason``)."""

    reason: str | None = None


Change = Upsert | Leave | Verdict | Undo | Nothing


def decode_change(serde: AvroSerde, rules: LinkageRules, value: bytes | None, packed: bytes | None = None,
                  topic: str | None = None, partition: int | None = None, offset: int | None = None, *,
                  key: bytes | None = None, change: bytes | None = None, values: bool = True) -> Change:
    """What the linker (``LinkerCore.apply``) does to its index for this message, as a shard sees it.

    ``key`` and ``change`` (the message key and the normaliser's ``CHANGE_HEADER``) with the packed
    record spare decoding the event: the normaliser decoded and checked it, and only the worker
    principal writes the link input, as for the packed record (``linkage.packed``). Without them,
    or if the packed record was made by other code, the event is decoded. ``values`` False: an
    upsert without the record's values (its identifiers and keys only), for the tiers that need
    no more."""
    if key is not None and change is not None:
        quick = _from_headers(rules, key, change, packed, values)
        if quick is not None:
            return quick
    try:
        name, event = serde.decode(value, topic=topic, partition=partition, offset=offset)
    except ValueError as exc:  # UndecodableEventError is one: the linker dead-letters the message
        return Nothing(str(exc))
    if name == "ReviewDecision":
        left, right = sorted((event["left_record"], event["right_record"]))
        action = event.get("action") or "decide"
        if action == "decide":
            return Verdict(left, right, bool(event["same_person"]))
        if action == "undo":
            return Undo(left, right)
        return Nothing()
    if name != "PersonEvent":
        return Nothing(f"{name} does not belong on the link input")
    return change_of_event(event, packed, rules)


def change_of_event(event: Mapping[str, Any], packed: bytes | None, rules: LinkageRules) -> Change:
    """A decoded PersonEvent as the index operation the linker makes of it."""
    record_key = f"{event['agency']}:{event['source_record_id']}"
    version = int(event["source_version"])
    person = event["person"]
    if event["op"] == "DELETE":
        return Leave(record_key, version, None)
    unpacked = unpack(packed, record_key, rules) if packed is not None and person is not None else None
    if unpacked is not None:
        return Upsert(record_key, version, unpacked[0], unpacked[1], unpacked[0].ids, packed)
    try:
        record = standardise_person(record_key, person, rules)
    except UnlinkableRecordError:
        return Leave(record_key, version, person)
    except Exception as exc:  # noqa: BLE001 - whatever the linker's index raises here, the linker dead-letters
        return Nothing(f"{type(exc).__name__}: {exc}")
    return Upsert(record_key, version, record, blocking_keys(record, rules.typo_schemes), record.ids)


def _from_headers(rules: LinkageRules, key: bytes, change: bytes, packed: bytes | None, values: bool) -> Change | None:
    """The change the normaliser's headers describe; None when they cannot be used."""
    try:
        op, version_text = change.decode().split(" ")
        version = int(version_text)
        record_key = key.decode()
    except (ValueError, UnicodeDecodeError):
        return None
    if op == "DELETE":
        return Leave(record_key, version, None)
    if op != "UPSERT":
        return None
    if values:
        unpacked = unpack(packed, record_key, rules)
        return None if unpacked is None else Upsert(record_key, version, unpacked[0], unpacked[1], unpacked[0].ids,
                                                    packed)
    light = unpack_ids_and_keys(packed, record_key, rules)
    return None if light is None else Upsert(record_key, version, None, light[1], light[0])


# ---------------------------------------------------------------------- the shards
NO_ANSWER = object()  # a change this tier says nothing about (not the same as a stale change's None)


class BlockAnswers:
    """One block shard applying changes in order; its answer to an upsert is the records its
    blocks hold under the change's keys (None: stale)."""

    def __init__(self, owned: frozenset[int], partitions: int = DEFAULT_PARTITIONS,
                 max_block_size: int = 200) -> None:
        self.shard = BlockShard(owned, partitions, max_block_size)
        self.partitions = partitions

    def apply(self, change: Change) -> Any:
        if isinstance(change, Upsert):
            stored, looked_up = keyed(change.keys, self.partitions)
            found = self.shard.upsert(change.key, stored, looked_up, change.version)
            return None if found is None else list(found)
        if isinstance(change, Leave):
            self.shard.delete(change.key, change.version)
        return NO_ANSWER


class RecordAnswers:
    """One record shard applying changes in order, given the block shards' merged answer to each
    upsert. Its answer to an upsert is ``[pairs, unchanged]`` (None: stale); to an undo, the
    packed values of the pair's records that live here (the resolver weighs the pair again)."""

    def __init__(self, model: LinkageModel, owned: frozenset[int], partitions: int = DEFAULT_PARTITIONS) -> None:
        self.model = model
        self.shard = RecordShard(model, owned, partitions)

    def apply(self, change: Change, found: Any = NO_ANSWER) -> Any:
        shard = self.shard
        if isinstance(change, Upsert):
            if change.record is None:
                raise ValueError("a record shard needs the record's values: decode with values=True")
            if found is NO_ANSWER:
                raise ValueError(f"no block shard answered the upsert of {change.key!r}")
            scored = shard.upsert(change.key, change.record, set(found or ()), change.version)
            if (scored is None) != (found is None):
                raise ValueError(f"the block and record shards disagree about whether {change.key!r}'s change "
                                 "is stale: they saw different changes")
            return None if scored is None else [[list(p) for p in scored.pairs], scored.unchanged]
        if isinstance(change, Leave):
            shard.delete(change.key, change.version)
        elif isinstance(change, Verdict):
            shard.apply_review(change.a, change.b, change.same)
        elif isinstance(change, Undo):
            held = {k: pack(shard.records[k], [], self.model.rules) for k in (change.a, change.b)
                    if k in shard.records}
            shard.undo_review(change.a, change.b)
            return held
        return NO_ANSWER


# ---------------------------------------------------------------------- merging answers
def merge_found(have: Any, answer: Any) -> Any:
    """Block shards' answers to one upsert: the union of what they found (None: stale)."""
    if have is NO_ANSWER:
        return None if answer is None else set(answer)
    if (have is None) != (answer is None):
        raise ValueError("block shards disagree about whether a change is stale: they saw different changes")
    if have is not None:
        have.update(answer)
    return have


def merge_scored(have: Any, answer: Any) -> Any:
    """Record shards' answers to one change: an upsert's pairs, each other record once, and the
    home shard's word on whether the values changed; an undo's records, by key."""
    if isinstance(answer, dict):
        return {**(have if isinstance(have, dict) else {}), **answer}
    if have is NO_ANSWER:
        return None if answer is None else [{p[0]: p for p in answer[0]}, answer[1]]
    if (have is None) != (answer is None):
        raise ValueError("record shards disagree about whether a change is stale: they saw different changes")
    if have is not None:
        for pair in answer[0]:
            have[0].setdefault(pair[0], pair)
        if answer[1] is not None:
            have[1] = answer[1]
    return have


def scored_of(merged: Any) -> Scored | None:
    """The record shards' merged answer to an upsert as the resolver takes it."""
    if merged is None:
        return None
    pairs = [cast(ScoredPair, (p[0], float(p[1]), list(p[2]), bool(p[3]))) for p in merged[0].values()]
    return Scored(pairs, merged[1])


# ---------------------------------------------------------------------- the answers' messages
@dataclass(frozen=True)
class Batch:
    """A shard's answers for the sequence numbers ``first`` (inclusive) to ``end`` (exclusive),
    on behalf of ``partitions`` of ``count``; sequence numbers with no answer said nothing.
    ``made_with`` names what the answers depend on besides the log (the rules, the model), so a
    reader refuses answers made under others."""

    tier: str
    partitions: frozenset[int]
    first: int
    end: int
    answers: list[tuple[int, Any]]
    count: int = DEFAULT_PARTITIONS
    made_with: str = ""


def encode_batch(batch: Batch) -> bytes:
    return cast(bytes, msgpack.packb([BATCH_FORMAT, batch.tier, batch.count, batch.made_with, sorted(batch.partitions),
                                      batch.first, batch.end, [[seq, answer] for seq, answer in batch.answers]],
                                     use_bin_type=True))


def decode_batch(data: bytes | None) -> Batch:
    """A batch message; ValueError for anything else (it cannot be a shard's)."""
    try:
        fmt, *fields = msgpack.unpackb(data or b"", raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise ValueError(f"not a shard's answers: {exc}") from None
    if fmt != BATCH_FORMAT:
        raise ValueError(f"answers in format {fmt!r}; this code reads format {BATCH_FORMAT}")
    try:
        tier, count, made_with, partitions, first, end, answers = fields
    except ValueError:
        raise ValueError(f"not a shard's answers: {len(fields)} fields") from None
    if not (isinstance(first, int) and isinstance(end, int) and first <= end):
        raise ValueError(f"answers for sequence numbers {first!r} to {end!r}")
    return Batch(str(tier), frozenset(int(p) for p in partitions), first, end,
                 [(int(seq), answer) for seq, answer in answers], int(count), str(made_with))


def made_with(tier: str, model: LinkageModel) -> str:
    """What a tier's answers depend on besides the log: blocking keys on the rules; scores on the
    model and its review threshold too."""
    if tier == "blocks":
        return f"rules {model.rules.fingerprint}"
    return f"model {model.version} review weight {model.review_weight!r} rules {model.rules.fingerprint}"


def batches(batch: Batch, max_bytes: int) -> list[bytes]:
    """A batch as one message, or as several of consecutive sequence numbers where one would pass
    ``max_bytes``."""
    data = encode_batch(batch)
    answers = batch.answers
    if len(data) <= max_bytes or len(answers) <= 1:
        if len(data) > max_bytes:
            raise ValueError(f"one answer of {len(data):,} bytes is past the largest message ({max_bytes:,})")
        return [data]
    middle = answers[len(answers) // 2][0]
    return (batches(replace(batch, end=middle, answers=[a for a in answers if a[0] < middle]), max_bytes)
            + batches(replace(batch, first=middle, answers=[a for a in answers if a[0] >= middle]), max_bytes))


class GapError(RuntimeError):
    """A shard's answers start past where the tier's answers for its partitions had reached:
    answers were lost (deleted from the topic, or never sent)."""


class Coverage:
    """One tier's answers, gathered per sequence number until every partition has answered it.

    Each partition's answers arrive in order from whichever shard owns it; ``high[p]`` is how far
    they reach. A sequence number below every partition's reach is complete (``ready``) and its
    merged answer can be taken. Answers already taken, or sent again, change nothing."""

    def __init__(self, merge: Callable[[Any, Any], Any], partitions: int = DEFAULT_PARTITIONS,
                 start: int = 0, made_with: str | None = None) -> None:
        self.merge = merge
        self.made_with = made_with  # None: whatever the answers were made with
        self.high = [start] * partitions
        self.taken = start  # every sequence number below this has been taken
        self.pending: dict[int, Any] = {}
        # Per partition, where each batch still needed came from (its offset on the answers'
        # topic) and where it ends: a reader starting again at ``taken`` need read no earlier.
        self.origins: list[collections.deque[tuple[int, int]]] = [collections.deque() for _ in range(partitions)]

    def add(self, batch: Batch, origin: int | None = None) -> None:
        """``origin``: the batch's offset on the topic it was read from (see ``resume_from``)."""
        high = self.high
        if batch.count != len(high):
            raise ValueError(f"{batch.tier} answers made over {batch.count} partitions, this reader uses "
                             f"{len(high)}: every shard of a deployment needs the same shards.partitions")
        if self.made_with is not None and batch.made_with != self.made_with:
            raise ValueError(f"{batch.tier} answers made with {batch.made_with!r}, this reader uses "
                             f"{self.made_with!r}: every shard needs the same model and linkage rules")
        for p in batch.partitions:
            if not 0 <= p < len(high):
                raise ValueError(f"answers for partition {p} of {len(high)}")
            if batch.first > high[p]:
                raise GapError(f"{batch.tier} answers for partition {p} start at {batch.first}, "
                               f"but reached only {high[p]} before")
        merge, pending, taken = self.merge, self.pending, self.taken
        for seq, answer in batch.answers:
            if seq >= taken:
                pending[seq] = merge(pending.get(seq, NO_ANSWER), answer)
        for p in batch.partitions:
            if batch.end > high[p]:
                high[p] = batch.end
                if origin is not None:
                    self.origins[p].append((origin, batch.end))

    def ready(self) -> int:
        """Every sequence number below this has been answered for every partition."""
        return min(self.high)

    def take(self, seq: int) -> Any:
        """The merged answer for ``seq`` (NO_ANSWER if no shard said anything); once ``seq`` is ready."""
        if seq >= self.ready():
            raise ValueError(f"sequence number {seq} is not answered by every partition yet")
        self.taken = max(self.taken, seq + 1)
        return self.pending.pop(seq, NO_ANSWER)

    def resume_from(self, read_to: int) -> int:
        """The earliest offset of the answers' topic a reader must read again from to hold every
        answer not yet taken, given that it has read it up to ``read_to``: the first batch, in each
        partition, ending past ``taken``."""
        earliest = read_to
        for needed in self.origins:
            while needed and needed[0][1] <= self.taken:
                needed.popleft()
            if needed:
                earliest = min(earliest, needed[0][0])
        return earliest

    def lagging(self) -> dict[int, int]:
        """The partitions holding the tier back, with how far they reach."""
        low = self.ready()
        return {p: h for p, h in enumerate(self.high) if h == low}


def answered(waiting: collections.deque[Any], coverage: Coverage) -> list[Any]:
    """The link-input messages held in ``waiting`` that every partition has answered, taken off it
    in order (a read error goes through at once, for the caller to raise)."""
    ready, out = coverage.ready(), []
    while waiting and (waiting[0].error() is not None or waiting[0].offset() < ready):
        out.append(waiting.popleft())
    return out


# ---------------------------------------------------------------------- the resolver's step
def resolve(index: CitizenIndex, change: Change, scored: Any) -> LinkResult:
    """Apply one change to a resolver (``CitizenIndex(resolver=True)``) with the record shards'
    merged answer, as ``linkage.shards.ShardedIndex`` does in one process. Raises for a change the
    linker dead-letters (``Nothing`` with a reason)."""
    if isinstance(change, Upsert):
        if scored is NO_ANSWER:
            raise ValueError(f"no record shard answered the upsert of {change.key!r}")
        if scored is None:  # stale: the resolver says so, with its reason
            return index.upsert(change.key, IdsOnly(change.key, change.ids), change.version)
        answer = scored_of(scored)
        if answer is not None and answer.unchanged is None and change.key in index.records:
            raise ValueError(f"the record shards disagree with the resolver about {change.key!r}")
        return index.upsert(change.key, IdsOnly(change.key, change.ids), change.version, None, answer)
    if isinstance(change, Leave):
        if change.person is not None:  # an unlinkable version: rejected as the single writer does
            return index.upsert(change.key, change.person, change.version)
        return index.delete(change.key, change.version)
    if isinstance(change, Verdict):
        return index.apply_review(change.a, change.b, change.same)
    if isinstance(change, Undo):
        held = scored if isinstance(scored, dict) else {}
        records = [unpack(held.get(k), k, index.model.rules) for k in (change.a, change.b)]
        score = None
        if records[0] is not None and records[1] is not None:
            score = index.model.score(records[0][0], records[1][0])
        return index.undo_review(change.a, change.b, score)
    raise ValueError(change.reason or "a message that changes no index")


class ResolverFeed:
    """The resolver's reading: the link input and the record shards' answers, in whatever
    interleaving they are read, applied to ``index`` (a ``CitizenIndex(resolver=True)``) in
    link-input order, each change once every partition has answered it.

    Messages are anything with Kafka's ``offset()``, ``value()``, ``key()`` and ``headers()``."""

    def __init__(self, index: CitizenIndex, serde: AvroSerde, partitions: int = DEFAULT_PARTITIONS) -> None:
        self.index = index
        self.serde = serde
        self.coverage = Coverage(merge_scored, partitions, made_with=made_with("records", index.model))
        self.waiting: collections.deque[Any] = collections.deque()

    def answers(self, data: bytes | None) -> None:
        """A record shard's batch of answers."""
        self.coverage.add(decode_batch(data))

    def change(self, message: Any) -> None:
        """A link-input message, applied once it is answered."""
        self.waiting.append(message)

    def apply_ready(self) -> list[tuple[int, Change, LinkResult | None]]:
        """Every waiting change the shards have answered, applied in order: (offset, change, result;
        None for a message that changes no index)."""
        rules = self.index.model.rules
        done: list[tuple[int, Change, LinkResult | None]] = []
        for msg in answered(self.waiting, self.coverage):
            offset = msg.offset()
            headers = msg.headers()
            change = decode_change(self.serde, rules, msg.value(), packed_record(headers), key=msg.key(),
                                   change=change_header(headers), values=False)
            answer = self.coverage.take(offset)
            done.append((offset, change, None if isinstance(change, Nothing) else resolve(self.index, change, answer)))
        return done
