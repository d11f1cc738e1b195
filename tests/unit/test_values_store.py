"""The resolver's store of record values (streams/values_store.py) on a real SQLite file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from caselink.linkage.blocking import blocking_keys
from caselink.linkage.models import default_model
from caselink.linkage.packed import pack
from caselink.linkage.record import LinkRecord, standardise_person
from caselink.streams.values_store import ValuesStore

RULES = default_model().rules


def _record(key: str, given: str) -> LinkRecord:
    return standardise_person(key, {"given_names": given, "family_name": "Lee", "date_of_birth": "1990-04-03",
                                    "identifiers": {"nhs_number": "9434765919"},
                                    "addresses": [{"lines": ["12 Mill Lane"], "postcode": "LS6 2AB"}]}, RULES)


def _slots(record: LinkRecord | None) -> dict[str, Any]:
    assert record is not None
    return {name: getattr(record, name) for name in LinkRecord.__slots__}


def test_the_latest_values_by_key_across_commits_and_a_reopening(tmp_path: Path) -> None:
    store = ValuesStore(tmp_path / "values.sqlite", RULES)
    store.put(_record("health:1", "Ann"))
    store.put(_record("health:2", "Bob"))
    assert _slots(store.get("health:1")) == _slots(_record("health:1", "Ann"))  # read before the commit
    store.commit()
    store.put(_record("health:1", "Anne"))
    store.delete("health:2")
    store.close()
    reopened = ValuesStore(tmp_path / "values.sqlite", RULES)
    assert _slots(reopened.get("health:1")) == _slots(_record("health:1", "Anne"))
    assert reopened.get("health:2") is None
    assert len(reopened) == 1
    reopened.clear()
    assert len(reopened) == 0 and reopened.get("health:1") is None


def test_the_normalisers_packed_bytes_are_kept_as_they_are(tmp_path: Path) -> None:
    record = _record("health:1", "Ann")
    packed = pack(record, blocking_keys(record, RULES.typo_schemes), RULES)
    store = ValuesStore(tmp_path / "values.sqlite", RULES)
    store.put(record, packed)
    store.commit()
    assert _slots(store.get("health:1")) == _slots(record)


def test_values_made_under_other_rules_are_refused_not_misread(tmp_path: Path) -> None:
    store = ValuesStore(tmp_path / "values.sqlite", RULES)
    store.put(_record("health:1", "Ann"))
    store.commit()
    other = RULES.with_learned(["zzz"], [])
    with pytest.raises(ValueError, match="other code or rules"):
        ValuesStore(tmp_path / "values.sqlite", other).get("health:1")


def test_rewound_to_a_position_it_holds_what_it_held_then_and_compaction_keeps_that(tmp_path: Path) -> None:
    store = ValuesStore(tmp_path / "values.sqlite", RULES)
    store.put(_record("health:1", "Ann"), seq=1)
    store.put(_record("health:2", "Bob"), seq=2)
    store.commit()
    store.put(_record("health:1", "Anne"), seq=5)
    store.delete("health:2", seq=6)
    store.put(_record("health:3", "Cy"), seq=7)
    store.commit()
    store.put(_record("health:1", "Annie"), seq=9)
    store.put(_record("health:2", "Bobby"), seq=10)
    store.commit()
    # a snapshot at 8 is written: what no rewind to 8 or later needs goes (Ann at 1, and Bob's
    # values and his leaving, both replaced below 8)
    assert store.compact(8) == 3
    store.rewind(8)
    assert _slots(store.get("health:1")) == _slots(_record("health:1", "Anne"))
    assert store.get("health:2") is None  # left at 6; Bobby (10) is past the position
    assert _slots(store.get("health:3")) == _slots(_record("health:3", "Cy"))
    assert len(store) == 2


def test_a_store_emptied_is_another_store(tmp_path: Path) -> None:
    store = ValuesStore(tmp_path / "values.sqlite", RULES)
    first = store.store_id
    store.close()
    reopened = ValuesStore(tmp_path / "values.sqlite", RULES)
    assert reopened.store_id == first  # the same contents: a snapshot taken with it still fits
    reopened.clear()
    assert reopened.store_id != first
