"""Workers in sharded mode (``shards.enabled``) publish the single writer's messages.

One block shard and one record shard (`caselink shard`) answer the link input; two workers in
sharded mode share the linker's group, one the ordered resolver and one its hot standby, each
taking snapshots. The resolver is killed with SIGKILL mid-stream and the standby takes over; the
killed one is started again on its data (its snapshot and store of values) and follows; then the
new resolver is killed too and it takes over. Updates, deletes, reviewers' verdicts and an undo
are among the changes. Every message on the decisions, linked-cases and review
topics must be, key by key, the single writer's (a straight replay of the link input through the
linker's core), apart from repeats after the takeover (the linker's outputs are at-least-once);
and the review screen, which reads the records' values from the resolver's store, must show the
single writer's pairs with the same field weights.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections import defaultdict

import pytest
from caselink.infra.topics import LINK_DECISIONS_TOPIC, LINK_INPUT_TOPIC, LINKED_CASES_TOPIC, REVIEW_TOPIC
from caselink.linkage.models import default_model
from caselink.linkage.synthetic import records_for_size
from caselink.streams.app import jsonable
from caselink.streams.linker_core import LinkerCore
from caselink.streams.normaliser_core import packed_record
from caselink.streams.review_view import open_pairs

from caselink.core.kafka import read_to_end
from caselink.core.settings import Settings
from caselink.demo import WorkerProcess, start_shard, start_worker
from caselink.ops import topic_ends
from tests.sharded_load import publish_changes, publish_verdicts
from tests.waiting import service_json, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
OUTPUT_TOPICS = (LINK_DECISIONS_TOPIC, LINKED_CASES_TOPIC, REVIEW_TOPIC)
Outputs = dict[tuple[str, bytes], list[bytes | None]]


def _by_key(messages: list[tuple[str, bytes, bytes | None]]) -> tuple[Outputs, int]:
    """Each topic and key's messages in order, a message repeated later left out; and the count."""
    out: Outputs = defaultdict(list)
    for topic, key, value in messages:
        if value not in out[(topic, key)]:
            out[(topic, key)].append(value)
    return dict(out), len(messages)


def _single_writer(settings: Settings) -> tuple[LinkerCore, Outputs, int]:
    core = LinkerCore(default_model(), max_block_size=settings.linkage.max_block_size,
                      max_citizen_records=settings.linkage.max_citizen_records)
    published = []
    for msg in read_to_end(settings, [LINK_INPUT_TOPIC], timeout=60):
        try:
            out = core.apply(msg.value(), packed=packed_record(msg.headers()))
        except ValueError:
            continue  # dead-lettered
        published += [(o.topic, o.key, o.value) for o in out if o.topic in OUTPUT_TOPICS]
    return (core, *_by_key(published))


def _position(worker: WorkerProcess) -> int:
    health = service_json(worker.port)
    return int(health["link_input_position"]) if health.get("role") == "linker" else -1


def test_sharded_workers_publish_the_single_writers_messages_through_resolver_kills_and_a_restart(
        pipeline_settings: Settings) -> None:
    settings = pipeline_settings
    shards = [start_shard(settings, "blocks", app_id="resolving"), start_shard(settings, "records", app_id="resolving")]
    workers: list[WorkerProcess] = []
    try:
        for shard in shards:
            wait_for(lambda s=shard: service_json(s.port).get("partitions_owned"), 120)
        workers.append(start_worker(settings, app_id="resolving", sharded=True, snapshot_interval_s=1))
        wait_for(lambda: _position(workers[0]) >= 0, 120)
        workers.append(start_worker(settings, app_id="resolving", sharded=True, snapshot_interval_s=1))
        wait_for(lambda: service_json(workers[1].port).get("role") == "standby", 120)
        assert service_json(workers[0].port)["mode"] == "sharded resolver"

        items = records_for_size(3000, seed=5)
        sent = publish_changes(settings, items, 0, 700, changes=False)
        wait_for(lambda: service_json(workers[1].port)["standby_position"] > 0, 120, pause=0.1)  # following
        wait_for(lambda: service_json(workers[0].port)["snapshot"]["last"].get("position", 0) > 0, 60, pause=0.1)
        sent += publish_changes(settings, items, 700, 1500, changes=False)
        wait_for(lambda: _position(workers[0]) > 900, 120, pause=0.1)
        workers[0].proc.send_signal(signal.SIGKILL)  # the resolver, mid-stream
        workers[0].proc.wait()
        wait_for(lambda: _position(workers[1]) >= 0, 120)  # its standby took over
        assert service_json(workers[1].port)["last_takeover"]["resumed_from"] > 0  # from where it had followed
        # the killed one back, on its data: it loads its snapshot and store, and follows as the standby
        restarted = start_worker(settings, app_id="resolving", sharded=True, snapshot_interval_s=1,
                                 data_dir=workers[0].log_path.parent)
        workers.append(restarted)
        loaded = wait_for(lambda: service_json(restarted.port)["snapshot"]["loaded"], 120)
        assert loaded["position"] > 0
        sent += publish_changes(settings, items, 1500, 3000, changes=True)
        wait_for(lambda: service_json(restarted.port)["standby_position"] > loaded["position"], 120, pause=0.1)
        workers[1].proc.send_signal(signal.SIGKILL)  # the second resolver, mid-stream
        workers[1].proc.wait()
        wait_for(lambda: _position(restarted) >= 0, 120)

        def linked_to_the_end() -> int:
            end = topic_ends(settings, [LINK_INPUT_TOPIC])[LINK_INPUT_TOPIC]
            return end if _position(restarted) >= end else 0

        wait_for(lambda: topic_ends(settings, [LINK_INPUT_TOPIC])[LINK_INPUT_TOPIC] >= sent - 20, 180, pause=0.5)
        before = wait_for(linked_to_the_end, 240, pause=0.5)
        keys = [f"{item['agency']}:{item['source_record_id']}" for item in items[1:5]]
        publish_verdicts(settings, [(keys[0], keys[1]), (keys[2], keys[3]), (keys[0], keys[1])])  # the third an undo
        assert wait_for(linked_to_the_end, 120, pause=0.5) > before
        health = service_json(restarted.port)
        assert health["last_takeover"]["resumed_from"] > loaded["position"], health
        assert health["shards"]["held_changes"] == 0, health

        core, expected, expected_count = _single_writer(settings)
        got, count = _by_key([(m.topic(), m.key(), m.value()) for m in read_to_end(settings, list(OUTPUT_TOPICS))])
        assert got.keys() == expected.keys()
        assert all(got[k] == expected[k] for k in expected), [k for k in expected if got[k] != expected[k]][:5]
        assert count >= expected_count > 4000
        items_shown, total = open_pairs(core)
        review = restarted.get("/review", role="reader")
        assert review == {"open": total, "items": json.loads(json.dumps(jsonable(items_shown)))}
    finally:
        for process in workers + shards:
            if process.proc.poll() is None:
                process.proc.terminate()
        for process in workers + shards:
            try:
                process.proc.wait(30)
            except subprocess.TimeoutExpired:
                process.proc.kill()

