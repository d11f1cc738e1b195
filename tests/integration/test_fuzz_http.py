"""The HTTP ingest under fuzzed bodies, against the real broker: never a 5xx (tests/fuzz_targets.py)."""

from __future__ import annotations

import pytest
from caselink.infra.topics import caselink_topics, ensure_topics
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from caselink.core.settings import IngestSettings, KafkaSettings, Settings
from caselink.ingest import ingest_app
from tests import fuzz_targets as targets
from tests.unit.test_fuzz import fhir_like, fuzz, json_values

pytestmark = pytest.mark.integration
PATHS = ["/v1/health/person-events", "/v1/health/fhir", "/v1/health/consent-events"]


@pytest.fixture(scope="module")
def client(kafka_cluster: str):
    from confluent_kafka.admin import AdminClient

    ensure_topics(AdminClient({"bootstrap.servers": kafka_cluster}), caselink_topics(["health"], []))
    settings = Settings(kafka=KafkaSettings(bootstrap_servers=kafka_cluster), agencies=["health"],
                        ingest=IngestSettings(tokens={"health": SecretStr("fuzz-token-0123456789")},
                                              max_body_bytes=50_000))
    with TestClient(ingest_app(settings), raise_server_exceptions=False) as c:
        yield c


person_like = st.fixed_dictionaries({"source_record_id": st.text(min_size=0, max_size=5) | st.integers()},
                                    optional={"person": json_values | st.fixed_dictionaries(
                                        {}, optional={"family_name": st.text(max_size=5) | st.integers(),
                                                      "date_of_birth": st.text(max_size=10),
                                                      "identifiers": json_values, "addresses": json_values}),
                                              "op": st.sampled_from(["UPSERT", "DELETE", "x"]),
                                              "source_version": json_values, "cases": json_values})


@fuzz
@given(path=st.sampled_from(PATHS),
       body=st.one_of(st.binary(max_size=200), json_values.map(targets.json_bytes),
                      fhir_like.map(targets.json_bytes), person_like.map(targets.json_bytes),
                      st.lists(person_like, max_size=3).map(targets.json_bytes)))
def test_no_body_gets_a_server_error(client: TestClient, path: str, body: bytes) -> None:
    targets.http_body(client, path, body)
