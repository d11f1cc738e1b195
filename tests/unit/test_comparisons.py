"""Comparison functions that skip work must give the levels of their plain definitions."""

from caselink.linkage.comparisons import MISSING, _location
from caselink.linkage.record import LinkRecord, standardise_person
from hypothesis import given, settings
from hypothesis import strategies as st
from rapidfuzz.distance import DamerauLevenshtein, JaroWinkler
from rapidfuzz.fuzz import token_set_ratio

from tests.depth import examples


def _location_reference(a: LinkRecord, b: LinkRecord) -> int:
    """The location levels written out without shortcuts: every input computed every time."""
    pa, pb, xa, xb = a.postcode, b.postcode, a.address, b.address
    if (pa is None or pb is None) and (not xa or not xb) and (not a.locality or not b.locality):
        return MISSING
    same_pc = pa is not None and pb is not None and pa.code == pb.code
    near_pc = pa is not None and pb is not None and (
        (pa.sector is not None and pa.sector == pb.sector) or DamerauLevenshtein.distance(pa.code, pb.code) <= 1)
    addr = token_set_ratio(xa, xb) if xa and xb else -1.0
    if addr >= 90 and same_pc:
        return 0
    if addr >= 90 and (near_pc or pa is None or pb is None) and (
            a.locality is None or b.locality is None or a.locality == b.locality):
        return 1
    if same_pc and addr >= 70:
        return 2
    if same_pc:
        return 3
    if addr >= 70 and (a.locality == b.locality or near_pc):
        return 4
    if near_pc:
        return 5
    if (pa is not None and pb is not None and pa.district is not None and pa.district == pb.district) or (
            a.locality and b.locality and JaroWinkler.normalized_similarity(a.locality, b.locality) >= 0.88):
        return 6
    return 7


# Few values, so that equal and near-equal postcodes, streets and towns come up often.
POSTCODES = st.sampled_from([None, "M1 1AA", "M1 1AB", "M1 2AA", "M11 1AA", "M2 9ZZ", "LS6 2QT", "1011AB"])
STREETS = st.sampled_from([None, [], ["3 Oak Road"], ["3 Oak Rd", "Flat 2"], ["5 Oak Road"], ["3 Elm Street"],
                           ["Oak Road"], ["12 Station Approach", "Leeds"]])
TOWNS = st.sampled_from([None, "Manchester", "Manchestre", "Leeds", "Salford"])


@st.composite
def records(draw: st.DrawFn) -> LinkRecord:
    address = {"lines": draw(STREETS), "postcode": draw(POSTCODES), "locality": draw(TOWNS)}
    person = {"given_names": "Ann", "family_name": "Lee", "date_of_birth": "1990-04-03", "addresses": [address]}
    return standardise_person("x:1", person)


@settings(max_examples=examples(3000), deadline=None)
@given(records(), records())
def test_location_matches_its_reference(a: LinkRecord, b: LinkRecord) -> None:
    assert _location(a, b) == _location_reference(a, b)
    assert _location(b, a) == _location_reference(b, a)


@settings(max_examples=examples(5000), deadline=None)
@given(st.text("abc12", max_size=7), st.text("abc12", max_size=7))
def test_one_edit_by_osa_is_one_edit_by_damerau_levenshtein(x: str, y: str) -> None:
    from rapidfuzz.distance import OSA

    assert (OSA.distance(x, y) <= 1) == (DamerauLevenshtein.distance(x, y) <= 1)
