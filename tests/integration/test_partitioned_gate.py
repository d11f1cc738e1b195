"""Gate processes sharing the citizens (``consent.partitioned``) against a real broker.

Whatever the processes and whatever happens to them, the purpose topics must hold what one gate
would release from the same inputs (a reference ``GateCore`` fed every input in one process), every
view must be released once (a process that takes partitions over releases nothing already out),
and a bad consent, read by every process, must be dead-lettered once.
"""

from __future__ import annotations

import itertools
import signal
from typing import Any

import pytest
from caselink.infra.topics import CONSENT_EVENTS_TOPIC, DEAD_LETTER_TOPIC, LINKED_CASES_TOPIC, purpose_topic
from caselink.schemas import default_serde
from caselink.schemas.dead_letters import read_letter
from caselink.streams.consent.gate_core import INPUT_ERRORS, GateCore
from caselink.streams.consent.policy import bundled_policy_path, load_policy
from caselink.streams.consent.pseudonym import Pseudonymiser

from caselink.core.kafka import read_to_end
from caselink.core.settings import Settings
from tests.consent_fixtures import consent, encode_case, linked_case, member
from tests.integration.test_consent_gate import PURPOSES, audit, publish
from tests.waiting import service_json, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
serde = default_serde()
KEY = "shared-by-every-gate-0123456789"
APP = "gate-shared"


def published(settings: Settings) -> dict[tuple[str, str], dict[str, Any]]:
    """What the purpose topics hold now, key by key (the release time left out)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for purpose in PURPOSES:
        for msg in read_to_end(settings, [purpose_topic(purpose)]):
            key = (purpose, msg.key().decode())
            if msg.value() is None:
                out.pop(key, None)
            else:
                view = serde.decode(msg.value())[1]
                view.pop("released_at")
                out[key] = view
    return out


def reference(settings: Settings) -> dict[tuple[str, str], dict[str, Any]]:
    """What one gate releases from every input on the topics, in one process."""
    core = GateCore(load_policy(bundled_policy_path()), Pseudonymiser(KEY.encode(), "k1"))
    for msg in read_to_end(settings, [LINKED_CASES_TOPIC, CONSENT_EVENTS_TOPIC]):
        try:
            core.apply_input(msg.topic(), msg.key(), msg.value(), msg.partition(), msg.offset())
        except INPUT_ERRORS:
            pass
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for item in core.flush():
        if item.topic.startswith("caselink.cases.") and item.value is not None:
            view = serde.decode(item.value)[1]
            view.pop("released_at")
            out[(view["purpose"], item.key.decode())] = view
    return out


def partitions_of(gate: Any) -> list[int] | None:
    health = service_json(gate.port)
    if health.get("role") != "partitioned" or not health.get("caught_up"):
        return None
    return list(health.get("partitions", []))


def dealt(gates: list[Any], partitions: int) -> bool:
    """Every partition served by exactly one of ``gates``, each caught up."""
    owned = [partitions_of(g) for g in gates]
    if any(o is None for o in owned):
        return False
    every = sorted(p for o in owned for p in o)  # type: ignore[union-attr]
    return every == list(range(partitions))


def test_gate_processes_share_the_citizens_and_release_what_one_gate_would(
        pipeline_settings: Settings, monkeypatch) -> None:
    from caselink.demo import start_gate

    settings = pipeline_settings
    partitions = settings.kafka.default_partitions
    assert partitions >= 2
    monkeypatch.setenv("CASELINK_CONSENT__PSEUDONYM_KEY", KEY)
    monkeypatch.setenv("CASELINK_CONSENT__PSEUDONYM_KEY_ID", "k1")
    monkeypatch.setenv("CASELINK_CONSENT__PARTITIONED", "true")

    citizens = [f"C{i}" for i in range(30)]
    cases = [(LINKED_CASES_TOPIC, cid.encode(), encode_case(linked_case(
        cid, [member("health", f"H{cid}", nhs=None), member("police", f"P{cid}", nhs=None)])))
        for cid in citizens]
    # M absorbed B, which had absorbed A: consent about A follows A into M, whichever process
    # serves M, although no process ever sees B's own case.
    cases.append((LINKED_CASES_TOPIC, b"M", encode_case(linked_case(
        "M", [member("health", "HM", nhs="9434765919")], merged_from=["B", "A"]))))
    consents = [(CONSENT_EVENTS_TOPIC, cid.encode(), serde.encode("ConsentEvent", consent(
        "CITIZEN", citizen_id=cid, purpose="research"))) for cid in citizens[:12]]
    consents += [
        (CONSENT_EVENTS_TOPIC, b"A", serde.encode("ConsentEvent", consent(
            "CITIZEN", citizen_id="A", purpose="*", decision="DENY"))),
        (CONSENT_EVENTS_TOPIC, b"r", serde.encode("ConsentEvent", consent(
            "RECORD", agency="health", record="HC5", purpose="direct_care", decision="DENY"))),
        (CONSENT_EVENTS_TOPIC, b"bad", b"not a consent event"),
    ]
    publish(settings, cases + consents)

    gates = [start_gate(settings, app_id=APP) for _ in range(2)]
    try:
        # Both serve something: a process that joins second is dealt nothing in the first round of
        # a cooperative rebalance, and its share in the next.
        wait_for(lambda: dealt(gates, partitions) and all(partitions_of(g) for g in gates), 120)
        expected = reference(settings)
        assert ("direct_care", "M") not in expected and ("direct_care", "C0") in expected
        assert ("direct_care", "C5") not in expected and ("direct_care", "C6") in expected  # police: not direct care
        wait_for(lambda: published(settings) == expected, 60)

        # Live changes: a withdrawal, a new record for one citizen, a citizen retired.
        withdrawn = consent("CITIZEN", citizen_id="C0", purpose="research")
        publish(settings, [
            (CONSENT_EVENTS_TOPIC, b"C0", serde.encode("ConsentEvent", {**withdrawn, "consent_id": "w0"})),
            (CONSENT_EVENTS_TOPIC, b"C0", serde.encode("ConsentEvent", {
                **withdrawn, "consent_id": "w0", "status": "WITHDRAWN",
                "recorded_at": withdrawn["recorded_at"].replace(year=2027)})),
            (LINKED_CASES_TOPIC, b"C1", encode_case(linked_case("C1", [
                member("health", "HC1", nhs=None), member("police", "PC1", nhs=None),
                member("education", "EC1", nhs=None)], version=2))),
            (LINKED_CASES_TOPIC, b"C2", None),
        ])
        expected = reference(settings)
        assert ("direct_care", "C2") not in expected
        wait_for(lambda: published(settings) == expected, 60)
        releases = len(audit(settings))

        # kill -9 of one process: the other is dealt its partitions, rebuilds, releases nothing again.
        doomed, survivor = gates
        doomed.proc.send_signal(signal.SIGKILL)
        doomed.proc.wait()
        wait_for(lambda: dealt([survivor], partitions), 120)
        publish(settings, [(CONSENT_EVENTS_TOPIC, b"C20", serde.encode("ConsentEvent", consent(
            "CITIZEN", citizen_id="C20", purpose="research")))])
        expected = reference(settings)
        wait_for(lambda: published(settings) == expected, 60)
        assert len(audit(settings)) == releases + 1  # the new research release, nothing twice

        # A process added: the partitions are dealt again, and again nothing is released twice.
        gates.append(start_gate(settings, app_id=APP))
        wait_for(lambda: dealt([survivor, gates[-1]], partitions) and partitions_of(gates[-1]), 120)
        out_for_c3 = {a["purpose"]: a["action"] for a in audit(settings) if a["citizen_id"] == "C3"}
        assert sorted(p for p, action in out_for_c3.items() if action == "RELEASE") == sorted(PURPOSES)
        publish(settings, [(LINKED_CASES_TOPIC, b"C3", None)])
        expected = reference(settings)
        wait_for(lambda: published(settings) == expected, 60)
        actions = [(a["purpose"], a["citizen_id"], a["action"]) for a in audit(settings)]
        assert len(actions) == releases + 1 + len(PURPOSES)  # C3's four views retracted, nothing else
        for key in {(p, c) for p, c, _ in actions}:  # releases and retractions alternate per view
            mine = [a for p, c, a in actions if (p, c) == key and a in ("RELEASE", "RETRACT")]
            assert all(x != "RETRACT" or y != "RETRACT" for x, y in itertools.pairwise(mine)), key

        # A process stopped past its session timeout while its partitions get new input: the other
        # takes them over; woken, the stopped one has that input in hand and may try to release it
        # before it learns it lost the partitions, so its transaction must be refused (the group's
        # generation) and its records never reach a read_committed reader.
        zombie = gates[-1]
        zombie.proc.send_signal(signal.SIGSTOP)
        publish(settings, [(LINKED_CASES_TOPIC, cid.encode(), encode_case(linked_case(cid, [
            member("health", f"H{cid}", nhs=None), member("police", f"P{cid}", nhs=None),
            member("housing", f"X{cid}", nhs=None)], version=3))) for cid in citizens[10:20]])
        try:
            wait_for(lambda: dealt([survivor], partitions), 120)
            expected = reference(settings)
            wait_for(lambda: published(settings) == expected, 60)
            settled = len(audit(settings))
            assert settled > len(actions)
        finally:
            zombie.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: dealt([survivor, zombie], partitions), 120)
        assert published(settings) == expected
        assert len(audit(settings)) == settled  # nothing released again, by either

        letters = [letter for m in read_to_end(settings, [DEAD_LETTER_TOPIC])
                   if (letter := read_letter(m, serde))["origin_topic"] == CONSENT_EVENTS_TOPIC]
        assert len(letters) == 1, letters  # the bad consent, by the owner of partition 0 only
        assert letters[0]["payload"] == b"not a consent event"
    finally:
        for g in gates:
            g.stop()


def test_a_gate_restarted_under_its_instance_id_serves_its_own_partitions_again_and_the_other_is_left_alone(
        pipeline_settings: Settings, monkeypatch) -> None:
    """Static membership (``consent.instance_id``): a gate killed with SIGKILL and started again
    under its name within the session timeout is dealt its own partitions at once, the other gate
    takes nothing on (no rebalance), what the dead gate's citizens got meanwhile is released once,
    and a third process under a name in use fences the first, which stops and says why."""
    from caselink.demo import start_gate

    settings = pipeline_settings
    partitions = settings.kafka.default_partitions
    monkeypatch.setenv("CASELINK_CONSENT__PSEUDONYM_KEY", KEY)
    monkeypatch.setenv("CASELINK_CONSENT__PSEUDONYM_KEY_ID", "k1")
    monkeypatch.setenv("CASELINK_CONSENT__PARTITIONED", "true")
    citizens = [f"S{i}" for i in range(20)]
    publish(settings, [(LINKED_CASES_TOPIC, cid.encode(), encode_case(linked_case(
        cid, [member("health", f"H{cid}", nhs=None)]))) for cid in citizens])

    def gate(i: int) -> Any:
        return start_gate(settings, app_id="gate-static", instance_id=f"gate-{i}", session_timeout_s=45)

    gates = [gate(0), gate(1)]
    try:
        wait_for(lambda: dealt(gates, partitions) and all(partitions_of(g) for g in gates), 120)
        expected = reference(settings)
        wait_for(lambda: published(settings) == expected, 60)
        before = [service_json(g.port) for g in gates]
        releases = len(audit(settings))

        gates[0].proc.send_signal(signal.SIGKILL)
        gates[0].proc.wait()
        publish(settings, [(CONSENT_EVENTS_TOPIC, cid.encode(), serde.encode("ConsentEvent", consent(
            "CITIZEN", citizen_id=cid, purpose="research"))) for cid in citizens])  # every citizen, both gates'
        gates[0] = gate(0)
        # dealt its own partitions at once, not after the 45 s a new member would wait for the dead one
        assert wait_for(lambda: partitions_of(gates[0]), 25) == before[0]["partitions"]
        expected = reference(settings)
        wait_for(lambda: published(settings) == expected, 60)
        disclosed = audit(settings)
        research = sorted(a["citizen_id"] for a in disclosed if a["purpose"] == "research")
        assert research == sorted(citizens) and len(disclosed) == releases + len(citizens)  # each once
        other = service_json(gates[1].port)
        assert other["instance_id"] == "gate-1" and other["partitions"] == before[1]["partitions"]
        assert other["rebalances"] == before[1]["rebalances"], (before[1], other)

        gates.append(gate(1))  # a second process named gate-1: the first is fenced and stops
        wait_for(lambda: gates[1].proc.poll() is not None, 90, pause=0.5)
        assert gates[1].proc.returncode != 0
        assert "Static consumer fenced" in gates[1].log_path.read_text()  # librdkafka's words, not ours
        assert wait_for(lambda: partitions_of(gates[2]), 60) == before[1]["partitions"]
    finally:
        for g in gates:
            g.stop()
