"""The linker between messages: determinism, duplicates, out-of-order delivery, outputs."""

from datetime import UTC, datetime, timedelta

from caselink.infra.topics import LINK_DECISIONS_TOPIC, LINKED_CASES_TOPIC
from caselink.schemas import default_serde
from caselink.streams.linker_core import LinkerCore

from tests.events import encoded_person_event
from tests.linkage_fixtures import person, synthetic_data, trained_model

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def event(agency: str, rid: str, version: int, p: dict | None, op: str = "UPSERT") -> bytes:
    return encoded_person_event(agency, rid, p, version=version, op=op, at=T0,
                                emitted_at=T0 + timedelta(seconds=version))


def synthetic_events(n: int = 400) -> list[bytes]:
    _, _, people = synthetic_data()
    return [event(k.split(":")[0], k.split(":")[1], 1, p) for k, p in list(people.items())[:n]]


def state(core: LinkerCore) -> set[frozenset[str]]:
    groups: dict[str, set[str]] = {}
    for key, cid in core.index.clusters().items():
        groups.setdefault(cid, set()).add(key)
    return {frozenset(g) for g in groups.values()}


def test_same_log_gives_byte_identical_outputs() -> None:
    log = synthetic_events()
    a, b = LinkerCore(trained_model()), LinkerCore(trained_model())
    out_a = [o for m in log for o in a.apply(m)]
    out_b = [o for m in log for o in b.apply(m)]
    assert out_a == out_b
    assert {o.topic for o in out_a} >= {LINKED_CASES_TOPIC, LINK_DECISIONS_TOPIC}


def test_duplicates_and_out_of_order_versions_converge() -> None:
    v1 = event("health", "H1", 1, person("Ann", "Lee", "1990-04-03"))
    v2 = event("health", "H1", 2, person("Ann", "Lee", "1990-04-03", postcode="M1 1AA", address="3 Oak Road"))
    v3 = event("health", "H1", 3, None, op="DELETE")
    other = event("police", "P1", 1, person("Ann", "Lee", "1990-04-03", postcode="M1 1AA", address="3 Oak Road"))
    in_order, shuffled = LinkerCore(trained_model()), LinkerCore(trained_model())
    for m in (v1, other, v2):
        in_order.apply(m)
    for m in (v2, other, v1, v2, other, v1):
        shuffled.apply(m)
    assert state(in_order) == state(shuffled) == {frozenset({"health:H1", "police:P1"})}
    for core in (in_order, shuffled):
        core.apply(v3)
        core.apply(v2)  # a late redelivery after the delete changes nothing
    assert state(in_order) == state(shuffled) == {frozenset({"police:P1"})}


def test_outputs_for_a_merge_include_a_tombstone_and_the_survivor() -> None:
    core = LinkerCore(trained_model())
    core.apply(event("health", "H1", 1, person("Ann", "Lee", "1990-04-03", nhs="9434765919")))
    core.apply(event("housing", "X7", 1, person("Ann", "Marsh", "1990-03-04", postcode="M1 1AA",
                                                address="3 Oak Road", phones=["07700 900123"])))
    out = core.apply(event("social_care", "S3", 1, person(
        "Ann", "Marsh", "1990-04-03", other_names=["Lee"], nhs="9434765919", postcode="M1 1AA",
        address="3 Oak Road", phones=["07700 900123"])))
    serde = default_serde()
    decision = serde.decode(next(o.value for o in out if o.topic == LINK_DECISIONS_TOPIC))[1]
    assert decision["outcome"] == "MERGED"
    assert decision["candidates"] and decision["candidates"][0]["field_weights"][0]["field"] == "prior"
    cases = [o for o in out if o.topic == LINKED_CASES_TOPIC]
    tombstones = [o for o in cases if o.value is None]
    live = [serde.decode(o.value)[1] for o in cases if o.value is not None]
    assert len(tombstones) == 1 and len(live) == 1
    assert live[0]["merged_from"] == [tombstones[0].key.decode()]
    assert {m["source_record_id"] for m in live[0]["members"]} == {"H1", "X7", "S3"}


def test_review_decision_on_the_link_input_merges() -> None:
    core = LinkerCore(trained_model())
    core.apply(event("health", "H1", 1, person("Ann", "Lee", "1990-04-03")))
    core.apply(event("police", "P2", 1, person("Anne", "Leigh", "1990-03-04", postcode="M1 1AA",
                                               address="3 Oak Road")))
    assert len(state(core)) == 2
    decision = default_serde().encode("ReviewDecision", {
        "decision_id": "r1", "left_record": "health:H1", "right_record": "police:P2", "same_person": True,
        "decided_by": "tester", "reason": None, "decided_at": T0})
    core.apply(decision)
    assert state(core) == {frozenset({"health:H1", "police:P2"})}


def test_an_update_that_cannot_be_linked_takes_the_record_out_of_its_citizen() -> None:
    core = LinkerCore(trained_model())
    core.apply(event("health", "H1", 1, person("Ann", "Lee", "1990-04-03")))
    core.apply(event("police", "P1", 1, person("Ann", "Lee", "1990-04-03")))
    assert state(core) == {frozenset({"health:H1", "police:P1"})}
    out = core.apply(event("health", "H1", 2, {"given_names": "Ann", "family_name": "Lee"}))  # nothing to link on
    serde = default_serde()
    decision = serde.decode(next(o.value for o in out if o.topic == LINK_DECISIONS_TOPIC))[1]
    assert decision["outcome"] == "REJECTED" and "earlier version was removed" in decision["reason"]
    assert state(core) == {frozenset({"police:P1"})}
    views = [serde.decode(o.value)[1] for o in out if o.topic == LINKED_CASES_TOPIC and o.value is not None]
    assert [[m["source_record_id"] for m in v["members"]] for v in views] == [["P1"]]
    assert "health:H1" not in core.members
