"""The index split for more than one core: scoring shards ahead of one ordered resolver.

Three quarters of linking a record is finding and scoring its candidates (71 of 94 µs at a million
records), and that part depends only on the ordered changes (which records are in which blocks,
their values, the reviewers' must-links), never on how records were clustered. So it shards:
every blocking key belongs to one of ``partitions`` stable partitions (CRC-32 of the key, the same
in every process, unlike Python's ``hash()`` of a str), and each ``ScoringShard`` owns a set of
partitions. Every shard sees every change in order; it keeps the blocks of the keys it owns and the
records those blocks hold, plus its *home* records (the record key's own partition), and answers
each change with the candidates its blocks found, scored. A record found by two shards is scored
by both, identically; the resolver takes it once.

The resolver (``CitizenIndex(resolver=True)``) applies the changes in the same order with the
merged answers and does everything else (edges, the constrained clustering, stable ids, reviews)
exactly as the single writer does, holding for each record only its identifiers. Blocking caps are
per key and a key's block lives in one shard, so a block caps after the same record as in one
process. Hence the property this module exists for (``tests/unit/test_shards.py``): for the same
ordered changes, every result and the final index are the single writer's, for any number of
shards.

``ShardedIndex`` runs the shards and the resolver in one process, as the tests and
``benchmarks/scale_out.py`` do; spread over processes, the same answers travel on Kafka.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

from caselink.linkage.blocking import BlockingIndex, blocking_keys, lookup_keys
from caselink.linkage.index import DEFAULT_MAX_CITIZEN_RECORDS, CitizenIndex, LinkResult, _same_values
from caselink.linkage.model import FieldWeight, LinkageModel
from caselink.linkage.record import LinkRecord, UnlinkableRecordError, standardise_person
from caselink.linkage.scoring import Scored, ScoredPair, score_pairs

DEFAULT_PARTITIONS = 60  # divides evenly among 1-6, 10, 12, 15, 20, 30 shards


def key_partition(key: str, partitions: int = DEFAULT_PARTITIONS) -> int:
    """The partition a blocking key (or a record key, for its home) belongs to, in any process."""
    return zlib.crc32(key.encode()) % partitions


def shard_partitions(shard: int, shards: int, partitions: int = DEFAULT_PARTITIONS) -> frozenset[int]:
    """Partitions dealt round-robin: shard ``shard`` of ``shards``."""
    if not 0 <= shard < shards <= partitions:
        raise ValueError(f"shard {shard} of {shards} over {partitions} partitions")
    return frozenset(range(shard, partitions, shards))


class ScoringShard:
    """The blocks and records of some partitions, and what it found for each change."""

    def __init__(self, model: LinkageModel, owned: frozenset[int], partitions: int = DEFAULT_PARTITIONS,
                 max_block_size: int = 200) -> None:
        self.model = model
        self.owned, self.partitions = owned, partitions
        self.blocking = BlockingIndex(max_block_size=max_block_size)
        self.records: dict[str, LinkRecord] = {}  # home records and those the owned blocks hold
        self.present: set[str] = set()  # every record in the index (a reviewer's decision needs both)
        self.versions: dict[str, int] = {}  # as the single writer keeps them, deletes included
        self.must_link: set[tuple[str, str]] = set()

    def _mine(self, keys: list[str]) -> list[str]:
        owned, partitions = self.owned, self.partitions
        return [k for k in keys if zlib.crc32(k.encode()) % partitions in owned]

    def is_home(self, record_key: str) -> bool:
        return key_partition(record_key, self.partitions) in self.owned

    def _stale(self, record_key: str, source_version: int | None) -> bool:
        return source_version is not None and self.versions.get(record_key, -1) >= source_version

    def upsert(self, record_key: str, record: LinkRecord, source_version: int | None = None,
               keys: list[str] | None = None) -> Scored | None:
        """This shard's part of the answer for a change, or None when the change is stale."""
        if self._stale(record_key, source_version):
            return None
        self.versions[record_key] = (source_version if source_version is not None
                                     else self.versions.get(record_key, 0) + 1)
        if keys is None:
            keys = blocking_keys(record, self.model.rules.typo_schemes)
        old = self.records.get(record_key)
        if record_key in self.present:
            if old is not None:
                if _same_values(old, record):
                    return Scored([], True)  # nothing about the record changed, blocks included
                self.blocking.remove(record_key, self._mine(blocking_keys(old, self.model.rules.typo_schemes)))
            # else: none of the record's old blocks is here, and it is not at home here
        self.present.add(record_key)
        found = self.blocking.candidates(self._mine(lookup_keys(record, keys)), exclude=record_key)
        pairs = score_pairs(self.model, record, found, self.records.__getitem__, self.must_link)
        stored = self._mine(keys)
        self.blocking.add(record_key, stored)
        if stored or self.is_home(record_key):
            self.records[record_key] = record
        else:
            self.records.pop(record_key, None)
        return Scored(pairs, False if old is not None and self.is_home(record_key) else None)

    def delete(self, record_key: str, source_version: int | None = None) -> None:
        if self._stale(record_key, source_version):
            return
        if source_version is not None:
            self.versions[record_key] = source_version
        self.present.discard(record_key)
        old = self.records.pop(record_key, None)
        if old is not None:
            self.blocking.remove(record_key, self._mine(blocking_keys(old, self.model.rules.typo_schemes)))

    def reject(self, record_key: str, source_version: int | None = None) -> None:
        """A version that cannot be linked: it counts as applied, and an earlier one leaves."""
        if self._stale(record_key, source_version):
            return
        if record_key in self.present:
            self.delete(record_key, source_version)
        elif source_version is not None:
            self.versions[record_key] = source_version

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
    """Scoring shards and their resolver in one process, with the single writer's interface."""

    def __init__(self, model: LinkageModel, shards: int, partitions: int = DEFAULT_PARTITIONS,
                 max_block_size: int = 200,
                 max_citizen_records: int | None = DEFAULT_MAX_CITIZEN_RECORDS) -> None:
        self.model = model
        self.partitions = partitions
        self.shards = [ScoringShard(model, shard_partitions(i, shards, partitions), partitions, max_block_size)
                       for i in range(shards)]
        self.resolver = CitizenIndex(model, max_block_size=max_block_size,
                                     max_citizen_records=max_citizen_records, resolver=True)

    def home(self, record_key: str) -> ScoringShard:
        return next(s for s in self.shards if s.is_home(record_key))

    def upsert(self, record_key: str, person: Mapping[str, Any] | LinkRecord, source_version: int | None = None,
               keys: list[str] | None = None) -> LinkResult:
        try:
            record = person if isinstance(person, LinkRecord) else standardise_person(record_key, person,
                                                                                       self.model.rules)
        except UnlinkableRecordError:
            for shard in self.shards:
                shard.reject(record_key, source_version)
            return self.resolver.upsert(record_key, person, source_version)  # it rejects it alike
        scored = merge([shard.upsert(record_key, record, source_version, keys) for shard in self.shards])
        if scored is None:
            return self.resolver.upsert(record_key, record, source_version)  # stale: the resolver says so
        if scored.unchanged is None and record_key in self.resolver.records:
            raise ValueError(f"no shard is home to {record_key!r}")
        return self.resolver.upsert(record_key, record, source_version, keys, scored)

    def delete(self, record_key: str, source_version: int | None = None) -> LinkResult:
        for shard in self.shards:
            shard.delete(record_key, source_version)
        return self.resolver.delete(record_key, source_version)

    def apply_review(self, a: str, b: str, same: bool) -> LinkResult:
        for shard in self.shards:
            shard.apply_review(a, b, same)
        return self.resolver.apply_review(a, b, same)

    def undo_review(self, a: str, b: str) -> LinkResult:
        score = None
        left, right = self.home(a).records.get(a), self.home(b).records.get(b)
        if left is not None and right is not None and a in self.resolver.records and b in self.resolver.records:
            score = self.model.score(left, right)
        for shard in self.shards:
            shard.undo_review(a, b)
        return self.resolver.undo_review(a, b, score)

    def explain(self, a: str, b: str) -> list[FieldWeight]:
        return self.model.explain(self.home(a).records[a], self.home(b).records[b])
