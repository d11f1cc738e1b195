"""The sharded tiers as they talk over Kafka give the single writer's index, message by message.

The logs of ``test_shards`` become link-input messages (PersonEvents, some with the normaliser's
packed record, and ReviewDecisions). Each block and record shard answers them in runs of random
length, as a shard answers a poll's worth; the runs reach the next tier in any interleaving of
the shards, some twice (a shard restarted before it recorded its position, or one that lost its
partitions and has not noticed). The resolver applies the merged answers in order. Its final
index and every outcome must be those of the linker's own core fed the same messages.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import pytest
from caselink.linkage.blocking import blocking_keys
from caselink.linkage.index import CitizenIndex
from caselink.linkage.packed import pack
from caselink.linkage.record import LinkRecord, UnlinkableRecordError, standardise_person
from caselink.linkage.shards import shard_partitions
from caselink.schemas import default_serde
from caselink.streams import snapshot
from caselink.streams.linker_core import LinkerCore
from caselink.streams.shard_core import (
    NO_ANSWER,
    Batch,
    BlockAnswers,
    Coverage,
    GapError,
    Leave,
    Nothing,
    RecordAnswers,
    Upsert,
    batches,
    decode_batch,
    decode_change,
    made_with,
    merge_found,
    merge_scored,
    resolve,
)
from caselink.streams.values_store import ValuesStore
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.depth import examples
from tests.events import encoded_person_event
from tests.linkage_fixtures import comparable_state, trained_model
from tests.unit.test_shards import logs

AT = datetime(2026, 11, 1, tzinfo=UTC)
# value, packed record, message key and change header (the last three the normaliser's, or None)
Message = tuple[bytes, bytes | None, bytes | None, bytes | None]


def _messages(log: list[tuple[Any, ...]], packed: list[bool]) -> list[Message]:
    """The log as link-input messages; where ``packed`` says, with the normaliser's headers."""
    rules = trained_model().rules
    out: list[Message] = []
    for i, change in enumerate(log):
        normalised = packed[i % len(packed)]
        match change:
            case ("upsert", key, version, person):
                agency, rid = key.split(":")
                value = encoded_person_event(agency, rid, person, version=version or 0, event_id=f"e{i}")
                header = None
                if normalised:
                    try:
                        record = standardise_person(key, person, rules)
                        header = pack(record, blocking_keys(record, rules.typo_schemes), rules)
                    except UnlinkableRecordError:
                        pass
                said = f"UPSERT {version or 0}".encode() if normalised else None
                out.append((value, header, key.encode() if normalised else None, said))
            case ("delete", key, version):
                agency, rid = key.split(":")
                said = f"DELETE {version}".encode() if normalised else None
                out.append((encoded_person_event(agency, rid, None, version=version, op="DELETE", event_id=f"e{i}"),
                            None, key.encode() if normalised else None, said))
            case (kind, a, b, same):
                out.append((default_serde().encode("ReviewDecision", {
                    "decision_id": f"d{i}", "left_record": a, "right_record": b, "same_person": same,
                    "decided_by": "reviewer", "reason": None, "decided_at": AT,
                    "action": "undo" if kind == "undo" else "decide"}), None, None, None))
    return out


def _answer_in_runs(answer: Any, tier: str, owned: frozenset[int], changes: list[Any], cuts: list[int],
                    found: list[Any] | None = None) -> list[Batch]:
    """One shard's answers to every change, sent in runs ending at ``cuts``."""
    runs: list[Batch] = []
    answers: list[tuple[int, Any]] = []
    first = 0
    for seq, change in enumerate(changes):
        said = answer.apply(change) if found is None else answer.apply(change, found[seq])
        if said is not NO_ANSWER:
            answers.append((seq, said))
        if seq + 1 in cuts or seq + 1 == len(changes):
            for data in batches(Batch(tier, owned, first, seq + 1, answers), max_bytes=1_000_000):
                runs.append(decode_batch(data))  # through the bytes, as over Kafka
            answers, first = [], seq + 1
    return runs


def _delivered(data: st.DataObject, per_shard: list[list[Batch]]) -> list[Batch]:
    """The shards' runs interleaved at random, each shard's in order, some sent twice."""
    queues = [list(runs) for runs in per_shard]
    out: list[Batch] = []
    while any(queues):
        i = data.draw(st.sampled_from([i for i, q in enumerate(queues) if q]))
        run = queues[i].pop(0)
        out.append(run)
        if data.draw(st.integers(0, 5)) == 0:
            out.append(run)
    return out


def _tier(data: st.DataObject | None, shards: int, make: Any, tier: str, changes: list[Any], merge: Any,
          found: list[Any] | None = None) -> list[Any]:
    """Every change's merged answer from ``shards`` shards of a tier, through Coverage (``data``
    None: each shard's answers in one run, the shards one after another)."""
    cuts = data.draw(st.lists(st.integers(1, max(1, len(changes))), max_size=4)) if data is not None else []
    per_shard = [_answer_in_runs(make(shard_partitions(i, shards)), tier, shard_partitions(i, shards),
                                 changes, cuts, found) for i in range(shards)]
    coverage = Coverage(merge)
    merged: list[Any] = []
    runs = _delivered(data, per_shard) if data is not None else [run for runs in per_shard for run in runs]
    for run in runs:
        coverage.add(run)
        while len(merged) < coverage.ready():
            merged.append(coverage.take(len(merged)))
    assert len(merged) == len(changes)
    return merged


def _answered(messages: list[Message], shards: tuple[int, int],
              data: st.DataObject | None) -> tuple[list[Any], list[Any], list[Any]]:
    """The messages decoded as the shard loop decodes them (the block shards and the resolver
    without the records' values, the record shards with them) and the record shards' merged
    answer to each, from ``shards`` (block, record) shards."""
    model = trained_model()
    serde, rules = default_serde(), model.rules
    light = [decode_change(serde, rules, value, header, key=key, change=said, values=False)
             for value, header, key, said in messages]
    whole = [decode_change(serde, rules, value, header, key=key, change=said) for value, header, key, said in messages]
    found = _tier(data, shards[0], lambda owned: BlockAnswers(owned, max_block_size=3), "blocks", light,
                  merge_found)
    scored = _tier(data, shards[1], lambda owned: RecordAnswers(model, owned), "records", whole, merge_scored,
                   found)
    return light, whole, scored


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None, max_examples=examples(300))
@given(log=logs(), packed=st.lists(st.booleans(), min_size=1, max_size=3),
       shards=st.sampled_from(((1, 1), (2, 3), (3, 2), (7, 7))), data=st.data())
def test_the_tiers_over_messages_give_the_linkers_index(log: list[tuple[Any, ...]], packed: list[bool],
                                                        shards: tuple[int, int], data: st.DataObject) -> None:
    model = trained_model()
    messages = _messages(log, packed)
    single = LinkerCore(model, max_block_size=3, max_citizen_records=4)
    expected = []
    for value, header, _key, _change in messages:
        try:
            single.apply(value, packed=header)
            expected.append(single.last_outcome)
        except ValueError:
            expected.append("DEAD_LETTER")

    light, _whole, scored = _answered(messages, shards, data)
    resolver = CitizenIndex(model, max_block_size=3, max_citizen_records=4, resolver=True)
    got = []
    for change, answer in zip(light, scored, strict=True):
        if isinstance(change, Nothing):
            got.append("DEAD_LETTER" if change.reason else "NOTED")
            continue
        got.append(resolve(resolver, change, answer).outcome)
    assert got == expected
    assert comparable_state(resolver) == comparable_state(single.index)


def test_answers_that_skip_ahead_are_refused_as_lost_not_waited_for() -> None:
    coverage = Coverage(merge_found, partitions=2)
    coverage.add(Batch("blocks", frozenset({0, 1}), 0, 5, [], count=2))
    with pytest.raises(GapError, match="start at 7, but reached only 5"):
        coverage.add(Batch("blocks", frozenset({1}), 7, 9, [], count=2))


def test_answers_made_over_other_partitions_or_another_model_are_refused() -> None:
    with pytest.raises(ValueError, match=r"same shards\.partitions"):
        Coverage(merge_found, partitions=60).add(Batch("blocks", frozenset({1}), 0, 5, [], count=30))
    model = trained_model()
    coverage = Coverage(merge_scored, made_with=made_with("records", model))
    with pytest.raises(ValueError, match="same model"):
        coverage.add(Batch("records", frozenset({1}), 0, 5, [], made_with=made_with("blocks", model)))


def test_a_sequence_number_is_ready_only_when_every_partition_has_answered_it() -> None:
    coverage = Coverage(merge_found, partitions=3)
    coverage.add(Batch("blocks", frozenset({0, 1}), 0, 4, [(2, ["health:1"])], count=3))
    assert coverage.ready() == 0 and coverage.lagging() == {2: 0}
    coverage.add(Batch("blocks", frozenset({2}), 0, 3, [(2, ["police:9"])], count=3))
    assert coverage.ready() == 3
    assert coverage.take(0) is NO_ANSWER and coverage.take(2) == {"health:1", "police:9"}
    with pytest.raises(ValueError, match="not answered"):
        coverage.take(3)


def test_a_message_that_is_not_a_shards_answers_is_refused() -> None:
    for data in (b"", b"\xc1", b"\x93\x01\x02\x03"):
        with pytest.raises(ValueError, match="not a shard's answers"):
            decode_batch(data)
    with pytest.raises(ValueError, match="format 2"):
        decode_batch(b"\x98\x02\xa6blocks\x3c\xa0\x90\x00\x00\x90")


def test_an_upsert_the_linker_would_dead_letter_changes_no_shard() -> None:
    change = decode_change(default_serde(), trained_model().rules, b"not avro")
    assert isinstance(change, Nothing) and change.reason
    upsert = decode_change(default_serde(), trained_model().rules,
                           encoded_person_event("health", "1", {"given_names": "Ann", "family_name": "Lee",
                                                                "date_of_birth": "1990-04-03"}))
    assert isinstance(upsert, Upsert) and upsert.key == "health:1"


def test_answers_too_large_for_one_message_go_in_several_consecutive_ones() -> None:
    answers = [(seq, [f"health:{seq}-{i}" for i in range(50)]) for seq in range(10, 30)]
    parts = [decode_batch(d) for d in batches(Batch("blocks", frozenset({1}), 10, 40, answers), max_bytes=4_000)]
    assert len(parts) > 1 and parts[0].first == 10 and parts[-1].end == 40
    assert all(a.end == b.first for a, b in itertools.pairwise(parts))
    assert [x for p in parts for x in p.answers] == [(s, a) for s, a in answers]


def test_the_normalisers_headers_give_the_change_that_decoding_the_event_gives() -> None:
    rules = trained_model().rules
    serde = default_serde()
    person = {"given_names": "Ann", "family_name": "Lee", "date_of_birth": "1990-04-03",
              "identifiers": {"nhs_number": "9434765919"}}
    value = encoded_person_event("health", "1", person, version=3)
    record = standardise_person("health:1", person, rules)
    packed = pack(record, blocking_keys(record, rules.typo_schemes), rules)
    full = decode_change(serde, rules, value, packed)
    assert isinstance(full, Upsert) and full.record is not None and full.ids == {"nhs_number": "9434765919"}
    # the event is not read at all: bytes that are no event give the same change
    quick = decode_change(serde, rules, b"not an event", packed, key=b"health:1", change=b"UPSERT 3")
    assert isinstance(quick, Upsert) and quick.record is not None
    assert (quick.key, quick.version, quick.keys, quick.ids, quick.record.as_dict()) == (
        full.key, full.version, full.keys, full.ids, full.record.as_dict())
    light = decode_change(serde, rules, b"not an event", packed, key=b"health:1", change=b"UPSERT 3", values=False)
    assert light == Upsert(full.key, full.version, None, full.keys, full.ids)
    assert decode_change(serde, rules, b"", None, key=b"health:1", change=b"DELETE 4") == Leave("health:1", 4, None)
    # headers that cannot be used: the event is decoded instead
    for key, said in ((b"health:1", b"UPSERT three"), (b"health:1", b"MOVE 3"), (b"health:2", b"UPSERT 3")):
        fallback = decode_change(serde, rules, value, packed, key=key, change=said, values=False)
        assert isinstance(fallback, Upsert) and fallback.key == "health:1" and fallback.record is not None


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None, max_examples=examples(300))
@given(log=logs(), packed=st.lists(st.booleans(), min_size=1, max_size=3),
       shards=st.sampled_from(((1, 1), (2, 3), (7, 7))), data=st.data())
def test_the_linker_as_a_resolver_publishes_the_single_writers_bytes(
        log: list[tuple[Any, ...]], packed: list[bool], shards: tuple[int, int], data: st.DataObject) -> None:
    """The linker's core in resolver mode, given the record shards' answers and a store of record
    values, writes exactly the single writer's messages: decisions, linked cases, tombstones and
    review items with their field weights."""
    _same_bytes_as_the_single_writer(log, packed, shards, data)


def test_the_linker_as_a_resolver_undoes_a_verdict_and_explains_a_refused_join_as_the_single_writer() -> None:
    """The generated logs seldom undo a verdict on two records still in the index: this one does,
    and the undoing offers a join the size guard refuses (a review item for two records neither of
    which changed), with caps reached on the way (the log of ``test_shards``'s fixed case)."""
    person = {"given_names": "Ann", "family_name": "Lee", "date_of_birth": "1990-04-03", "sex": "F",
              "addresses": [{"lines": ["12 Mill Lane"], "postcode": "LS6 2AB", "locality": "Leeds"}]}
    keys = [f"{agency}:{i}" for agency in ("health", "police") for i in range(3)]
    log: list[tuple[Any, ...]] = [("upsert", key, 1, person) for key in keys]
    log += [("review", keys[0], keys[5], False), ("undo", keys[0], keys[5], False), ("delete", keys[2], 2)]
    for packed in ([True], [False]):
        outcomes = _same_bytes_as_the_single_writer(log, packed, (2, 3), None)
        assert outcomes[-3:] == ["UPDATED", "UPDATED", "DELETED"]


def _same_bytes_as_the_single_writer(log: list[tuple[Any, ...]], packed: list[bool], shards: tuple[int, int],
                                     data: st.DataObject | None) -> list[str]:
    model = trained_model()
    messages = _messages(log, packed)
    _light, whole, scored = _answered(messages, shards, data)
    store = DictValues()  # the store of record values, kept by the resolver from the link input
    single = LinkerCore(model, max_block_size=3, max_citizen_records=4)
    resolver = LinkerCore(model, max_block_size=3, max_citizen_records=4, resolver=True, store=store)
    outcomes = []
    for (value, header, _key, _said), change, answer in zip(messages, whole, scored, strict=True):
        outputs = []
        for core, answered in ((single, NO_ANSWER), (resolver, answer)):
            try:
                outputs.append([(o.topic, o.key, o.value) for o in core.apply(value, packed=header, scored=answered)])
            except ValueError as exc:
                outputs.append([("dead letter", str(exc).encode(), None)])
        assert outputs[0] == outputs[1], change
        outcomes.append(single.last_outcome)
    assert comparable_state(resolver.index) == comparable_state(single.index)
    assert store.values.keys() == single.index.records.keys()  # a store follows the index
    for key, record in store.values.items():
        assert _slots(record) == _slots(single.index.values(key))
    return outcomes


def _slots(record: LinkRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in LinkRecord.__slots__}


class DictValues:
    """A store of record values in a dict (the worker's is ``streams.values_store.ValuesStore``)."""

    def __init__(self) -> None:
        self.values: dict[str, LinkRecord] = {}

    def get(self, key: str) -> LinkRecord | None:
        return self.values.get(key)

    def put(self, record: LinkRecord, packed: bytes | None = None, seq: int = -1) -> None:
        self.values[record.key] = record

    def delete(self, key: str, seq: int = -1) -> None:
        self.values.pop(key, None)


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture], deadline=None,
          max_examples=examples(60))
@given(log=logs(), cut=st.integers(0, 24), data=st.data())
def test_a_resolver_restored_from_its_snapshot_and_store_carries_on_as_the_original(
        tmp_path_factory: pytest.TempPathFactory, log: list[tuple[Any, ...]], cut: int, data: st.DataObject) -> None:
    """A resolver snapshotted part way while its store of values goes on being written (as the
    worker's forked writer leaves it), then loaded with that store rewound to the snapshot's
    position, publishes the original's bytes for the rest of the log and ends with its state."""
    model = trained_model()
    messages = _messages(log, [True, False])
    _light, _whole, scored = _answered(messages, (2, 2), data)
    cut = min(cut, len(messages))
    folder = tmp_path_factory.mktemp("resolver")
    store = ValuesStore(folder / "values.sqlite", model.rules)
    original = LinkerCore(model, max_block_size=3, max_citizen_records=4, resolver=True, store=store)

    def apply(core: LinkerCore, i: int) -> list[tuple[str, bytes, bytes | None]]:
        try:
            out = [(o.topic, o.key, o.value) for o in core.apply(messages[i][0], packed=messages[i][1], offset=i,
                                                                    scored=scored[i])]
        except ValueError as exc:
            out = [("dead letter", str(exc).encode(), None)]
        store.commit()
        return out

    for i in range(cut):
        apply(original, i)
    snapshot.write(folder / "linker.snapshot", original, cut)
    expected = [apply(original, i) for i in range(cut, len(messages))]
    state = comparable_state(original.index)

    loaded = snapshot.read(folder / "linker.snapshot", model,
                           lambda: LinkerCore(model, max_block_size=3, max_citizen_records=4, resolver=True,
                                              store=store), values_store=store.store_id)
    assert loaded is not None and loaded.position == cut
    store.rewind(cut)
    assert [apply(loaded.core, i) for i in range(cut, len(messages))] == expected
    assert comparable_state(loaded.core.index) == state
    assert snapshot.read(folder / "linker.snapshot", model, values_store="another store") is None


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None, max_examples=examples(100))
@given(log=logs(), shards=st.sampled_from((1, 2, 3, 7)), data=st.data())
def test_a_reader_starting_again_where_coverage_says_gets_every_answer_not_yet_taken(
        log: list[tuple[Any, ...]], shards: int, data: st.DataObject) -> None:
    """Answers delivered in runs at random (some twice), taken as they are ready; at any point a
    reader that starts again from ``resume_from`` (a snapshot's record of it) with the position
    taken so far ends with every later change's merged answer, as one reading from the start."""
    model = trained_model()
    messages = _messages(log, [True])
    light, whole, _scored = _answered(messages, (1, 1), None)
    found = _tier(None, 1, lambda owned: BlockAnswers(owned, max_block_size=3), "blocks", light, merge_found)
    cuts = data.draw(st.lists(st.integers(1, max(1, len(whole))), max_size=4))
    per_shard = [_answer_in_runs(RecordAnswers(model, shard_partitions(i, shards)), "records",
                                 shard_partitions(i, shards), whole, cuts, found) for i in range(shards)]
    runs = _delivered(data, per_shard)

    def read(coverage: Coverage, start: int, stop: int, merged: list[Any]) -> None:
        for origin in range(start, stop):
            coverage.add(runs[origin], origin)
            while coverage.taken < coverage.ready():
                merged.append(coverage.take(coverage.taken))

    expected: list[Any] = []
    read(Coverage(merge_scored), 0, len(runs), expected)
    stop = data.draw(st.integers(0, len(runs)))
    first = Coverage(merge_scored)
    read(first, 0, stop, [])
    again = Coverage(merge_scored, start=first.taken)
    rest: list[Any] = []
    read(again, first.resume_from(stop), len(runs), rest)
    assert rest == expected[first.taken:]


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None, max_examples=examples(100))
@given(log=logs(), data=st.data())
def test_a_record_shard_that_gives_up_partitions_holds_what_one_built_for_the_rest_holds(
        log: list[tuple[Any, ...]], data: st.DataObject) -> None:
    model = trained_model()
    messages = _messages(log, [True, False])
    light, whole, _scored = _answered(messages, (1, 1), None)
    found = _tier(None, 1, lambda owned: BlockAnswers(owned, max_block_size=3), "blocks", light, merge_found)
    everything = frozenset(range(60))
    kept = frozenset(data.draw(st.sets(st.integers(0, 59), min_size=1, max_size=59)))
    whole_shard, part_shard = RecordAnswers(model, everything), RecordAnswers(model, kept)
    for change, answer in zip(whole, found, strict=True):
        whole_shard.apply(change, answer)
        part_shard.apply(change, answer)
    whole_shard.shard.keep_only(kept)
    a, b = whole_shard.shard, part_shard.shard
    assert a.owned == b.owned and a.versions == b.versions and a.present == b.present
    assert a.must_link == b.must_link
    assert {k: _slots(r) for k, r in a.records.items()} == {k: _slots(r) for k, r in b.records.items()}
    with pytest.raises(ValueError, match="never this shard's"):
        b.keep_only(everything)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None, max_examples=examples(100))
@given(log=logs(), data=st.data())
def test_a_block_shard_that_gives_up_partitions_holds_and_answers_what_one_built_for_the_rest_does(
        log: list[tuple[Any, ...]], data: st.DataObject) -> None:
    """Blocks capped small, partitions given up part-way through the log: the shard's blocks, caps
    and filing are then those of a shard that only ever had the rest, and so are its answers to
    every later change."""
    messages = _messages(log, [True, False])
    light, _whole, _scored = _answered(messages, (1, 1), None)
    everything = frozenset(range(60))
    kept = frozenset(data.draw(st.sets(st.integers(0, 59), min_size=1, max_size=59)))
    cut = data.draw(st.integers(0, len(light)))
    whole_shard, part_shard = BlockAnswers(everything, max_block_size=3), BlockAnswers(kept, max_block_size=3)
    for change in light[:cut]:
        whole_shard.apply(change)
        part_shard.apply(change)
    whole_shard.shard.keep_only(kept)
    a, b = whole_shard.shard, part_shard.shard
    assert a.owned == b.owned and a.versions == b.versions and a.filed == b.filed
    assert a.blocking.blocks == b.blocking.blocks
    assert a.blocking.capped == b.blocking.capped and a.blocking.capped_names == b.blocking.capped_names
    for change in light[cut:]:
        assert whole_shard.apply(change) == part_shard.apply(change)
    with pytest.raises(ValueError, match="never this shard's"):
        b.keep_only(everything)
