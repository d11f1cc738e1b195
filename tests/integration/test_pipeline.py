"""The streaming pipeline against a real broker: end to end, poison messages, kill -9 and restart.

Each test gets a broker of its own, because the pipeline's topic names are the public contract
and two workers on one set of topics would share their link input.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
from caselink.connectors.files import FileConnector, resolve_source_path
from caselink.connectors.mapping import load_mapping
from caselink.infra.kafka_runtime import LocalKafka
from caselink.infra.topics import (
    DEAD_LETTER_TOPIC,
    LINK_INPUT_TOPIC,
    LINKED_CASES_TOPIC,
    caselink_topics,
    ensure_topics,
    person_events_topic,
)
from caselink.linkage.models import default_model
from caselink.linkage.synthetic import records_for_size
from caselink.schemas import default_serde
from caselink.streams.linker_core import LinkerCore
from confluent_kafka import Producer

from caselink.core.kafka import admin_client, read_to_end
from caselink.core.settings import KafkaSettings, Settings
from caselink.demo import SAMPLES, start_worker, wait_for_worker, wait_until_quiet
from caselink.ops import latest_linked_cases
from tests.events import synthetic_person_event

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _replayed_core(settings: Settings) -> LinkerCore:
    """An uninterrupted linker that has applied the whole link-input log."""
    core = LinkerCore(default_model())
    for msg in read_to_end(settings, [LINK_INPUT_TOPIC]):
        try:
            core.apply(msg.value())
        except ValueError:
            pass
    return core


def _replayed_state(settings: Settings) -> dict[str, dict]:
    """What an uninterrupted linker makes of the whole link-input log: LinkedCase per live citizen."""
    core = _replayed_core(settings)
    return {cid: core.linked_case(cid) for cid in core.index.citizens}


def _members(cases: dict[str, dict]) -> dict[str, set[str]]:
    return {cid: {f"{m['agency']}:{m['source_record_id']}" for m in case["members"]} for cid, case in cases.items()}


# 1: the normaliser in a process of its own (the confluent-kafka loop, the default); 0: the Faust
# agent inside the worker process.
@pytest.mark.parametrize("normaliser_processes", [1, 0], ids=["normaliser-process", "faust-agent-in-worker"])
def test_sample_agencies_become_linked_cases_and_poison_goes_to_dead_letters(pipeline_settings: Settings,
                                                                             normaliser_processes: int) -> None:
    settings = pipeline_settings
    sent = 0
    for agency in ("health", "social_care", "police"):
        mapping = load_mapping(SAMPLES / "mappings" / f"{agency}.yaml")
        sent += FileConnector(settings, mapping).load(resolve_source_path(mapping)).events
    poison = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    poison.produce(person_events_topic("health"), b"\x00\x01 not an event", key=b"health:BAD")
    poison.flush(10)

    worker = start_worker(settings, normaliser_processes=normaliser_processes)
    try:
        wait_for_worker(worker, sent)
        assert ("normalisers" in worker.health()) == (normaliser_processes > 0)
        wait_until_quiet(settings, [LINKED_CASES_TOPIC, DEAD_LETTER_TOPIC])
        cases = latest_linked_cases(settings)
        # Streaming equals a straight replay of its own input (nothing lost, nothing duplicated).
        assert _members(cases) == _members(_replayed_state(settings))
        linked = [c for c in cases.values() if len({m["agency"] for m in c["members"]}) == 3]
        assert linked, "the sample has people known to all three agencies"
        all_members = [m for c in cases.values() for m in c["members"]]
        assert len(all_members) == len({(m["agency"], m["source_record_id"]) for m in all_members}) == sent

        some = linked[0]
        assert worker.get(f"/citizens/{some['citizen_id']}", role="reader")["citizen_id"] == some["citizen_id"]
        m = some["members"][0]
        record = f"/records/{m['agency']}/{m['source_record_id']}"
        assert worker.get(record, role="reader")["citizen_id"] == some["citizen_id"]
        # Personal data only with a credential (the review page's browser test signs in).
        for path in (f"/citizens/{some['citizen_id']}", record, "/review"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"http://127.0.0.1:{worker.port}{path}", timeout=5)
            assert refused.value.code == 401
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/metrics") as r:
            assert b"caselink_events_in_total" in r.read()
        # Switching to a rebuilt index is refused while a worker is linking.
        code, out = _cli(settings, "rebuild", "--switch")
        assert code == 1 and "still linking" in out
    finally:
        worker.stop()

    # A rebuild with the same model from the retained link input reproduces the live index.
    code, out = _cli(settings, "rebuild", "--json")
    report = json.loads(out)
    assert code == 0 and report["identical"], report
    assert report["unchanged"] == report["live_citizens"] == len(cases)

    poisoned = _normaliser_dead_letters(settings)
    assert len(poisoned) == 1
    assert poisoned[0]["origin_topic"] == person_events_topic("health")
    assert poisoned[0]["payload"] == b"\x00\x01 not an event"
    assert poisoned[0]["error_type"] == "UndecodableEventError"


def _cli(settings: Settings, *args: str) -> tuple[int, str]:
    from typer.testing import CliRunner

    from caselink.cli import app
    from caselink.core.settings import get_settings

    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, list(args), env={
            "CASELINK_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers, "COLUMNS": "200"})
    finally:
        get_settings.cache_clear()
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def _normaliser_dead_letters(settings: Settings) -> list[dict]:
    serde = default_serde()
    from caselink.schemas.dead_letters import read_letter

    letters = [read_letter(x, serde) for x in read_to_end(settings, [DEAD_LETTER_TOPIC])]
    return [x for x in letters if x["stage"] == "normalise"]


def _applied(worker) -> int:
    try:
        return int(worker.health()["applied"])
    except (OSError, ValueError):
        return -1


def _wait_for(condition, timeout: float, pause: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(pause)


def _wait_for_everything(settings: Settings, worker, total: int) -> int:
    """Until the linker has applied every event the normaliser let through; returns how many it rejected."""
    def done() -> bool:
        n_input = len(read_to_end(settings, [LINK_INPUT_TOPIC]))
        rejected = len(_normaliser_dead_letters(settings))
        return n_input + rejected >= total and _applied(worker) >= n_input

    _wait_for(done, 180, pause=0.5)
    wait_until_quiet(settings, [LINKED_CASES_TOPIC])
    return len(_normaliser_dead_letters(settings))


def _assert_nothing_lost_or_duplicated(settings: Settings, published: dict[str, dict], total: int) -> None:
    """The published citizens are a straight replay's, and every record the normaliser let through is in
    exactly one of them."""
    assert _members(published) == _members(_replayed_state(settings))
    members = [m for ms in _members(published).values() for m in ms]
    rejected = {x["origin_key"].decode() for x in _normaliser_dead_letters(settings)}
    assert len(members) == len(set(members)) == total - len(rejected)
    assert not rejected & set(members)


def _publish_synthetic(settings: Settings, n: int, start: int = 0) -> int:
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers, "enable.idempotence": True,
                         "linger.ms": 5})
    now = datetime(2026, 11, 1, tzinfo=UTC)
    errors: list = []
    for i, item in enumerate(records_for_size(n, seed=5)[start:], start=start):
        value = synthetic_person_event(i, item, now)
        producer.produce(person_events_topic(item["agency"]), value,
                         key=f"{item['agency']}:{item['source_record_id']}".encode(),
                         on_delivery=lambda err, _msg: errors.append(err) if err else None)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    assert errors == []
    sources = read_to_end(settings, [person_events_topic(a) for a in settings.agencies])
    assert len(sources) == n, f"published {n}, the agency topics hold {len(sources)}"
    return n


def test_kill_minus_nine_then_restart_loses_and_duplicates_nothing(pipeline_settings: Settings) -> None:
    settings = pipeline_settings
    total = _publish_synthetic(settings, 6000)
    data_dir = Path(tempfile.mkdtemp(prefix="caselink-worker-"))
    worker = start_worker(settings, app_id="kill-test", data_dir=data_dir)
    _wait_for(lambda: _applied(worker) > total // 5, 120, pause=0.05)
    applied = _applied(worker)
    worker.proc.send_signal(signal.SIGKILL)
    worker.proc.wait()
    assert 0 < applied < total, "the kill must land mid-stream for this test to mean anything"

    restarted = start_worker(settings, app_id="kill-test", data_dir=data_dir)
    try:
        # After the restart the linker has applied every link-input message (duplicates included).
        _wait_for_everything(settings, restarted, total)
        published = latest_linked_cases(settings)
    finally:
        restarted.stop()
    _assert_nothing_lost_or_duplicated(settings, published, total)
    # Every live citizen's latest published version is the replay's (no stale view left behind).
    lc = read_to_end(settings, [LINKED_CASES_TOPIC])
    assert len(lc) >= len(published)


def test_a_restart_loads_the_index_snapshot_and_replays_only_what_came_after(pipeline_settings: Settings) -> None:
    settings = pipeline_settings
    total = _publish_synthetic(settings, 20000)
    data_dir = Path(tempfile.mkdtemp(prefix="caselink-worker-"))
    worker = start_worker(settings, app_id="snapshot-test", data_dir=data_dir, snapshot_interval_s=0.5)

    def snapshot_written() -> int:
        try:
            return int(worker.health()["snapshot"]["last"].get("position", 0))
        except OSError:
            return 0

    _wait_for(lambda: snapshot_written() > 0, 120, pause=0.02)
    applied = _applied(worker)
    worker.proc.send_signal(signal.SIGKILL)
    worker.proc.wait()
    assert (data_dir / "linker.snapshot").exists()
    assert applied < total, "the kill must land mid-stream for this test to mean anything"

    # kill -9 mid-stream: the restart loads the last complete snapshot and replays only the rest.
    restarted = start_worker(settings, app_id="snapshot-test", data_dir=data_dir, snapshot_interval_s=0.5)
    try:
        _wait_for_everything(settings, restarted, total)
        health = restarted.health()
        loaded = health["snapshot"]["loaded"]["position"]
        # It took over from the snapshot's position, or from further on if it followed the log as a
        # standby until the killed worker's session expired; never from the start.
        assert loaded > 0 and health["last_takeover"]["resumed_from"] >= loaded
        published = latest_linked_cases(settings)
        end = _link_input_end(settings)
        _wait_for(lambda: restarted.health()["snapshot"]["last"].get("position") == end, 60, pause=0.1)
    finally:
        restarted.stop()
    _assert_nothing_lost_or_duplicated(settings, published, total)

    # A restart after everything is in a snapshot replays nothing and publishes nothing again.
    cases_before = len(read_to_end(settings, [LINKED_CASES_TOPIC]))
    again = start_worker(settings, app_id="snapshot-test", data_dir=data_dir)
    try:
        _wait_for(lambda: _live(again), 120, pause=0.1)
        health = again.health()
        assert health["snapshot"]["loaded"]["position"] == end
        assert health["last_takeover"] == {"resumed_from": end, "replayed_silently": 0, "committed": end}
        assert health["records"] == len(_replayed_core(settings).index.records)
    finally:
        again.stop()
    assert len(read_to_end(settings, [LINKED_CASES_TOPIC])) == cases_before


def _live(worker) -> bool:
    try:
        health = worker.health()
    except OSError:
        return False
    return not health["recovering"] and health["role"] == "linker"


def _link_input_end(settings: Settings) -> int:
    from caselink.ops import topic_ends

    return topic_ends(settings, [LINK_INPUT_TOPIC])[LINK_INPUT_TOPIC]


def _forwarded_events_in(worker) -> float:
    """The worker's /metrics count of agency events consumed: its normaliser processes' counters."""
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith('caselink_events_in_total{topic="agency.'))


def test_a_killed_normaliser_process_is_restarted_and_nothing_is_lost(pipeline_settings: Settings) -> None:
    settings = pipeline_settings
    total = _publish_synthetic(settings, 20000)
    worker = start_worker(settings, app_id="normaliser-kill")
    try:
        _wait_for(lambda: _link_input_end(settings) > 500 and _forwarded_events_in(worker) > 0, 120, pause=0.02)
        counted_before = _forwarded_events_in(worker)
        victim = worker.health()["normalisers"]["processes"][0]["pid"]
        os.kill(victim, signal.SIGKILL)
        assert _link_input_end(settings) < total, "the kill must land mid-stream for this test to mean anything"

        def replaced() -> bool:
            status = worker.health()["normalisers"]
            return status["restarts"] == 1 and all(p["alive"] and p["pid"] != victim for p in status["processes"])

        _wait_for(replaced, 60, pause=0.2)
        _wait_for_everything(settings, worker, total)
        published = latest_linked_cases(settings)
        time.sleep(1.5)  # one more counter report from the normaliser process
        # The dead process's last report is kept, so the counter never goes back (what it counted in the
        # moment between its last report and the kill is lost, as with any scrape of a dead process).
        assert _forwarded_events_in(worker) > counted_before
        assert worker.health()["status"] == "ok"
    finally:
        worker.stop()
    _assert_nothing_lost_or_duplicated(settings, published, total)


def test_three_broker_cluster_loses_a_broker_mid_stream_and_nothing_is_lost() -> None:
    directory = Path(tempfile.mkdtemp(prefix="caselink-ha-"))
    kafka = LocalKafka(Settings().infra, directory, brokers=3)
    state = kafka.start()
    # The default settings, as `caselink infra up --brokers 3` then `caselink topics ensure` leave them:
    # the topics take RF 3 and min ISR 2 from the cluster.
    settings = Settings(kafka=KafkaSettings(bootstrap_servers=state.bootstrap_servers))
    worker = None
    try:
        ensure_topics(admin_client(settings), caselink_topics(settings.agencies, settings.purposes))
        link_input = admin_client(settings).list_topics(LINK_INPUT_TOPIC, timeout=10).topics[LINK_INPUT_TOPIC]
        assert len(link_input.partitions[0].replicas) == 3
        total = _publish_synthetic(settings, 4000)
        worker = start_worker(settings, app_id="ha-test", data_dir=directory / "worker")
        _wait_for(lambda: _applied(worker) > total // 5, 120)
        at_stop = _applied(worker)
        kafka.stop_node(3)  # a broker goes away mid-stream (min ISR 2 still met by the other two)
        assert at_stop < total, "the broker must go away mid-stream for this test to mean anything"
        time.sleep(5)
        kafka.start_node(3)
        rejected = _wait_for_everything(settings, worker, total)
        published = latest_linked_cases(settings)
        members = [m for ms in _members(published).values() for m in ms]
        assert len(members) == len(set(members)) == total - rejected
        assert _members(published) == _members(_replayed_state(settings))
    finally:
        if worker:
            worker.stop()
        kafka.stop()
        shutil.rmtree(directory, ignore_errors=True)


def _role(worker) -> str | None:
    try:
        return worker.health()["role"]
    except (OSError, ValueError, KeyError):
        return None


def _events_in(worker) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("caselink_events_in_total{") and 'topic="agency.' in line)


def test_two_workers_share_the_stream_and_the_standby_takes_over_without_a_rebuild(pipeline_settings: Settings) -> None:
    settings = pipeline_settings
    workers = [start_worker(settings, app_id="pair", data_dir=Path(tempfile.mkdtemp(prefix="caselink-pair-")))
               for _ in range(2)]
    try:
        _wait_for(lambda: sorted(str(_role(w)) for w in workers) == ["linker", "standby"], 90, pause=0.3)
        time.sleep(3)  # let Faust spread the agency partitions over both workers
        first = _publish_synthetic(settings, 4000)
        leader = next(w for w in workers if _role(w) == "linker")
        _wait_for_everything(settings, leader, first)
        leader = next(w for w in workers if _role(w) == "linker")  # roles may have moved meanwhile
        standby = next(w for w in workers if w is not leader)
        assert _events_in(leader) > 0 and _events_in(standby) > 0, "both workers normalise"
        committed = leader.health()["link_input_position"]
        try:
            _wait_for(lambda: standby.health()["standby_position"] >= committed, 120, pause=0.2)
        except AssertionError:
            raise AssertionError(f"standby {standby.health()} never followed to {committed}; "
                                 f"leader {leader.health()}") from None

        leader.proc.send_signal(signal.SIGKILL)
        leader.proc.wait()
        _wait_for(lambda: _role(standby) == "linker", 60, pause=0.2)
        takeover = standby.health()["last_takeover"]
        # The standby carried on from its own index: it replayed nothing (or only the last batch), not the log.
        assert takeover["resumed_from"] >= committed > 0, takeover
        assert takeover["replayed_silently"] <= settings.worker.batch_size, takeover

        total = _publish_synthetic(settings, 6000, start=4000)  # the survivor normalises and links it all
        _wait_for_everything(settings, standby, total)

        # The killed worker comes back (a rolling restart). It joins as the standby and follows the
        # log; the linker keeps the partition rather than handing it to an empty index to rebuild.
        returning = start_worker(settings, app_id="pair", data_dir=Path(tempfile.mkdtemp(prefix="caselink-pair-")))
        workers.append(returning)
        position = standby.health()["link_input_position"]
        _wait_for(lambda: _role(returning) == "standby"
                  and returning.health()["standby_position"] >= position, 120, pause=0.3)
        assert _role(standby) == "linker" and standby.health()["last_takeover"] == takeover
        published = latest_linked_cases(settings)
    finally:
        for w in workers:
            w.stop()
    _assert_nothing_lost_or_duplicated(settings, published, total)


def test_a_worker_that_cannot_listen_on_its_port_links_and_publishes_nothing(pipeline_settings: Settings) -> None:
    """D9: the worker linked and published ~2,000 records before dying of OSError 98 on its web port."""
    import socket

    settings = pipeline_settings
    _publish_synthetic(settings, 2000)
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        env = {**os.environ, "CASELINK_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
               "CASELINK_WORKER__WEB_PORT": str(port), "CASELINK_WORKER__APP_ID": "no-port",
               "CASELINK_WORKER__DATA_DIR": tempfile.mkdtemp(prefix="caselink-worker-")}
        done = subprocess.run([sys.executable, "-m", "caselink.cli", "worker"], env=env, capture_output=True,
                              text=True, timeout=120)
        time.sleep(2)  # anything it had started would have published by now
    assert done.returncode != 0
    assert len(read_to_end(settings, [LINK_INPUT_TOPIC])) == 0
    assert len(read_to_end(settings, [LINKED_CASES_TOPIC])) == 0
    assert "cannot listen" in done.stderr and "nothing was linked or published" in done.stderr
