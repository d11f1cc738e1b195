"""Issue 19's friction items against a real broker: each runs the `caselink` command as a person
would (a subprocess, its output piped) and checks the exit code and the message."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from caselink.connectors.files import FileConnector
from caselink.connectors.mapping import load_mapping
from caselink.infra.kafka_runtime import free_port
from caselink.infra.topics import (
    DEAD_LETTER_TOPIC,
    LINKED_CASES_TOPIC,
    person_events_topic,
)
from caselink.schemas import default_serde
from caselink.schemas.dead_letters import read_letter
from confluent_kafka import Producer

from caselink.core.kafka import read_to_end
from caselink.core.settings import Settings
from caselink.demo import _spawn, start_worker
from tests.consent_fixtures import KEY, T0, encode_case, linked_case, member
from tests.waiting import service_json, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
serde = default_serde()


def caselink(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CASELINK_")}
    environment.update({"CASELINK_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
                        "CASELINK_REGISTRY__URL": os.environ["CASELINK_REGISTRY__URL"],  # the session's registry
                        "CASELINK_LINKAGE__BUNDLED_MODEL": "true", "CASELINK_WORKER__WEB_PORT": "9",
                        "CASELINK_CONSENT__WEB_PORT": "9", "CASELINK_CONFIG": "/nonexistent", **env})
    return subprocess.run([sys.executable, "-m", "caselink.cli", *args], capture_output=True, text=True,
                          env=environment, timeout=180)


def publish(settings: Settings, items: list[tuple[str, bytes, bytes | None]]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    for topic, key, value in items:
        producer.produce(topic, value, key=key)
    assert producer.flush(10) == 0


def test_what_does_not_exist_or_holds_nothing_is_an_error(pipeline_settings: Settings, tmp_path: Path) -> None:
    """Items 2 and 15: tail and export of a purpose or topic that does not exist, or is empty."""
    result = caselink(pipeline_settings, "tail", "nosuch", "--limit", "1")
    assert result.returncode == 1
    assert result.stderr.startswith("error: no purpose 'nosuch': there is no topic caselink.cases.nosuch; "
                                    "purposes with a topic: direct_care, planning, research, safeguarding")
    result = caselink(pipeline_settings, "export", "nosuch", "--out", str(tmp_path / "x.csv"))
    assert result.returncode == 1 and "no purpose 'nosuch'" in result.stderr
    assert not (tmp_path / "x.csv").exists()
    result = caselink(pipeline_settings, "tail", "caselink.nosuch")
    assert result.returncode == 1 and "error: no topic caselink.nosuch" in result.stderr
    result = caselink(pipeline_settings, "tail", DEAD_LETTER_TOPIC)
    assert result.returncode == 1 and f"error: {DEAD_LETTER_TOPIC} has no messages" in result.stderr
    result = caselink(pipeline_settings, "export", "planning", "--out", str(tmp_path / "p.parquet"))
    assert result.returncode == 1 and not (tmp_path / "p.parquet").exists()
    assert "no views on caselink.cases.planning; nothing written: the consent gate does not answer" in result.stderr
    result = caselink(pipeline_settings, "export", "planning", "--out", str(tmp_path / "p.parquet"), "--allow-empty")
    assert result.returncode == 0 and len(pd.read_parquet(tmp_path / "p.parquet")) == 0
    result = caselink(pipeline_settings, "audit", "C-nobody")
    assert result.returncode == 1 and "nothing has been released about C-nobody" in result.stderr
    result = caselink(pipeline_settings, "chart", "live", "--out", str(tmp_path / "live.html"))
    assert result.returncode == 1 and "no link decisions on caselink.link-decisions yet" in result.stderr


def test_a_gate_without_its_key_says_so_and_status_sees_the_gate(pipeline_settings: Settings, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Items 1, 6 and 14: a gate without the pseudonymisation key warns, /health says degraded and why,
    tail/export of a pseudonymised purpose say why they are empty; the gate's progress is consumer-group
    lag; `status` fails when the gate is down; the gate exports no linker metric."""
    publish(pipeline_settings, [(LINKED_CASES_TOPIC, f"C{i}".encode(),
                                 encode_case(linked_case(f"C{i}", [member("health", f"H{i}")]))) for i in range(3)])
    monkeypatch.delenv("CASELINK_CONSENT__PSEUDONYM_KEY", raising=False)
    port = free_port()
    gate = _spawn("gate", pipeline_settings, tmp_path / "gate", port, {"CASELINK_CONSENT__WEB_PORT": str(port)})
    try:
        state = wait_for(lambda: (h := service_json(port)).get("caught_up") and h, 60)
        assert state["status"] == "degraded"
        assert state["reason"].startswith("no pseudonymisation key (CASELINK_CONSENT__PSEUDONYM_KEY is not set): "
                                          "the pseudonymised purpose(s) planning, research release nothing")
        log = gate.log_path.read_text()
        assert " WARNING caselink.streams.consent.gate_loop [" in log and "no pseudonymisation key" in log

        env = {"CASELINK_CONSENT__WEB_PORT": str(port)}
        result = caselink(pipeline_settings, "tail", "planning", **env)
        assert result.returncode == 1
        assert result.stderr.startswith("error: caselink.cases.planning has no messages: the consent gate says: no "
                                        "pseudonymisation key")
        result = caselink(pipeline_settings, "export", "planning", "--out", str(tmp_path / "pl.parquet"), **env)
        assert result.returncode == 1 and "the consent gate says: no pseudonymisation key" in result.stderr
        wait_for(lambda: caselink(pipeline_settings, "tail", "direct_care", "--json", **env).stdout.count("\n") == 3)
        # What the policy allows this citizen, as `consent show` works it out here without the key,
        # and the gate's word that it cannot release it now.
        shown = caselink(pipeline_settings, "consent", "show", "C0", **env)
        assert shown.returncode == 0, shown.stderr
        assert shown.stderr.startswith(f"note: the consent gate at http://127.0.0.1:{port}/health is degraded: no "
                                       "pseudonymisation key")
        planning = next(line for line in shown.stdout.splitlines() if line.startswith("planning "))
        assert planning.split()[1] == "yes"
        detail = json.loads(caselink(pipeline_settings, "consent", "show", "C0", "--json", **env).stdout)
        assert detail["purposes"]["planning"]["reference"] is None and detail["gate"]["status"] == "degraded"
        result = caselink(pipeline_settings, "status", "--no-worker", "--interval", "0.1", **env)
        assert result.returncode == 1
        assert f"consent gate http://127.0.0.1:{port}/health: degraded no pseudonymisation key" in result.stdout

        # The gate's position is its consumer group's committed offsets: lag like any other stage.
        def gate_lag() -> int | None:
            report = json.loads(caselink(pipeline_settings, "status", "--json", "--no-worker", "--no-gate",
                                         "--interval", "0.1").stdout)
            group = next((g for g in report["groups"] if g["group"] == "caselink-gate-reader"), None)
            return None if group is None else group["lag"]

        assert wait_for(lambda: gate_lag() == 0, 30) is True
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            exported = response.read().decode()
        assert "caselink_gate_policy_ok 1.0" in exported and "caselink_index_records" not in exported
    finally:
        gate.proc.send_signal(signal.SIGKILL)
        gate.proc.wait()
    publish(pipeline_settings, [(LINKED_CASES_TOPIC, b"C9", encode_case(linked_case("C9", [member("health", "H9")])))])
    result = caselink(pipeline_settings, "status", "--no-worker", "--interval", "0.1",
                      CASELINK_CONSENT__WEB_PORT=str(port))
    assert result.returncode == 1
    assert f"unhealthy: consent gate http://127.0.0.1:{port}/health: unreachable" in result.stdout
    lags = [line.split() for line in result.stdout.splitlines() if line.startswith("caselink-gate-reader ")]
    assert sum(int(parts[-1]) for parts in lags) == 1  # the case the dead gate has not read


def test_tail_follow_prints_what_arrives_until_interrupted(pipeline_settings: Settings) -> None:
    """Item 2: `tail -f` follows."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASELINK_")}
    env["CASELINK_KAFKA__BOOTSTRAP_SERVERS"] = pipeline_settings.kafka.bootstrap_servers
    env["CASELINK_REGISTRY__URL"] = os.environ["CASELINK_REGISTRY__URL"]  # the session's registry
    proc = subprocess.Popen([sys.executable, "-m", "caselink.cli", "tail", "-f", "--json", LINKED_CASES_TOPIC],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert "following caselink.linked-cases" in proc.stderr.readline()
        case = encode_case(linked_case("C1", [member("police", "P1")]))
        publish(pipeline_settings, [(LINKED_CASES_TOPIC, b"C1", case)])
        line = json.loads(proc.stdout.readline())
        assert (line["key"], line["type"], line["id"]) == ("C1", "LinkedCase", f"{line['partition']}@0")
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0


def test_export_columns_are_typed(pipeline_settings: Settings, tmp_path: Path) -> None:
    """Item 15: dates are dates, lists are lists, no dots in column names."""
    from caselink.streams.consent.gate_core import GateCore
    from caselink.streams.consent.policy import bundled_policy_path, load_policy
    from caselink.streams.consent.pseudonym import Pseudonymiser

    core = GateCore(load_policy(bundled_policy_path()), Pseudonymiser(KEY, "k1"), clock=lambda: T0)
    core.apply_linked_case("C1", encode_case(linked_case("C1", [member("health", "H1"),
                                                                member("police", "P1", dob="1980-13-45")])))
    publish(pipeline_settings, [(o.topic, o.key, o.value) for o in core.flush()])
    out = tmp_path / "care.parquet"
    result = caselink(pipeline_settings, "export", "safeguarding", "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["rows"] == 2 and report["dates_of_birth_not_calendar_dates"] == 1
    schema = pq.read_schema(out)
    assert str(schema.field("date_of_birth").type) == "date32[day]"
    assert str(schema.field("case_types").type) == "list<element: string>"
    assert str(schema.field("other_names").type) == "list<element: string>"
    assert str(schema.field("n_cases").type) == "int64"
    assert not [name for name in schema.names if "." in name]
    assert "identifier_nhs_number" in schema.names
    frame = pd.read_parquet(out).set_index("record_ref")
    assert str(frame.loc["health:H1", "date_of_birth"]) == "2014-03-09"
    assert frame.loc["police:P1", "date_of_birth"] is None
    assert list(frame.loc["health:H1", "case_types"]) == ["referral"]
    csv = tmp_path / "care.csv"
    assert caselink(pipeline_settings, "export", "safeguarding", "--out", str(csv)).returncode == 0
    assert json.loads(pd.read_csv(csv)["case_types"][0]) == ["referral"]


def test_a_mapping_that_reads_a_column_the_file_lacks_sends_nothing(pipeline_settings: Settings,
                                                                     tmp_path: Path) -> None:
    """Item 3: the header is checked against the mapping before anything is produced."""
    data = tmp_path / "people.csv"
    data.write_text("id,first,last\nA1,Ann,Lee\nA2,Bob,Ray\n")
    mapping = tmp_path / "housing.yaml"
    mapping.write_text("agency: housing\nrecord_id: patient_idx\nfields:\n  given_names: first\n"
                       "  family_name: {from: [last, surname]}\n")
    result = caselink(pipeline_settings, "connector", "run", str(mapping), "--path", str(data))
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {mapping}:2: record_id reads column(s) 'patient_idx', which the source "
                                    "does not have. people.csv has: first, id, last. Nothing was sent.")
    assert read_to_end(pipeline_settings, [person_events_topic("housing")]) == []
    status = caselink(pipeline_settings, "connector", "status")
    assert "people.csv" not in status.stdout  # no checkpoint marks the file done

    mapping.write_text("agency: housing\nrecord_id: id\nfields:\n  given_names: first\n"
                       "  family_name: {from: [last, surname]}\n")
    data.write_text("id,first,last\n,Ann,Lee\n,Bob,Ray\n")
    result = caselink(pipeline_settings, "connector", "run", str(mapping), "--path", str(data))
    assert result.returncode == 1
    assert "warning: " in result.stderr and "column(s) 'surname' not in the source" in result.stderr
    assert "error: every one of the 2 rows became a dead letter" in result.stderr
    letters = [read_letter(m, serde) for m in read_to_end(pipeline_settings, [DEAD_LETTER_TOPIC])]
    assert [d["error"] for d in letters] == ["record_id: missing record id: column 'id' is empty on this row"] * 2


def test_dead_letters_go_back_only_through_their_own_agencys_mapping(pipeline_settings: Settings,
                                                                      tmp_path: Path) -> None:
    """Item 7: the letter says whose connector wrote it; another agency's mapping is refused."""
    data = tmp_path / "people.csv"
    data.write_text("id,first,last\nA1,Ann,\n")
    text = "agency: {agency}\nrecord_id: id\nfields:\n  given_names: first\n  family_name: {{from: last{req}}}\n"
    broken = tmp_path / "housing.yaml"
    broken.write_text(text.format(agency="housing", req=", required: true"))
    report = FileConnector(pipeline_settings, load_mapping(broken), name="t").load(data, resume=False)
    assert report.dead_letters == 1
    other = tmp_path / "health.yaml"
    other.write_text(text.format(agency="health", req=""))
    result = caselink(pipeline_settings, "dlq", "redrive", "--mapping", str(other))
    assert result.returncode == 1
    assert f"a row of housing's connector, and {other} maps health: give housing's fixed mapping" in result.stdout
    shown = json.loads(caselink(pipeline_settings, "dlq", "show", "--json").stdout)
    assert [d["agency"] for d in shown] == ["housing"]
    fixed = tmp_path / "housing-fixed.yaml"
    fixed.write_text(text.format(agency="housing", req=""))
    assert caselink(pipeline_settings, "dlq", "redrive", "--mapping", str(fixed)).returncode == 0
    assert read_to_end(pipeline_settings, [person_events_topic("health")]) == []


def test_replay_takes_ids_as_tail_prints_them(pipeline_settings: Settings) -> None:
    """Item 8: P@O everywhere; where from and where to are both said."""
    topic = person_events_topic("police")
    from tests.samples import sample

    event = sample("PersonEvent")
    publish(pipeline_settings, [(topic, b"k", serde.encode("PersonEvent", {**event, "event_id": f"e{i}"}))
                                for i in range(5)])
    shown = caselink(pipeline_settings, "tail", topic, "--json")
    first = json.loads(shown.stdout.splitlines()[0])["id"]
    partition = first.split("@")[0]
    result = caselink(pipeline_settings, "replay", topic, "--offsets", f"{partition}@3", "--to", "sandbox.police",
                      "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["messages"] == 2
    result = caselink(pipeline_settings, "replay", topic, "--from-beginning", "--in-place", "--dry-run", "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["target"] == topic


def test_review_decide_of_a_record_the_index_lacks_is_refused(pipeline_settings: Settings) -> None:
    """Item 4: checked before anything is published; --json."""
    case = encode_case(linked_case("C1", [member("police", "P1"), member("health", "H1")]))
    publish(pipeline_settings, [(LINKED_CASES_TOPIC, b"C1", case)])
    result = caselink(pipeline_settings, "review", "decide", "health:H9", "police:P1", "--different", "--by", "x")
    assert result.returncode == 1
    assert result.stderr.startswith("error: no record health:H9 in the citizen index (caselink.linked-cases)")
    result = caselink(pipeline_settings, "review", "decide", "health:H1", "police:P1", "--different", "--by", "x",
                      "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["same_person"] is False


def test_one_log_format_json_by_a_setting_and_reviews_are_logged(pipeline_settings: Settings, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Items 9, 4 and 14: the worker, Faust and the normaliser processes write one JSON object a line
    with log.format json, no banner; decisions and reviews are logged at the default level; the worker
    exports no gate metric."""
    monkeypatch.setenv("CASELINK_LOG__FORMAT", "json")
    at = datetime(2026, 11, 1, tzinfo=UTC)
    people = {"H1": {"given_names": "James", "family_name": "Smith", "date_of_birth": "1980-05-12", "sex": "M",
                     "addresses": [{"lines": ["4 Elm Road"], "postcode": "LS1 1AA"}]},
              "P1": {"given_names": "Jim", "family_name": "Smith", "date_of_birth": "1980-05-12", "sex": "M",
                     "addresses": [{"lines": ["9 Oak Lane"], "postcode": "LS6 2BB"}]}}
    publish(pipeline_settings, [(person_events_topic(a), f"{a}:{rid}".encode(), serde.encode("PersonEvent", {
        "event_id": rid, "agency": a, "source_record_id": rid, "source_version": 1, "op": "UPSERT", "occurred_at": at,
        "emitted_at": at, "person": people[rid], "cases": [], "source": {}}))
        for a, rid in (("health", "H1"), ("police", "P1"))])
    worker = start_worker(pipeline_settings, data_dir=tmp_path / "worker")
    try:
        wait_for(lambda: worker.get("/review", "reader")["open"] == 1, 90)
        result = caselink(pipeline_settings, "review", "decide", "health:H1", "police:P1", "--same",
                          "--by", "A. Person", "--reason", "same GP")
        assert result.returncode == 0, result.stderr
        wait_for(lambda: worker.get("/review", "reader")["open"] == 0, 30)
        result = caselink(pipeline_settings, "review", "undo", "health:H1", "police:P1", "--by", "A. Person",
                          "--reason", "pressed too soon")
        assert result.returncode == 0 and "the decision about them is taken back" in result.stdout
        wait_for(lambda: worker.get("/review", "reader")["open"] == 1, 30)  # open again, at its own score
        result = caselink(pipeline_settings, "review", "undo", "health:H1", "police:P1", "--by", "A. Person")
        assert result.returncode == 0  # published; the linker refuses it (nothing left to undo) and says so
        time.sleep(11)  # the linker's decision summary comes every 10 s
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/metrics", timeout=5) as response:
            exported = response.read().decode()
    finally:
        worker.stop()
    assert "caselink_index_records 2.0" in exported and "caselink_gate_policy_ok" not in exported
    # The live data as charts from the topics (the worker's /charts pages are driven in the browser test).
    out = tmp_path / "live.html"
    result = caselink(pipeline_settings, "chart", "live", "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["decisions"] >= 3 and report["records"] == 2  # two events and the reviewers' merge and undo
    assert report["completeness"]["health"]["date of birth"] == 1.0
    assert 'class="weights-histogram"' in out.read_text() and 'class="completeness"' in out.read_text()
    lines = [line for line in worker.log_path.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object: no banner, no escape codes
    assert {"at", "level", "logger", "pid", "role", "message"} <= set(records[0])
    assert {r["role"] for r in records} >= {"worker", "normaliser-0"}
    messages = [r["message"] for r in records]
    assert any(m.startswith("review decision ") and "by A. Person on health:H1 / police:P1: same person (same GP) "
               "applied: MERGED" in m for m in messages), messages
    assert any(m.startswith("linker: ") and " decisions in the last " in m for m in messages), messages
    assert any("by A. Person on health:H1 / police:P1: undo (pressed too soon) applied: SPLIT" in m for m in messages)
    assert any("by A. Person on health:H1 / police:P1: undo refused: no reviewer's decision about them to undo" in m
               for m in messages)
