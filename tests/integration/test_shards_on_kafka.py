"""The sharded index's tiers as processes on Kafka give the single writer's index.

Two block shards and two record shards (`caselink shard`) answer the link input a worker's
normaliser writes, while one block shard is killed with SIGKILL and replaced and one record shard
is stopped with SIGSTOP and let go again. A resolver in this process reads the link input and the
record shards' answers, applies them in order, and must end with the index a straight replay of
the link input through the linker's own core makes: every record, citizen, edge, version and
open review the same.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from caselink.infra.topics import LINK_INPUT_TOPIC, LINK_SCORED_TOPIC
from caselink.linkage.index import CitizenIndex
from caselink.linkage.models import default_model
from caselink.linkage.synthetic import records_for_size
from caselink.schemas import default_serde
from caselink.streams.linker_core import LinkerCore
from caselink.streams.normaliser_core import packed_record
from caselink.streams.shard_core import Nothing, ResolverFeed
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from caselink.core.kafka import consumer, read_to_end
from caselink.core.settings import Settings
from caselink.demo import WorkerProcess, start_shard, start_worker
from caselink.ops import topic_ends
from tests.linkage_fixtures import comparable_state
from tests.sharded_load import publish_changes, publish_verdicts, stop_all
from tests.waiting import service_json, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _link_input_end(settings: Settings) -> int:
    return topic_ends(settings, [LINK_INPUT_TOPIC])[LINK_INPUT_TOPIC]


def _resolved(settings: Settings, end: int, timeout: float = 180) -> tuple[CitizenIndex, list[str]]:
    """The resolver: the link input applied in order with the record shards' merged answers."""
    index = CitizenIndex(default_model(), max_block_size=settings.linkage.max_block_size,
                         max_citizen_records=settings.linkage.max_citizen_records, resolver=True)
    feed = ResolverFeed(index, default_serde(), settings.shards.partitions)
    reader = consumer(settings, "caselink-test-resolver", **{"enable.partition.eof": False})
    reader.assign([TopicPartition(LINK_INPUT_TOPIC, 0, OFFSET_BEGINNING),
                   TopicPartition(LINK_SCORED_TOPIC, 0, OFFSET_BEGINNING)])
    outcomes: list[str] = []
    deadline = time.monotonic() + timeout
    input_tp = [TopicPartition(LINK_INPUT_TOPIC, 0)]
    try:
        while feed.waiting or reader.position(input_tp)[0].offset < end:
            ready = feed.coverage.ready()
            assert time.monotonic() < deadline, f"the record shards answered up to {ready} of {end}"
            for msg in reader.consume(2000, timeout=0.2):
                assert msg.error() is None, msg.error()
                if msg.topic() == LINK_SCORED_TOPIC:
                    feed.answers(msg.value())
                elif msg.offset() < end:
                    feed.change(msg)
            for _offset, change, result in feed.apply_ready():
                if result is not None:
                    outcomes.append(result.outcome)
                else:
                    outcomes.append("DEAD_LETTER" if isinstance(change, Nothing) and change.reason else "NOTED")
    finally:
        reader.close()
    return index, outcomes


def _straight(settings: Settings) -> tuple[LinkerCore, list[str]]:
    core = LinkerCore(default_model(), max_block_size=settings.linkage.max_block_size,
                      max_citizen_records=settings.linkage.max_citizen_records)
    outcomes = []
    for msg in read_to_end(settings, [LINK_INPUT_TOPIC], timeout=60):
        try:
            core.apply(msg.value(), packed=packed_record(msg.headers()))
            outcomes.append(core.last_outcome)
        except ValueError:
            outcomes.append("DEAD_LETTER")
    return core, outcomes


def _same_as_the_straight_replay(settings: Settings, sent: int) -> int:
    """Once the link input holds what was sent (a few are unlinkable), the index the resolver
    builds from the record shards' answers is the straight replay's; the link input's end."""
    wait_for(lambda: _link_input_end(settings) >= sent - 20, 180, pause=0.5)
    time.sleep(2)  # the normaliser's last dead letters
    end = _link_input_end(settings)
    index, outcomes = _resolved(settings, end)
    straight, expected = _straight(settings)
    assert outcomes == expected
    assert comparable_state(index) == comparable_state(straight.index)
    return end


def _health(shard: WorkerProcess) -> dict[str, Any]:
    return service_json(shard.port)


def _status_shards(settings: Settings, app_id: str) -> list[dict[str, Any]]:
    """The shard tiers as `caselink status --json` reports them, with no shard problem named."""
    env = {**os.environ, "CASELINK_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
           "CASELINK_WORKER__APP_ID": app_id, "CASELINK_SHARDS__ENABLED": "true"}
    done = subprocess.run([sys.executable, "-m", "caselink.cli", "status", "--json", "--no-worker", "--no-gate",
                           "--interval", "0.2"], env=env, capture_output=True, text=True, timeout=60)
    report = json.loads(done.stdout)
    assert not [p for p in report["problems"] if "shard" in p], report["problems"]
    return report["shards"]  # type: ignore[no-any-return]


def test_shards_on_kafka_give_the_single_writers_index_through_kill_replace_and_pause(
        pipeline_settings: Settings) -> None:
    settings = pipeline_settings
    worker = start_worker(settings, app_id="sharded")
    blocks = [start_shard(settings, "blocks", app_id="sharded") for _ in range(2)]
    records = [start_shard(settings, "records", app_id="sharded") for _ in range(2)]
    shards = blocks + records
    try:
        for shard in shards:
            wait_for(lambda s=shard: _health(s).get("partitions_owned"), 120)
        items = records_for_size(3000, seed=5)
        sent = publish_changes(settings, items, 0, 1500, changes=False)
        wait_for(lambda: _health(blocks[0]).get("committed", 0) > 1000, 120, pause=0.1)

        # kill -9 of a block shard mid-stream, and another started: the group deals its partitions again
        blocks[0].proc.send_signal(signal.SIGKILL)
        blocks[0].proc.wait()
        blocks.append(start_shard(settings, "blocks", app_id="sharded"))
        shards.append(blocks[-1])
        # a record shard paused: the resolver waits for it, then it catches up
        os.kill(records[0].proc.pid, signal.SIGSTOP)
        sent += publish_changes(settings, items, 1500, 3000, changes=True)  # under the faults
        time.sleep(3)
        os.kill(records[0].proc.pid, signal.SIGCONT)

        wait_for(lambda: _link_input_end(settings) >= sent - 20, 180, pause=0.5)  # a few are unlinkable
        time.sleep(2)  # the normaliser's last dead letters
        applied = wait_for(lambda: (e := _link_input_end(settings)) and int(worker.health()["applied"]) >= e and e,
                           180, pause=0.5)
        keys = [f"{item['agency']}:{item['source_record_id']}" for item in items[1:5]]
        publish_verdicts(settings, [(keys[0], keys[1]), (keys[2], keys[3]), (keys[0], keys[1])])  # the third an undo
        end = _link_input_end(settings)
        assert end > applied
        index, outcomes = _resolved(settings, end)
        straight, expected = _straight(settings)
        assert outcomes == expected
        assert comparable_state(index) == comparable_state(straight.index)
        healths = [_health(s) for s in (blocks[1], blocks[2], *records)]
        assert all(h.get("status") == "ok" for h in healths), healths
        # the killed shard's partitions were dealt to the others, each to one, and the shard that took
        # them answered from the positions the killed one had committed, not from the start
        assert sorted(p for h in healths[:2] for p in h["partitions_owned"]) == list(range(settings.shards.partitions))
        assert healths[1]["answering_from"] > 1000, healths[1]
        # what an operator watches: each shard's position and lag on /metrics
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"http://127.0.0.1:{records[1].port}/metrics", timeout=5) as response:
            samples = {s.name: s for f in text_string_to_metric_families(response.read().decode()) for s in f.samples}
        assert samples["caselink_shard_position"].labels == {"tier": "records"}
        position, lag = samples["caselink_shard_position"].value, samples["caselink_shard_lag"].value
        assert position >= applied and lag <= end - applied
        assert samples["caselink_shard_partitions"].value == len(records[1].health()["partitions_owned"])
        assert "caselink_index_records" not in samples  # the linker's, not a shard's
    finally:
        stop_all(shards)
        worker.stop()


def test_a_shard_restarted_under_its_instance_id_gets_its_own_partitions_back_and_no_other_shard_replays(
        pipeline_settings: Settings) -> None:
    """Static membership (``shards.instance_id``): a block shard killed with SIGKILL and started
    again under its name within the session timeout is dealt its own partitions again, and the
    other block shard is dealt nothing new, so it never replays the link input; the index is still
    the straight replay's. A third process under a name already in use fences the first, which
    stops and says why."""
    settings = pipeline_settings
    worker = start_worker(settings, app_id="static")
    blocks = [start_shard(settings, "blocks", app_id="static", instance_id=f"blocks-{i}", session_timeout_s=45)
              for i in range(2)]
    records = [start_shard(settings, "records", app_id="static")]
    shards = [*blocks, *records]
    try:
        for shard in shards:
            wait_for(lambda s=shard: _health(s).get("partitions_owned"), 120)
        # both block shards dealt their share (the second may join after the first had everything)
        wait_for(lambda: all(len(_health(b)["partitions_owned"]) == settings.shards.partitions // 2 for b in blocks),
                 120)
        before = [_health(b) for b in blocks]
        items = records_for_size(2000, seed=7)
        sent = publish_changes(settings, items, 0, 1000, changes=False)
        wait_for(lambda: _health(blocks[0]).get("committed", 0) > 500, 120, pause=0.1)

        blocks[0].proc.send_signal(signal.SIGKILL)
        blocks[0].proc.wait()
        sent += publish_changes(settings, items, 1000, 2000, changes=True)  # while it is down
        blocks[0] = start_shard(settings, "blocks", app_id="static", instance_id="blocks-0", session_timeout_s=45)
        shards.append(blocks[0])
        # dealt them at once, not after the session timeout (45 s) a new member would wait out for the
        # dead one, nor dealt to the other shard meanwhile (which would replay the link input for them)
        back = wait_for(lambda: (h := _health(blocks[0])).get("partitions_owned") and h, 20)
        assert back["instance_id"] == "blocks-0"
        assert back["partitions_owned"] == before[0]["partitions_owned"]
        assert back["answering_from"] > 500, back  # from the positions it had committed, not the start

        end = _same_as_the_straight_replay(settings, sent)
        other = _health(blocks[1])
        assert other["partitions_owned"] == before[1]["partitions_owned"]
        assert other["rebuilds"] == before[1]["rebuilds"], (before[1], other)  # never dealt the killed one's

        # what an operator sees: `caselink status` names each tier's shards and how far they answered
        tiers = wait_for(lambda: (t := _status_shards(settings, "static")) and t[0]["answered_to"] == end and t, 60)
        blocks_tier, records_tier = tiers
        assert [(m["instance_id"], len(m["partitions"])) for m in blocks_tier["members"]] == [
            ("blocks-0", 30), ("blocks-1", 30)]
        assert [(m["instance_id"], len(m["partitions"])) for m in records_tier["members"]] == [(None, 60)]
        assert blocks_tier["unowned_partitions"] == [] and blocks_tier["lag"] == 0

        # a second process under a name in use: the one already running is fenced and stops
        twin = start_shard(settings, "blocks", app_id="static", instance_id="blocks-1", session_timeout_s=45)
        shards.append(twin)
        wait_for(lambda: blocks[1].proc.poll() is not None, 90, pause=0.5)
        assert blocks[1].proc.returncode != 0
        assert "Static consumer fenced" in blocks[1].log_path.read_text()  # librdkafka's words, not ours
        assert wait_for(lambda: _health(twin).get("partitions_owned"), 60) == before[1]["partitions_owned"]
    finally:
        stop_all(shards)
        worker.stop()


def test_shards_killed_and_restarted_carry_on_from_their_snapshots_and_give_the_single_writers_index(
        pipeline_settings: Settings, tmp_path: Path) -> None:
    """A named block shard and a named record shard, each keeping snapshots in a data directory
    of its own (``shards.data_dir``), killed with SIGKILL after their snapshots and started again
    while changes arrive: each loads its snapshot (the block shard under the hash seed kept
    beside it) and reads the link input from there, not from the start; the record shard reads the
    block shards' answers again from where its snapshot says. The index is the straight replay's."""
    settings = pipeline_settings
    worker = start_worker(settings, app_id="snap")

    def shard(tier: str, name: str) -> WorkerProcess:
        return start_shard(settings, tier, app_id="snap", instance_id=name, session_timeout_s=45,
                           data_dir=tmp_path / name, snapshot_interval_s=0.5)

    shards = [shard("blocks", "blocks-0"), shard("blocks", "blocks-1"), shard("records", "records-0")]
    try:
        wait_for(lambda: all(len(_health(s)["partitions_owned"]) == n for s, n in zip(shards, (30, 30, 60),
                                                                                        strict=True)), 120)
        items = records_for_size(2000, seed=9)
        sent = publish_changes(settings, items, 0, 1000, changes=False)
        taken = {}
        for s, name in ((shards[0], "blocks-0"), (shards[2], "records-0")):
            taken[name] = wait_for(lambda s=s: (p := _health(s)["snapshot"]["last"].get("position", 0)) > 500 and p,
                                   120, pause=0.2)

        for i in (0, 2):
            shards[i].proc.send_signal(signal.SIGKILL)
            shards[i].proc.wait()
        sent += publish_changes(settings, items, 1000, 2000, changes=True)  # while they are down
        shards[0], shards[2] = shard("blocks", "blocks-0"), shard("records", "records-0")
        for i, name in ((0, "blocks-0"), (2, "records-0")):
            loaded = wait_for(lambda i=i: _health(shards[i])["snapshot"]["loaded"], 60)
            assert loaded["position"] >= taken[name], (name, loaded, taken)  # its last snapshot, not the start
            assert _health(shards[i])["rebuilds"] == 1

        _same_as_the_straight_replay(settings, sent)
        assert (tmp_path / "blocks-0" / "blocks-hash-seed").exists()
        assert not (tmp_path / "records-0" / "blocks-hash-seed").exists()  # a record shard keys nothing by hash
    finally:
        stop_all(shards)
        worker.stop()
