"""Workers switched between the single writer and sharded mode (``shards.enabled``) while they
link publish the single writer's messages.

One block shard and one record shard (`caselink shard`) answer the link input. Workers of both
kinds share the linker's group, each taking snapshots: the single writer links with a sharded
standby, and is killed with SIGKILL mid-stream (the sharded worker takes over: a switch to
sharded mode); a single-writer standby is started and the sharded resolver killed (the switch
back); the killed resolver is started again on its data (its snapshot and store of values),
follows, and takes over when the single writer is killed. Updates, deletes, reviewers' verdicts
and an undo are among the changes. Every message on the decisions, linked-cases and review topics
must be, key by key, the single writer's (a straight replay of the link input through the
linker's core), apart from repeats after a takeover (the linker's outputs are at-least-once); and
the review screen, which the resolver fills from its store of values, must show the single
writer's pairs with the same field weights.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from caselink.linkage.synthetic import records_for_size
from caselink.streams.app import jsonable
from caselink.streams.review_view import open_pairs

from caselink.core.settings import Settings
from caselink.demo import WorkerProcess, start_shard, start_worker
from tests.sharded_load import (
    assert_the_single_writers_outputs,
    kill,
    link_to_the_end_with_verdicts,
    linker_position,
    publish_changes,
    stop_all,
)
from tests.waiting import service_json, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_workers_switched_to_sharded_mode_and_back_while_linking_publish_the_single_writers_messages(
        pipeline_settings: Settings) -> None:
    settings = pipeline_settings
    shards = [start_shard(settings, "blocks", app_id="resolving"), start_shard(settings, "records", app_id="resolving")]
    workers: list[WorkerProcess] = []

    def worker(sharded: bool, **kwargs: Any) -> WorkerProcess:
        workers.append(start_worker(settings, app_id="resolving", sharded=sharded, snapshot_interval_s=1, **kwargs))
        return workers[-1]

    def following(standby: WorkerProcess, beyond: int = 0) -> None:
        wait_for(lambda: service_json(standby.port)["standby_position"] > beyond, 120, pause=0.1)

    try:
        for shard in shards:
            wait_for(lambda s=shard: service_json(s.port).get("partitions_owned"), 120)
        single = worker(sharded=False)
        wait_for(lambda: linker_position(single) >= 0, 120)
        sharded = worker(sharded=True)
        wait_for(lambda: service_json(sharded.port).get("role") == "standby", 120)
        assert service_json(sharded.port)["mode"] == "sharded resolver"
        assert "mode" not in service_json(single.port)

        # 1. single writer -> sharded: the sharded standby takes over from where it had followed
        items = records_for_size(3000, seed=5)
        sent = publish_changes(settings, items, 0, 700, changes=False)
        following(sharded)
        wait_for(lambda: service_json(sharded.port)["snapshot"]["last"].get("position", 0) > 0, 60, pause=0.1)
        sent += publish_changes(settings, items, 700, 1500, changes=False)
        wait_for(lambda: linker_position(single) > 900, 120, pause=0.1)
        kill(single)  # mid-stream
        wait_for(lambda: linker_position(sharded) >= 0, 120)
        assert service_json(sharded.port)["last_takeover"]["resumed_from"] > 0

        # 2. sharded -> single writer, the same way
        back = worker(sharded=False)
        sent += publish_changes(settings, items, 1500, 2200, changes=False)
        following(back)
        kill(sharded)
        wait_for(lambda: linker_position(back) >= 0, 120)
        assert service_json(back.port)["last_takeover"]["resumed_from"] > 0

        # 3. the killed resolver started again on its data: it loads its snapshot and store of
        # values, follows as the standby, and takes over when the single writer is killed
        restarted = worker(sharded=True, data_dir=sharded.log_path.parent)
        loaded = wait_for(lambda: service_json(restarted.port)["snapshot"]["loaded"], 120)
        assert loaded["position"] > 0
        # and reads the record shards' answers again only from where the snapshot's position needs them
        assert service_json(restarted.port)["shards"]["answers_read_from"] > 0
        sent += publish_changes(settings, items, 2200, 3000, changes=True)
        following(restarted, loaded["position"])
        kill(back)
        wait_for(lambda: linker_position(restarted) >= 0, 120)

        link_to_the_end_with_verdicts(settings, restarted, items, sent)
        health = service_json(restarted.port)
        assert health["last_takeover"]["resumed_from"] > loaded["position"], health
        assert health["shards"]["held_changes"] == 0, health

        core = assert_the_single_writers_outputs(settings, at_least=4000)
        items_shown, total = open_pairs(core)
        review = restarted.get("/review", role="reader")
        assert review == {"open": total, "items": json.loads(json.dumps(jsonable(items_shown)))}
    finally:
        stop_all(workers + shards)
