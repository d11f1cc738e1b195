"""A shard restored from its snapshot (``streams/shard_snapshot.py``) carries on as the original:
the same state, and the same answer to every later change; one dealt fewer partitions holds what
a shard of those partitions holds; a snapshot made for other partitions, past the committed
position or by another process's string hashing is not used."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from caselink.linkage.packed import unpack
from caselink.streams import shard_snapshot
from caselink.streams.shard_core import BlockAnswers, RecordAnswers, made_with, merge_found
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.depth import examples
from tests.linkage_fixtures import trained_model
from tests.unit.test_shard_core import _answered, _messages, _slots, _tier
from tests.unit.test_shards import logs

EVERY = frozenset(range(60))


def _saved(answers: Any, position: int, folder: Path) -> Path:
    path = folder / "shard.snapshot"
    tier = shard_snapshot.tier_of(answers)
    shard_snapshot.write(path, answers, position, {"made_with": made_with(tier, trained_model())})
    return path


def _read(path: Path, tier: str, owned: frozenset[int], committed: int) -> shard_snapshot.LoadedShard | None:
    return shard_snapshot.read(path, tier, trained_model(), 60, 3, owned, committed)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None, max_examples=examples(20))
@given(log=logs(), data=st.data())
def test_a_block_shard_restored_from_its_snapshot_answers_every_later_change_as_the_original(
        log: list[tuple[Any, ...]], data: st.DataObject) -> None:
    light, _whole, _scored = _answered(_messages(log, [True, False]), (1, 1), None)
    cut = data.draw(st.integers(0, len(light)))
    kept = frozenset(data.draw(st.sets(st.integers(0, 59), min_size=1, max_size=60)))
    original, reference = BlockAnswers(EVERY, max_block_size=3), BlockAnswers(kept, max_block_size=3)
    for change in light[:cut]:
        original.apply(change)
        reference.apply(change)
    with tempfile.TemporaryDirectory() as folder:
        path = _saved(original, cut, Path(folder))
        loaded = _read(path, "blocks", kept, committed=cut)
        assert loaded is not None and loaded.position == cut and loaded.owned == kept
        assert _read(path, "records", kept, committed=cut) is None  # another tier's
        assert _read(path, "blocks", kept, committed=cut - 1) is None  # past what was committed
    restored = loaded.answers
    assert isinstance(restored, BlockAnswers)
    a, b = restored.shard, reference.shard
    assert a.owned == b.owned and a.versions == b.versions and a.filed == b.filed
    assert a.blocking.blocks == b.blocking.blocks and a.blocking.capped == b.blocking.capped
    assert a.blocking.capped_names == b.blocking.capped_names
    for change in light[cut:]:
        assert restored.apply(change) == reference.apply(change)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None, max_examples=examples(20))
@given(log=logs(), data=st.data())
def test_a_record_shard_restored_from_its_snapshot_answers_every_later_change_as_the_original(
        log: list[tuple[Any, ...]], data: st.DataObject) -> None:
    model = trained_model()
    light, whole, _scored = _answered(_messages(log, [True, False]), (1, 1), None)
    found = _tier(None, 1, lambda owned: BlockAnswers(owned, max_block_size=3), "blocks", light, merge_found)
    cut = data.draw(st.integers(0, len(whole)))
    kept = frozenset(data.draw(st.sets(st.integers(0, 59), min_size=1, max_size=60)))
    original, reference = RecordAnswers(model, EVERY), RecordAnswers(model, kept)
    for change, answer in zip(whole[:cut], found[:cut], strict=True):
        original.apply(change, answer)
        reference.apply(change, answer)
    with tempfile.TemporaryDirectory() as folder:
        loaded = _read(_saved(original, cut, Path(folder)), "records", kept, committed=cut)
    assert loaded is not None
    restored = loaded.answers
    assert isinstance(restored, RecordAnswers)
    a, b = restored.shard, reference.shard
    assert a.owned == b.owned and a.versions == b.versions and a.present == b.present
    assert a.must_link == b.must_link and a.compared == original.shard.compared
    assert {k: _slots(r) for k, r in a.records.items()} == {k: _slots(r) for k, r in b.records.items()}
    for change, answer in zip(whole[cut:], found[cut:], strict=True):
        assert _values(restored.apply(change, answer)) == _values(reference.apply(change, answer))


def _values(answer: Any) -> Any:
    """An undo's answer (records' packed values) as the values: marshal writes a string seen
    before in the same record as a reference to it, and a restored record's strings are no
    longer shared objects, so equal values may pack to other bytes."""
    if not isinstance(answer, dict):
        return answer
    rules = trained_model().rules
    return {key: _slots(unpack(data, key, rules)[0]) for key, data in answer.items()}  # type: ignore[index]


def test_a_snapshot_is_not_used_for_partitions_it_does_not_hold_or_by_another_processs_hashing(
        monkeypatch: Any, tmp_path: Path) -> None:
    path = _saved(BlockAnswers(frozenset({1, 2}), max_block_size=3), 0, tmp_path)
    assert _read(path, "blocks", frozenset({2}), 0) is not None
    assert _read(path, "blocks", frozenset({2, 3}), 0) is None
    monkeypatch.setattr(shard_snapshot, "HASH_PROBE", "another string, as another seed would hash the same one")
    assert _read(path, "blocks", frozenset({2}), 0) is None


def test_a_block_shard_keeps_one_hash_seed_in_its_data_directory_and_refuses_a_damaged_one(tmp_path: Path) -> None:
    import pytest

    folder = tmp_path / "shard"
    seed = shard_snapshot.kept_hash_seed(folder)
    assert 1 <= int(seed) < 2**32 and shard_snapshot.kept_hash_seed(folder) == seed
    assert (folder / "blocks-hash-seed").stat().st_mode & 0o777 == 0o600
    (folder / "blocks-hash-seed").write_text("0\n")
    with pytest.raises(ValueError, match="does not hold a hash seed"):
        shard_snapshot.kept_hash_seed(folder)


def test_a_snapshot_of_many_partitions_fits_its_header_and_one_of_another_cluster_or_app_is_not_used(
        tmp_path: Path) -> None:
    """10,000 partitions (what the settings allow), every other one held: a list in the header
    did not fit past about 740. And a data directory reused against another cluster or app."""
    held = frozenset(range(0, 10_000, 2))
    path = tmp_path / "shard.snapshot"
    source = {"cluster_id": "cluster-a", "app_id": "caselink"}
    shard_snapshot.write(path, BlockAnswers(held, 10_000, max_block_size=3), 0,
                         {"made_with": made_with("blocks", trained_model()), **source})
    read = shard_snapshot.read
    loaded = read(path, "blocks", trained_model(), 10_000, 3, held, 0, source)
    assert loaded is not None and loaded.owned == held
    assert read(path, "blocks", trained_model(), 10_000, 3, held, 0, {**source, "cluster_id": "cluster-b"}) is None
    assert read(path, "blocks", trained_model(), 10_000, 3, held, 0, {**source, "app_id": "other"}) is None


def test_a_restored_shard_shares_each_record_key_and_its_records_repeating_values_as_a_replayed_one_does(
        tmp_path: Path) -> None:
    model = trained_model()
    light, whole, _scored = _answered(_messages(_a_log(), [True]), (1, 1), None)
    found = _tier(None, 1, lambda owned: BlockAnswers(owned, max_block_size=3), "blocks", light, merge_found)
    blocks, records = BlockAnswers(EVERY, max_block_size=3), RecordAnswers(model, EVERY)
    for change, answer in zip(whole, found, strict=True):
        records.apply(change, answer)
    for change in light:
        blocks.apply(change)
    for original in (blocks, records):
        tier = shard_snapshot.tier_of(original)
        (tmp_path / tier).mkdir()
        loaded = _read(_saved(original, len(whole), tmp_path / tier), tier, EVERY, len(whole))
        assert loaded is not None
        shard = loaded.answers.shard
        key_of = {id(k) for k in shard.versions}
        if isinstance(shard, type(blocks.shard)):
            assert shard.filed and all(id(k) in key_of for k in shard.filed)
            members = [m for v in shard.blocking.blocks.values() for m in ((v,) if type(v) is str else v)]
            assert members and all(id(m) in key_of for m in members)
        else:
            assert shard.records and all(id(k) in key_of and r.key is k for k, r in shard.records.items())
            assert all(id(k) in key_of for k in shard.present)
            families = {}
            for r in shard.records.values():  # a repeated family name is one object, as share_values makes it
                if r.family:
                    assert families.setdefault(r.family, r.family) is r.family


def _a_log() -> list[tuple[Any, ...]]:
    people = [{"given_names": g, "family_name": "Lee", "date_of_birth": "1990-04-03", "sex": "F",
               "addresses": [{"lines": ["12 Mill Lane"], "postcode": "LS6 2AB"}]} for g in ("Ann", "Anne", "Ann")]
    return [("upsert", f"health:{i}", 1, p) for i, p in enumerate(people)]
