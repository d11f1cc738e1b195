"""Sharded scoring gives the single writer's answer, change by change, for any number of shards.

Logs are drawn from the tiny pools of ``test_order_independence`` (most records block together,
many link, identifiers conflict often) with stale and unversioned changes, deletes, unlinkable
versions, reviewers' verdicts and their undoing; blocking caps and the citizen size guard are
forced small so that capped keys and refused joins happen. Each log is applied to the single
writer and to ``ShardedIndex`` with 1, 2, 3 and 7 shards in each tier (and unequal tiers): every
result and the final index must be the same.
"""

from __future__ import annotations

import zlib
from typing import Any

import pytest
from caselink.linkage.index import CitizenIndex, LinkResult
from caselink.linkage.shards import ShardedIndex, key_partition, merge, shard_partitions
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.depth import examples
from tests.linkage_fixtures import comparable_state, trained_model
from tests.unit.test_order_independence import people

Change = tuple[Any, ...]
KEYS = tuple(f"{agency}:{i}" for agency in ("health", "police", "social_care") for i in range(4))
SHARDS = ((1, 1), (2, 2), (3, 3), (7, 7), (2, 3), (3, 1))  # (block shards, record shards)
UNLINKABLE = {"given_names": "", "family_name": "", "identifiers": {}}  # nothing to link on


@st.composite
def logs(draw: Any) -> list[Change]:
    log: list[Change] = []
    version: dict[str, int] = {}
    for _ in range(draw(st.integers(3, 24))):
        kind = draw(st.sampled_from(("upsert",) * 6 + ("delete", "stale", "unversioned", "unlinkable",
                                                       "review", "review", "undo")))
        key = draw(st.sampled_from(KEYS))
        if kind in ("review", "undo"):
            other = draw(st.sampled_from(KEYS))
            if other != key:
                log.append((kind, key, other, draw(st.booleans())))
            continue
        if kind == "unversioned":
            log.append(("upsert", key, None, draw(people())))
            continue
        if kind == "stale" and version.get(key):
            log.append(("upsert", key, draw(st.integers(0, version[key])), draw(people())))
            continue
        version[key] = version.get(key, 0) + draw(st.integers(1, 2))
        if kind == "delete":
            log.append(("delete", key, version[key]))
        else:
            log.append(("upsert", key, version[key], UNLINKABLE if kind == "unlinkable" else draw(people())))
    return log


def _apply(index: CitizenIndex | ShardedIndex, log: list[Change]) -> list[LinkResult]:
    results = []
    for change in log:
        match change:
            case ("upsert", key, version, person):
                results.append(index.upsert(key, person, version))
            case ("delete", key, version):
                results.append(index.delete(key, version))
            case ("review", a, b, same):
                results.append(index.apply_review(a, b, same))
            case ("undo", a, b, _):
                results.append(index.undo_review(a, b))
    return results


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None, max_examples=examples(1000))
@given(log=logs(), block=st.integers(2, 5), guard=st.sampled_from((3, 4, None)))
def test_every_result_and_the_final_index_are_the_single_writers(log: list[Change], block: int,
                                                                  guard: int | None) -> None:
    model = trained_model()
    single = CitizenIndex(model, max_block_size=block, max_citizen_records=guard)
    expected = _apply(single, log)
    for shards, record_shards in SHARDS:
        sharded = ShardedIndex(model, shards, record_shards, max_block_size=block, max_citizen_records=guard)
        label = f"{shards} block shards, {record_shards} record shards"
        assert _apply(sharded, log) == expected, label
        assert comparable_state(sharded.resolver) == comparable_state(single), label
        capped = set().union(*(s.blocking.capped_names.values() for s in sharded.blocks))
        assert capped == set(single.blocking.capped_names.values()), label
        assert all(shard.owns(name) for shard in sharded.blocks for name in shard.blocking.capped_names.values())


def test_caps_and_reviews_happen_in_the_generated_logs() -> None:
    """The property above is only worth something if its logs reach caps, guards and verdicts:
    one fixed log of that shape does all three."""
    model = trained_model()
    person = {"given_names": "Ann", "family_name": "Lee", "date_of_birth": "1990-04-03", "sex": "F",
              "addresses": [{"lines": ["12 Mill Lane"], "postcode": "LS6 2AB", "locality": "Leeds"}]}
    log: list[Change] = [("upsert", key, 1, person) for key in KEYS[:6]]
    log += [("review", KEYS[0], KEYS[5], False), ("undo", KEYS[0], KEYS[5], False), ("delete", KEYS[2], 2)]
    single = CitizenIndex(model, max_block_size=3, max_citizen_records=4)
    expected = _apply(single, log)
    # Blocks cap after three records (the fifth and sixth find nobody), the verdict and its undoing
    # apply, and undoing it offers a join the size guard refuses.
    assert [r.outcome for r in expected] == ["NEW_CITIZEN", "LINKED", "LINKED", "LINKED", "NEW_CITIZEN",
                                             "NEW_CITIZEN", "UPDATED", "UPDATED", "DELETED"]
    assert single.blocking.capped and expected[7].guarded and single.size_refusals == 1
    for shards in (2, 7):
        assert _apply(ShardedIndex(model, shards, max_block_size=3, max_citizen_records=4), log) == expected


def test_a_key_belongs_to_the_same_partition_in_every_process() -> None:
    # CRC-32, a fixed function of the bytes: Python's str hash differs between processes.
    assert key_partition("a", 60) == 0xE8B7BE43 % 60
    assert key_partition("health:1", 7) == zlib.crc32(b"health:1") % 7


def test_partitions_are_dealt_to_shards_without_overlap_or_gap() -> None:
    dealt = [shard_partitions(i, 7) for i in range(7)]
    assert set().union(*dealt) == set(range(60))
    assert sum(len(d) for d in dealt) == 60
    with pytest.raises(ValueError, match="shard 3 of 3"):
        shard_partitions(3, 3)


def test_shards_that_disagree_about_staleness_are_an_error_not_a_guess() -> None:
    from caselink.linkage.scoring import Scored

    with pytest.raises(ValueError, match="disagree"):
        merge([Scored(), None])
    assert merge([None, None]) is None


def test_a_resolver_refuses_a_change_without_its_shards_answer() -> None:
    resolver = CitizenIndex(trained_model(), resolver=True)
    with pytest.raises(ValueError, match="scoring shards"):
        resolver.upsert("health:1", {"given_names": "Ann", "family_name": "Lee", "date_of_birth": "1990-04-03"}, 1)
