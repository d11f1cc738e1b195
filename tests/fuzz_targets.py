"""Every input parser, with what it may do with any input: accept it, or reject it cleanly.

Used by ``tests/unit/test_fuzz.py`` (Hypothesis, briefly, in every test run) and
``benchmarks/fuzz.py`` (the same properties for longer, counting inputs and crashes). A "crash"
is any exception other than the parser's own rejection, or a 5xx from the HTTP ingest.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from caselink.connectors.fhir import bundle_rows, consent_to_event, patient_to_row
from caselink.connectors.mapping import MappingError, RowError, load_mapping, parse_mapping
from caselink.connectors.readers import read_csv, read_jsonl
from caselink.infra.topics import DEAD_LETTER_TOPIC, LINK_INPUT_TOPIC, person_events_topic
from caselink.schemas import default_serde
from caselink.streams.consent.policy import PolicyError, parse_policy
from caselink.streams.normaliser_core import Normaliser

from tests.events import encoded_person_event

TRIED: Counter[str] = Counter()  # inputs tried, per target (benchmarks/fuzz.py prints them)
_DIR = Path(tempfile.mkdtemp(prefix="caselink-fuzz-"))
atexit.register(shutil.rmtree, _DIR, True)


def mapping_yaml(text: str) -> None:
    """A mapping file: an AgencyMapping, or MappingError naming the line."""
    TRIED["mapping yaml"] += 1
    path = _DIR / "mapping.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        mapping = load_mapping(path)
    except (MappingError, UnicodeDecodeError):
        return
    try:  # and a mapping that loads maps any row to a row or a RowError
        mapping.apply({"id": "1", "a": text[:50]})
    except RowError:
        pass


def mapping_data(data: Any) -> None:
    TRIED["mapping structure"] += 1
    try:
        parse_mapping(data)
    except MappingError:
        pass


def csv_bytes(data: bytes, delimiter: str = ",") -> None:
    """Any file: rows (data or a reason), each with bytes of the file, numbered in order; never an exception."""
    TRIED["csv rows"] += 1
    path = _DIR / "rows.csv"
    path.write_bytes(data)
    numbers = []
    for row in read_csv(path, delimiter=delimiter):
        assert (row.data is None) == (row.error is not None)
        assert row.raw in data or row.raw.replace(b"\r\n", b"\n") in data or row.number == 0 or b"\xef\xbb\xbf" in data
        numbers.append(row.number)
    assert numbers == sorted(numbers)


def jsonl_bytes(data: bytes) -> None:
    TRIED["jsonl rows"] += 1
    path = _DIR / "rows.jsonl"
    path.write_bytes(data)
    for row in read_jsonl(path):
        assert (row.data is None) == (row.error is not None)
        assert row.raw in data


_SERDE = default_serde()
_NORMALISER = Normaliser()
_T0 = datetime(2026, 11, 1, tzinfo=UTC)
def valid_event() -> bytes:
    """A valid PersonEvent on an agency topic, framed when asked for: by the registry the tests'
    fixtures bind, after this module is imported (unit and integration tests bind different ones)."""
    return encoded_person_event("health", "H1", {
        "given_names": "Ann", "family_name": "Lee", "date_of_birth": "1990-01-02",
        "identifiers": {"nhs_number": "9434765919"}, "addresses": [{"lines": ["1 Mill Lane"], "postcode": "LS6 2AB"}]},
        event_id="e1", at=_T0)


def avro_event(value: bytes) -> None:
    """Bytes on an agency topic: forwarded to the link input, or a dead letter carrying them whole."""
    TRIED["avro on agency topics"] += 1
    topic, key, out, headers = _NORMALISER.route(value, person_events_topic("health"), 0, 7, b"k")
    assert topic in (LINK_INPUT_TOPIC, DEAD_LETTER_TOPIC)
    if topic == DEAD_LETTER_TOPIC:
        from caselink.schemas.dead_letters import read_parts

        letter = read_parts(key, out, headers, _SERDE)
        assert key == b"k" and out == value  # the original key and value, untouched
        assert letter["payload"] == value


def fhir_resource(resource: Any) -> None:
    """Any JSON as a FHIR Patient, Bundle or Consent: a row/event, or a RowError naming the element."""
    TRIED["fhir"] += 1
    for parse in (lambda r: [patient_to_row(r)], lambda r: list(bundle_rows(r)),
                  lambda r: [consent_to_event(r, "health")]):
        try:
            parse(resource)
        except RowError:
            pass


def policy_text(text: str) -> None:
    """A consent policy file: a Policy, or PolicyError with the reasons."""
    TRIED["policy"] += 1
    try:
        parse_policy(text)
    except PolicyError:
        pass


def http_body(client: Any, path: str, body: bytes, content_type: str = "application/json") -> int:
    """Any body to the ingest API: never a 5xx (a 503 only when Kafka did not acknowledge)."""
    TRIED["http ingest"] += 1
    response = client.post(path, content=body, headers={"Authorization": "Bearer fuzz-token-0123456789",
                                                        "Content-Type": content_type})
    assert response.status_code < 500, (response.status_code, response.text[:300])
    return int(response.status_code)


def json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()
