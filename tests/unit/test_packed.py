"""Packed standardised records: an exact round trip, and refused unless this code packed them."""

import marshal

import pytest
from caselink.linkage import packed
from caselink.linkage.blocking import blocking_keys
from caselink.linkage.packed import FINGERPRINT, pack, stamp, unpack
from caselink.linkage.record import standardise_person
from caselink.linkage.rules import DEFAULT_RULES
from caselink.streams.linker_core import LinkerCore

from tests.linkage_fixtures import person, synthetic_data, trained_model
from tests.unit.test_case_codec import _case_events


def _people() -> list[tuple[str, dict]]:
    _, _, people = synthetic_data()
    extra = {"health:X1": person("Mary-Jane", "Smith Jones", "1984-02-30", nhs="9434765919", phones=["07700 900123"],
                                 emails=["MJ@Example.org"], other_names=["Brown"], sex="F")}
    return [*list(people.items())[:300], *extra.items()]


def test_a_packed_record_unpacks_to_what_standardising_makes() -> None:
    for key, p in _people():
        record = standardise_person(key, p)
        got = unpack(pack(record, blocking_keys(record)), key)
        assert got is not None
        assert {s: getattr(got[0], s) for s in record.__slots__} == {s: getattr(record, s) for s in record.__slots__}
        assert got[1] == blocking_keys(record)


def test_records_packed_by_other_code_or_damaged_or_for_another_record_are_refused() -> None:
    key, p = _people()[-1]
    record = standardise_person(key, p)
    data = pack(record, blocking_keys(record))
    assert unpack(data, "health:OTHER") is None
    assert unpack(b"\x00" * 8 + data[8:], key) is None  # another version of the code
    assert unpack(data[:8] + data[8:40], key) is None  # cut short
    assert unpack(data[:8] + marshal.dumps(("not", "a", "record")), key) is None
    assert unpack(data[:8] + marshal.dumps(((1,), None, None, [])), key) is None  # too few fields
    assert unpack(None, key) is None and unpack(b"", key) is None
    assert data.startswith(stamp(DEFAULT_RULES))
    # Packed under other rules (another deployment's identifier schemes or filler names): refused.
    other = DEFAULT_RULES.with_learned({"mary"}, ())
    assert unpack(pack(record, blocking_keys(record), other), key) is None
    assert unpack(pack(record, blocking_keys(record), other), key, other) is not None


def test_values_of_the_wrong_kind_are_refused() -> None:
    key, p = _people()[-1]
    record = standardise_person(key, p)
    values, dob, postcode, keys = marshal.loads(pack(record, blocking_keys(record))[8:])
    slots = list(packed._SLOTS)

    def with_slot(name: str, value: object) -> tuple:
        changed = list(values)
        changed[slots.index(name)] = value
        return tuple(changed)

    assert unpack(stamp(DEFAULT_RULES) + marshal.dumps((values, dob, postcode, keys)), key) is not None
    for bad in [
        (with_slot("given", 5), dob, postcode, keys),
        (with_slot("key", None), dob, postcode, keys),
        (with_slot("family_parts", ("a", 1)), dob, postcode, keys),
        (with_slot("family_parts", ["a"]), dob, postcode, keys),
        (with_slot("phones", frozenset({1})), dob, postcode, keys),
        (with_slot("ids", {"nhs_number": 9434765919}), dob, postcode, keys),
        (with_slot("ids", {1: "x"}), dob, postcode, keys),
        (values, ("19840230",), postcode, keys),
        (values, ("19840230", "yes"), postcode, keys),
        (values, dob, ("LS62AB", 1, None, None), keys),
        (values, dob, postcode, [*keys, 7]),
        (values, dob, postcode, tuple(keys)),
        (values[:-1], dob, postcode, keys),
    ]:
        assert unpack(stamp(DEFAULT_RULES) + marshal.dumps(bad), key) is None, bad


def test_the_fingerprint_follows_the_code(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    here = packed._HERE
    for name in packed._SOURCES:
        (tmp_path / name).write_bytes((here / name).read_bytes())
    monkeypatch.setattr(packed, "_HERE", tmp_path)
    assert packed._fingerprint() == FINGERPRINT
    (tmp_path / "blocking.py").write_bytes((here / "blocking.py").read_bytes() + b"\n# changed\n")
    assert packed._fingerprint() != FINGERPRINT


def test_the_linker_decides_the_same_with_or_without_the_packed_records(monkeypatch: pytest.MonkeyPatch) -> None:
    from caselink.linkage import index
    from caselink.schemas import default_serde

    standardised = []
    monkeypatch.setattr(index, "standardise_person", lambda *a: standardised.append(a[0]) or standardise_person(*a))
    serde = default_serde()
    plain, fed = LinkerCore(trained_model()), LinkerCore(trained_model())
    used = 0
    for value in _case_events():
        event = serde.decode(value)[1]
        key = f"{event['agency']}:{event['source_record_id']}"
        data = None
        if event["op"] == "UPSERT":
            record = standardise_person(key, event["person"])
            data = pack(record, blocking_keys(record))
            used += 1
        standardised.clear()
        from_packed = fed.apply(value, packed=data)
        assert standardised == []  # the packed record was used, not the event standardised again
        assert from_packed == plain.apply(value)
    assert used > 500
