"""A fuzz pass over every input parser, kept short here; `python benchmarks/fuzz.py` runs it longer.

Each property (tests/fuzz_targets.py) says the parser accepts an input or rejects it cleanly (a
dead letter, a RowError/MappingError/PolicyError with a reason), never anything else.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import fuzz_targets as targets
from tests.depth import examples

EXAMPLES = int(os.environ.get("CASELINK_FUZZ_EXAMPLES") or examples(150))
fuzz = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=40)
FHIR_KEYS = ["resourceType", "id", "meta", "name", "identifier", "gender", "birthDate", "address", "telecom",
             "entry", "request", "resource", "status", "patient", "provision", "category", "policyRule", "dateTime",
             "given", "family", "use", "line", "period", "system", "value", "type", "purpose", "code", "coding",
             "method", "url", "reference", "start", "end", "versionId", "lastUpdated"]
fhir_like = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.sampled_from(
        ["Patient", "Bundle", "Consent", "DELETE", "Patient/p1", "permit", "deny", "active", "female", "official",
         "https://fhir.nhs.uk/Id/nhs-number", "2020-01-01", "research", "national-opt-out", ""]) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(FHIR_KEYS), children,
                                                                      max_size=6),
    max_leaves=30)
csv_alphabet = st.sampled_from([b"a", b"1", b",", b";", b'"', b"\n", b"\r\n", b"\r", b" ", b"\xe9", b"\xff", b"id",
                                b"name", b'""', b"\x00"])


@fuzz
@given(st.lists(csv_alphabet, max_size=200).map(b"".join), st.sampled_from([",", ";"]))
def test_csv_rows(data: bytes, delimiter: str) -> None:
    targets.csv_bytes(b"id,name\n" + data, delimiter)


@fuzz
@given(st.binary(max_size=300))
def test_csv_any_bytes(data: bytes) -> None:
    targets.csv_bytes(data)


@fuzz
@given(st.lists(st.one_of(st.binary(max_size=40), json_values.map(targets.json_bytes),
                          st.integers(1, 3000).map(lambda n: b"[" * n)), max_size=6)
       .map(lambda lines: b"\n".join(lines)))
def test_jsonl_lines(data: bytes) -> None:
    targets.jsonl_bytes(data)


@fuzz
@given(st.deferred(lambda: st.one_of(  # deferred: the valid event is framed by the registry bound at test time
    st.binary(max_size=400),
    st.tuples(st.integers(0, len(targets.valid_event()) - 1), st.binary(min_size=1, max_size=8))
    .map(lambda t: targets.valid_event()[:t[0]] + t[1] + targets.valid_event()[t[0] + len(t[1]):]),
    st.integers(0, len(targets.valid_event())).map(lambda n: targets.valid_event()[:n]))))
def test_avro_on_agency_topics(value: bytes) -> None:
    targets.avro_event(value)


@fuzz
@given(fhir_like)
def test_fhir_resources(resource: object) -> None:
    targets.fhir_resource(resource)


@fuzz
@given(st.text(max_size=300) | json_values.map(lambda v: __import__("yaml").safe_dump(v)))
def test_mapping_yaml(text: str) -> None:
    targets.mapping_yaml(text)


@fuzz
@given(st.dictionaries(st.sampled_from(["agency", "record_id", "version", "fields", "op", "source", "cases",
                                        "given_names", "identifiers", "addresses"]), json_values, max_size=6))
def test_mapping_structure(data: dict) -> None:
    targets.mapping_data(data)


@fuzz
@given(st.text(max_size=300) | st.dictionaries(st.sampled_from(["version", "purposes", "fields", "agencies", "basis",
                                                                 "pseudonymise", "consent", "research"]),
                                                json_values, max_size=5).map(
                                                    lambda v: __import__("yaml").safe_dump(v)))
def test_policy_files(text: str) -> None:
    targets.policy_text(text)
