"""HTTP ingest against the real broker: auth, validation with field paths, 202 after the ack, FHIR."""

import pytest
from caselink.connectors.fhir import NHS_NUMBER_SYSTEM
from caselink.connectors.http_ingest import create_ingest_app
from caselink.infra.topics import caselink_topics, ensure_topics, person_events_topic
from caselink.schemas import default_serde
from fastapi.testclient import TestClient
from pydantic import SecretStr

from caselink.core.kafka import read_to_end
from caselink.core.settings import IngestSettings, Settings

pytestmark = pytest.mark.integration

HEALTH = {"Authorization": "Bearer health-secret"}
POLICE = {"Authorization": "Bearer police-secret"}


@pytest.fixture
def client(settings: Settings, admin) -> TestClient:
    ensure_topics(admin, caselink_topics(["health", "police"], []))
    configured = settings.model_copy(update={"ingest": IngestSettings(
        tokens={"health": SecretStr("health-secret"), "police": SecretStr("police-secret")}, max_body_bytes=20_000)})
    return TestClient(create_ingest_app(configured))


def _on_topic(settings: Settings, agency: str) -> dict[str, dict]:
    serde = default_serde()
    return {m.key().decode(): serde.decode(m.value())[1] for m in read_to_end(settings, [person_events_topic(agency)])}


def test_single_and_batch_events_are_acknowledged_then_on_kafka(client: TestClient, settings: Settings) -> None:
    one = {"source_record_id": "H-http-1", "source_version": 4,
           "person": {"given_names": "Ann", "family_name": "Lee", "date_of_birth": "1990-04-03", "sex": "F",
                      "identifiers": {"nhs_number": "9434765919"}}}
    r = client.post("/v1/health/person-events", json=one, headers=HEALTH)
    assert r.status_code == 202 and r.json()["accepted"] == 1
    batch = [{"source_record_id": f"H-http-b{i}", "person": {"family_name": "Lee", "date_of_birth": "2001-01-01"}}
             for i in range(3)] + [{"source_record_id": "H-http-1", "source_version": 5, "op": "DELETE"}]
    r = client.post("/v1/health/person-events", json=batch, headers=HEALTH)
    assert r.status_code == 202 and r.json()["accepted"] == 4
    events = _on_topic(settings, "health")
    assert events["health:H-http-1"]["op"] == "DELETE" and events["health:H-http-1"]["source_version"] == 5
    assert {f"health:H-http-b{i}" for i in range(3)} <= set(events)


def test_tokens_are_per_agency(client: TestClient) -> None:
    body = {"source_record_id": "x", "person": {"family_name": "Lee", "date_of_birth": "2001-01-01"}}
    assert client.post("/v1/health/person-events", json=body).status_code == 401
    assert client.post("/v1/health/person-events", json=body,
                       headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.post("/v1/health/person-events", json=body, headers=POLICE).status_code == 403
    assert client.post("/v1/martians/person-events", json=body, headers=HEALTH).status_code == 404


def test_bad_input_gets_field_level_errors_and_nothing_is_produced(client: TestClient, settings: Settings) -> None:
    before = len(read_to_end(settings, [person_events_topic("police")]))
    batch = [{"source_record_id": "P-ok", "person": {"family_name": "Lee", "date_of_birth": "2001-01-01"}},
             {"source_record_id": "P-bad", "person": {"family_name": "Lee", "date_of_birth": "2015-02-31",
                                                      "sex": "female"}}]
    r = client.post("/v1/police/person-events", json=batch, headers=POLICE)
    assert r.status_code == 422
    locs = [tuple(e["loc"]) for e in r.json()["detail"]]
    assert any("date_of_birth" in loc for loc in locs) and any("sex" in loc for loc in locs)
    assert len(read_to_end(settings, [person_events_topic("police")])) == before
    huge = [{"source_record_id": f"P{i}", "person": {"family_name": "x" * 50}} for i in range(400)]
    assert client.post("/v1/police/person-events", json=huge, headers=POLICE).status_code == 413


def test_fhir_patient_and_bundle(client: TestClient, settings: Settings) -> None:
    patient = {"resourceType": "Patient", "id": "fhir-1", "meta": {"versionId": "2"},
               "identifier": [{"system": NHS_NUMBER_SYSTEM, "value": "9434765919"}],
               "name": [{"use": "official", "family": "Lee", "given": ["Ann"]}], "gender": "female",
               "birthDate": "1990-04-03"}
    assert client.post("/v1/health/fhir", json=patient, headers=HEALTH).status_code == 202
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {**patient, "id": "fhir-2"}}, {"request": {"method": "DELETE", "url": "Patient/fhir-1"}}]}
    r = client.post("/v1/health/fhir", json=bundle, headers=HEALTH)
    assert r.status_code == 202 and r.json()["accepted"] == 2
    bad = {"resourceType": "Bundle", "entry": [{"resource": {**patient, "gender": "f"}}]}
    r = client.post("/v1/health/fhir", json=bad, headers=HEALTH)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["entry[0].gender"]
    events = _on_topic(settings, "health")
    assert events["health:fhir-2"]["person"]["identifiers"] == {"nhs_number": "9434765919"}
    assert events["health:fhir-1"]["op"] == "DELETE"


def test_openapi_document(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "/v1/{agency}/person-events" in spec["paths"] and "/v1/{agency}/fhir" in spec["paths"]


def _consents(settings: Settings, agency: str) -> dict[str, dict]:
    from caselink.infra.topics import consent_events_topic

    serde = default_serde()
    return {m.key().decode(): serde.decode(m.value())[1]
            for m in read_to_end(settings, [consent_events_topic(agency)])}


def test_consents_are_checked_against_the_policy_then_published(client: TestClient, settings: Settings) -> None:
    good = {"consent_id": "c-77", "subject": {"source_record_id": "H-9"}, "purpose": "research",
            "decision": "PERMIT", "recorded_by": "ward 7", "fields": ["year_of_birth"]}
    r = client.post("/v1/health/consent-events", json=good, headers=HEALTH)
    assert r.status_code == 202, r.text
    stored = _consents(settings, "health")["health:c-77"]
    assert stored["subject"] == {"kind": "RECORD", "citizen_id": None, "agency": "health",
                                 "source_record_id": "H-9", "scheme": None, "value": None}
    assert stored["fields"] == ["year_of_birth"] and stored["status"] == "ACTIVE"

    bad = [{**good, "purpose": "marketing"}, {**good, "subject": {}},
           {**good, "decision": "PERMIT", "national_opt_out": True}]
    for body, words in zip(bad, ["not in policy", "exactly one", "must have decision DENY"], strict=True):
        r = client.post("/v1/health/consent-events", json=body, headers=HEALTH)
        assert r.status_code == 422 and words in r.text, r.text
    assert client.post("/v1/health/consent-events", json=good, headers=POLICE).status_code == 403


def test_fhir_consent_resource_becomes_a_consent_event(client: TestClient, settings: Settings) -> None:
    resource = {"resourceType": "Consent", "id": "opt-1", "status": "active", "dateTime": "2026-11-20T10:00:00Z",
                "category": [{"coding": [{"code": "national-opt-out"}]}],
                "patient": {"identifier": {"system": NHS_NUMBER_SYSTEM, "value": "9434765919"}},
                "provision": {"type": "deny", "period": {"start": "2026-11-20"}}}
    r = client.post("/v1/health/fhir", json=resource, headers=HEALTH)
    assert r.status_code == 202, r.text
    stored = _consents(settings, "health")["health:opt-1"]
    assert stored["national_opt_out"] and stored["decision"] == "DENY" and stored["purpose"] == "*"
    assert stored["subject"]["kind"] == "IDENTIFIER" and stored["subject"]["scheme"] == "nhs_number"
    r = client.post("/v1/health/fhir", json={**resource, "provision": {"type": "maybe"}}, headers=HEALTH)
    assert r.status_code == 422 and "provision.type" in r.text
