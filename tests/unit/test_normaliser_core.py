"""The normaliser's routing of one agency message: to the link input unchanged, or a dead letter."""

from datetime import UTC, datetime

import pytest
from caselink.infra.topics import DEAD_LETTER_TOPIC, LINK_INPUT_TOPIC, person_events_topic
from caselink.linkage.blocking import blocking_keys
from caselink.linkage.packed import unpack
from caselink.linkage.record import standardise_person
from caselink.schemas import default_serde
from caselink.streams.normaliser_core import CHANGE_HEADER, Normaliser, change_header, packed_record

from tests.linkage_fixtures import person
from tests.unit.test_linker_core import event

HEALTH = person_events_topic("health")


def _letter(out: tuple) -> dict:
    from caselink.schemas.dead_letters import EXCEPTION, TOPIC, read_parts

    topic, key, value, headers = out
    assert topic == DEAD_LETTER_TOPIC
    names = [name for name, _ in headers]
    assert EXCEPTION in names and TOPIC in names  # Kafka Connect's error headers
    letter = read_parts(key, value, headers, default_serde())
    assert value == letter["payload"]  # the original bytes, untouched
    return letter


def test_a_linkable_upsert_goes_to_the_link_input_unchanged_with_its_standardised_record() -> None:
    p = person("Ann", "Lee", "1990-04-03", nhs="9434765919")
    value = event("health", "H1", 3, p)
    topic, key, forwarded, headers = Normaliser().route(value, HEALTH, 2, 41, b"whatever")
    assert (topic, key, forwarded) == (LINK_INPUT_TOPIC, b"health:H1", value)
    unpacked = unpack(packed_record(headers), "health:H1")
    assert unpacked is not None
    record, keys = unpacked
    expected = standardise_person("health:H1", p)
    assert record.as_dict() == expected.as_dict() and keys == blocking_keys(expected)
    assert change_header(headers) == b"UPSERT 3"


def test_a_delete_needs_no_person() -> None:
    value = event("health", "H1", 4, None, op="DELETE")
    assert Normaliser().route(value, HEALTH, 0, 7, None) == (LINK_INPUT_TOPIC, b"health:H1", value,
                                                             [(CHANGE_HEADER, b"DELETE 4")])


@pytest.mark.parametrize(("value", "topic", "error_type", "says"), [
    (b"\x00\x01 not an event", HEALTH, "UndecodableEventError", "not in the registry"),
    (None, HEALTH, "UndecodableEventError", "tombstone"),
    (default_serde().encode("DeadLetter", {
        "origin": "x", "origin_topic": None, "origin_partition": None, "origin_offset": None, "origin_key": None,
        "stage": "s", "error_type": "E", "error": "e", "payload": b"", "attempts": 1,
        "failed_at": datetime(2026, 1, 1, tzinfo=UTC)}),
     HEALTH, "UndecodableEventError", "expected PersonEvent"),
    (event("police", "P1", 1, person("Ann", "Lee", "1990-04-03")), HEALTH, "SchemaValidationError",
     "'police' published on"),
    (event("health", "H1", 1, None), HEALTH, "SchemaValidationError", "person is required"),
    (event("health", "H1", 1, {"given_names": "Ann", "family_name": "Lee"}), HEALTH, "UnlinkableRecordError",
     "lacks a date of birth or address"),
])
def test_what_cannot_be_linked_becomes_a_dead_letter_with_its_origin_and_payload(
        value: bytes | None, topic: str, error_type: str, says: str) -> None:
    letter = _letter(Normaliser().route(value, topic, 1, 99, b"health:H1"))
    assert letter["error_type"] == error_type and says in letter["error"]
    assert letter["stage"] == "normalise"
    assert (letter["origin"], letter["origin_topic"], letter["origin_partition"], letter["origin_offset"]) == (
        f"{topic}[1]@99", topic, 1, 99)
    assert letter["origin_key"] == b"health:H1"
    assert letter["payload"] == (value or b"")
