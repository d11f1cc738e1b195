"""Rebuilding the linker's state after a restart, from the link-input log itself.

The index is a deterministic function of the ordered ``caselink.link-input`` log (one partition,
kept indefinitely), so a worker that starts — after a clean stop, a kill -9, or on a new machine —
replays the log up to its consumer group's committed offset without publishing anything, then lets
Faust continue from that offset. Messages processed after the last commit but before a crash are
processed again; their outputs are full-state, keyed and deterministic, so the repeats change
nothing downstream.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from caselink.kafka import client_config, watermarks
from caselink.settings import Settings
from infra.topics import LINK_INPUT_TOPIC
from linkage.model import LinkageModel
from streams.linker_core import LinkerCore

log = logging.getLogger(__name__)


def committed_offset(settings: Settings, group_id: str, topic: str = LINK_INPUT_TOPIC) -> int:
    """The group's committed offset on partition 0 of ``topic`` (0 when it never committed)."""
    c = Consumer(client_config(settings, **{"group.id": group_id, "enable.auto.commit": False}))
    try:
        tp = c.committed([TopicPartition(topic, 0)], timeout=30)[0]
        return tp.offset if tp.offset >= 0 else 0
    finally:
        c.close()


def rebuild(
    settings: Settings,
    model: LinkageModel,
    group_id: str,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[LinkerCore, int, float]:
    """(core, offsets replayed, seconds) — the state as of the group's committed offset."""
    started = time.monotonic()
    core = LinkerCore(model, max_block_size=settings.worker.max_block_size)
    until = committed_offset(settings, group_id)
    if until == 0:
        return core, 0, 0.0
    c = Consumer(client_config(settings, **{"group.id": f"{group_id}-recovery", "enable.auto.commit": False,
                                            "enable.partition.eof": True}))
    try:
        tp = TopicPartition(LINK_INPUT_TOPIC, 0)
        low, high = watermarks(c, tp)
        if low > 0:
            raise RuntimeError(
                f"{LINK_INPUT_TOPIC} no longer holds offsets below {low}: its retention must be infinite "
                "for the index to be rebuilt; run `caselink rebuild` from the agency topics instead")
        until = min(until, high)
        c.assign([TopicPartition(LINK_INPUT_TOPIC, 0, OFFSET_BEGINNING)])
        done = 0
        while done < until:
            batch = c.consume(1000, timeout=1.0)
            for msg in batch:
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise RuntimeError(f"reading {LINK_INPUT_TOPIC}: {msg.error()}")
                if msg.offset() >= until:
                    done = until
                    break
                try:
                    core.apply(msg.value(), msg.topic(), msg.partition(), msg.offset())
                except ValueError:
                    pass  # went to dead letters the first time round; nothing to rebuild
                done = msg.offset() + 1
            if progress:
                progress(done, until)
    finally:
        c.close()
    return core, until, time.monotonic() - started
