from pathlib import Path

import pytest
from caselink.connectors.files import read_csv, read_jsonl
from caselink.connectors.mapping import MappingError, RowError, load_mapping, parse_mapping, reference_apply

from caselink.demo import SAMPLES


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(text)
    return path


BASE = """agency: health
record_id: id
version: updated
fields:
  given_names: {from: [first, middle]}
  family_name: last
  date_of_birth: {from: dob, format: "%d/%m/%Y"}
  sex: {from: sex, map: {"1": M, "2": F}}
  other_names: {from: previous, split: ";"}
  identifiers:
    nhs_number: nhs
  addresses:
    - lines: {from: [line1, line2]}
      postcode: {from: pc, upper: true}
      country: {value: GB}
cases:
  - case_id: case
    case_type: {value: inpatient}
"""


def test_mapping_applies_renames_joins_dates_maps_and_constants(tmp_path: Path) -> None:
    mapping = load_mapping(_write(tmp_path, BASE))
    row = mapping.apply({"id": "42", "updated": "7", "first": "Ann", "middle": "Marie", "last": "Lee",
                         "dob": "03/04/1990", "sex": "2", "previous": "Smith;Jones", "nhs": "943 476 5919",
                         "line1": "1 High St", "line2": "", "pc": "ls6 2ab", "case": "IP-1"})
    assert row.record_id == "42" and row.version == 7 and not row.deleted
    p = row.person
    assert p["given_names"] == "Ann Marie"
    assert p["date_of_birth"] == "1990-04-03"
    assert p["sex"] == "F"
    assert p["other_names"] == ["Smith", "Jones"]
    assert p["identifiers"] == {"nhs_number": "943 476 5919"}
    assert p["addresses"][0]["lines"] == ["1 High St"] and p["addresses"][0]["postcode"] == "LS6 2AB"
    assert p["addresses"][0]["country"] == "GB"
    assert row.cases == [{"case_id": "IP-1", "case_type": "inpatient", "status": None, "opened_at": None,
                          "closed_at": None, "sensitivity": "normal"}]


def test_iso_timestamps_become_epoch_millisecond_versions(tmp_path: Path) -> None:
    mapping = load_mapping(_write(tmp_path, BASE))
    row = mapping.apply({"id": "1", "updated": "2026-11-01T09:00:00Z", "last": "Lee"})
    assert row.version == 1793523600000


@pytest.mark.parametrize(
    "row, field",
    [
        ({"id": "", "last": "Lee"}, "record_id"),
        ({"id": "1", "updated": "yesterday"}, "version"),
    ],
)
def test_row_errors_name_the_field(tmp_path: Path, row: dict, field: str) -> None:
    """Only what keys or orders the record fails the row."""
    mapping = load_mapping(_write(tmp_path, BASE))
    with pytest.raises(RowError) as err:
        mapping.apply(row)
    assert err.value.field == field


@pytest.mark.parametrize(
    "value, kept, problem",
    [
        ("31/02/2015", "2015-02-31", "not a calendar date"),  # the digits stay comparable
        ("05/o8/|993", "1993-08-05", "characters taken for the digits they resemble"),
        ("13/19/1968", "1968-19-13", "not a calendar date"),
        ("unknown", None, "left out"),
    ],
)
def test_a_bad_date_is_kept_raw_and_flagged_and_the_record_goes_on(tmp_path: Path, value: str, kept: str | None,
                                                                   problem: str) -> None:
    mapping = load_mapping(_write(tmp_path, BASE))
    for apply in (mapping.apply, lambda row: reference_apply(mapping, row)):
        row = apply({"id": "1", "last": "Lee", "dob": value, "sex": "2"})
        assert row.person["date_of_birth"] == kept and row.person["sex"] == "F"
        (flag,) = row.person["quality"]
        assert flag["field"] == "date_of_birth" and flag["raw"] == value and problem in flag["problem"]


def test_a_code_outside_the_map_is_left_out_and_flagged(tmp_path: Path) -> None:
    mapping = load_mapping(_write(tmp_path, BASE))
    row = mapping.apply({"id": "1", "last": "Lee", "sex": "7", "dob": "03/04/1990"})
    assert row.person["sex"] is None and row.person["date_of_birth"] == "1990-04-03"
    assert row.person["quality"] == [{"field": "sex", "problem": "value '7' is not in the map (1, 2); left out",
                                      "raw": "7"}]


def test_a_date_field_takes_a_list_of_formats_tried_in_order(tmp_path: Path) -> None:
    mapping = load_mapping(_write(tmp_path, BASE.replace('format: "%d/%m/%Y"', 'format: ["%d/%m/%Y", "%Y%m%d"]')))
    assert mapping.apply({"id": "1", "dob": "19900403"}).person["date_of_birth"] == "1990-04-03"
    assert mapping.apply({"id": "1", "dob": "03/04/1990"}).person["date_of_birth"] == "1990-04-03"
    assert mapping.apply({"id": "1", "dob": "03/04/1990"}).person["quality"] == []


def test_an_unknown_identifier_scheme_is_refused_at_load_with_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE.replace("    nhs_number: nhs\n", "    nhs_number: nhs\n    tax_ref: tax\n"))
    with pytest.raises(MappingError, match=r"m.yaml:12: fields.identifiers.tax_ref: identifier scheme 'tax_ref' is "
                                           r"not configured"):
        load_mapping(path)
    # The agency's own record number, named after the agency, is accepted (and never compared).
    load_mapping(_write(tmp_path, BASE.replace("    nhs_number: nhs\n", "    nhs_number: nhs\n    health_ref: ref\n")))


def test_join_makes_one_line_of_several_columns(tmp_path: Path) -> None:
    text = BASE.replace("    - lines: {from: [line1, line2]}", "    - lines: {from: [line1, line2], join: ' '}")
    mapping = load_mapping(_write(tmp_path, text))
    row = mapping.apply({"id": "1", "line1": "12", "line2": "High Street"})
    assert row.person["addresses"][0]["lines"] == ["12 High Street"]


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("agency: health\nrecord_id: id\nfields:\n  given_nmes: first\n", 4, "unknown person field 'given_nmes'"),
        ("agency: health\nrecord_id: id\nfields:\n  sex: {from: s, mapp: {}}\n", 4, "unknown key(s) mapp"),
        ("agency: health\nrecord_id: id\nfields:\n  date_of_birth: {from: d, value: x}\n", 4, "exactly one of"),
        ("agency: Health Board\nrecord_id: id\nfields: {}\n", 1, "agency must be lower-case"),
        ("agency: health\nfields: {}\n", 1, "missing required key 'record_id'"),
        ("agency: health\nrecord_id: id\nfields:\n  addresses:\n    - street: x\n", 5, "unknown address field"),
        ("agency: health\nrecord_id: [id\n", 3, "not valid YAML"),
    ],
)
def test_mapping_errors_name_file_and_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(MappingError) as err:
        load_mapping(path)
    assert f"{path}:{line}:" in str(err.value)
    assert message in str(err.value)


def test_delete_flag(tmp_path: Path) -> None:
    mapping = parse_mapping({"agency": "x", "record_id": "id", "op": {"from": "status", "delete_when": ["deleted"]},
                             "fields": {"family_name": "last"}})
    assert mapping.apply({"id": "1", "status": "Deleted"}).deleted
    assert not mapping.apply({"id": "1", "status": "active", "last": "Lee"}).deleted


def test_csv_reader_handles_bom_quotes_delimiters_and_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes("\ufeffid;name\n1;\"Lee; Ann\"\n2;O'Neill;extra\n3;Zoë\n".encode())
    rows = list(read_csv(path, delimiter=";"))
    assert rows[0].data == {"id": "1", "name": "Lee; Ann"}
    assert rows[1].data is None and "3 fields where the header has 2" in (rows[1].error or "")
    assert rows[2].data == {"id": "3", "name": "Zoë"}


def test_csv_reader_flags_rows_in_the_wrong_encoding(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b"id,name\n1,Ann\n2,Ren\xe9e\n3,Bob\n")  # latin-1 byte in a utf-8 file
    rows = list(read_csv(path))
    assert [r.data["id"] if r.data else None for r in rows] == ["1", None, "3"]
    assert "not valid utf-8" in (rows[1].error or "")
    latin = list(read_csv(path, encoding="latin-1"))
    assert latin[1].data == {"id": "2", "name": "Renée"}


def test_jsonl_reader_keeps_going_after_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"id": 1}\n{"id": \n[1,2]\n\xff\xfe\n{"id": 5}\n')
    rows = list(read_jsonl(path))
    assert [r.number for r in rows if r.data] == [1, 5]
    errors = [r.error for r in rows if r.error]
    assert "malformed JSON" in errors[0] and "JSON object" in errors[1] and "not valid utf-8" in errors[2]


def test_bundled_sample_mappings_load_and_map_every_good_row() -> None:
    for agency in ("health", "social_care", "police"):
        mapping = load_mapping(SAMPLES / "mappings" / f"{agency}.yaml")
        assert mapping.agency == agency
