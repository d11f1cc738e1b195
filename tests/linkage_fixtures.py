"""A model trained once on synthetic data, shared by the linkage tests."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from caselink.linkage.index import CitizenIndex
from caselink.linkage.model import LinkageModel
from caselink.linkage.record import LinkRecord, standardise_person
from caselink.linkage.synthetic import records_for_size
from caselink.linkage.training import train_model


@lru_cache(maxsize=1)
def synthetic_data(n: int = 4000) -> tuple[list[LinkRecord], dict[str, str], dict[str, dict]]:
    records, truth, people = [], {}, {}
    for item in records_for_size(n, seed=11):
        key = f"{item['agency']}:{item['source_record_id']}"
        records.append(standardise_person(key, item["person"]))
        truth[key] = item["truth"]
        people[key] = item["person"]
    return records, truth, people


@lru_cache(maxsize=1)
def trained_model() -> LinkageModel:
    records, _, _ = synthetic_data()
    return train_model(records, version="test-model", u_pairs=100_000)


def person(given: str, family: str, dob: str, postcode: str = "LS6 2AB", nhs: str | None = None,
           address: str = "12 Mill Lane", **extra: object) -> dict:
    p = {"given_names": given, "family_name": family, "date_of_birth": dob,
         "addresses": [{"lines": [address], "postcode": postcode, "locality": "Leeds"}],
         "identifiers": {"nhs_number": nhs} if nhs else {}}
    p.update(extra)
    return p


def comparable_state(index: CitizenIndex) -> dict[str, Any]:
    """An index's state as a single writer and a sharded index's resolver can both show it: each
    record by its citizen, sequence, version and identifiers, not its values (a resolver holds
    none), and no blocks (a resolver has none; the shards' caps are checked apart)."""
    state = index.state()
    state["records"] = {k: (s.citizen_id, s.seq, s.source_version, s.record.key, dict(s.record.ids))
                        for k, s in index.records.items()}
    state.pop("capped_blocking_keys")
    return state
