"""What /health says of a sharded worker whose shards have stopped answering."""

from __future__ import annotations

import time
from pathlib import Path

from caselink.linkage.models import default_model
from caselink.streams.app import SHARDS_WAIT_DEGRADED_S, shards_paused
from caselink.streams.linker_loop import LinkerLoop

from caselink.core.settings import Settings


class _Held:
    def __init__(self, offset: int) -> None:
        self._offset = offset

    def offset(self) -> int:
        return self._offset

    def error(self) -> None:
        return None


def _loop(tmp_path: Path) -> LinkerLoop:
    settings = Settings()
    settings = settings.model_copy(update={"shards": settings.shards.model_copy(update={"enabled": True}),
                                           "worker": settings.worker.model_copy(update={"data_dir": tmp_path})})
    return LinkerLoop(settings, default_model(), "caselink-linker")  # not started: no Kafka


def test_changes_waiting_past_the_limit_with_no_answer_pause_linking_and_say_why(tmp_path: Path) -> None:
    loop = _loop(tmp_path)
    assert loop.sharded_status()["waiting_s"] == 0.0  # nothing held: nothing waits
    loop.held.extend(_Held(i) for i in range(3))
    assert shards_paused(loop.sharded_status()) is None  # held a moment: the shards are answering
    loop._answered_at = time.monotonic() - SHARDS_WAIT_DEGRADED_S - 1  # no answer since
    reason = shards_paused(loop.sharded_status())
    assert reason is not None and reason.startswith("paused: 3 change(s) waiting 31 s")
    assert "caselink shard records" in reason


def test_a_single_writer_has_no_shards_to_wait_for(tmp_path: Path) -> None:
    settings = Settings().model_copy(update={"worker": Settings().worker.model_copy(update={"data_dir": tmp_path})})
    loop = LinkerLoop(settings, default_model(), "caselink-linker")
    assert loop.sharded_status() == {} and loop.store is None
