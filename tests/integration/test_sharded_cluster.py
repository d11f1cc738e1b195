"""The sharded index on three brokers through the faults issue 20 names: byte-identical outputs.

A 3-broker cluster with the default settings (replication factor 3, min ISR 2). One block shard
and three scorers (record shards, `caselink shard records`) answer the link input; two workers in
sharded mode are the resolver and its standby. Under load: a scorer is killed with SIGKILL (its
key partitions are dealt to the others, which rebuild them), a scorer is added (the group deals
it partitions; the scorers that give some up drop them without replaying), a scorer is stopped
with SIGSTOP for 3 s (the resolver waits for its answers, then catches up), and the resolver is
killed with SIGKILL (its standby takes over). Every message on the decisions, linked-cases and
review topics must be, key by key, the single writer's (a straight replay of the link input
through the linker's core), repeats after the takeover aside.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from caselink.infra.topics import LINK_INPUT_TOPIC
from caselink.linkage.synthetic import records_for_size

from caselink.core.settings import Settings
from caselink.demo import WorkerProcess, start_shard, start_worker
from caselink.ops import topic_ends
from tests.sharded_load import (
    assert_the_single_writers_outputs,
    kill,
    link_to_the_end_with_verdicts,
    linker_position,
    metric_samples,
    publish_changes,
    stop_all,
)
from tests.waiting import service_json, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
APP = "cluster"


def _end(settings: Settings) -> int:
    return topic_ends(settings, [LINK_INPUT_TOPIC])[LINK_INPUT_TOPIC]


def test_the_sharded_index_on_three_brokers_gives_the_single_writers_outputs_through_faults(
        cluster_settings: Settings) -> None:
    settings = cluster_settings
    processes: list[WorkerProcess] = []

    def shard(tier: str) -> WorkerProcess:
        processes.append(start_shard(settings, tier, app_id=APP))
        return processes[-1]

    def worker() -> WorkerProcess:
        processes.append(start_worker(settings, app_id=APP, sharded=True, snapshot_interval_s=2))
        return processes[-1]

    try:
        blocks = shard("blocks")
        scorers = [shard("records") for _ in range(3)]
        for process in [blocks, *scorers]:
            wait_for(lambda p=process: service_json(p.port).get("partitions_owned"), 120)
        resolver = worker()
        wait_for(lambda: linker_position(resolver) >= 0, 120)
        standby = worker()
        wait_for(lambda: service_json(standby.port).get("role") == "standby", 120)

        items = records_for_size(2400, seed=9)
        sent = publish_changes(settings, items, 0, 600, changes=False)
        wait_for(lambda: service_json(standby.port)["standby_position"] > 0, 120, pause=0.1)

        kill(scorers[0])  # a scorer, mid-run: the other two are dealt its partitions and rebuild them
        sent += publish_changes(settings, items, 600, 1200, changes=False)
        wait_for(lambda: sorted(p for s in scorers[1:] for p in service_json(s.port)["partitions_owned"])
                 == list(range(settings.shards.partitions)), 120, pause=0.2)

        rebuilds = [service_json(s.port)["rebuilds"] for s in scorers[1:]]
        scorers.append(shard("records"))  # a scorer added mid-run: the group deals it partitions
        wait_for(lambda: service_json(scorers[-1].port).get("partitions_owned"), 120, pause=0.2)
        # the two that gave some up dropped those records and went on, without replaying the log
        wait_for(lambda: sum(len(service_json(s.port)["partitions_owned"]) for s in scorers[1:3]) < 60, 60, pause=0.2)
        assert [service_json(s.port)["rebuilds"] for s in scorers[1:3]] == rebuilds
        wait_for(lambda: linker_position(resolver) >= _end(settings) - 20, 180, pause=0.2)

        os.kill(scorers[1].proc.pid, signal.SIGSTOP)  # the resolver waits for its answers
        try:
            sent += publish_changes(settings, items, 1200, 2400, changes=True)
            waiting = wait_for(lambda: service_json(resolver.port)["shards"]["held_changes"], 30, pause=0.1)
            assert waiting > 0
            time.sleep(3)
            assert metric_samples(resolver)["caselink_resolver_held_changes"] > 0  # what Prometheus sees
        finally:
            os.kill(scorers[1].proc.pid, signal.SIGCONT)
        wait_for(lambda: linker_position(resolver) > 1800, 120, pause=0.1)
        kill(resolver)  # the resolver, mid-stream: its standby takes over
        wait_for(lambda: linker_position(standby) >= 0, 120)

        link_to_the_end_with_verdicts(settings, standby, items, sent)
        health = service_json(standby.port)
        assert health["last_takeover"]["resumed_from"] > 0 and health["shards"]["held_changes"] == 0, health

        assert_the_single_writers_outputs(settings, at_least=3000)
        assert all(service_json(s.port)["status"] == "ok" for s in [blocks, *scorers[1:]])
    finally:
        stop_all(processes)
