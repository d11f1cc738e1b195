"""The index split for more than one core: two sharded tiers ahead of one ordered resolver.

Three quarters of linking a record is finding and scoring its candidates (71 of 94 µs at a million
records), and that part depends only on the ordered changes (which records are in which blocks,
their values, the reviewers' must-links), never on how records were clustered. So it shards, in
two tiers, each seeing every change in order:

* **block shards** find candidates. Every blocking key belongs to one of ``partitions`` stable
  partitions (CRC-32 of the key: the same in every process, unlike Python's ``hash()`` of a str);
  a block shard keeps the blocks of its partitions' keys (record keys only, no values) and answers
  each change with the records its blocks hold under the change's keys. A key's block lives in one
  shard, so it caps after the same record as in one process.
* **record shards** score them. A record lives in the shard of its own key's partition (its
  home); a record shard is given the union of what the block shards found and scores the found
  records that live with it, against the changed record (which every change carries). Each pair is
  scored once, by the other record's home; the home of the changed record says whether its values
  changed at all.

Sharding the blocks and the scoring by one key, as first tried here, scored a pair once in every
shard that held a shared key: true matches share most of their keys, so two shards each did 76% of
one's work (docs/benchmarks.md). Two tiers cost one more hop and no repeated work.

The resolver (``CitizenIndex(resolver=True)``) applies the changes in the same order with the
record shards' merged answers and does everything else (edges, the constrained clustering, stable
ids, reviews) exactly as the single writer does, holding for each record only its identifiers.
Hence the property this module exists for (``tests/unit/test_shards.py``): for the same ordered
changes, every result and the final index are the single writer's, for any number of shards.

``ShardedIndex`` runs the tiers in one process, as the tests and ``benchmarks/scale_out.py`` do;
spread over processes, the same answers would travel on Kafka.
"""

from __future__ import annotations

import zlib
from array import array
from collections.abc import Iterable, Mapping
from typing import Any

from caselink.linkage.blocking import BlockingIndex, blocking_keys, lookup_keys
from caselink.linkage.index import DEFAULT_MAX_CITIZEN_RECORDS, CitizenIndex, IdsOnly, LinkResult, _same_values
from caselink.linkage.model import FieldWeight, LinkageModel
from caselink.linkage.record import LinkRecord, UnlinkableRecordError, standardise_person
from caselink.linkage.scoring import Scored, ScoredPair, score_pairs

DEFAULT_PARTITIONS = 60  # divides evenly among 1-6, 10, 12, 15, 20, 30 shards


def key_partition(key: str, partitions: int = DEFAULT_PARTITIONS) -> int:
    """The partition a blocking key (or a record key, for its home) belongs to, in any process."""
    return zlib.crc32(key.encode()) % partitions


# A blocking key and its partition.
Keyed = list[tuple[str, int]]


def keyed(keys: list[str], partitions: int = DEFAULT_PARTITIONS) -> tuple[Keyed, Keyed]:
    """A change's keys to file it under and keys to look it up by, each with its partition. Worked
    out once a change, where its keys are made (the normaliser), not in every block shard: CRC-32
    of 30-odd keys was 40% of a block shard's time when each shard did it."""
    crc = zlib.crc32
    stored = [(k, crc(k.encode()) % partitions) for k in keys]
    looked_up = lookup_keys(keys)
    if looked_up is keys:
        return stored, stored
    known = dict(stored)
    return stored, [(k, known[k] if k in known else crc(k.encode()) % partitions) for k in looked_up]


def shard_partitions(shard: int, shards: int, partitions: int = DEFAULT_PARTITIONS) -> frozenset[int]:
    """Partitions dealt round-robin: shard ``shard`` of ``shards``."""
    if not 0 <= shard < shards <= partitions:
        raise ValueError(f"shard {shard} of {shards} over {partitions} partitions")
    return frozenset(range(shard, partitions, shards))


class _Partitioned:
    """Owns some of the partitions; sees every change, so keeps every record's last version."""

    def __init__(self, owned: frozenset[int], partitions: int) -> None:
        self.owned, self.partitions = owned, partitions
        self.versions: dict[str, int] = {}  # as the single writer keeps them, deletes included

    def _give_up(self, owned: frozenset[int]) -> frozenset[int]:
        """Own only ``owned`` from now on (a subset: gaining partitions needs a replay); the lost ones."""
        if not owned <= self.owned:
            raise ValueError(f"partitions {sorted(owned - self.owned)} were never this shard's: replay for them")
        lost, self.owned = self.owned - owned, owned
        return lost

    def owns(self, key: str) -> bool:
        return key_partition(key, self.partitions) in self.owned

    def _applies(self, record_key: str, source_version: int | None, upsert: bool) -> bool:
        """Whether a change is new, recording its version as the single writer does: an upsert
        without one counts one up, a delete (or an unlinkable version) without one counts nothing."""
        if source_version is not None:
            if self.versions.get(record_key, -1) >= source_version:
                return False
            self.versions[record_key] = source_version
        elif upsert:
            self.versions[record_key] = self.versions.get(record_key, 0) + 1
        return True


class BlockShard(_Partitioned):
    """The blocks of some partitions' keys: which records each key holds."""

    def __init__(self, owned: frozenset[int], partitions: int = DEFAULT_PARTITIONS,
                 max_block_size: int = 200) -> None:
        super().__init__(owned, partitions)
        self.blocking = BlockingIndex(max_block_size=max_block_size)
        # record -> the hashes of its keys filed here, then those keys' partitions, packed (8 + 2
        # bytes a key): the block shard has no values to recompute them from when the record
        # changes or leaves, nor keys to tell which blocks go with a partition it gives up.
        self.filed: dict[str, bytes] = {}

    def upsert(self, record_key: str, stored: Keyed, looked_up: Keyed,
               source_version: int | None = None) -> set[str] | None:
        """The records this shard's blocks hold under the change's lookup keys (before it is filed
        again); None when the change is stale. A change that alters no value refiles the record
        under the same keys: the blocks end as they were. ``keyed`` gives both lists."""
        if not self._applies(record_key, source_version, upsert=True):
            return None
        self._unfile(record_key)
        owned = self.owned
        found = self.blocking.candidates([k for k, p in looked_up if p in owned], exclude=record_key)
        mine = [(k, p) for k, p in stored if p in owned]
        if mine:
            keys = [k for k, _ in mine]
            self.blocking.add(record_key, keys)
            self.filed[record_key] = _pack(map(hash, keys), [p for _, p in mine])
        return found

    def delete(self, record_key: str, source_version: int | None = None) -> None:
        """A delete, or a version that cannot be linked (it counts as applied; an earlier one leaves)."""
        if self._applies(record_key, source_version, upsert=False):
            self._unfile(record_key)

    def _unfile(self, record_key: str) -> None:
        filed = self.filed.pop(record_key, None)
        if filed is not None:
            self.blocking.remove_hashed(record_key, array("q", filed[:len(filed) // 10 * 8]))  # the hashes

    def keep_only(self, owned: frozenset[int]) -> None:
        """Give up partitions: what is left is what a shard of only ``owned`` would hold after the
        same changes (every block of a kept partition as it was, with its members in order; the
        given-up partitions' blocks and caps gone; versions kept for every record, as by every
        shard), so losing partitions needs no replay."""
        lost = self._give_up(owned)
        for record_key, packed in list(self.filed.items()):
            filed = _unpack(packed)
            if not any(p in lost for _, p in filed):
                continue
            self.blocking.remove_hashed(record_key, [h for h, p in filed if p in lost])
            kept = [(h, p) for h, p in filed if p not in lost]
            if kept:
                self.filed[record_key] = _pack([h for h, _ in kept], [p for _, p in kept])
            else:
                del self.filed[record_key]
        blocking = self.blocking
        for h, name in list(blocking.capped_names.items()):
            if key_partition(name, self.partitions) in lost:
                del blocking.capped_names[h]
                blocking.capped.discard(h)


def _pack(hashes: Iterable[int], partitions: list[int]) -> bytes:
    """A block shard's filing of one record: its keys' hashes (8 bytes each), then their
    partitions (2 bytes each)."""
    return array("q", hashes).tobytes() + array("H", partitions).tobytes()


def _unpack(packed: bytes) -> list[tuple[int, int]]:
    """``_pack`` undone, as (hash, partition) pairs."""
    n = len(packed) // 10
    return list(zip(array("q", packed[:8 * n]), array("H", packed[8 * n:]), strict=True))


class RecordShard(_Partitioned):
    """The records of some partitions (their homes), and the scoring of found pairs against them."""

    def __init__(self, model: LinkageModel, owned: frozenset[int], partitions: int = DEFAULT_PARTITIONS) -> None:
        super().__init__(owned, partitions)
        self.model = model
        self.records: dict[str, LinkRecord] = {}  # the records at home here
        self.present: set[str] = set()  # every record in the index (a reviewer's decision needs both)
        self.must_link: set[tuple[str, str]] = set()
        self.compared = 0  # candidate pairs scored

    def upsert(self, record_key: str, record: LinkRecord, found: set[str],
               source_version: int | None = None) -> Scored | None:
        """The found pairs whose other record lives here, scored, and (at the changed record's own
        home) whether its values changed; None when the change is stale."""
        if not self._applies(record_key, source_version, upsert=True):
            return None
        home = self.owns(record_key)
        old = self.records.get(record_key) if home else None
        if old is not None and _same_values(old, record):
            return Scored([], True)  # nothing about the record changed
        self.present.add(record_key)
        records = self.records
        here = [k for k in found if k in records]  # every record in the index is held at its home
        self.compared += len(here)
        pairs = score_pairs(self.model, record, here, records.__getitem__, self.must_link)
        if home:
            records[record_key] = record
        return Scored(pairs, (False if old is not None else None) if home else None)

    def delete(self, record_key: str, source_version: int | None = None) -> None:
        """A delete, or a version that cannot be linked (it counts as applied; an earlier one leaves)."""
        if self._applies(record_key, source_version, upsert=False):
            self.present.discard(record_key)
            self.records.pop(record_key, None)

    def keep_only(self, owned: frozenset[int]) -> None:
        """Give up partitions: what is left is what a shard of only ``owned`` would hold after the
        same changes (the records at home in them; versions, presence and verdicts are kept for
        every record by every shard), so losing partitions needs no replay."""
        self._give_up(owned)
        self.records = {k: r for k, r in self.records.items() if key_partition(k, self.partitions) in owned}

    def apply_review(self, a: str, b: str, same: bool) -> None:
        if a in self.present and b in self.present:
            pair = (a, b) if a < b else (b, a)
            if same:
                self.must_link.add(pair)
            else:
                self.must_link.discard(pair)

    def undo_review(self, a: str, b: str) -> None:
        if a in self.present and b in self.present:
            self.must_link.discard((a, b) if a < b else (b, a))


def merge(answers: list[Scored | None]) -> Scored | None:
    """The shards' answers as one: each other record once (two shards that found it scored it
    alike), and the home shard's word on whether the values changed. None: the change is stale."""
    given = [a for a in answers if a is not None]
    if not given:
        return None
    if len(given) != len(answers):
        raise ValueError("shards disagree about whether a change is stale: they saw different changes")
    pairs: dict[str, ScoredPair] = {}
    unchanged: bool | None = None
    for answer in given:
        for pair in answer.pairs:
            pairs.setdefault(pair[0], pair)
        if answer.unchanged is not None:
            unchanged = answer.unchanged
    return Scored(list(pairs.values()), unchanged)


class ShardedIndex:
    """Block shards, record shards and their resolver in one process, with the single writer's
    interface: each change goes through the tiers in order, as it would through Kafka."""

    def __init__(self, model: LinkageModel, shards: int, record_shards: int | None = None,
                 partitions: int = DEFAULT_PARTITIONS, max_block_size: int = 200,
                 max_citizen_records: int | None = DEFAULT_MAX_CITIZEN_RECORDS) -> None:
        self.model = model
        self.partitions = partitions
        self.blocks = [BlockShard(shard_partitions(i, shards, partitions), partitions, max_block_size)
                       for i in range(shards)]
        scorers = shards if record_shards is None else record_shards
        self.scorers = [RecordShard(model, shard_partitions(i, scorers, partitions), partitions)
                        for i in range(scorers)]
        self.resolver = CitizenIndex(model, max_block_size=max_block_size,
                                     max_citizen_records=max_citizen_records, resolver=True)

    def home(self, record_key: str) -> RecordShard:
        return next(s for s in self.scorers if s.owns(record_key))

    def upsert(self, record_key: str, person: Mapping[str, Any] | LinkRecord, source_version: int | None = None,
               keys: list[str] | None = None) -> LinkResult:
        rules = self.model.rules
        try:
            record = person if isinstance(person, LinkRecord) else standardise_person(record_key, person, rules)
        except UnlinkableRecordError:
            self._leave(record_key, source_version)
            return self.resolver.upsert(record_key, person, source_version)  # it rejects it alike
        if keys is None:
            keys = blocking_keys(record, rules.typo_schemes)
        stored, looked_up = keyed(keys, self.partitions)
        found = [shard.upsert(record_key, stored, looked_up, source_version) for shard in self.blocks]
        if None in found:  # stale: every tier must say so, the resolver with its reason
            said = [scorer.upsert(record_key, record, set(), source_version) for scorer in self.scorers]
            if any(f is not None for f in found) or any(a is not None for a in said):
                raise ValueError("shards disagree about whether a change is stale: they saw different changes")
            return self.resolver.upsert(record_key, record, source_version)
        union = set().union(*(f for f in found if f is not None))
        scored = merge([scorer.upsert(record_key, record, union, source_version) for scorer in self.scorers])
        if scored is None or (scored.unchanged is None and record_key in self.resolver.records):
            raise ValueError(f"the record shards disagree with the resolver about {record_key!r}")
        # The resolver is given what the record's home shard would send with its answer: the
        # record's identifiers, not its values.
        return self.resolver.upsert(record_key, IdsOnly(record_key, record.ids), source_version, None, scored)

    def delete(self, record_key: str, source_version: int | None = None) -> LinkResult:
        self._leave(record_key, source_version)
        return self.resolver.delete(record_key, source_version)

    def _leave(self, record_key: str, source_version: int | None) -> None:
        for blocks in self.blocks:
            blocks.delete(record_key, source_version)
        for scorer in self.scorers:
            scorer.delete(record_key, source_version)

    def apply_review(self, a: str, b: str, same: bool) -> LinkResult:
        for scorer in self.scorers:
            scorer.apply_review(a, b, same)
        return self.resolver.apply_review(a, b, same)

    def undo_review(self, a: str, b: str) -> LinkResult:
        """The pair is weighed again from its two records, each sent by its home shard."""
        score = None
        left, right = self.home(a).records.get(a), self.home(b).records.get(b)
        if left is not None and right is not None:
            score = self.model.score(left, right)
        for scorer in self.scorers:
            scorer.undo_review(a, b)
        return self.resolver.undo_review(a, b, score)

    def explain(self, a: str, b: str) -> list[FieldWeight]:
        return self.model.explain(self.home(a).records[a], self.home(b).records[b])
