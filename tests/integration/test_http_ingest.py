"""HTTP ingest against the real broker: auth, validation with field paths, 202 after the ack, FHIR."""

import pytest
from caselink.connectors.fhir import NHS_NUMBER_SYSTEM
from caselink.infra.topics import caselink_topics, ensure_topics, person_events_topic
from caselink.schemas import default_serde
from fastapi.testclient import TestClient
from pydantic import SecretStr

from caselink.core.kafka import read_to_end
from caselink.core.settings import IngestSettings, Settings
from caselink.ingest import ingest_app

pytestmark = pytest.mark.integration

HEALTH = {"Authorization": "Bearer health-secret"}
POLICE = {"Authorization": "Bearer police-secret"}


@pytest.fixture
def client(settings: Settings, admin) -> TestClient:
    ensure_topics(admin, caselink_topics(["health", "police"], []))
    configured = settings.model_copy(update={"ingest": IngestSettings(
        tokens={"health": SecretStr("health-secret"), "police": SecretStr("police-secret")}, max_body_bytes=20_000)})
    return TestClient(ingest_app(configured))


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


@pytest.mark.parametrize("resource, loc", [
    ({"resourceType": "Bundle", "entry": {"resource": {"resourceType": "Patient", "id": "x"}}}, "entry"),
    ({"resourceType": "Patient", "id": "fhir-9", "name": "Ann Lee"}, "name"),
    ({"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Patient", "id": "y", "name": ["Ann"]}}]},
     "entry[0].name[0]"),
    ({"resourceType": "Consent", "id": "c", "status": "active", "patient": "Patient/1", "provision": "permit"},
     "patient"),
])
def test_fhir_shape_errors_are_422_naming_the_element(client: TestClient, resource: dict, loc: str) -> None:
    """D5: a Bundle whose entry is an object, a Patient whose name is a string: 500 before."""
    r = client.post("/v1/health/fhir", json=resource, headers=HEALTH)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == [loc]


def _chunked_post(port: int, path: str, token: str, total: int, chunk: int = 64 * 1024) -> tuple[int, int]:
    """POST ``total`` bytes chunked (no Content-Length) over a raw socket; stops sending as soon as an
    answer arrives. Returns (status, bytes sent)."""
    import select
    import socket

    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall((f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                  "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode())
    sent = 0
    piece = b"[" + b" " * (chunk - 1)
    try:
        while sent < total:
            if select.select([sock], [], [], 0)[0]:
                break  # the server has answered: stop sending
            sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
            sent += len(piece)
        else:
            sock.sendall(b"0\r\n\r\n")
        answer = b""
        while b"\r\n" not in answer:
            data = sock.recv(4096)
            if not data:
                break
            answer += data
    finally:
        sock.close()
    return int(answer.split(b" ", 2)[1]), sent


def test_a_chunked_body_over_the_limit_gets_413_while_it_streams(settings: Settings, admin, tmp_path) -> None:
    """D4: only Content-Length was checked; a 30 MB chunked body was read whole, then failed with a 500."""
    import json
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    from caselink.infra.kafka_runtime import free_port

    ensure_topics(admin, caselink_topics(["health"], []))
    port = free_port()
    env = {**os.environ, "CASELINK_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
           "CASELINK_CONFIG": "/nonexistent", "CASELINK_INGEST__TOKENS": json.dumps({"health": "health-secret"})}
    log = (tmp_path / "ingest.log").open("wb")
    server = subprocess.Popen([sys.executable, "-m", "caselink.cli", "ingest", "serve", "--port", str(port)],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise AssertionError((tmp_path / "ingest.log").read_text()) from None
                time.sleep(0.2)
        before = len(read_to_end(settings, [person_events_topic("health")]))
        status, sent = _chunked_post(port, "/v1/health/person-events", "health-secret", 30_000_000)
        assert status == 413
        assert sent < 30_000_000  # refused while it was still arriving, not after reading it all
        assert len(read_to_end(settings, [person_events_topic("health")])) == before
    finally:
        server.terminate()
        server.wait(20)


def test_requests_and_their_latency_are_metrics_by_route_agency_and_status(client: TestClient) -> None:
    """Issue 19, item 14: the ingest service had no request or latency metrics."""
    import re

    def count(route: str, agency: str, status: int) -> float:
        text = client.get("/metrics").text
        found = re.search(rf'caselink_ingest_requests_total{{agency="{agency}",route="{re.escape(route)}",'
                          rf'status="{status}"}} ([\d.]+)', text)
        return float(found.group(1)) if found else 0.0

    route = "/v1/{agency}/person-events"
    body = {"source_record_id": "H-metrics", "person": {"family_name": "Lee", "date_of_birth": "2001-01-01"}}
    before = count(route, "health", 202), count(route, "unknown", 404)
    assert client.post("/v1/health/person-events", json=body, headers=HEALTH).status_code == 202
    assert client.post("/v1/martians/person-events", json=body, headers=HEALTH).status_code == 404
    assert (count(route, "health", 202), count(route, "unknown", 404)) == (before[0] + 1, before[1] + 1)
    assert 'caselink_ingest_request_seconds_bucket{le="0.005",route="/v1/{agency}/person-events"}' in \
        client.get("/metrics").text
    assert "martians" not in client.get("/metrics").text  # an agency nobody configured is "unknown": no new series
