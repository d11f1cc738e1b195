"""The consent gate against a real broker: release, retraction, audit, restart, policy changes."""

from __future__ import annotations

import json
import time
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
from tests.waiting import service_json, wait_for

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
        # Idle again, the gate records its last batch as committed: that commit runs beside the next
        # batch's evaluation, and with no next batch it must still be recorded (4 consent messages).
        wait_for(lambda: sum(v for k, v in gate.positions_committed.items()
                             if k.startswith(f"{CONSENT_EVENTS_TOPIC}:")) == 4, 10)
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
                    if read_letter(m, serde)["stage"] == "consent-gate"]) == 2

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
                                     "--permit", "--by", "clinic 4", "--id", "cli-1", "--json"])
        assert result.exit_code == 0, result.output
        wait_for(lambda: latest(settings, "research"))
        shown = json.loads(runner.invoke(app, ["consent", "show", "C9", "--json"]).output)
        assert shown["purposes"]["research"]["released"] is True
        assert [c["consent_id"] for c in shown["consents"]] == ["cli-1"]
        bad = runner.invoke(app, ["consent", "record", "--citizen", "C9", "--purpose", "marketing", "--permit",
                                  "--by", "x"])
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
    import signal

    from caselink.demo import start_gate

    settings = pipeline_settings
    monkeypatch.setenv("CASELINK_CONSENT__PSEUDONYM_KEY", "shared-by-every-gate-0123456789")  # as in production
    publish(settings, [(LINKED_CASES_TOPIC, b"C1", encode_case(linked_case("C1", [member("health", "H1")])))])
    gates = [start_gate(settings, app_id="gate-pair") for _ in range(2)]
    try:
        wait_for(lambda: sorted(str(service_json(g.port).get("role")) for g in gates) == ["active", "standby"], 90)
        active = next(g for g in gates if service_json(g.port)["role"] == "active")
        standby = next(g for g in gates if g is not active)
        wait_for(lambda: "C1" in latest(settings, "direct_care"))
        assert service_json(standby.port)["released"] == 0  # the standby publishes nothing

        active.proc.send_signal(signal.SIGKILL)
        active.proc.wait()
        wait_for(lambda: (h := service_json(standby.port)).get("role") == "active" and h.get("caught_up"), 60)
        publish(settings, [(CONSENT_EVENTS_TOPIC, b"C1", serde.encode("ConsentEvent", consent(
            "CITIZEN", citizen_id="C1", purpose="research")))])
        wait_for(lambda: latest(settings, "research"), 30)
        # One release per purpose and citizen: the takeover re-released nothing that was already out.
        releases = [(a["purpose"], a["action"]) for a in audit(settings)]
        assert sorted(releases) == sorted({*releases}), releases
    finally:
        for g in gates:
            g.stop()


def _poll_all(settings: Settings, topics: list[str], isolation: str, seconds: float) -> list:
    """Everything a reader with ``isolation`` gets from the start of ``topics`` within ``seconds``
    (a read_committed reader cannot reach the end of a partition with an open transaction)."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    from caselink.core.kafka import consumer

    c = consumer(settings, f"abort-probe-{time.monotonic_ns()}", **{"isolation.level": isolation,
                                                                    "enable.partition.eof": False})
    try:
        md = c.list_topics(timeout=10)
        c.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in md.topics[t].partitions])
        found, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline:
            found += [m for m in c.consume(500, timeout=0.2) if not m.error()]
        return found
    finally:
        c.close()


def test_kill_inside_an_open_transaction_aborts_it_and_the_standby_releases_each_view_once(
        pipeline_settings: Settings, monkeypatch, tmp_path: Path) -> None:
    """The active gate stops itself between producing a batch's views and committing them (the
    test hook ``consent.test_pause_before_commit``) and is killed there with SIGKILL. Its records
    are on the broker, visible to a read_uncommitted reader only; the standby takes over, its
    transactional id aborts the open transaction, and it releases every view exactly once: no
    read_committed reader ever sees the aborted records or their disclosures."""
    import signal

    from caselink.demo import start_gate

    settings = pipeline_settings
    topics = [*(purpose_topic(p) for p in PURPOSES), DISCLOSURES_TOPIC]
    monkeypatch.setenv("CASELINK_CONSENT__PSEUDONYM_KEY", "shared-by-every-gate-0123456789")
    marker = tmp_path / "paused-inside-a-transaction"
    monkeypatch.setenv("CASELINK_CONSENT__TEST_PAUSE_BEFORE_COMMIT", str(marker))
    doomed = start_gate(settings, app_id="gate-abort")
    monkeypatch.delenv("CASELINK_CONSENT__TEST_PAUSE_BEFORE_COMMIT")
    standby = None
    try:
        wait_for(lambda: (h := service_json(doomed.port)).get("role") == "active" and h.get("caught_up"), 90)
        standby = start_gate(settings, app_id="gate-abort")
        wait_for(lambda: service_json(standby.port).get("role") == "standby", 60)

        citizens = [f"C{i}" for i in range(10)]  # one health record each: direct care, safeguarding, planning
        publish(settings, [(LINKED_CASES_TOPIC, cid.encode(), encode_case(linked_case(
            cid, [member("health", f"H{cid}", nhs=None)]))) for cid in citizens])
        wait_for(marker.exists, 60)
        assert int(marker.read_text()) == doomed.proc.pid
        wait_for(lambda: Path(f"/proc/{doomed.proc.pid}/stat").read_text().split(")")[1].split()[0] == "T", 10)

        # Inside the open transaction: the records are written, but only read_uncommitted sees them.
        pending = _poll_all(settings, topics, "read_uncommitted", 3.0)
        pending_audit = [serde.decode(m.value())[1] for m in pending if m.topic() == DISCLOSURES_TOPIC]
        assert pending_audit and len(pending_audit) == len([m for m in pending if m.topic() != DISCLOSURES_TOPIC])
        assert _poll_all(settings, topics, "read_committed", 3.0) == []

        doomed.proc.send_signal(signal.SIGKILL)  # kill -9, still stopped inside the transaction
        doomed.proc.wait()
        wait_for(lambda: (h := service_json(standby.port)).get("role") == "active" and h.get("caught_up"), 90)
        wait_for(lambda: service_json(standby.port).get("released") == 3 * len(citizens), 60)

        committed_audit = audit(settings)
        releases = [(a["purpose"], a["citizen_id"]) for a in committed_audit if a["action"] == "RELEASE"]
        assert sorted(releases) == sorted((p, c) for p in ("direct_care", "safeguarding", "planning")
                                          for c in citizens)  # each view once
        assert not {a["disclosure_id"] for a in pending_audit} & {a["disclosure_id"] for a in committed_audit}
        for purpose in ("direct_care", "safeguarding", "planning"):
            keys = [m.key() for m in read_to_end(settings, [purpose_topic(purpose)])]
            assert len(keys) == len(set(keys)) == len(citizens)
        # The aborted records are still in the log, for read_uncommitted readers only.
        everything = _poll_all(settings, [DISCLOSURES_TOPIC], "read_uncommitted", 3.0)
        assert len(everything) == len(pending_audit) + len(committed_audit)
    finally:
        for g in (doomed, standby):
            if g is not None:
                g.stop()
