"""The citizen index: records linked into citizens one change at a time.

Citizens are the connected components of "link" edges (pairs scoring at or above the model's
link threshold). Every change — insert, update, delete, a reviewer's must-link or cannot-link —
recomputes the components of only the citizens it touches, then names them by one rule that
serves both merges and splits:

* each existing citizen id goes to the component holding that citizen's oldest remaining record;
* a component given several ids keeps the oldest citizen's and retires the others into it;
* a component given none gets a new id derived from its oldest record's key.

So the oldest citizen survives a merge, the part with the oldest record keeps the id on a split,
and replaying the same changes in the same order gives the same ids (no randomness, no clocks).
All state is plain dicts of plain values, so the streaming app can keep it in key-value tables.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from caselink.linkage.blocking import BlockingIndex, blocking_keys, lookup_keys
from caselink.linkage.model import FieldWeight, LinkageModel
from caselink.linkage.record import LinkRecord, UnlinkableRecordError, share_values, standardise_person
from caselink.linkage.scoring import Scored, ScoredPair, score_pairs
from rapidfuzz.distance import OSA

# A person held in more source records than this is implausible enough that a person should
# look before more join (``linkage.max_citizen_records``); it also bounds a LinkedCase's size.
DEFAULT_MAX_CITIZEN_RECORDS = 100
# Attributes of the index that are configuration or transient, not state to snapshot.
_NOT_STATE = frozenset({"model", "blocking", "max_citizen_records", "_guarded", "resolver", "_must_of",
                        "_cannot_of"})


@dataclass
class Candidate:
    record_key: str
    citizen_id: str
    weight: float
    probability: float
    levels: list[int]


@dataclass
class LinkResult:
    """What one change did: the outcome for the record and every citizen whose view changed."""

    record_key: str
    outcome: str  # NEW_CITIZEN LINKED MERGED UPDATED SPLIT DELETED REJECTED IGNORED_STALE
    citizen_id: str | None
    candidates: list[Candidate] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # citizens to re-publish
    retired: dict[str, str | None] = field(default_factory=dict)  # retired id -> survivor (None: gone)
    review: list[tuple[str, str, float]] = field(default_factory=list)  # (record, other, weight)
    # Links the size guard refused: a person should decide them (record, other, weight).
    guarded: list[tuple[str, str, float]] = field(default_factory=list)
    reason: str | None = None


@dataclass(slots=True)  # no per-object dict: a fifth of a resolver's memory was citizens
class Citizen:
    created_seq: int
    members: set[str]
    # A tuple, not a list: nearly every citizen merged nothing, and the empty tuple is shared.
    merged_from: tuple[str, ...] = ()


_NO_IDS: Mapping[str, str] = MappingProxyType({})


class IdsOnly:
    """What a resolver keeps of a record: its key and identifiers, which the constrained
    clustering reads. Its values and blocking keys stay with the scoring shards.

    The identifiers are kept as one flat tuple (scheme, value, scheme, value, ...) and made into a
    mapping when read: most records have one identifier, and a dict holding one costs 184 bytes
    to the tuple's 56 (docs/benchmarks.md, "Scale-out", has what it saved)."""

    __slots__ = ("_flat", "key")

    def __init__(self, key: str, ids: Mapping[str, str]) -> None:
        self.key = key
        self._flat: tuple[str, ...] = tuple(part for pair in ids.items() for part in pair) if ids else ()

    @property
    def ids(self) -> Mapping[str, str]:
        flat = self._flat
        if not flat:
            return _NO_IDS
        if len(flat) == 2:
            return {flat[0]: flat[1]}
        return dict(zip(flat[::2], flat[1::2], strict=True))


@dataclass(slots=True)
class RecordState:
    """One record in the index. Its blocking keys are not stored: they are recomputed from the
    record when it changes, which saves about a kilobyte a record at a million records."""

    record: LinkRecord | IdsOnly  # IdsOnly in a resolver
    citizen_id: str
    seq: int
    source_version: int


class CitizenIndex:
    """The single writer: blocking, scoring and clustering in one process. Made with
    ``resolver=True`` it is the ordered resolver of a sharded index (``linkage.shards``): no blocks
    and no record values, every change given with its shards' merged answer (``scored``)."""

    def __init__(self, model: LinkageModel, max_block_size: int = 200,
                 max_citizen_records: int | None = DEFAULT_MAX_CITIZEN_RECORDS, resolver: bool = False) -> None:
        self.model = model
        self.resolver = resolver
        self.blocking = BlockingIndex(max_block_size=max_block_size)  # empty in a resolver
        self.max_citizen_records = max_citizen_records
        self.size_refusals = 0  # joins refused because a citizen would have grown past the guard
        self._guarded: list[tuple[str, str, float]] = []  # this change's refusals, handed to its result
        self.records: dict[str, RecordState] = {}
        self.edges: dict[str, dict[str, float]] = {}
        self.citizens: dict[str, Citizen] = {}
        self.retired: dict[str, str | None] = {}
        self.versions: dict[str, int] = {}  # last applied source_version per record, deletes included
        self.must_link: set[tuple[str, str]] = set()
        self.cannot_link: set[tuple[str, str]] = set()
        # Each record's partners in those pairs, so that a change looks up its own verdicts instead
        # of walking every verdict ever made (derived: rebuilt from the pairs by ``from_state``).
        self._must_of: dict[str, set[str]] = {}
        self._cannot_of: dict[str, set[str]] = {}
        self.review: dict[tuple[str, str], float] = {}
        # record -> the records it has an open review pair with, so dropping a record's pairs
        # costs its own pairs, not a scan of every open pair (2.3 ms an update at a million).
        self._review_partners: dict[str, set[str]] = {}
        self.seq = 0
        self._used_ids: set[str] = set()

    # ----------------------------------------------------------------- snapshots
    def state(self) -> dict[str, Any]:
        """Everything the index holds except the model and the blocking index, which is keyed by
        this process's string hashes and so is rebuilt by ``from_state`` (picklable)."""
        state = {name: value for name, value in self.__dict__.items() if name not in _NOT_STATE}
        # A key once capped stays capped as records leave it: which ones is history, kept by name.
        state["capped_blocking_keys"] = sorted(self.blocking.capped_names.values())
        return state

    @classmethod
    def from_state(cls, model: LinkageModel, state: dict[str, Any], max_block_size: int = 200,
                   max_citizen_records: int | None = DEFAULT_MAX_CITIZEN_RECORDS,
                   resolver: bool = False) -> CitizenIndex:
        """The index ``state()`` came from, its blocking index rebuilt in the records' order (a
        resolver's stays empty: its blocks are the shards')."""
        index = cls(model, max_block_size=max_block_size, max_citizen_records=max_citizen_records, resolver=resolver)
        state = dict(state)
        capped = state.pop("capped_blocking_keys", None)
        unknown = set(state) - set(index.__dict__)
        missing = set(index.__dict__) - set(state) - _NOT_STATE
        if unknown or missing or capped is None:
            raise ValueError(f"index state does not fit this code: unknown {sorted(unknown)}, "
                             f"missing {sorted(missing)}")
        index.__dict__.update(state)
        for a, b in index.must_link:
            _pair_up(index._must_of, a, b)
        for a, b in index.cannot_link:
            _pair_up(index._cannot_of, a, b)
        if resolver:
            if any(not isinstance(r.record, IdsOnly) for r in index.records.values()) or capped:
                raise ValueError("a single writer's index state, not a resolver's")
            return index
        if any(isinstance(r.record, IdsOnly) for r in index.records.values()):
            raise ValueError("a resolver's index state, not a single writer's")
        blocking = index.blocking
        add = blocking.add
        for key, record_state in sorted(index.records.items(), key=lambda kv: kv[1].seq):
            record = index.values(key, record_state)
            share_values(record)  # values shared with records linked from now on, too
            add(key, blocking_keys(record, model.rules.typo_schemes))
        for name in capped:
            blocking.capped.add(hash(name))
            blocking.capped_names[hash(name)] = name
        return index

    # ----------------------------------------------------------------- queries
    def __len__(self) -> int:
        return len(self.records)

    def citizen_of(self, record_key: str) -> str | None:
        state = self.records.get(record_key)
        return state.citizen_id if state else None

    def resolve(self, citizen_id: str) -> str | None:
        """The live citizen an id now means, following retirement pointers."""
        seen = set()
        while citizen_id in self.retired:
            if citizen_id in seen:
                return None
            seen.add(citizen_id)
            nxt = self.retired[citizen_id]
            if nxt is None:
                return None
            citizen_id = nxt
        return citizen_id if citizen_id in self.citizens else None

    def members(self, citizen_id: str) -> list[str]:
        citizen = self.citizens.get(citizen_id)
        if citizen is None:
            return []
        return sorted(citizen.members, key=lambda k: self.records[k].seq)

    def clusters(self) -> dict[str, str]:
        """record key -> citizen id, for every record in the index."""
        return {k: s.citizen_id for k, s in self.records.items()}

    def explain(self, a: str, b: str) -> list[FieldWeight]:
        return self.model.explain(self.values(a), self.values(b))

    def values(self, record_key: str, state: RecordState | None = None) -> LinkRecord:
        """The record's standardised values (a single writer's; a resolver holds none)."""
        record = (state or self.records[record_key]).record
        if not isinstance(record, LinkRecord):
            raise ValueError("a resolver does not hold record values: ask the record's home record shard")
        return record

    def _kept(self, record: LinkRecord | IdsOnly) -> LinkRecord | IdsOnly:
        """The record as this index keeps it: whole, or as a resolver keeps it."""
        if not self.resolver or isinstance(record, IdsOnly):
            return record
        return IdsOnly(record.key, record.ids)

    # ----------------------------------------------------------------- changes
    def upsert(self, record_key: str, person: Mapping[str, Any] | LinkRecord | IdsOnly,
               source_version: int | None = None, keys: list[str] | None = None,
               scored: Scored | None = None) -> LinkResult:
        """Add or change a record: a Person mapping, or its LinkRecord (with ``keys``, its
        ``blocking_keys`` when already worked out, as ``linkage.packed`` carries them); a resolver
        is given the scoring shards' merged answer as ``scored``, and the record or just its
        identifiers (``IdsOnly``, as its home record shard can send them)."""
        return self._handing_over(self._upsert(record_key, person, source_version, keys, scored))

    def delete(self, record_key: str, source_version: int | None = None) -> LinkResult:
        return self._handing_over(self._delete(record_key, source_version))

    def apply_review(self, a: str, b: str, same: bool) -> LinkResult:
        """A reviewer's decision: must-link (an edge that always holds) or cannot-link (never)."""
        return self._handing_over(self._apply_review(a, b, same))

    def undo_review(self, a: str, b: str, score: tuple[float, list[int]] | None = None) -> LinkResult:
        """Take back a reviewer's decision about a pair: the pair is weighed again as if nobody had
        decided (linked if it scores above the link threshold, open for review again if it scores in
        the review band), and the citizens it touches are re-partitioned. A resolver is given the
        pair's ``score`` (it holds no values to score)."""
        return self._handing_over(self._undo_review(a, b, score))

    def _handing_over(self, result: LinkResult) -> LinkResult:
        """The change's size-guard refusals go with its result."""
        result.guarded.extend(self._guarded)
        self._guarded = []
        return result

    def _upsert(
        self,
        record_key: str,
        person: Mapping[str, Any] | LinkRecord | IdsOnly,
        source_version: int | None = None,
        keys: list[str] | None = None,
        scored: Scored | None = None,
    ) -> LinkResult:
        if source_version is not None and self.versions.get(record_key, -1) >= source_version:
            return LinkResult(record_key, "IGNORED_STALE", self.citizen_of(record_key),
                              reason=f"source_version {source_version} <= {self.versions[record_key]}")
        try:
            record = person if isinstance(person, (LinkRecord, IdsOnly)) else standardise_person(
                record_key, person, self.model.rules)
        except UnlinkableRecordError as exc:
            # This version counts as applied (an earlier one arriving later is stale). The record
            # as it now stands cannot be linked, so an earlier version of it must not go on
            # linking people: it leaves the index as a delete would, and the result says why.
            if record_key not in self.records:
                if source_version is not None:
                    self.versions[record_key] = source_version
                return LinkResult(record_key, "REJECTED", None, reason=str(exc))
            result = self.delete(record_key, source_version)
            result.outcome, result.reason = "REJECTED", f"{exc}; its earlier version was removed from the index"
            return result
        version = source_version if source_version is not None else self.versions.get(record_key, 0) + 1
        self.versions[record_key] = version
        self.seq += 1
        existing = self.records.get(record_key)
        if existing is not None:
            return self._update(existing, record, version, keys, scored)
        return self._insert(record, version, keys, scored)

    def _delete(self, record_key: str, source_version: int | None = None) -> LinkResult:
        if source_version is not None and self.versions.get(record_key, -1) >= source_version:
            return LinkResult(record_key, "IGNORED_STALE", self.citizen_of(record_key),
                              reason=f"source_version {source_version} <= {self.versions[record_key]}")
        if source_version is not None:
            self.versions[record_key] = source_version
        state = self.records.pop(record_key, None)
        if state is None:
            return LinkResult(record_key, "DELETED", None, reason="record was not in the index")
        self.seq += 1
        if not self.resolver:
            self.blocking.remove(record_key, self._keys(self.values(record_key, state)))
        neighbours = self.edges.pop(record_key, {})
        for other in neighbours:
            self.edges[other].pop(record_key, None)
        self._drop_review(record_key)
        citizen = self.citizens[state.citizen_id]
        citizen.members.discard(record_key)
        result = LinkResult(record_key, "DELETED", state.citizen_id)
        if not citizen.members:
            del self.citizens[state.citizen_id]
            self.retired[state.citizen_id] = None
            result.retired[state.citizen_id] = None
            return result
        changed, retired, new = self._recluster({state.citizen_id}, set(citizen.members))
        result.changed, result.retired = changed, retired
        if new:
            result.outcome = "SPLIT"
        return result

    def _set_verdict(self, pair: tuple[str, str], same: bool | None) -> None:
        """A reviewer's verdict on ``pair`` (None: none any more), in the pairs and the partners."""
        a, b = pair
        for pairs, partners, holds in ((self.must_link, self._must_of, same is True),
                                       (self.cannot_link, self._cannot_of, same is False)):
            if holds:
                pairs.add(pair)
                _pair_up(partners, a, b)
            elif pair in pairs:
                pairs.discard(pair)
                for x, y in ((a, b), (b, a)):
                    partners[x].discard(y)
                    if not partners[x]:
                        del partners[x]

    def _apply_review(self, a: str, b: str, same: bool) -> LinkResult:
        pair = (a, b) if a < b else (b, a)
        self._forget_review(pair)
        if a not in self.records or b not in self.records:
            return LinkResult(a, "REJECTED", self.citizen_of(a), reason="both records must be in the index")
        self.seq += 1
        self._set_verdict(pair, same)
        if same:
            self._add_edge(a, b, float("inf"))
        else:
            self.edges.get(a, {}).pop(b, None)
            self.edges.get(b, {}).pop(a, None)
        touched = {self.records[a].citizen_id, self.records[b].citizen_id}
        members = set().union(*(self.citizens[c].members for c in touched))
        changed, retired, new = self._recluster(touched, members)
        outcome = "MERGED" if retired else ("SPLIT" if new else "UPDATED")
        return LinkResult(a, outcome, self.citizen_of(a), changed=changed, retired=retired)

    def _undo_review(self, a: str, b: str, score: tuple[float, list[int]] | None = None) -> LinkResult:
        pair = (a, b) if a < b else (b, a)
        if a not in self.records or b not in self.records:
            return LinkResult(a, "REJECTED", self.citizen_of(a), reason="both records must be in the index")
        if pair not in self.must_link and pair not in self.cannot_link:
            return LinkResult(a, "REJECTED", self.citizen_of(a), reason="no reviewer's decision about them to undo")
        self.seq += 1
        self._set_verdict(pair, None)
        self.edges.get(a, {}).pop(b, None)
        self.edges.get(b, {}).pop(a, None)
        weight, _levels = score if score is not None else self.model.score(self.values(a), self.values(b))
        if weight >= self.model.link_weight:
            self._add_edge(a, b, weight)
        touched = {self.records[a].citizen_id, self.records[b].citizen_id}
        members = set().union(*(self.citizens[c].members for c in touched))
        changed, retired, new = self._recluster(touched, members)
        review = []
        if (self.model.review_weight <= weight < self.model.link_weight
                and self.records[a].citizen_id != self.records[b].citizen_id):
            self.review[pair] = weight
            self._review_partners.setdefault(a, set()).add(b)
            self._review_partners.setdefault(b, set()).add(a)
            review = [(a, b, weight)]
        outcome = "MERGED" if retired else ("SPLIT" if new else "UPDATED")
        return LinkResult(a, outcome, self.citizen_of(a), changed=changed, retired=retired, review=review)

    # ----------------------------------------------------------------- internals
    def _keys(self, record: LinkRecord) -> list[str]:
        return blocking_keys(record, self.model.rules.typo_schemes)

    def _score_candidates(self, record: LinkRecord | IdsOnly, keys: list[str],
                          scored: Scored | None = None) -> tuple[list[Candidate], list[Candidate]]:
        """(links, possible matches) among blocked candidates: found in this index's blocks, or,
        when the index is a resolver, ``scored`` by the scoring shards."""
        if scored is None:
            if self.resolver:
                raise ValueError("a resolver index links a record only with its scoring shards' answer")
            record = _whole(record)
            found = self.blocking.candidates(lookup_keys(keys), exclude=record.key)
            pairs = score_pairs(self.model, record, found, self.values, self.must_link)
        else:
            pairs = scored.pairs
        return self._classify(record.key, pairs)

    def _classify(self, key: str, pairs: list[ScoredPair]) -> tuple[list[Candidate], list[Candidate]]:
        model = self.model
        link_w = model.link_weight
        records, cannot = self.records, self.cannot_link
        links: list[Candidate] = []
        reviews: list[Candidate] = []
        for other_key, weight, levels, must_link in pairs:
            if cannot and ((key, other_key) if key < other_key else (other_key, key)) in cannot:
                continue
            candidate = Candidate(other_key, records[other_key].citizen_id, weight, model.probability(weight), levels)
            (links if weight >= link_w or must_link else reviews).append(candidate)
        links.sort(key=lambda c: (-c.weight, c.record_key))
        reviews.sort(key=lambda c: (-c.weight, c.record_key))
        return links, reviews

    def _insert(self, record: LinkRecord | IdsOnly, version: int, keys: list[str] | None = None,
                scored: Scored | None = None) -> LinkResult:
        if keys is None and not self.resolver:
            keys = self._keys(_whole(record))
        links, reviews = self._score_candidates(record, keys or [], scored)
        key = record.key
        if not self.resolver:
            self.blocking.add(key, keys or [])
        kept = self._kept(record)
        for c in links:
            self._add_edge(key, c.record_key, c.weight)
        if not links:
            cid = self._new_id(key)
            self.citizens[cid] = Citizen(self.seq, {key})
            self.records[key] = RecordState(kept, cid, self.seq, version)
            self._add_reviews(key, reviews, set())
            return LinkResult(key, "NEW_CITIZEN", cid, candidates=links + reviews, changed=[cid],
                              review=[(key, c.record_key, c.weight) for c in reviews])
        touched = {c.citizen_id for c in links}
        if len(touched) == 1 and self._fits(record, next(iter(touched))):
            # The usual case, decided without re-partitioning: joining one citizen whose identifiers
            # agree with the record's leaves every earlier join in the constrained clustering valid.
            (cid,) = touched
            self.citizens[cid].members.add(key)
            self.records[key] = RecordState(kept, cid, self.seq, version)
            self._add_reviews(key, reviews, {cid})
            return LinkResult(key, "LINKED", cid, candidates=links + reviews, changed=[cid],
                              review=[(key, c.record_key, c.weight) for c in reviews if c.citizen_id != cid])
        self.records[key] = RecordState(kept, "", self.seq, version)
        changed, retired, _new = self._recluster(touched, {key})
        cid = self.records[key].citizen_id
        self._add_reviews(key, reviews, {cid})
        outcome = "MERGED" if retired else ("LINKED" if cid in touched else "NEW_CITIZEN")
        return LinkResult(key, outcome, cid, candidates=links + reviews, changed=changed, retired=retired,
                          review=[(key, c.record_key, c.weight) for c in reviews if c.citizen_id != cid])

    def _update(self, state: RecordState, record: LinkRecord | IdsOnly, version: int,
                keys: list[str] | None = None, scored: Scored | None = None) -> LinkResult:
        key = record.key
        if scored.unchanged if scored is not None else _same_values(self.values(key, state), _whole(record)):
            state.source_version = version
            return LinkResult(key, "UPDATED", state.citizen_id, changed=[state.citizen_id])
        old_cid = state.citizen_id
        if not self.resolver:
            self.blocking.remove(key, self._keys(self.values(key, state)))
        for other in self.edges.pop(key, {}):
            self.edges[other].pop(key, None)
        self._drop_review(key)
        if keys is None and not self.resolver:
            keys = self._keys(_whole(record))
        links, reviews = self._score_candidates(record, keys or [], scored)
        if not self.resolver:
            self.blocking.add(key, keys or [])
        for c in links:
            self._add_edge(key, c.record_key, c.weight)
        for other in sorted(self._must_of.get(key, ())):
            if other in self.records:
                # A reviewer's verdict outlives a record's deletion (it holds again if the record
                # comes back), but there is no edge to a record that is not in the index.
                self._add_edge(*((key, other) if key < other else (other, key)), float("inf"))
        state.record, state.source_version = self._kept(record), version
        self._add_reviews(key, reviews, {c.citizen_id for c in links})
        touched = {old_cid} | {c.citizen_id for c in links}
        members = set().union(*(self.citizens[c].members for c in touched))
        changed, retired, new = self._recluster(touched, members)
        outcome = "MERGED" if retired else ("SPLIT" if new else "UPDATED")
        return LinkResult(key, outcome, state.citizen_id, candidates=links + reviews, changed=changed,
                          retired=retired, review=[(key, c.record_key, c.weight) for c in reviews])

    def _fits(self, record: LinkRecord | IdsOnly, citizen_id: str) -> bool:
        """Joining the citizen needs no re-partitioning: no identifier of ``record`` differs from
        a member's (a conservative test: ``_components`` decides what a difference means), the
        citizen stays within the size guard, and no reviewer kept the record apart."""
        if self._cannot_of.get(record.key):
            return False
        members = self.citizens[citizen_id].members
        if self.max_citizen_records is not None and len(members) >= self.max_citizen_records:
            return False
        if not record.ids:
            return True
        for member in members:
            theirs = self.records[member].record.ids
            if any(theirs.get(scheme, value) != value for scheme, value in record.ids.items()):
                return False
        return True

    def _add_edge(self, a: str, b: str, weight: float) -> None:
        self.edges.setdefault(a, {})[b] = weight
        self.edges.setdefault(b, {})[a] = weight

    def _add_reviews(self, key: str, reviews: list[Candidate], linked_citizens: set[str]) -> None:
        for c in reviews:
            if c.citizen_id in linked_citizens:
                continue  # already the same citizen through a stronger link
            pair = (key, c.record_key) if key < c.record_key else (c.record_key, key)
            self.review[pair] = c.weight
            partners = self._review_partners
            partners.setdefault(key, set()).add(c.record_key)
            partners.setdefault(c.record_key, set()).add(key)

    def _drop_review(self, key: str) -> None:
        for other in self._review_partners.pop(key, ()):
            self.review.pop((key, other) if key < other else (other, key), None)
            theirs = self._review_partners.get(other)
            if theirs is not None:
                theirs.discard(key)
                if not theirs:
                    del self._review_partners[other]

    def _forget_review(self, pair: tuple[str, str]) -> None:
        if self.review.pop(pair, None) is None:
            return
        a, b = pair
        for x, y in ((a, b), (b, a)):
            mine = self._review_partners.get(x)
            if mine is not None:
                mine.discard(y)
                if not mine:
                    del self._review_partners[x]

    def _closure(self, touched: set[str], extra: set[str]) -> tuple[set[str], set[str]]:
        """Every record reachable by link edges from the touched citizens and ``extra`` records.

        Edges refused by the constraints still connect: the partition of this closure is then a
        function of its edges alone, whatever order the records arrived in.
        """
        members = set(extra)
        for cid in touched:
            members |= self.citizens[cid].members
        stack = list(members)
        while stack:
            node = stack.pop()
            for other in self.edges.get(node, ()):
                if other not in members:
                    members.add(other)
                    stack.append(other)
        citizens = {self.records[m].citizen_id for m in members} - {""}
        return citizens, members

    def _components(self, members: set[str]) -> tuple[list[set[str]], list[tuple[str, str, float]]]:
        """Link edges strongest first, joining two groups unless that would break a constraint.

        Returns the groups and the links refused by the size guard (for review).

        An identifier scheme says how many values one person may hold (``one_per_citizen``):
        a ``strict`` scheme's two different values never join (one person, one NHS number), a
        ``soft`` one's join only through a link between the two records that hold them (that
        pair's score weighed the disagreement), never through a third record. Values one edit
        apart in a scheme without a check digit are the same number mistyped, not a conflict. A
        join that would put records a reviewer said are different people together is refused,
        and so is one that would make a citizen larger than ``max_citizen_records``. A
        reviewer's must-link (an infinite weight) overrides the identifier and size rules.
        Processing edges in a fixed order (weight, then keys) makes the result independent of
        arrival order.
        """
        parent = {m: m for m in members}
        groups = {m: {m} for m in members}
        records = {m: self.records[m].record for m in members}
        ids: dict[str, dict[str, set[str]]] = {}
        for m, r in records.items():
            ids[m] = {s: {v} for s, v in r.ids.items()}
        schemes = self.model.rules.schemes.schemes
        apart: dict[str, set[str]] = {}
        cannot_of = self._cannot_of
        for x in members:
            kept_apart = {y for y in cannot_of.get(x, ()) if y in parent}
            if kept_apart:
                apart[x] = kept_apart
        limit = self.max_citizen_records
        refused: list[tuple[str, str, float]] = []

        def find(x: str) -> str:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        def conflict(ia: dict[str, set[str]], ib: dict[str, set[str]], a: str, b: str) -> bool:
            for scheme, values in ib.items():
                held = ia.get(scheme)
                if held is None or held == values:
                    continue
                rule = schemes.get(scheme)
                if rule is None or rule.one_per_citizen == "none":
                    continue
                if rule.typos and all(_osa(x, y) <= 1 for x in held for y in values):
                    continue
                if rule.one_per_citizen == "soft" and scheme in records[a].ids and scheme in records[b].ids:
                    continue
                return True
            return False

        edges = sorted(((w, a, b) for a in members for b, w in self.edges.get(a, {}).items()
                        if b in members and a < b), key=lambda e: (-e[0], e[1], e[2]))
        for weight, a, b in edges:
            ra, rb = find(a), find(b)
            if ra == rb:
                continue
            binding = weight != float("inf")
            if binding and conflict(ids[ra], ids[rb], a, b):
                continue
            if apart and any(p in groups[rb] for x in groups[ra] for p in apart.get(x, ())):
                continue
            if binding and limit is not None and len(groups[ra]) + len(groups[rb]) > limit:
                refused.append((a, b, weight))
                continue
            if len(groups[ra]) < len(groups[rb]):
                ra, rb = rb, ra
            parent[rb] = ra
            groups[ra] |= groups.pop(rb)
            kept = ids[ra]  # the root's identifiers gain the joining group's (after the swap above)
            for scheme, values in ids.pop(rb).items():
                kept.setdefault(scheme, set()).update(values)
        return [groups[r] for r in groups], refused

    def _recluster(self, touched: set[str], extra: set[str]) -> tuple[list[str], dict[str, str | None], bool]:
        """Recompute the citizens around a change and name them.

        ``touched`` are the citizens the change involves and ``extra`` any records not yet in a
        citizen; their edge closure is re-partitioned. Returns (changed citizens, retired ids ->
        survivor, whether a new id was made).
        """
        touched, members = self._closure(touched, extra)
        seq = {k: self.records[k].seq for k in members}
        parts, refused = self._components(members)
        self._hold_for_review(refused)
        components = sorted(parts, key=lambda comp: min(seq[k] for k in comp))
        where = {k: i for i, comp in enumerate(components) for k in comp}
        # Each old citizen id goes to the component holding its oldest remaining record.
        claims: dict[int, list[str]] = {}
        old = {c: self.citizens[c] for c in touched}
        for cid, citizen in old.items():
            own = [k for k in citizen.members if k in where]
            if own:
                claims.setdefault(where[min(own, key=lambda k: seq[k])], []).append(cid)
        for cid in touched:
            del self.citizens[cid]
        changed: list[str] = []
        retired: dict[str, str | None] = {}
        new_ids = False
        for i, comp in enumerate(components):
            ids = sorted(claims.get(i, []), key=lambda c: old[c].created_seq)
            if ids:
                survivor = ids[0]
                # Every id the losers had absorbed too: a LinkedCase names all its ancestors, so a
                # reader that never saw a loser's own case (compacted away, or on a partition another
                # gate process reads) still finds consent recorded about an id retired twice.
                citizen = Citizen(old[survivor].created_seq, comp, _ancestors(old[survivor].merged_from,
                                                                              ids[1:], old))
                for loser in ids[1:]:
                    retired[loser] = survivor
                    self.retired[loser] = survivor
            else:
                survivor = self._new_id(min(comp, key=lambda k: seq[k]))
                citizen = Citizen(self.seq, comp)
                new_ids = True
            self.citizens[survivor] = citizen
            for k in comp:
                self.records[k].citizen_id = survivor
            changed.append(survivor)
        for cid in touched:
            if cid not in self.citizens and cid not in retired:
                retired[cid] = None  # every member went elsewhere or was deleted
                self.retired[cid] = None
        return changed, retired, new_ids

    def _hold_for_review(self, refused: list[tuple[str, str, float]]) -> None:
        """Links the size guard refused leave the graph (a giant component would otherwise be
        re-partitioned whole on every change) and wait for a reviewer as open review pairs."""
        for a, b, weight in refused:
            self.edges.get(a, {}).pop(b, None)
            self.edges.get(b, {}).pop(a, None)
            pair = (a, b) if a < b else (b, a)
            if pair in self.review:
                continue
            self.review[pair] = weight
            self._review_partners.setdefault(a, set()).add(b)
            self._review_partners.setdefault(b, set()).add(a)
            self.size_refusals += 1
            self._guarded.append((a, b, weight))

    def _new_id(self, founder_key: str) -> str:
        n = 0
        while True:
            digest = hashlib.blake2b(f"{founder_key}#{n}".encode(), digest_size=8).hexdigest()
            cid = f"C-{digest}"
            if cid not in self._used_ids:
                self._used_ids.add(cid)
                return cid
            n += 1


_osa = OSA.distance


def _ancestors(kept: tuple[str, ...], losers: list[str], old: Mapping[str, Citizen]) -> tuple[str, ...]:
    """The survivor's ``merged_from`` after absorbing ``losers``: what it had, then each loser and
    the ids that loser had absorbed, without repeats."""
    out = list(kept)
    seen = set(out)
    for loser in losers:
        for cid in (loser, *old[loser].merged_from):
            if cid not in seen:
                seen.add(cid)
                out.append(cid)
    return tuple(out)


def _whole(record: LinkRecord | IdsOnly) -> LinkRecord:
    if isinstance(record, LinkRecord):
        return record
    raise ValueError(f"{record.key}: only a resolver links a record by its identifiers alone")


def _same_values(a: LinkRecord, b: LinkRecord) -> bool:
    return all(getattr(a, s) == getattr(b, s) for s in LinkRecord.__slots__ if s != "key")


def _pair_up(partners: dict[str, set[str]], a: str, b: str) -> None:
    partners.setdefault(a, set()).add(b)
    partners.setdefault(b, set()).add(a)
