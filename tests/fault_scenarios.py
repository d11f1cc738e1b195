"""Faults injected into a running pipeline, each measured against a straight run.

Shared by tests/integration/test_faults.py (which asserts nothing lost and nothing duplicated) and
benchmarks/faults.py (which prints the figures for docs/operations.md's fault table). Each
scenario returns what it saw: faults injected, events in flight at the fault, lost, duplicated,
and the longest stall of the stage's output.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from caselink.infra.topics import DISCLOSURES_TOPIC, LINK_INPUT_TOPIC, LINKED_CASES_TOPIC, person_events_topic
from caselink.linkage.synthetic import records_for_size
from caselink.schemas import default_serde
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from caselink.core.kafka import read_to_end
from caselink.core.settings import Settings
from caselink.demo import start_gate, start_worker
from caselink.ops import latest_linked_cases, topic_ends
from tests import waiting
from tests.events import synthetic_person_event
from tests.waiting import service_json

serde = default_serde()
GATE_KEY = "fault-test-pseudonym-key-0123456789"


def wait_for(condition: Callable[[], Any], timeout: float, pause: float = 0.1) -> Any:
    """``tests.waiting.wait_for``, polling faster and waiting out a broker that is away."""
    return waiting.wait_for(condition, timeout, pause, tolerate=(KafkaException,))


def count_messages(settings: Settings, topics: list[str], committed: bool) -> int:
    """Messages on ``topics`` as a read_committed (or read_uncommitted) reader sees them."""
    c = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": "caselink-reader-faults",
                  "enable.auto.commit": False, "enable.partition.eof": True,
                  "isolation.level": "read_committed" if committed else "read_uncommitted"})
    try:
        md = c.list_topics(timeout=10)
        parts = [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics if t in md.topics
                 for p in md.topics[t].partitions]
        c.assign(parts)
        done: set[tuple[str, int]] = set()
        n = 0
        deadline = time.monotonic() + 60
        while len(done) < len(parts) and time.monotonic() < deadline:
            for msg in c.consume(5000, timeout=0.5):
                if msg.error():
                    done.add((msg.topic(), msg.partition()))
                else:
                    n += 1
        return n
    finally:
        c.close()


# ---------------------------------------------------------------------- the consent gate
def gate_killed_mid_transaction(settings: Settings, citizens: int = 6000) -> dict[str, Any]:
    """Two gate processes; kill -9 of the active one while a transaction is open; the standby takes over.

    Nothing lost: every view the policy allows is out once the standby has caught up (the straight
    run is the pure GateCore over the same linked cases). Nothing duplicated: one RELEASE audit and
    one purpose-topic record per (purpose, citizen) for a read_committed reader. The killed
    gate's open transaction is aborted: its records are in the log, but only a read_uncommitted
    reader sees them."""
    from caselink.streams.consent.gate_core import GateCore
    from caselink.streams.consent.policy import bundled_policy_path, load_policy
    from caselink.streams.consent.pseudonym import Pseudonymiser

    from tests.consent_fixtures import encode_case, linked_case, member

    os.environ["CASELINK_CONSENT__PSEUDONYM_KEY"] = GATE_KEY  # start_gate passes it on; every gate shares it
    cases = {}
    for i in range(citizens):
        members = [member("health", f"H{i}", nhs=None), *([member("police", f"P{i}", nhs=None)] if i % 3 == 0 else [])]
        cases[f"C{i}"] = encode_case(linked_case(f"C{i}", members))
    straight = GateCore(load_policy(bundled_policy_path()), Pseudonymiser(GATE_KEY.encode(), "k1"))
    for cid, value in cases.items():
        straight.apply_linked_case(cid, value)
    expected = {(o.topic, o.key) for o in straight.flush() if o.topic.startswith("caselink.cases.") and o.value}
    purpose_topics = sorted({t for t, _ in expected})

    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers, "enable.idempotence": True,
                         "linger.ms": 20})
    for cid, value in cases.items():
        producer.produce(LINKED_CASES_TOPIC, value, key=cid.encode())
    assert producer.flush(60) == 0

    # A backlog, which the gate publishes in transactions of whole citizens one after another. The
    # gate that will be killed stops itself inside its first open transaction (the test hook
    # consent.test_pause_before_commit), so the kill lands there every time, not by luck of timing.
    marker = Path(tempfile.mkdtemp(prefix="caselink-gate-pause-")) / "paused"
    os.environ["CASELINK_CONSENT__TEST_PAUSE_BEFORE_COMMIT"] = str(marker)
    try:
        active = start_gate(settings, app_id="gate-fault")
    finally:
        os.environ.pop("CASELINK_CONSENT__TEST_PAUSE_BEFORE_COMMIT", None)
    gates = [active]
    try:
        wait_for(lambda: service_json(active.port, "/health").get("role") == "active" or marker.exists(), 120)
        standby = start_gate(settings, app_id="gate-fault")
        gates.append(standby)
        wait_for(marker.exists, 180)
        ends = _Ends(settings, purpose_topics)
        try:
            in_flight = wait_for(lambda: max(ends.open_records(), 0), 30)
        finally:
            ends.close()
        active.proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        active.proc.wait()
        wait_for(lambda: (h := service_json(standby.port, "/health")).get("role") == "active" and h.get("caught_up"),
                 120, pause=0.1)
        taken_over = time.monotonic() - killed_at
        wait_for(lambda: count_messages(settings, purpose_topics, committed=True) >= len(expected), 180, pause=0.5)
    finally:
        for g in gates:
            g.stop()
        os.environ.pop("CASELINK_CONSENT__PSEUDONYM_KEY", None)

    released = Counter((m.topic(), m.key()) for m in read_to_end(settings, purpose_topics) if m.value() is not None)
    audit = Counter((d["recipient_topic"], d["recipient_key"]) for d in
                    (serde.decode(m.value())[1] for m in read_to_end(settings, [DISCLOSURES_TOPIC]))
                    if d["action"] == "RELEASE")
    aborted = (count_messages(settings, purpose_topics, committed=False)
               - count_messages(settings, purpose_topics, committed=True))
    return {"fault": "kill -9 of the active consent gate mid-transaction", "faults_injected": 1,
            "views_expected": len(expected), "in_flight": in_flight,
            "lost": len(expected - set(released)), "duplicated": sum(n - 1 for n in released.values() if n > 1),
            "audit_duplicated": sum(n - 1 for n in audit.values() if n > 1),
            "audit_missing": len({(t, k.decode()) for t, k in expected} - set(audit)),
            "unexpected": len(set(released) - expected), "aborted_records": aborted,
            "stall_s": round(taken_over, 1)}


class _Ends:
    """Records written but not yet committed on some topics: the high watermark, less how far a
    read_committed reader gets (the last stable offset: it stops before an open transaction)."""

    def __init__(self, settings: Settings, topics: list[str]) -> None:
        conf = {"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": "caselink-reader-ends",
                "enable.auto.commit": False, "enable.partition.eof": True}
        self.uncommitted = Consumer({**conf, "isolation.level": "read_uncommitted"})
        self.committed = Consumer({**conf, "isolation.level": "read_committed"})
        md = self.committed.list_topics(timeout=10)
        self.parts = [TopicPartition(t, p) for t in topics for p in md.topics[t].partitions]
        self.committed.assign([TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING) for tp in self.parts])
        self.stable = 0  # records committed, as of the last open_records()

    def open_records(self) -> int:
        """Records that were written before now but are still not readable as committed."""
        self._drain()
        high = sum(self.uncommitted.get_watermark_offsets(tp, timeout=5, cached=False)[1] for tp in self.parts)
        self._drain()  # anything committed meanwhile is read now: what is left beyond is uncommitted
        self.stable = sum(max(tp.offset, 0) for tp in self.committed.position(self.parts))
        return high - self.stable

    def _drain(self) -> None:
        while self.committed.consume(10000, timeout=0.05):  # read all a read_committed reader may
            pass

    def close(self) -> None:
        self.uncommitted.close()
        self.committed.close()


# ---------------------------------------------------------------------- normaliser rebalances
def publish_steadily(settings: Settings, n: int, rate: float, stop: threading.Event | None = None,
                     sent: list[int] | None = None) -> int:
    """Up to ``n`` synthetic PersonEvents at about ``rate`` a second (the load the faults land in), or
    fewer if ``stop`` is set first; ``sent[0]``, when given, counts them as they go. Returns the count."""
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers, "enable.idempotence": True,
                         "linger.ms": 5})
    now = datetime(2026, 11, 1, tzinfo=UTC)
    started = time.monotonic()
    count = 0
    for i, item in enumerate(records_for_size(n, seed=5)):
        if stop is not None and stop.is_set():
            break
        value = synthetic_person_event(i, item, now)
        producer.produce(person_events_topic(item["agency"]), value,
                         key=f"{item['agency']}:{item['source_record_id']}".encode())
        count = i + 1
        if sent is not None:
            sent[0] = count
        ahead = started + (i + 1) / rate - time.monotonic()
        if ahead > 0:
            producer.poll(0)
            time.sleep(ahead)
    assert producer.flush(60) == 0
    return count


def link_input_stall(settings: Settings) -> float:
    """The longest gap, in seconds, between consecutive link-input messages (by their timestamps)."""
    stamps = sorted(m.timestamp()[1] for m in read_to_end(settings, [LINK_INPUT_TOPIC], timeout=60))
    return round(max((b - a for a, b in itertools.pairwise(stamps)), default=0) / 1000, 2)


def normalisers_rebalancing(settings: Settings, events: int = 20000, rate: float = 1500,
                            load_after_s: float = 2.0) -> dict[str, Any]:
    """Under a steady load: a second worker's normaliser joins (a rebalance), leaves (another), and
    one of the first worker's two normaliser processes is killed (a third, and its restart).

    The faults are placed at fifths of ``events`` on the link input, but the load does not stop at
    ``events``: it runs until ``load_after_s`` seconds after the kill (up to five times ``events``),
    so the last fault lands under load however long a rebalance or a worker's stop takes here."""
    first = start_worker(settings, app_id="rebalance", normaliser_processes=2)
    workers = [first]
    faults = 0
    stop, sent = threading.Event(), [0]
    load = threading.Thread(target=publish_steadily, args=(settings, 5 * events, rate, stop, sent), daemon=True)
    try:
        try:
            wait_for(lambda: first.health()["status"] == "ok", 90)
            load.start()
            wait_for(lambda: _end(settings) > events // 5, 120, pause=0.05)
            second = start_worker(settings, app_id="rebalance", normaliser_processes=1)
            workers.append(second)
            faults += 1  # a member joins
            wait_for(lambda: _end(settings) > events * 2 // 5, 120, pause=0.05)
            second.stop()
            faults += 1  # and leaves
            wait_for(lambda: _end(settings) > events * 3 // 5, 120, pause=0.05)
            victim = first.health()["normalisers"]["processes"][0]["pid"]
            on_input_at_kill, sent_at_kill = _end(settings), sent[0]
            os.kill(victim, signal.SIGKILL)
            faults += 1  # one of two processes killed: its partitions move, it is restarted and rejoins
            time.sleep(load_after_s)
        finally:
            stop.set()
            if load.is_alive():
                load.join(120)
        published_events = sent[0]
        wait_for(lambda: _linked_all(settings, first, published_events), 240, pause=0.5)
        published = latest_linked_cases(settings)
    finally:
        for w in workers:
            w.stop()
    return {"fault": "normaliser group rebalances under load (a member joins, leaves, one of two processes "
                     "killed)", "faults_injected": faults, "events": published_events,
            "in_flight": published_events - on_input_at_kill, "sent_after_kill": published_events - sent_at_kill,
            **lost_and_duplicated(settings, published, published_events), "stall_s": link_input_stall(settings)}


def _end(settings: Settings) -> int:
    return topic_ends(settings, [LINK_INPUT_TOPIC])[LINK_INPUT_TOPIC]


def _applied(worker: Any) -> int:
    try:
        return int(worker.health()["applied"])
    except (OSError, ValueError, KeyError):
        return -1


def _linked_all(settings: Settings, worker: Any, events: int) -> bool:
    """Every event is on the link input or a normaliser dead letter, and the linker has applied the link input."""
    n_input = _end(settings)
    return n_input >= events - _rejected(settings) and _applied(worker) >= n_input


def _rejected(settings: Settings) -> int:
    from caselink.infra.topics import DEAD_LETTER_TOPIC
    from caselink.schemas.dead_letters import read_letter

    return sum(1 for m in read_to_end(settings, [DEAD_LETTER_TOPIC]) if read_letter(m, serde)["stage"] == "normalise")


def lost_and_duplicated(settings: Settings, published: dict[str, dict], events: int) -> dict[str, int]:
    """Against a straight replay of the link input: records missing from the published citizens,
    records in more than one, and whether the citizens differ from the straight run's."""
    from caselink.linkage.models import default_model
    from caselink.streams.linker_core import LinkerCore

    core = LinkerCore(default_model())
    for msg in read_to_end(settings, [LINK_INPUT_TOPIC], timeout=60):
        try:
            core.apply(msg.value())
        except ValueError:
            pass
    straight = {cid: {f"{m['agency']}:{m['source_record_id']}" for m in core.linked_case(cid)["members"]}
                for cid in core.index.citizens}
    got = {cid: {f"{m['agency']}:{m['source_record_id']}" for m in case["members"]} for cid, case in published.items()}
    members = Counter(m for ms in got.values() for m in ms)
    distinct_events = len({(m.key(), m.value()) for m in read_to_end(settings, [LINK_INPUT_TOPIC], timeout=60)})
    return {"lost": max(0, events - _rejected(settings) - len(members)),
            "duplicated": sum(n - 1 for n in members.values() if n > 1),
            "citizens_differ_from_straight_run": int(got != straight),
            "link_input_redelivered": _end(settings) - distinct_events}


# ---------------------------------------------------------------------- the broker's disk fills
def can_mount_tmpfs() -> str | None:
    """None if a size-capped tmpfs can be mounted here (root, CAP_SYS_ADMIN); else why not."""
    import subprocess

    probe = tempfile.mkdtemp(prefix="caselink-mount-probe-")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", probe], capture_output=True, text=True)
    if done.returncode != 0:
        return f"cannot mount a size-capped tmpfs here ({done.stderr.strip() or done.returncode}): needs root"
    subprocess.run(["umount", probe], check=True)
    os.rmdir(probe)
    return None


def disk_fills(events: int = 6000, size_mb: int = 64) -> dict[str, Any]:
    """A one-node broker whose data directory is a size-capped tmpfs; mid-stream the disk fills
    (a ballast file takes the space left). The pipeline pauses and says why (the worker's /health,
    `caselink status`); the space is freed and the node restarted (as an operator would); the
    pipeline resumes with nothing lost."""
    import shutil
    import subprocess

    from caselink.infra.kafka_runtime import LocalKafka
    from caselink.infra.topics import caselink_topics, ensure_topics

    from caselink.core.kafka import admin_client, state_file
    from caselink.core.settings import InfraSettings, KafkaSettings

    directory = Path(tempfile.mkdtemp(prefix="caselink-diskfull-"))
    data = directory / "node-1" / "data"
    data.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(data)], check=True)
    kafka = LocalKafka(Settings().infra, directory)
    worker = None
    ballast = data / "ballast"
    try:
        state = kafka.start()
        settings = Settings(kafka=KafkaSettings(bootstrap_servers=state.bootstrap_servers),
                            infra=InfraSettings(run_dir=directory / "run"))
        state.save(state_file(settings))  # so `caselink status` knows the local broker, as after `infra up`
        ensure_topics(admin_client(settings), caselink_topics(settings.agencies, settings.purposes))
        publish_steadily(settings, events, rate=1e9)
        worker = start_worker(settings, app_id="diskfull", snapshot_interval_s=0)
        wait_for(lambda: _applied(worker) > events // 5, 120, pause=0.05)
        in_flight = events - max(_applied(worker), 0)
        with ballast.open("wb") as f:  # the rest of the disk, whatever is left
            try:
                while True:
                    f.write(b"\0" * (1 << 20))
                    f.flush()
            except OSError:
                pass
        filled_at = time.monotonic()
        paused = wait_for(lambda: _not_ok(worker), 120, pause=0.2)
        said = status_of(settings, directory)
        paused_for = time.monotonic() - filled_at
        ballast.unlink()
        freed_at = time.monotonic()
        if kafka.state is not None and any(n.pid for n in kafka.state.nodes):
            kafka.stop_node(1, kill=True)  # a broker whose log dir failed needs a restart to use it again
        kafka.start_node(1)
        wait_for(lambda: _linked_all(settings, worker, events), 300, pause=0.5)
        resumed = time.monotonic() - freed_at
        healthy = wait_for(lambda: service_json(worker.port, "/health").get("status") == "ok", 60)
        published = latest_linked_cases(settings)
        figures = lost_and_duplicated(settings, published, events)
    finally:
        if worker is not None:
            worker.stop()
        kafka.stop()
        subprocess.run(["umount", "-l", str(data)], check=False)
        shutil.rmtree(directory, ignore_errors=True)
    return {"fault": f"the broker's disk fills ({size_mb} MB tmpfs), then space is freed and the node restarted",
            "faults_injected": 1, "events": events, "in_flight": in_flight, **figures,
            "health_while_paused": {k: paused.get(k) for k in ("status", "reason", "broker")},
            "status_while_paused": said, "stall_s": round(paused_for + resumed, 1),
            "resumed_s_after_restart": round(resumed, 1), "healthy_again": bool(healthy)}


def _not_ok(worker: Any) -> dict[str, Any] | None:
    health = service_json(worker.port, "/health")  # a 503 carries its body
    return health if health.get("status") not in (None, "ok") else None


def status_of(settings: Settings, directory: Path) -> dict[str, Any]:
    """`caselink status --json` as an operator runs it against this cluster."""
    import subprocess
    import sys

    env = {**os.environ, "CASELINK_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
           "CASELINK_INFRA__RUN_DIR": str(settings.infra.run_dir), "CASELINK_CONFIG": "/nonexistent",
           "CASELINK_WORKER__WEB_PORT": "9"}
    done = subprocess.run([sys.executable, "-m", "caselink.cli", "status", "--json", "--no-worker", "--no-gate",
                           "--interval", "0.2"], env=env, capture_output=True, text=True, timeout=120)
    try:
        report = json.loads(done.stdout)
    except ValueError:
        report = {"output": done.stdout[-2000:], "stderr": done.stderr[-2000:]}
    return {"exit_code": done.returncode, "problems": report.get("problems"), "broker": report.get("broker")}


# ---------------------------------------------------------------------- a broker lost
def broker_lost(events: int = 6000, rate: float = 1500) -> dict[str, Any]:
    """Three brokers with the default settings (RF 3, min ISR 2 from the cluster); under a steady
    load, kill -9 of the broker leading the link input; it comes back 10 s later."""
    import shutil

    from caselink.infra.kafka_runtime import LocalKafka
    from caselink.infra.topics import caselink_topics, ensure_topics

    from caselink.core.kafka import admin_client
    from caselink.core.settings import KafkaSettings

    directory = Path(tempfile.mkdtemp(prefix="caselink-brokerlost-"))
    kafka = LocalKafka(Settings().infra, directory, brokers=3)
    worker = None
    try:
        state = kafka.start()
        settings = Settings(kafka=KafkaSettings(bootstrap_servers=state.bootstrap_servers))
        ensure_topics(admin_client(settings), caselink_topics(settings.agencies, settings.purposes))
        md = admin_client(settings).list_topics(LINK_INPUT_TOPIC, timeout=10).topics[LINK_INPUT_TOPIC]
        replicas, leader = len(md.partitions[0].replicas), md.partitions[0].leader
        worker = start_worker(settings, app_id="broker-lost", snapshot_interval_s=0)
        wait_for(lambda: service_json(worker.port, "/health").get("status") == "ok", 90)
        load = threading.Thread(target=publish_steadily, args=(settings, events, rate), daemon=True)
        load.start()
        wait_for(lambda: _applied(worker) > events // 4, 120, pause=0.05)
        in_flight = events - max(_applied(worker), 0)
        kafka.stop_node(leader, kill=True)
        time.sleep(10)
        kafka.start_node(leader, wait=False)
        load.join(180)
        wait_for(lambda: _linked_all(settings, worker, events), 300, pause=0.5)
        published = latest_linked_cases(settings)
        figures = lost_and_duplicated(settings, published, events)
        stall = link_input_stall(settings)
    finally:
        if worker is not None:
            worker.stop()
        kafka.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return {"fault": "kill -9 of the link input's leader in a 3-broker cluster (default settings), back after 10 s",
            "faults_injected": 1, "replication_factor": replicas, "events": events, "in_flight": in_flight,
            **figures, "stall_s": stall}
