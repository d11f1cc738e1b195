"""The file connector against the real broker: events, dead letters, and resume after SIGKILL."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from caselink.connectors.files import FileConnector, resolve_source_path
from caselink.connectors.mapping import load_mapping
from caselink.infra.topics import DEAD_LETTER_TOPIC, caselink_topics, ensure_topics, person_events_topic
from caselink.schemas import default_serde
from caselink.schemas.dead_letters import read_letter

from caselink.core.kafka import read_to_end
from caselink.demo import SAMPLES

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
    # Row 161's impossible date does not lose the record: it arrives with the date's digits kept
    # and the problem in quality. Row 162 has no record id: nothing to key it by.
    assert (report.rows, report.events, report.dead_letters) == (162, 161, 1)
    serde = default_serde()
    letters = [read_letter(m, serde) for m in read_to_end(settings, [DEAD_LETTER_TOPIC])]
    mine = {x["origin"]: x for x in letters if x["origin"].startswith("health_patients.csv")}
    assert set(mine) == {"health_patients.csv:row 162"}
    assert "missing record id" in mine["health_patients.csv:row 162"]["error"]
    events = [serde.decode(m.value())[1] for m in read_to_end(settings, [person_events_topic("health")])]
    bad = next(e for e in events if e["source_record_id"] == "HEBAD01")
    assert bad["person"]["date_of_birth"] == "2015-02-31"
    assert [(q["field"], q["raw"]) for q in bad["person"]["quality"]] == [("date_of_birth", "31/02/2015")]


def _kill_once_a_quarter_is_on_the_topic(settings, proc: subprocess.Popen, rows: int, group: bool = False) -> None:
    """SIGKILL ``proc`` (or its whole process group) once a quarter of ``rows`` more are on the
    loadtest topic; watermarks are cheap to poll, so the kill lands mid-load however fast it runs."""
    from confluent_kafka import TopicPartition

    from caselink.core.kafka import consumer, watermarks

    c = consumer(settings, "t-watermarks")
    topic = person_events_topic("loadtest")
    parts = list(c.list_topics(topic, timeout=30).topics[topic].partitions)

    def end() -> int:
        return sum(watermarks(c, TopicPartition(topic, p))[1] for p in parts)

    try:
        start = end()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and end() - start < rows // 4:
            time.sleep(0.02)
    finally:
        c.close()
    if group:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        proc.send_signal(signal.SIGKILL)
    proc.wait()


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
    # Checkpoints every 1,000 rows, whatever the time, so the kill lands after some of them.
    env = {**os.environ, "CASELINK_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
           "CASELINK_CONFIG": "/nonexistent", "CASELINK_CONNECTOR__CHECKPOINT_EVERY_ROWS": "1000",
           "CASELINK_CONNECTOR__CHECKPOINT_INTERVAL_S": "0"}
    cmd = [sys.executable, "-m", "caselink.cli", "connector", "run", str(mapping_path), "--path", str(data),
           "--name", "t-sigkill", "--json"]
    before = len(_events(settings, "loadtest"))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _kill_once_a_quarter_is_on_the_topic(settings, proc, rows)
    partial = len(read_to_end(settings, [person_events_topic("loadtest")])) - before
    assert 0 < partial < rows, "the kill must land mid-load for this test to mean anything"

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    resumed = json.loads(done.stdout)["resumed_from"]
    assert 0 < resumed <= partial, "the restart resumes from the last checkpoint, which names only rows sent"
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
    from caselink.connectors.mapping import load_mapping as load

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


def test_parallel_load_keeps_each_records_order_and_records_completion(settings, topics, tmp_path: Path) -> None:
    """Two worker processes: every row once, each record's versions in order, bad rows dead-lettered once."""
    data = tmp_path / "twice.csv"
    records = 3_000
    with data.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "first", "last", "dob", "updated"])
        for i in range(records):  # each record twice, version 1 then 2, a few hundred rows apart
            w.writerow([f"P{i:05d}", "Ann", f"Lee{i}", "1990-01-01", 1])
            if i >= 200:
                w.writerow([f"P{i - 200:05d}", "Ann", f"Lee{i - 200}", "1990-01-01", 2])
        for i in range(records - 200, records):
            w.writerow([f"P{i:05d}", "Ann", f"Lee{i}", "1990-01-01", 2])
        w.writerow(["P-BAD", "Ann", "Lee", "1990-01-01", "not-a-version"])
    mapping_path = tmp_path / "loadtest.yaml"
    mapping_path.write_text(LOAD_MAPPING)
    connector = FileConnector(settings, load_mapping(mapping_path), name="t-parallel")
    report = connector.load_parallel(data, workers=2)
    assert (report.rows, report.events, report.dead_letters, report.workers) == (2 * records + 1, 2 * records, 1, 2)

    versions: dict[str, list[int]] = {}
    for e in _events(settings, "loadtest"):
        if not e["source_record_id"].startswith("P"):
            continue
        versions.setdefault(e["source_record_id"], []).append(e["source_version"])
    assert versions == {f"P{i:05d}": [1, 2] for i in range(records)}
    serde = default_serde()
    letters = [read_letter(m, serde) for m in read_to_end(settings, [DEAD_LETTER_TOPIC])]
    assert [x["origin"] for x in letters if x["origin"].startswith("twice.csv")] == [f"twice.csv:row {2 * records + 1}"]

    again = FileConnector(settings, load_mapping(mapping_path), name="t-parallel").load(data)
    assert again.rows == 0 and again.resumed_from == 2 * records + 1  # the parallel run recorded completion


@pytest.mark.slow
def test_sigkill_of_a_parallel_load_then_restart_loses_nothing(settings, topics, tmp_path: Path) -> None:
    rows = 100_000
    data = tmp_path / "load2.csv"
    with data.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "first", "last", "dob", "updated"])
        for i in range(rows):
            w.writerow([f"Q{i:06d}", "Ann", f"Lee{i}", "1990-01-01", 1])
    mapping_path = tmp_path / "loadtest.yaml"
    mapping_path.write_text(LOAD_MAPPING)
    env = {**os.environ, "CASELINK_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
           "CASELINK_CONFIG": "/nonexistent"}
    cmd = [sys.executable, "-m", "caselink.cli", "connector", "run", str(mapping_path), "--path", str(data),
           "--name", "t-sigkill-parallel", "--workers", "2", "--json"]

    def mine() -> list[dict]:
        return [e for e in _events(settings, "loadtest") if e["source_record_id"].startswith("Q")]

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    # The parent and both workers, as a machine failure would.
    _kill_once_a_quarter_is_on_the_topic(settings, proc, rows, group=True)
    partial = len(mine())
    assert 0 < partial < rows, "the kill must land mid-load for this test to mean anything"

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    by_id: dict[str, set] = {}
    for e in mine():
        by_id.setdefault(e["source_record_id"], set()).add((e["event_id"], e["source_version"]))
    assert set(by_id) == {f"Q{i:06d}" for i in range(rows)}  # every row arrived
    assert all(len(v) == 1 for v in by_id.values())  # re-sent rows are exact duplicates


def _letters_from(settings, prefix: str) -> list[tuple[dict, dict]]:
    serde = default_serde()
    return [(read_letter(m, serde), dict(m.headers() or []))
            for m in read_to_end(settings, [DEAD_LETTER_TOPIC])
            if read_letter(m, serde)["origin"].startswith(prefix)]


def _run_connector(settings, mapping_path: Path, data: Path, name: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CASELINK_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
           "CASELINK_CONFIG": "/nonexistent"}
    return subprocess.run([sys.executable, "-m", "caselink.cli", "connector", "run", str(mapping_path), "--path",
                           str(data), "--name", name, "--json"], env=env, capture_output=True, text=True, timeout=120)


def test_deeply_nested_jsonl_is_a_dead_letter_and_the_load_goes_on(settings, topics, tmp_path: Path) -> None:
    """D3: a line of 100,000 '[' crashed the connector (RecursionError); the row after it was never sent."""
    data = tmp_path / "nested.jsonl"
    nested = b"[" * 100_000 + b"\n"
    data.write_bytes(b'{"id": "N1", "first": "Ann", "last": "Lee", "dob": "1990-01-01", "updated": 1}\n' + nested
                     + b'{"id": "N3", "first": "Bob", "last": "Ray", "dob": "1991-01-01", "updated": 1}\n')
    mapping_path = tmp_path / "loadtest.yaml"
    mapping_path.write_text(LOAD_MAPPING + "source: {kind: jsonl}\n")
    done = _run_connector(settings, mapping_path, data, "t-nested")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["dead_letters"] == 1
    assert {"N1", "N3"} <= {e["source_record_id"] for e in _events(settings, "loadtest")}
    (letter, headers), = _letters_from(settings, "nested.jsonl")
    assert letter["origin"] == "nested.jsonl:row 2" and letter["payload"] == nested
    assert "nested too deeply" in letter["error"] and headers["caselink-source-kind"] == b"jsonl"


def test_csv_dead_letters_keep_the_rows_bytes_and_swallow_nothing(settings, topics, tmp_path: Path) -> None:
    """D8: an unterminated quote swallowed the rest of the file into one dead letter of 7 bytes
    ("line 3"); a row with a 1 MB field was dead-lettered with a 6-byte payload."""
    data = tmp_path / "quotes.csv"
    huge = b"x" * 1_100_000
    data.write_bytes(b"id,first,last,dob,updated\n"
                     b"U1,Ann,Lee,1990-01-01,1\n"
                     b'U2,"Bob,Ray,1990-01-01,1\n'          # the quote is never closed
                     b"U3,Cat,Day,1990-01-01,1\n"
                     b"U4,Dan," + huge + b",1990-01-01,1\n"  # over the row bound
                     b"U5,Eve,Fox,1990-01-01,1\n"
                     b"U6,Gus,Hay,1990-01-01,not-a-version\n")  # the mapping rejects it
    mapping_path = tmp_path / "loadtest.yaml"
    mapping_path.write_text(LOAD_MAPPING)
    done = _run_connector(settings, mapping_path, data, "t-quotes")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["rows"], report["events"], report["dead_letters"]) == (6, 3, 3)
    assert {"U1", "U3", "U5"} <= {e["source_record_id"] for e in _events(settings, "loadtest")}

    letters = {x["origin"]: (x, h) for x, h in _letters_from(settings, "quotes.csv")}
    quote, headers = letters["quotes.csv:row 2"]
    assert quote["payload"] == b'U2,"Bob,Ray,1990-01-01,1\n' and "unterminated" in quote["error"]
    assert headers["caselink-source-kind"] == b"csv"
    assert headers["caselink-source-header"] == b"id,first,last,dob,updated\n"
    big, _ = letters["quotes.csv:row 4"]
    assert big["payload"] == (b"U4,Dan," + huge)[:len(big["payload"])] and len(big["payload"]) == 512 * 1024
    assert "payload truncated" in big["error"] and "1,100," in big["error"]
    rejected, _ = letters["quotes.csv:row 6"]
    assert rejected["payload"] == b"U6,Gus,Hay,1990-01-01,not-a-version\n"  # the row as it was, not re-serialised


def test_a_damaged_checkpoint_is_skipped_and_reported_not_a_crash(settings, topics, tmp_path: Path) -> None:
    """D2: one non-JSON value on the checkpoint topic made every connector crash at start, for good
    (the topic is compacted). Now it is skipped and reported, and the connector's previous valid
    checkpoint is used."""
    from caselink.infra.topics import connector_checkpoints_topic
    from confluent_kafka import Producer

    data = tmp_path / "cp.csv"
    _write_load_file(data, 30)
    mapping_path = tmp_path / "loadtest.yaml"
    mapping_path.write_text(LOAD_MAPPING)
    first = FileConnector(settings, load_mapping(mapping_path), name="t-damaged").load(data)
    assert first.events == 30
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    topic = connector_checkpoints_topic("loadtest")
    for value in (b"\x00not json", b'{"files": {"x": {"rows": "lots"}}}', b"[" * 100_000):
        producer.produce(topic, value, key=b"t-damaged")
    producer.produce(topic, b"{", key=b"someone-else")
    assert producer.flush(10) == 0

    done = _run_connector(settings, mapping_path, data, "t-damaged")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert len(report["damaged_checkpoints"]) == 4 and {d["topic"] for d in report["damaged_checkpoints"]} == {topic}
    assert report["rows"] == 0 and report["resumed_from"] == 30  # the last valid checkpoint still counts
    assert "damaged checkpoint skipped" in done.stderr
