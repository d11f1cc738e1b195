"""The file connector against the real broker: events, dead letters, and resume after SIGKILL."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from caselink.demo import SAMPLES
from caselink.kafka import read_to_end
from connectors.files import FileConnector, resolve_source_path
from connectors.mapping import load_mapping
from infra.topics import DEAD_LETTER_TOPIC, caselink_topics, ensure_topics, person_events_topic
from schemas import default_serde

pytestmark = pytest.mark.integration


@pytest.fixture
def topics(admin, settings):
    ensure_topics(admin, caselink_topics(["health", "police", "social_care", "loadtest"], []))


def _events(settings, agency: str) -> list[dict]:
    serde = default_serde()
    return [serde.decode(m.value(), expect="PersonEvent")[1]
            for m in read_to_end(settings, [person_events_topic(agency)])]


def test_police_sample_arrives_with_legacy_encoding(settings, topics) -> None:
    mapping = load_mapping(SAMPLES / "mappings" / "police.yaml")
    before = len(_events(settings, "police"))
    report = FileConnector(settings, mapping, name="t-police").load(resolve_source_path(mapping), resume=False)
    assert report.events == report.rows == 31 and report.dead_letters == 0
    events = _events(settings, "police")[before:]
    assert len(events) == 31
    cafe = next(e for e in events if e["source_record_id"] == "PO-CAFÉ")
    assert cafe["person"]["family_name"] == "RENÉE"
    assert cafe["person"]["addresses"][0]["lines"] == ["1 Café Street", "Leeds"]
    assert all(e["source_version"] == 1793714400000 for e in events)  # RECORDED as epoch ms


def test_bad_rows_become_dead_letters_and_the_rest_arrive(settings, topics, tmp_path: Path) -> None:
    mapping = load_mapping(SAMPLES / "mappings" / "health.yaml")
    report = FileConnector(settings, mapping, name="t-health").load(resolve_source_path(mapping), resume=False)
    assert (report.rows, report.events, report.dead_letters) == (162, 160, 2)
    serde = default_serde()
    letters = [serde.decode(m.value(), expect="DeadLetter")[1] for m in read_to_end(settings, [DEAD_LETTER_TOPIC])]
    mine = {x["origin"]: x for x in letters if x["origin"].startswith("health_patients.csv")}
    assert "31/02/2015" in mine["health_patients.csv:row 161"]["error"]
    assert b"HEBAD01" in mine["health_patients.csv:row 161"]["payload"]
    assert "missing record id" in mine["health_patients.csv:row 162"]["error"]


def _write_load_file(path: Path, rows: int) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "first", "last", "dob", "updated"])
        for i in range(rows):
            w.writerow([f"R{i:06d}", "Ann", f"Lee{i}", "1990-01-01", 1])


LOAD_MAPPING = """agency: loadtest
record_id: id
version: updated
fields:
  given_names: first
  family_name: last
  date_of_birth: dob
"""


@pytest.mark.slow
def test_sigkill_half_way_then_restart_loses_nothing(settings, topics, tmp_path: Path) -> None:
    rows = 100_000
    data = tmp_path / "load.csv"
    _write_load_file(data, rows)
    mapping_path = tmp_path / "loadtest.yaml"
    mapping_path.write_text(LOAD_MAPPING)
    env = {**os.environ, "CASELINK_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
           "CASELINK_CONFIG": "/nonexistent"}
    cmd = [sys.executable, "-m", "caselink.cli", "connector", "run", str(mapping_path), "--path", str(data),
           "--name", "t-sigkill", "--json"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Kill it once some, but not all, events are on the topic.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.5)
        n = len(read_to_end(settings, [person_events_topic("loadtest")]))
        if n > rows // 4:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(read_to_end(settings, [person_events_topic("loadtest")]))
    assert 0 < partial < rows, "the kill must land mid-load for this test to mean anything"

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    events = _events(settings, "loadtest")
    ids = [e["source_record_id"] for e in events]
    assert set(ids) == {f"R{i:06d}" for i in range(rows)}  # every row arrived
    # Re-sent rows are exact duplicates (same event id and version), which the linker absorbs.
    by_id: dict[str, set] = {}
    for e in events:
        by_id.setdefault(e["source_record_id"], set()).add((e["event_id"], e["source_version"]))
    assert all(len(v) == 1 for v in by_id.values())


def test_watch_mode_loads_each_new_file_once(settings, topics, tmp_path: Path) -> None:
    mapping_path = tmp_path / "loadtest.yaml"
    mapping_path.write_text(LOAD_MAPPING)
    from connectors.mapping import load_mapping as load

    folder = tmp_path / "drop"
    folder.mkdir()
    _write_load_file(folder / "a.csv", 50)
    connector = FileConnector(settings, load(mapping_path), name="t-watch")
    first = connector.watch(folder, "*.csv", poll_seconds=0.2, stop_after=2)
    assert [Path(r.path).name for r in first] == ["a.csv"] and first[0].events == 50
    _write_load_file(folder / "b.csv", 20)
    second = FileConnector(settings, load(mapping_path), name="t-watch").watch(folder, "*.csv", poll_seconds=0.2,
                                                                               stop_after=2)
    assert [Path(r.path).name for r in second] == ["b.csv"] and second[0].events == 20
