"""Evaluating only the purposes a change can affect gives what evaluating everything gives.

Hypothesis makes a world (policy, citizens, consents), lets the gate release it, then changes the
citizens' records in generated ways (names, phones, addresses, dates of birth, cases, identifiers,
match weights, records joining and leaving, citizens retired) and lets the gate catch up
incrementally. What the purpose topics then hold must equal what a gate that saw only the final
state releases, and what the reference evaluator says.
"""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

from caselink.streams.consent.gate_core import GateCore, Released
from caselink.streams.consent.policy import Policy
from caselink.streams.consent.pseudonym import Pseudonymiser
from caselink.streams.consent.register import ConsentRejected
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.consent_fixtures import T0, encode_case, linked_case, member, policy, pseudonymiser
from tests.consent_oracle import reference_views
from tests.depth import examples
from tests.unit.test_consent_oracle import KEY, KEY_ID, NOW, consent_events, policies, topics_after, world

EDITS = ["given_names", "phones", "addresses", "date_of_birth", "cases", "sensitivity", "identifiers", "weight",
         "join", "leave", "nothing"]


def edited(case: dict[str, Any], edit: str, n: int) -> dict[str, Any] | None:
    case = copy.deepcopy(case)
    m = case["members"][n % len(case["members"])]
    person = m["person"]
    match edit:
        case "given_names":
            person["given_names"] = f"{person.get('given_names') or ''}x"
        case "phones":
            person["phones"] = [*person["phones"], "07700 900999"]
        case "addresses":
            person["addresses"] = [{"lines": ["1 New Street"], "locality": None, "region": None, "postcode": "M1 1AE",
                                    "country": None, "valid_from": None, "valid_to": None}]
        case "date_of_birth":
            person["date_of_birth"] = "1999-12-31"
        case "cases":
            m["cases"] = [*m["cases"], {"case_id": f"new{n}", "case_type": "t", "status": None, "opened_at": None,
                                        "closed_at": None, "sensitivity": "normal"}]
        case "sensitivity":
            m["cases"] = [{**c, "sensitivity": "sealed"} for c in m["cases"]]
        case "identifiers":
            other = "4010232137" if person["identifiers"].get("nhs_number") == "9434765919" else "9434765919"
            person["identifiers"] = {**person["identifiers"], "nhs_number": other}
        case "weight":
            m["match_weight"] = 30.0 if m["match_weight"] < 30.0 else 2.0
        case "join":
            case["members"].append(copy.deepcopy({**m, "source_record_id": f"{m['source_record_id']}j{n}"}))
        case "leave":
            if len(case["members"]) == 1:
                return None  # its last record gone: the citizen is retired
            case["members"].remove(m)
    return case


@settings(max_examples=examples(200), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_incremental_evaluation_equals_a_full_one(data: Any) -> None:
    policy_ = data.draw(policies)
    cases, survivor_of, history = data.draw(world())
    events = data.draw(consent_events(policy_, cases, list(survivor_of)))

    def gate() -> GateCore:
        return GateCore(Policy.model_validate(policy_), Pseudonymiser(KEY, KEY_ID), clock=lambda: NOW)

    def feed(core: GateCore, items: list[tuple[str, dict[str, Any] | None]]) -> None:
        for cid, value in items:
            core.apply_linked_case(cid, encode_case(value) if value is not None else None)

    def consents(core: GateCore) -> None:
        for event in events:
            try:
                core.apply_consent(event)
            except ConsentRejected:
                pass

    incremental = gate()
    feed(incremental, history)
    consents(incremental)
    outputs = incremental.flush()
    final = dict(cases)
    changes = []
    for i in range(data.draw(st.integers(1, 6))):
        cid = data.draw(st.sampled_from(sorted(cases)))
        if final[cid] is None:
            continue
        final[cid] = edited(final[cid], data.draw(st.sampled_from(EDITS)), i)
        changes.append((cid, final[cid]))
    feed(incremental, changes)
    outputs += incremental.flush()

    fresh = gate()
    feed(fresh, [h for h in history if h[0] not in cases] + [(c, v) for c, v in final.items() if v is not None])
    consents(fresh)
    live = {c: v for c, v in final.items() if v is not None}
    assert topics_after(outputs) == topics_after(fresh.flush())
    assert topics_after(outputs) == reference_views(policy_, live, survivor_of, events, NOW, KEY, KEY_ID)


def test_a_corrected_name_is_evaluated_only_for_the_purposes_that_take_names() -> None:
    core = GateCore(policy(), pseudonymiser(), clock=lambda: T0 + timedelta(days=1))
    case = linked_case("C1", [member("health", "H1"), member("social_care", "S1")])
    core.apply_linked_case("C1", encode_case(case))
    core.flush()
    before = core.stats["evaluations"]
    case["members"][0]["person"]["given_names"] = "Amelie"
    core.apply_linked_case("C1", encode_case(case))
    assert core.dirty == {"C1": frozenset({"direct_care", "safeguarding"})}
    out = core.flush()
    assert core.stats["evaluations"] - before == 2  # research and planning take no names
    assert {o.topic for o in out} >= {"caselink.cases.direct_care", "caselink.cases.safeguarding"}
    case["members"][0]["person"]["addresses"][0]["postcode"] = "M1 1AE"
    core.apply_linked_case("C1", encode_case(case))
    assert core.dirty == {"C1": frozenset({"direct_care", "safeguarding", "planning", "research"})}
    core.flush()
    core.apply_linked_case("C1", encode_case(case))  # the same case again (a replay): nothing to evaluate
    assert core.dirty == {"C1": frozenset()}
    assert core.flush() == []


def test_bookkeeping_written_with_the_older_digest_does_not_release_again() -> None:
    first = GateCore(policy(), pseudonymiser(), clock=lambda: T0)
    first.apply_linked_case("C1", encode_case(linked_case("C1", [member("health", "H1")])))
    first.flush()
    restarted = GateCore(policy(), pseudonymiser(), clock=lambda: T0)
    for (purpose, cid), released in first.released.items():
        view = first.decide(cid, purpose)
        old = released._replace(digest=view.legacy_digest())  # as the previous code wrote it
        restarted.load_released(f"{purpose}|{cid}".encode(), old.dump())
    restarted.apply_linked_case("C1", encode_case(linked_case("C1", [member("health", "H1")])))
    assert restarted.flush() == []


def test_bookkeeping_reads_both_of_its_forms() -> None:
    released = Released("k1.x", "b2:00", ("health",), ("sex",), "b", "v#1", ("obj-1",))
    assert Released.load(released.dump()) == released
    older = b'{"agencies": ["health"], "basis": "b", "digest": "ab", "fields": ["sex"], "policy": "v#1", "ref": "C1"}'
    assert Released.load(older) == Released("C1", "ab", ("health",), ("sex",), "b", "v#1", ())


def test_an_undecodable_case_changes_nothing() -> None:
    import pytest
    from caselink.schemas import UndecodableEventError

    core = GateCore(policy(), pseudonymiser(), clock=lambda: T0)
    core.apply_linked_case("C1", encode_case(linked_case("C1", [member("health", "H1")])))
    core.flush()
    cases, subjects, owners = copy.deepcopy((core.cases, core.subjects, core.owners))
    with pytest.raises(UndecodableEventError):
        core.apply_linked_case("C1", b"\xc3\x01 damaged")
    assert (core.cases, core.subjects, core.owners) == (cases, subjects, owners)
    assert core.flush() == []


def test_disclosure_ids_are_distinct_uuid4s_also_in_a_forked_child() -> None:
    import os
    import uuid

    from caselink.streams.consent.gate_core import disclosure_id

    ids = {disclosure_id() for _ in range(10000)}
    assert len(ids) == 10000 and all(uuid.UUID(i).version == 4 for i in ids)
    assert all(str(uuid.UUID(i)) == i for i in ids)  # written as uuid writes it (the variant bits too)
    assert all(uuid.UUID(i).variant == uuid.RFC_4122 for i in ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one id down the pipe, then out without running pytest's teardown
        os.write(write, disclosure_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 100).decode()
    assert child and child != disclosure_id() and child not in ids


def test_consent_about_an_id_retired_twice_follows_whatever_order_the_partitions_replay_in() -> None:
    """C3 merged into C2, then C2 into C1. The three cases live in different partitions, so a gate
    catching up may read C1's case before C2's: the consent about C3 must still reach C1."""
    for order in (["C2", "C2-gone", "C1"], ["C1", "C2", "C2-gone"], ["C2", "C1", "C2-gone"]):
        core = GateCore(policy(), pseudonymiser(), clock=lambda: T0 + timedelta(days=1))
        core.apply_consent({**_objection("C3"), "consent_id": f"obj-{order[0]}"})
        inputs = {
            "C2": ("C2", encode_case(linked_case("C2", [member("health", "H2", nhs=None)], ["C3"]))),
            "C2-gone": ("C2", None),
            "C1": ("C1", encode_case(linked_case("C1", [member("health", "H1", nhs=None),
                                                        member("health", "H2", nhs=None)], ["C2"]))),
        }
        for step in order:
            core.apply_linked_case(*inputs[step])
        core.flush()
        assert ("direct_care", "C1") not in core.released, order  # the objection about C3 reached C1
        assert ("direct_care", "C2") not in core.released, order


def _objection(citizen_id: str) -> dict[str, Any]:
    from tests.consent_fixtures import consent

    return consent("CITIZEN", citizen_id=citizen_id, purpose="*", decision="DENY")
