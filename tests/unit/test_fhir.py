import pytest
from caselink.connectors.fhir import NHS_NUMBER_SYSTEM, bundle_rows, patient_to_row
from caselink.connectors.mapping import RowError

PATIENT = {
    "resourceType": "Patient", "id": "p1", "meta": {"versionId": "3"},
    "identifier": [{"system": NHS_NUMBER_SYSTEM, "value": "9434765919"},
                   {"system": "https://trust.example/Id/mrn", "value": "MRN-7"}],
    "name": [{"use": "official", "family": "Lee", "given": ["Ann", "Marie"]}, {"use": "maiden", "family": "Smith"}],
    "gender": "female", "birthDate": "1990-04-03",
    "address": [{"line": ["12 Mill Lane"], "city": "Leeds", "postalCode": "LS6 2AB", "country": "GB",
                 "period": {"start": "2020-01-01"}}],
    "telecom": [{"system": "phone", "value": "07700 900123"}, {"system": "email", "value": "ann@example.org"}],
}


def test_patient_maps_to_the_canonical_person() -> None:
    row = patient_to_row(PATIENT)
    assert (row.record_id, row.version, row.deleted) == ("p1", 3, False)
    p = row.person
    assert p["given_names"] == "Ann Marie" and p["family_name"] == "Lee" and p["other_names"] == ["Smith"]
    assert p["identifiers"] == {"nhs_number": "9434765919", "mrn": "MRN-7"}
    assert p["sex"] == "F" and p["date_of_birth"] == "1990-04-03"
    assert p["addresses"][0]["postcode"] == "LS6 2AB" and p["addresses"][0]["valid_from"] == "2020-01-01"
    assert p["phones"] == ["07700 900123"] and p["emails"] == ["ann@example.org"]


@pytest.mark.parametrize("change, field", [
    ({"resourceType": "Observation"}, "resourceType"),
    ({"id": None}, "id"),
    ({"gender": "f"}, "gender"),
    ({"identifier": [{"value": "x"}]}, "identifier[0]"),
])
def test_bad_patients_name_the_element(change: dict, field: str) -> None:
    with pytest.raises(RowError) as err:
        patient_to_row({**PATIENT, **change})
    assert err.value.field == field


def test_bundle_entries_including_deletes_and_bad_ones() -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": PATIENT, "request": {"method": "PUT", "url": "Patient/p1"}},
        {"request": {"method": "DELETE", "url": "Patient/p2"}},
        {"resource": {**PATIENT, "gender": "?"}},
    ]}
    rows = list(bundle_rows(bundle))
    assert rows[0][1].record_id == "p1"
    assert rows[1][1].deleted and rows[1][1].record_id == "p2"
    assert isinstance(rows[2][1], RowError) and rows[2][1].field == "entry[2].gender"


@pytest.mark.parametrize("change, field", [
    ({"name": "Ann Lee"}, "name"),
    ({"name": ["Ann Lee"]}, "name[0]"),
    ({"name": [{"given": "Ann"}]}, "name.given"),
    ({"identifier": {"system": NHS_NUMBER_SYSTEM, "value": "1"}}, "identifier"),
    ({"identifier": [{"system": NHS_NUMBER_SYSTEM, "value": {"x": 1}}]}, "identifier[0].value"),
    ({"telecom": "07700 900123"}, "telecom"),
    ({"address": [7]}, "address[0]"),
    ({"address": [{"line": "12 Mill Lane"}]}, "address[0].line"),
    ({"address": [{"period": "2020"}]}, "address[0].period"),
    ({"meta": "v3"}, "meta"),
    ({"gender": ["female"]}, "gender"),
    ({"id": {"value": "p1"}}, "id"),
    ({"birthDate": 19900403}, "birthDate"),
])
def test_wrong_shapes_are_row_errors_naming_the_element(change: dict, field: str) -> None:
    """D5: these raised AttributeError/TypeError (a 500 from the HTTP ingest) instead of a 4xx."""
    with pytest.raises(RowError) as err:
        patient_to_row({**PATIENT, **change})
    assert err.value.field == field


def test_a_bundle_whose_entry_is_not_an_array_is_a_row_error() -> None:
    with pytest.raises(RowError) as err:
        list(bundle_rows({"resourceType": "Bundle", "entry": {"resource": PATIENT}}))
    assert err.value.field == "entry"
    rows = list(bundle_rows({"resourceType": "Bundle", "entry": ["x", {"request": "DELETE"}]}))
    assert [r.field for _, r in rows] == ["entry[0]", "entry[1].request"]


@pytest.mark.parametrize("change, field", [
    ({"provision": "permit"}, "provision"),
    ({"patient": "Patient/p1"}, "patient"),
    ({"status": ["active"]}, "status"),
    ({"category": [{"coding": "national-opt-out"}]}, "category[0].coding"),
    ({"provision": {"type": "permit", "purpose": [{"code": 7}]}}, "provision.purpose[0].code"),
    ({"policyRule": "text"}, "policyRule"),
])
def test_consent_shapes_are_row_errors(change: dict, field: str) -> None:
    from caselink.connectors.fhir import consent_to_event

    consent = {"resourceType": "Consent", "id": "c1", "status": "active", "patient": {"reference": "Patient/p1"},
               "provision": {"type": "permit", "purpose": [{"code": "research"}]}}
    consent_to_event(consent, "health")  # the unchanged one maps
    with pytest.raises(RowError) as err:
        consent_to_event({**consent, **change}, "health")
    assert err.value.field == field
