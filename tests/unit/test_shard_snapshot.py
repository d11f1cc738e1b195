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
