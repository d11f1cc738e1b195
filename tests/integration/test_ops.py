"""Operator and analyst tools against a real broker: replay, status/lag, dead-letter redrive, export."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from caselink.connectors.files import FileConnector
from caselink.connectors.mapping import load_mapping
from caselink.infra.topics import DEAD_LETTER_TOPIC, person_events_topic, purpose_topic
from caselink.schemas import default_serde
from caselink.schemas.dead_letters import dead_letter
from confluent_kafka import Consumer, Producer, TopicPartition
from typer.testing import CliRunner

from caselink.cli import app
from caselink.core.kafka import read_to_end
from caselink.core.settings import Settings, get_settings
from tests.consent_fixtures import KEY, T0, encode_case, linked_case, member
from tests.samples import sample

pytestmark = [pytest.mark.integration, pytest.mark.slow]
serde = default_serde()
runner = CliRunner()


@pytest.fixture
def cli_env(pipeline_settings: Settings, monkeypatch) -> Settings:
    monkeypatch.setenv("CASELINK_KAFKA__BOOTSTRAP_SERVERS", pipeline_settings.kafka.bootstrap_servers)
    monkeypatch.setenv("CASELINK_WORKER__WEB_PORT", "9")  # nothing listens there: the worker is "unreachable"
    monkeypatch.setenv("CASELINK_CONSENT__WEB_PORT", "9")  # and so is the consent gate
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def person_event(i: int) -> bytes:
    event = sample("PersonEvent")
    event = {**event, "event_id": f"replay-{i}", "source_record_id": f"R{i}", "source_version": i}
    return serde.encode("PersonEvent", event)


def test_replay_by_time_returns_exactly_the_events_at_and_after_it(cli_env: Settings) -> None:
    topic = person_events_topic("health")
    base = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
    producer = Producer({"bootstrap.servers": cli_env.kafka.bootstrap_servers})
    for i in range(12):
        producer.produce(topic, person_event(i), key=f"health:R{i}".encode(),
                         timestamp=int((base + timedelta(minutes=i)).timestamp() * 1000))
    assert producer.flush(10) == 0
    cut = (base + timedelta(minutes=7)).isoformat()

    code, out = cli("replay", topic, "--from", cut, "--to", "sandbox.replay", "--dry-run", "--json")
    assert code == 0 and json.loads(out)["messages"] == 5
    assert "sandbox.replay" not in Consumer({"bootstrap.servers": cli_env.kafka.bootstrap_servers,
                                             "group.id": "x"}).list_topics(timeout=10).topics
    code, out = cli("replay", topic, "--from", cut, "--to", "sandbox.replay", "--json")
    assert code == 0, out
    replayed = read_to_end(cli_env, ["sandbox.replay"])
    assert sorted(serde.decode(m.value())[1]["source_version"] for m in replayed) == [7, 8, 9, 10, 11]
    assert all(dict(m.headers())["caselink-replayed-from"].startswith(topic.encode()) for m in replayed)
    assert cli("replay", topic, "--from", "next tuesday", "--to", "sandbox.replay")[0] == 2  # not a time: exit 2


def test_status_reports_lag_of_a_stopped_consumer(cli_env: Settings) -> None:
    topic = person_events_topic("police")
    producer = Producer({"bootstrap.servers": cli_env.kafka.bootstrap_servers})
    for i in range(10):
        producer.produce(topic, person_event(i), key=b"k", partition=0)
    producer.flush(10)
    c = Consumer({"bootstrap.servers": cli_env.kafka.bootstrap_servers, "group.id": "analytics-job",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    taken = [c.poll(10) for _ in range(3)]
    c.commit(offsets=[TopicPartition(topic, 0, taken[-1].offset() + 1)], asynchronous=False)
    c.close()  # the consumer is stopped; its lag stays

    code, out = cli("status", "--json", "--no-worker", "--no-gate", "--interval", "0.2")
    report = json.loads(out)
    assert code == 0 and report["healthy"], report
    group = next(g for g in report["groups"] if g["group"] == "analytics-job")
    assert group["lag"] == 7
    assert group["partitions"] == [{"topic": topic, "partition": 0, "committed": 3, "end": 10, "lag": 7}]
    code, out = cli("status", "--json", "--no-worker", "--no-gate", "--max-lag", "5", "--interval", "0.2")
    assert code == 1 and "analytics-job lags 7" in out
    code, out = cli("status", "--interval", "0.2")  # the worker is not running
    assert code == 1 and "unreachable" in out and "analytics-job" in out


def test_dead_letters_are_listed_and_redriven_once(cli_env: Settings, tmp_path: Path) -> None:
    csv = tmp_path / "people.csv"
    csv.write_text("id,first,last,dob\nA1,Ann,Lee,02/03/1990\nA2,Bob,,1990-03-02\n")
    mapping_text = ("agency: housing\nrecord_id: id\nfields:\n  given_names: first\n"
                    "  family_name: {from: last, required: true}\n"
                    "  date_of_birth: {from: dob, format: [\"%d/%m/%Y\", \"%Y-%m-%d\"]}\n")
    broken = tmp_path / "housing.yaml"
    broken.write_text(mapping_text)
    report = FileConnector(cli_env, load_mapping(broken), name="t-dlq").load(csv, resume=False)
    assert (report.events, report.dead_letters) == (1, 1)
    # A pipeline-stage dead letter too: an event that failed on its way, kept whole.
    original = person_event(99)
    letter = dead_letter("agency.police.person-events[0]@5", "normalise", ValueError("transient"), original,
                         topic=person_events_topic("police"), partition=0, offset=5, key=b"police:R99")
    producer = Producer({"bootstrap.servers": cli_env.kafka.bootstrap_servers})
    producer.produce(DEAD_LETTER_TOPIC, serde.encode("DeadLetter", letter), key=b"x")
    producer.flush(10)

    code, out = cli("dlq", "list", "--json")
    groups = {(g["stage"], g["origin_topic"]): g["count"] for g in json.loads(out)["groups"]}
    assert groups == {("connector", "(file)"): 1, ("normalise", person_events_topic("police")): 1}
    code, out = cli("dlq", "show", "--stage", "connector", "--json")
    shown = json.loads(out)
    assert len(shown) == 1 and "1990-03-02" in shown[0]["payload"] and "family_name" in shown[0]["error"]

    assert cli("dlq", "redrive", "--stage", "connector")[0] == 1  # a row needs the fixed mapping
    fixed = tmp_path / "housing-fixed.yaml"
    fixed.write_text(mapping_text.replace("{from: last, required: true}", "last"))
    police_before = len(read_to_end(cli_env, [person_events_topic("police")]))
    code, out = cli("dlq", "redrive", "--mapping", str(fixed), "--json")
    assert code == 0, out
    assert len(json.loads(out)["redriven"]) == 2
    code, out = cli("dlq", "redrive", "--mapping", str(fixed), "--json")
    assert json.loads(out)["redriven"] == [] and len(json.loads(out)["skipped_already"]) == 2

    housing = [serde.decode(m.value())[1] for m in read_to_end(cli_env, [person_events_topic("housing")])]
    a2 = [e for e in housing if e["source_record_id"] == "A2"]
    assert len(a2) == 1 and a2[0]["person"]["date_of_birth"] == "1990-03-02"
    police = read_to_end(cli_env, [person_events_topic("police")])
    assert len(police) == police_before + 1 and police[-1].value() == original


def test_export_reads_current_views_into_pandas(cli_env: Settings, tmp_path: Path) -> None:
    from caselink.streams.consent.gate_core import GateCore
    from caselink.streams.consent.policy import bundled_policy_path, load_policy
    from caselink.streams.consent.pseudonym import Pseudonymiser

    from caselink.analyst import read_purpose

    core = GateCore(load_policy(bundled_policy_path()), Pseudonymiser(KEY, "k1"), clock=lambda: T0)
    for i in range(3):
        core.apply_linked_case(f"C{i}", encode_case(linked_case(f"C{i}", [member("health", f"H{i}"),
                                                                          member("police", f"P{i}")])))
    out = core.flush()
    core.apply_linked_case("C2", None)  # retired: its views are retracted
    out += core.flush()
    producer = Producer({"bootstrap.servers": cli_env.kafka.bootstrap_servers})
    for o in out:
        producer.produce(o.topic, o.value, key=o.key)
    producer.flush(10)

    frame = read_purpose("planning", settings=cli_env)
    assert frame["citizen_ref"].nunique() == 2 and set(frame["agency"]) == {"health", "police"}
    assert {"year_of_birth", "sex", "postcode_district"} <= set(frame.columns)
    assert not any("Amelia" in str(v) for v in frame.to_numpy().ravel())
    code, out_text = cli("export", "planning", "--out", str(tmp_path / "planning.parquet"), "--json")
    assert code == 0 and json.loads(out_text)["rows"] == 4
    assert len(pd.read_parquet(tmp_path / "planning.parquet")) == 4
    assert cli("export", "direct_care", "--out", str(tmp_path / "care.csv"))[0] == 0
    assert len(pd.read_csv(tmp_path / "care.csv")) == 2  # direct care takes no police records
    assert len(read_purpose("planning", since=T0 + timedelta(days=1), settings=cli_env)) == 0
    assert purpose_topic("planning") == "caselink.cases.planning"
