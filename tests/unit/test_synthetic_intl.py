"""The Meridia generator: deterministic, complete truth, each agency's layout, clean when told to be,
borrowed numbers come from the household, twins look like twins, corruption at about its rate."""

from __future__ import annotations

import math
from dataclasses import fields
from datetime import date, datetime
from functools import cache
from pathlib import Path

import pandas as pd
import pytest
import yaml
from caselink.linkage import synthetic_intl as si


@cache
def dataset(people: int = 2500, seed: int = 5, clean: bool = False, **overrides: float) -> si.IntlDataset:
    rates = si.IntlRates.clean(**overrides) if clean else si.IntlRates(**overrides)
    return si.generate(people, seed, rates)


def records(ds: si.IntlDataset) -> dict[str, dict[str, str]]:
    out = {}
    for agency, frame in ds.agencies.items():
        for row in frame.to_dict("records"):
            out[f"{agency}:{row[si.RECORD_ID_COLUMN[agency]]}"] = row
    return out


def norm(text: str) -> str:
    return " ".join(si.strip_accents(text).casefold().split())


def test_the_same_seed_gives_the_same_data_and_another_seed_does_not() -> None:
    a, b = si.generate(800, seed=3), si.generate(800, seed=3)
    for agency in si.AGENCIES:
        pd.testing.assert_frame_equal(a.agencies[agency], b.agencies[agency])
    assert a.truth == b.truth
    assert a.applied == b.applied
    other = si.generate(800, seed=4)
    assert not other.register.equals(a.register)


def test_the_truth_covers_every_record_and_nothing_else() -> None:
    ds = dataset()
    keys = set(records(ds))
    assert sum(len(f) for f in ds.agencies.values()) == len(keys)  # record ids are unique in each agency
    assert keys == set(ds.truth)
    assert set(ds.truth.values()) <= set(ds.people["person_id"])
    assert len(ds.people) == 2500


def test_each_agency_has_its_own_layout() -> None:
    ds = dataset()
    for agency, frame in ds.agencies.items():
        assert list(frame.columns) == si.COLUMNS[agency]
        assert len(frame) > 0
        assert all(isinstance(v, str) for v in frame.to_numpy().ravel())
    assert "ssn" not in ds.register.columns
    assert not {"address", "street", "city", "postal_code", "zip"} & set(ds.social.columns)
    assert set(ds.register["sex"]) <= {"Male", "Female", ""}
    assert set(ds.social["sex_code"]) <= {"1", "2", ""}
    assert set(ds.social["status"]) == {"A", "D", "E"}
    assert set(ds.tax["line_type"]) == {"P", "S", "D"}
    assert set(ds.benefit["category"]) <= {"C", "M", "G"}
    ssns = ds.social["ssn"]
    assert ssns.str.fullmatch(r"\d{9}").all()


def test_clean_rates_give_clean_records() -> None:
    ds = dataset(clean=True)
    assert not any(ds.corruptions.values())
    assert not any(ds.applied.values())
    people = ds.people.set_index("person_id")
    formats = si.DATE_FORMATS
    for key, row in records(ds).items():
        agency = key.split(":", 1)[0]
        p = people.loc[ds.truth[key]]
        true_dob = date.fromisoformat(p["dob"])
        if agency == "register":
            first, last, dob = row["first_name"], row["last_name"], row["dob"]
            assert (row["street_number"], row["street_name"], row["unit"], row["city"], row["postal_code"]) == (
                p["census_number"], p["census_street"], p["census_unit"], p["census_city"], p["census_postal"])
            assert row["middle_initial"] == p["middle"][:1]
            assert row["sex"] == {"M": "Male", "F": "Female"}[p["sex"]]
        elif agency == "social":
            assert row["given_names"] == si.strip_accents(f"{p['first']} {p['middle']}".strip()).upper()
            first, last, dob = row["given_names"][:len(p["first"])], row["surname"], row["birth_date"]
            assert row["ssn"] == p["ssn"]
        elif agency == "tax":
            first, last, dob = row["given_name"][:len(p["first"])], row["surname"], row["dob"]
            assert row["ssn"] == p["ssn"]
            assert row["address"].startswith(f"{p['later_street']} {p['later_number']}") or row["line_type"] == "D"
        else:
            first, last, dob = row["first"][:len(p["first"])], row["last"], row["birth_date"]
            assert row["ssn"] == p["ssn"]
            assert row["street"] == f"{p['later_street']} {p['later_number']}" or row["category"] == "C"
            assert row["zip"] in ("", si.PLACEHOLDER_POSTCODE) or row["zip"][:2].isdigit()
        assert norm(first) == norm(p["first"]), key
        assert norm(last) == norm(p["surname"]), key
        assert datetime.strptime(dob, formats[agency]).date() == true_dob, key
    # One record per person per agency when nobody is registered twice.
    per_agency = pd.Series([f"{k.split(':')[0]}|{v}" for k, v in ds.truth.items()])
    assert not per_agency.duplicated().any()


def test_clean_data_still_has_the_hard_cases() -> None:
    ds = dataset(clean=True)
    people = ds.people
    assert (people["twin_of"] != "").sum() > 0
    assert (people["namesake_of"] != "").sum() > 0
    assert (people["birth_surname"] != "").sum() > 0
    moved = people["census_street"] + people["census_number"] != people["later_street"] + people["later_number"]
    assert moved.sum() > 0
    # No corruption means no registry-office postal code either.
    assert (ds.register["postal_code"] != si.REGISTRY_OFFICE_CODE).mean() > 0.9


def test_borrowed_numbers_come_from_another_member_of_the_household() -> None:
    ds = dataset(clean=True, ssn_borrowed=0.3)
    people = ds.people.set_index("person_id")
    owner = {ssn: pid for pid, ssn in people["ssn"].items() if ssn}
    rows = records(ds)
    borrowed = [k for k, applied in ds.corruptions.items() if "ssn_borrowed" in applied]
    assert len(borrowed) > 50
    assert {k.split(":")[0] for k in borrowed} == {"tax", "benefit"}
    for key in borrowed:
        pid = ds.truth[key]
        lender = owner[rows[key]["ssn"]]
        assert lender != pid
        assert people.loc[lender, "household_id"] == people.loc[pid, "household_id"]
    # And no record carries a number that is not its person's without being marked borrowed.
    for key, row in rows.items():
        if row.get("ssn") and key not in borrowed:
            assert owner[row["ssn"]] == ds.truth[key]


def test_twins_share_date_of_birth_address_and_surname_but_not_first_name() -> None:
    ds = dataset(clean=True, twin=0.2)
    people = ds.people.set_index("person_id")
    twins = people[people["twin_of"] != ""]
    assert len(twins) > 40
    for pid, p in twins.iterrows():
        other = people.loc[p["twin_of"]]
        assert other["twin_of"] == pid
        assert p["dob"] == other["dob"]
        assert p["household_id"] == other["household_id"]
        assert (p["census_street"], p["census_number"]) == (other["census_street"], other["census_number"])
        assert p["surname"] == other["surname"]
        assert p["first"] != other["first"]
    # In the register too: same date of birth, address and last name, different first names.
    in_register = {ds.truth[f"register:{r}"]: i for i, r in enumerate(ds.register["person_ref"])}
    pairs = 0
    for pid, p in twins.iterrows():
        if pid < p["twin_of"] and pid in in_register and p["twin_of"] in in_register:
            a = ds.register.iloc[in_register[pid]]
            b = ds.register.iloc[in_register[p["twin_of"]]]
            assert (a["dob"], a["street_name"], a["street_number"], a["last_name"]) == (
                b["dob"], b["street_name"], b["street_number"], b["last_name"])
            assert a["first_name"] != b["first_name"]
            pairs += 1
    assert pairs > 10


def test_namesakes_share_a_first_name_across_generations_in_one_household() -> None:
    people = dataset().people.set_index("person_id")
    namesakes = people[people["namesake_of"] != ""]
    assert len(namesakes) > 10
    for _, p in namesakes.iterrows():
        elder = people.loc[p["namesake_of"]]
        assert (elder["first"], elder["household_id"]) == (p["first"], p["household_id"])
        assert elder["dob"] < p["dob"]


def test_every_corruption_class_happens_at_about_its_rate() -> None:
    ds = si.generate(6000, seed=11)
    for f in fields(si.IntlRates):
        if f.metadata.get("group") != "corruption":
            continue
        chances, applied = ds.chances.get(f.name, 0), ds.applied.get(f.name, 0)
        assert chances > 0 and applied > 0, f.name
        rate = f.default
        sigma = math.sqrt(rate * (1 - rate) / chances)
        assert abs(applied / chances - rate) < 5 * sigma + 0.005, (f.name, applied, chances)


def test_the_docstring_lists_every_rate_with_its_default() -> None:
    for f in fields(si.IntlRates):
        assert f"``{f.name}`` {f.default}" in si.__doc__, f.name


def test_write_produces_csvs_truth_and_mappings(tmp_path: Path) -> None:
    ds = dataset(people=400)
    written = si.write(ds, tmp_path)
    names = {p.relative_to(tmp_path).as_posix() for p in written}
    assert names == {f"{a}.csv" for a in si.AGENCIES} | {"truth.csv"} | {f"mappings/{a}.yaml" for a in si.AGENCIES}
    for agency in si.AGENCIES:
        back = pd.read_csv(tmp_path / f"{agency}.csv", dtype=str, keep_default_na=False)
        pd.testing.assert_frame_equal(back, ds.agencies[agency].reset_index(drop=True))
        mapping = yaml.safe_load((tmp_path / "mappings" / f"{agency}.yaml").read_text(encoding="utf-8"))
        assert mapping["agency"] == agency
        assert mapping["source"]["kind"] == "csv"
        assert (tmp_path / "mappings" / mapping["source"]["path"]).resolve() == (tmp_path / f"{agency}.csv").resolve()
        assert mapping["record_id"] == si.RECORD_ID_COLUMN[agency]
        formats = mapping["fields"]["date_of_birth"]["format"]
        assert (formats if isinstance(formats, str) else formats[0]) == si.DATE_FORMATS[agency]
        assert ("ssn" in mapping["fields"].get("identifiers", {})) == (agency != "register")
        columns = set(si.COLUMNS[agency])
        for value in mapping["fields"].values():
            if isinstance(value, str):
                assert value in columns
    truth = pd.read_csv(tmp_path / "truth.csv", dtype=str)
    assert list(truth.columns) == ["record_key", "person_id"]
    assert dict(zip(truth["record_key"], truth["person_id"], strict=True)) == ds.truth


@pytest.mark.parametrize("people", [1, 7, 60])
def test_tiny_populations_work(people: int) -> None:
    ds = si.generate(people, seed=2)
    assert len(ds.people) == people
    assert set(ds.truth.values()) <= set(ds.people["person_id"])
