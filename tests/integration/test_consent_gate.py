"""The consent gate against a real broker: release, retraction, audit, restart, policy changes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from caselink.infra.topics import (
    CONSENT_EVENTS_TOPIC,
    DEAD_LETTER_TOPIC,
    DISCLOSURES_TOPIC,
    LINKED_CASES_TOPIC,
    purpose_topic,
)
from caselink.schemas import default_serde
from caselink.schemas.dead_letters import read_letter
from caselink.streams.consent.gate_loop import GateLoop
from caselink.streams.consent.policy import bundled_policy_path
from confluent_kafka import Producer
from pydantic import SecretStr

from caselink.core.kafka import read_to_end
from caselink.core.settings import ConsentSettings, Settings, WorkerSettings
from tests.consent_fixtures import consent, encode_case, linked_case, member

pytestmark = [pytest.mark.integration, pytest.mark.slow]
serde = default_serde()
PURPOSES = ("direct_care", "safeguarding", "research", "planning")


def gate_settings(base: Settings, policy: Path) -> Settings:
    return base.model_copy(update={
        "worker": WorkerSettings(app_id="gate-test"),
        "consent": ConsentSettings(policy_path=policy, pseudonym_key=SecretStr("integration-test-key-0123456789"),
                                   pseudonym_key_id="k1", policy_poll_s=0.2),
    })


def publish(settings: Settings, items: list[tuple[str, bytes, bytes | None]]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers, "enable.idempotence": True})
    for topic, key, value in items:
        producer.produce(topic, value, key=key)
    assert producer.flush(30) == 0


def latest(settings: Settings, purpose: str) -> dict[str, dict | None]:
    out: dict[str, dict | None] = {}
    for msg in read_to_end(settings, [purpose_topic(purpose)]):
        out[msg.key().decode()] = serde.decode(msg.value())[1] if msg.value() is not None else None
    return out


def audit(settings: Settings) -> list[dict]:
    return [serde.decode(m.value())[1] for m in read_to_end(settings, [DISCLOSURES_TOPIC])]


def wait_for(condition: Callable[[], object], timeout: float = 60.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s")
        time.sleep(0.2)


def start(settings: Settings) -> GateLoop:
    gate = GateLoop(settings)
    gate.start()
    wait_for(lambda: gate.caught_up or gate.error, 60)
    assert gate.error is None
    return gate


def test_gate_releases_retracts_audits_and_survives_restart(pipeline_settings: Settings, tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(bundled_policy_path().read_text())
    settings = gate_settings(pipeline_settings, policy_file)
    c1 = linked_case("C1", [member("health", "H1"), member("social_care", "S1"), member("police", "P1")])
    c2 = linked_case("C2", [member("education", "E1", nhs="4010232137", given="Zofia")])
    publish(settings, [(LINKED_CASES_TOPIC, b"C1", encode_case(c1)), (LINKED_CASES_TOPIC, b"C2", encode_case(c2))])

    gate = start(settings)
    try:
        wait_for(lambda: set(latest(settings, "direct_care")) == {"C1", "C2"})
        assert {m["agency"] for m in latest(settings, "direct_care")["C1"]["members"]} == {"health", "social_care"}
        assert set(latest(settings, "safeguarding")) == {"C1", "C2"}
        assert latest(settings, "research") == {}  # no consent yet

        # Consent for research arrives; a malformed and an undecodable consent go to dead letters.
        permit = consent("CITIZEN", citizen_id="C1", purpose="research", consent_id="cons-1")
        publish(settings, [
            (CONSENT_EVENTS_TOPIC, b"C1", serde.encode("ConsentEvent", permit)),
            (CONSENT_EVENTS_TOPIC, b"X", serde.encode("ConsentEvent", {**consent("CITIZEN", citizen_id="C2"),
                                                                       "purpose": "marketing"})),
            (CONSENT_EVENTS_TOPIC, b"Y", b"\x00 not a consent"),
        ])
        research = wait_for(lambda: latest(settings, "research"))
        (ref, view), = research.items()
        assert ref.startswith("k1.") and view["pseudonymised"] and "Amelia" not in str(view)

        letters = wait_for(lambda: [read_letter(m, serde) for m in read_to_end(settings, [DEAD_LETTER_TOPIC])
                                    if read_letter(m, serde)["stage"] == "consent-gate"] or None)
        assert len(letters) == 2
        assert any("marketing" in x["error"] for x in letters)
        assert {x["origin_topic"] for x in letters} == {CONSENT_EVENTS_TOPIC}

        # Withdrawal retracts (a tombstone under the same pseudonym), audited.
        publish(settings, [(CONSENT_EVENTS_TOPIC, b"C1", serde.encode("ConsentEvent", {
            **permit, "status": "WITHDRAWN", "recorded_at": permit["recorded_at"].replace(year=2027)}))])
        wait_for(lambda: latest(settings, "research") == {ref: None})
        assert [(a["action"], a["purpose"]) for a in audit(settings) if a["purpose"] == "research"] == [
            ("RELEASE", "research"), ("RETRACT", "research")]
    finally:
        gate.stop()

    # A restart replays everything and publishes nothing new: no duplicate audit or dead letters.
    before = audit(settings)
    gate = start(settings)
    try:
        time.sleep(1.0)
        assert len(audit(settings)) == len(before)
        assert len([m for m in read_to_end(settings, [DEAD_LETTER_TOPIC])
                    if serde.decode(m.value())[1]["stage"] == "consent-gate"]) == 2

        # A policy change narrows direct care to health only: a corrected view, audited with the reason.
        policy_file.write_text(policy_file.read_text().replace(
            "agencies: [health, social_care, education, housing]", "agencies: [health]"))
        wait_for(lambda: {m["agency"] for m in (latest(settings, "direct_care").get("C1") or {"members": []})
                          ["members"]} == {"health"})
        assert latest(settings, "direct_care")["C2"] is None  # education no longer flows to direct care
        reasons = [a["reason"] for a in audit(settings) if a["purpose"] == "direct_care"]
        assert any("no longer agencies ['social_care']" in r for r in reasons)

        # A broken policy pauses the gate: nothing is released while it is broken, then it resumes.
        policy_file.write_text("version: 3\npurposes: [oops\n")
        wait_for(lambda: gate.policy_error)
        publish(settings, [(LINKED_CASES_TOPIC, b"C3", encode_case(linked_case("C3", [member("health", "H3")])))])
        time.sleep(1.0)
        assert "C3" not in latest(settings, "direct_care")
        policy_file.write_text(bundled_policy_path().read_text())
        wait_for(lambda: "C3" in latest(settings, "direct_care"), 60)
    finally:
        gate.stop()

    # The audit matches what reached the purpose topics, one to one and in order.
    sent = [(m.topic(), m.key().decode(), m.value() is not None)
            for p in PURPOSES for m in read_to_end(settings, [purpose_topic(p)])]
    recorded = [(a["recipient_topic"], a["recipient_key"], a["action"] == "RELEASE") for a in audit(settings)]
    assert sorted(sent) == sorted(recorded)
    for where in {(t, k) for t, k, _ in sent}:
        assert [s for s in sent if s[:2] == where] == [r for r in recorded if r[:2] == where]


def test_consent_cli_records_shows_withdraws_and_audits(pipeline_settings: Settings, monkeypatch) -> None:
    import json

    from typer.testing import CliRunner

    from caselink.cli import app
    from caselink.core.settings import get_settings

    key = "cli-test-key-0123456789abcdef"
    monkeypatch.setenv("CASELINK_KAFKA__BOOTSTRAP_SERVERS", pipeline_settings.kafka.bootstrap_servers)
    monkeypatch.setenv("CASELINK_CONSENT__PSEUDONYM_KEY", key)
    get_settings.cache_clear()
    settings = get_settings()
    publish(settings, [(LINKED_CASES_TOPIC, b"C9", encode_case(linked_case("C9", [member("health", "H9")])))])
    runner = CliRunner()
    gate = start(settings)
    try:
        result = runner.invoke(app, ["consent", "record", "--record", "health:H9", "--purpose", "research",
                                     "--by", "clinic 4", "--id", "cli-1", "--json"])
        assert result.exit_code == 0, result.output
        wait_for(lambda: latest(settings, "research"))
        shown = json.loads(runner.invoke(app, ["consent", "show", "C9", "--json"]).output)
        assert shown["purposes"]["research"]["released"] is True
        assert [c["consent_id"] for c in shown["consents"]] == ["cli-1"]
        bad = runner.invoke(app, ["consent", "record", "--citizen", "C9", "--purpose", "marketing", "--by", "x"])
        assert bad.exit_code == 1 and "marketing" in bad.output

        assert runner.invoke(app, ["consent", "withdraw", "cli-1", "--by", "clinic 4"]).exit_code == 0
        wait_for(lambda: all(v is None for v in latest(settings, "research").values()))
        history = json.loads(runner.invoke(app, ["audit", "C9", "--json"]).output)
        research = [(h["action"], h["reason"]) for h in history if h["purpose"] == "research"]
        assert [a for a, _ in research] == ["RELEASE", "RETRACT"]
        assert "no consent" in research[1][1]
        table = runner.invoke(app, ["audit", "C9"], env={"COLUMNS": "200"}).output
        assert "RETRACT" in table and "direct_care" in table
    finally:
        gate.stop()
        get_settings.cache_clear()


def test_gate_processes_elect_one_and_a_standby_takes_over(pipeline_settings: Settings, monkeypatch) -> None:
    import json
    import signal
    import urllib.error
    import urllib.request

    from caselink.demo import start_gate

    def health(p) -> dict:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{p.port}/health", timeout=2) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read() or b"{}")
        except (OSError, ValueError):
            return {}

    settings = pipeline_settings
    monkeypatch.setenv("CASELINK_CONSENT__PSEUDONYM_KEY", "shared-by-every-gate-0123456789")  # as in production
    publish(settings, [(LINKED_CASES_TOPIC, b"C1", encode_case(linked_case("C1", [member("health", "H1")])))])
    gates = [start_gate(settings, app_id="gate-pair") for _ in range(2)]
    try:
        wait_for(lambda: sorted(str(health(g).get("role")) for g in gates) == ["active", "standby"], 90)
        active = next(g for g in gates if health(g)["role"] == "active")
        standby = next(g for g in gates if g is not active)
        wait_for(lambda: "C1" in latest(settings, "direct_care"))
        assert health(standby)["released"] == 0  # the standby publishes nothing

        active.proc.send_signal(signal.SIGKILL)
        active.proc.wait()
        wait_for(lambda: health(standby).get("role") == "active" and health(standby).get("caught_up"), 60)
        publish(settings, [(CONSENT_EVENTS_TOPIC, b"C1", serde.encode("ConsentEvent", consent(
            "CITIZEN", citizen_id="C1", purpose="research")))])
        wait_for(lambda: latest(settings, "research"), 30)
        # One release per purpose and citizen: the takeover re-released nothing that was already out.
        releases = [(a["purpose"], a["action"]) for a in audit(settings)]
        assert sorted(releases) == sorted({*releases}), releases
    finally:
        for g in gates:
            g.stop()
