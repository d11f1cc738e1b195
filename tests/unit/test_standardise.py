import pytest
from caselink.linkage.nicknames import canonical_given_name
from caselink.linkage.record import UnknownSchemeError, UnlinkableRecordError, standardise_person
from caselink.linkage.schemes import BUILT_IN, nhs_modulus_11
from caselink.linkage.standardise import (
    clean_text,
    standardise_address,
    standardise_date,
    standardise_family,
    standardise_given,
    standardise_postcode,
    standardise_sex,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.depth import examples


def test_names_lose_case_accents_punctuation_and_titles() -> None:
    assert clean_text("  Zoë  O'Brien ") == "zoe obrien"
    assert standardise_given("Dr. Mary-Jane Ann") == ("mary", "jane ann")
    assert standardise_family("O'Neill-Smith") == ("oneillsmith", ("oneill", "smith"))
    assert standardise_family("van der Berg") == ("vanderberg", ("vanderberg",))
    assert standardise_given(float("nan")) == (None, None)


def test_nicknames_map_to_one_form() -> None:
    assert canonical_given_name("bill") == canonical_given_name("william") == "william"
    assert canonical_given_name("zebedee") == "zebedee"


@pytest.mark.parametrize(
    "raw, digits, valid",
    [
        ("2014-03-07", "20140307", True),
        ("20140307", "20140307", True),
        ("1968-19-06", "19681906", False),  # a mapping kept the digits of an impossible date, flagged
        ("19561309", "19561309", False),  # typo kept for comparison, flagged
    ],
)
def test_dates(raw: str, digits: str, valid: bool) -> None:
    d = standardise_date(raw)
    assert d is not None and d.digits == digits and d.valid is valid


def test_unreadable_dates_are_missing_not_guessed() -> None:
    assert standardise_date("next tuesday") is None
    assert standardise_date("03/07/2014") is None  # a source's own layout is the mapping's to read
    assert standardise_date("") is None


def test_filler_names_count_as_missing() -> None:
    fillers = frozenset({"unknown", "baby girl", "baby"})
    assert standardise_given("BABY GIRL", fillers) == (None, None)
    assert standardise_given("Baby Maria", fillers) == ("maria", None)
    assert standardise_family("Unknown", fillers) == (None, ())
    assert standardise_family("X") == (None, ())  # a lone letter is an initial, not a family name
    assert standardise_given("X") == ("x", None)  # a given-name initial is still evidence


def test_sex_codes() -> None:
    assert [standardise_sex(x) for x in ("female", "M", "2", "unknown", None, "I")] == ["F", "M", "F", None, None, "X"]


def test_uk_postcode_parts_and_foreign_codes_kept() -> None:
    pc = standardise_postcode("ls6 2ab")
    assert pc is not None and (pc.code, pc.sector, pc.district, pc.area) == ("LS62AB", "LS62", "LS6", "LS")
    foreign = standardise_postcode("75011")
    assert foreign is not None and foreign.code == "75011" and foreign.sector is None


def test_address_abbreviations() -> None:
    assert standardise_address(["12 Mill Rd.", "Flat 3"]) == "12 mill road flat 3"


def test_nhs_number_check_digit() -> None:
    assert nhs_modulus_11("9434765919")
    assert not nhs_modulus_11("9434765918")
    assert not nhs_modulus_11("943476591")


def test_ni_number_format() -> None:
    ni = BUILT_IN["ni_number"]
    assert ni.problem("AB123456C") is None
    assert ni.problem("GB123456C") is not None
    assert ni.problem("AB12345C") is not None


def test_invalid_identifier_is_flagged_and_not_used() -> None:
    r = standardise_person("h:1", {"family_name": "Smith", "date_of_birth": "2000-01-01",
                                   "identifiers": {"nhs_number": "943 476 5918", "h_local": "X1"}})
    assert r.ids == {}
    assert r.invalid_ids == {"nhs_number": "9434765918"}


def test_an_unknown_identifier_scheme_is_an_error_not_ignored() -> None:
    with pytest.raises(UnknownSchemeError, match="'tax_ref' is not configured"):
        standardise_person("health:1", {"family_name": "Smith", "date_of_birth": "2000-01-01",
                                        "identifiers": {"tax_ref": "X1"}})
    # The agency's own record number, named after the agency, is kept out of comparison quietly.
    r = standardise_person("health:1", {"family_name": "Smith", "date_of_birth": "2000-01-01",
                                        "identifiers": {"health_patient_id": "X1", "ssn": "123-45-6780"}})
    assert r.ids == {"ssn": "123456780"}


def test_identifier_placeholders_are_not_identifiers() -> None:
    r = standardise_person("tax:1", {"family_name": "Smith", "date_of_birth": "2000-01-01",
                                     "identifiers": {"ssn": "000-00-0000"}})
    assert r.ids == {} and r.invalid_ids == {"ssn": "000000000"}


def test_record_with_nothing_linkable_is_rejected_with_reason() -> None:
    with pytest.raises(UnlinkableRecordError, match="lacks a name"):
        standardise_person("p:1", {"date_of_birth": "2000-01-01", "identifiers": {"nhs_number": "1234567890"}})
    with pytest.raises(UnlinkableRecordError, match="date of birth or address"):
        standardise_person("p:2", {"given_names": "Ann", "family_name": "Lee"})
    ok = standardise_person("p:3", {"identifiers": {"nhs_number": "9434765919"}})
    assert ok.ids == {"nhs_number": "9434765919"}


def test_blocking_index_caps_and_reports_common_keys() -> None:
    from caselink.linkage.blocking import BlockingIndex

    index = BlockingIndex(max_block_size=3)
    for i in range(5):
        index.add(f"r{i}", ["common", f"own{i}"])
    assert index.candidates(["own2"]) == {"r2"}
    assert index.candidates(["common", "own1"], exclude="r1") == set()  # capped: no candidates from it
    assert index.report() == [("common", 5)]
    index.add("r9", ["pair"])
    index.add("r8", ["pair"])
    index.remove("r9", ["pair"])
    assert index.candidates(["pair"]) == {"r8"} and index.size("pair") == 1
    index.remove("r8", ["pair"])
    assert index.size("pair") == 0


@settings(max_examples=examples(2000), deadline=None)
@given(st.text())
def test_strip_accents_fast_path_agrees_with_nfkd(text: str) -> None:
    import unicodedata

    from caselink.linkage.standardise import strip_accents

    expected = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    assert strip_accents(text) == expected


def test_remembered_standardisers_give_the_same_answers_for_any_input() -> None:
    from caselink.linkage.standardise import clean_text, standardise_date, standardise_family, standardise_postcode

    for _ in range(2):  # the second round is answered from the cache
        assert standardise_family("O'Neill-Smith") == ("oneillsmith", ("oneill", "smith"))
        assert standardise_date("1990-04-03") == standardise_date("19900403")
        assert standardise_family("Unknown", frozenset({"unknown"})) == (None, ())
        assert standardise_postcode("m1 1aa").sector == "M11"
        assert clean_text(12.5) == clean_text("12.5") is None  # not text: computed, not cached
        assert clean_text(float("nan")) is None
        assert clean_text(["a list"]) == "a list"  # unhashable input is not an error
    assert standardise_family.cache_info().hits > 0


def _nhs_reference(value: str) -> bool:
    """The modulus-11 rule written out plainly."""
    if len(value) != 10 or not value.isdigit():
        return False
    check = 11 - sum(int(d) * w for d, w in zip(value[:9], range(10, 1, -1), strict=True)) % 11
    check = 0 if check == 11 else check
    return check != 10 and check == int(value[9])


# Mostly ASCII digits (about one in eleven is a valid number), sometimes other scripts' digits.
_DIGITS = st.sampled_from("0123456789") | st.sampled_from("٠١٢٣٤٥٦٧٨٩०१२")


@settings(max_examples=examples(2000), deadline=None)
@given(value=st.text(_DIGITS, min_size=9, max_size=11) | st.text(max_size=10))
def test_nhs_number_check_agrees_with_the_plain_rule(value: str) -> None:
    assert nhs_modulus_11(value) == _nhs_reference(value)


def test_equal_values_of_different_records_are_one_object() -> None:
    """standardise_person shares repeating values (the index's memory depends on it), whether
    or not a standardiser's cache already returned the same object."""
    from caselink.linkage.record import share_values

    person = {"given_names": "Ann", "family_name": "Lee", "date_of_birth": "1990-01-02",
              "addresses": [{"lines": ["1 High St"], "locality": "Leeds", "postcode": "LS1 4AP"}]}
    a = standardise_person("a:1", person)
    b = standardise_person("b:1", dict(person))
    assert a.family is b.family and a.dob is b.dob and a.postcode is b.postcode and a.locality is b.locality
    c = standardise_person("c:1", person)
    c.family = "".join(list(a.family))  # equal, but another object
    assert c.family == a.family and c.family is not a.family
    assert share_values(c).family is a.family
