"""A model trained once on synthetic data, shared by the linkage tests."""

from __future__ import annotations

from functools import lru_cache

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
