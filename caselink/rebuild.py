"""Rebuild the citizen index under another model, compare it with the live one, and switch over.

The link input is retained forever, so any model can be replayed over exactly the records the
live index saw, in the same order. ``compare`` classifies every live citizen by what the rebuilt
index does to its records: unchanged, merged with others, split apart, or otherwise changed.
``switch`` retires the live citizen ids the new index does not have (tombstones on
``caselink.linked-cases``) and rewinds the linker's consumer group, so a worker started with the
new model replays the link input and publishes the new index; the gate follows by itself.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import TopicPartition

from caselink.core.kafka import admin_client, idempotent_producer, read_to_end, set_group_offsets
from caselink.core.settings import Settings
from caselink.infra.topics import LINK_INPUT_TOPIC, LINKED_CASES_TOPIC
from caselink.linkage.model import LinkageModel
from caselink.ops import latest_linked_cases
from caselink.schemas import UndecodableEventError
from caselink.streams.linker_core import new_core
from caselink.streams.normaliser_core import packed_record


@dataclass
class Comparison:
    live_citizens: int = 0
    rebuilt_citizens: int = 0
    unchanged: int = 0
    merged: list[dict[str, Any]] = field(default_factory=list)
    split: list[dict[str, Any]] = field(default_factory=list)
    changed: list[dict[str, Any]] = field(default_factory=list)
    new_records: int = 0  # in the rebuilt index but in no live citizen (the live view was behind)
    missing_records: int = 0  # in a live citizen but not in the rebuilt index

    @property
    def identical(self) -> bool:
        return not (self.merged or self.split or self.changed or self.new_records or self.missing_records)

    def summary(self, examples: int = 5) -> dict[str, Any]:
        return {"live_citizens": self.live_citizens, "rebuilt_citizens": self.rebuilt_citizens,
                "unchanged": self.unchanged, "merged": len(self.merged), "split": len(self.split),
                "changed": len(self.changed), "new_records": self.new_records,
                "missing_records": self.missing_records, "identical": self.identical,
                "examples": {"merged": self.merged[:examples], "split": self.split[:examples],
                             "changed": self.changed[:examples]}}


def replay_index(settings: Settings, model: LinkageModel, progress: Callable[[int, int], None] | None = None) -> Any:
    """A LinkerCore that has applied the whole link input with ``model``."""

    core = new_core(settings, model)
    messages = read_to_end(settings, [LINK_INPUT_TOPIC], timeout=120)
    for i, msg in enumerate(messages, 1):
        try:
            core.apply(msg.value(), packed=packed_record(msg.headers()))
        except (UndecodableEventError, ValueError):
            pass  # the live linker dead-lettered these too
        if progress and (i % 2000 == 0 or i == len(messages)):
            progress(i, len(messages))
    return core


def live_members(settings: Settings) -> dict[str, frozenset[str]]:
    return {cid: frozenset(f"{m['agency']}:{m['source_record_id']}" for m in case["members"])
            for cid, case in latest_linked_cases(settings).items()}


def compare(live: dict[str, frozenset[str]], rebuilt: dict[str, frozenset[str]]) -> Comparison:
    result = Comparison(live_citizens=len(live), rebuilt_citizens=len(rebuilt))
    rebuilt_of = {record: cid for cid, members in rebuilt.items() for record in members}
    live_of = {record: cid for cid, members in live.items() for record in members}
    result.new_records = len(set(rebuilt_of) - set(live_of))
    result.missing_records = len(set(live_of) - set(rebuilt_of))
    for cid, members in sorted(live.items()):
        targets = {rebuilt_of[r] for r in members if r in rebuilt_of}
        if len(targets) > 1:
            result.split.append({"live": cid, "into": sorted(targets),
                                 "records": {t: sorted(rebuilt[t] & members) for t in sorted(targets)}})
            continue
        target = next(iter(targets), None)
        now = rebuilt[target] if target is not None else frozenset()
        if target is not None and now == members:
            result.unchanged += 1
            continue
        joined = sorted({live_of[r] for r in now if r in live_of} - {cid})
        if joined:
            result.merged.append({"live": cid, "with": joined, "rebuilt": target, "records": sorted(now)})
        else:
            result.changed.append({"live": cid, "rebuilt": target, "live_records": sorted(members),
                                   "rebuilt_records": sorted(now)})
    return result


def rebuilt_members(core: Any) -> dict[str, frozenset[str]]:
    groups: dict[str, set[str]] = defaultdict(set)
    for record, cid in core.index.clusters().items():
        groups[cid].add(record)
    return {cid: frozenset(g) for cid, g in groups.items()}


def switch(settings: Settings, live: dict[str, frozenset[str]], rebuilt: dict[str, frozenset[str]]) -> dict[str, Any]:
    """Tombstone live ids the new index lacks and rewind the linker group to the start of the link input.

    Refuses while a worker is linking (the linker's consumer group has members): stop it first.
    """

    group = f"{settings.worker.app_id}-linker"
    admin = admin_client(settings)
    described = admin.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
    if described.members:
        raise RuntimeError(f"a worker is still linking (group {group} has {len(described.members)} member(s)); "
                           "stop the workers, then switch")
    stale = sorted(set(live) - set(rebuilt))
    producer = idempotent_producer(settings)
    for cid in stale:
        producer.produce(LINKED_CASES_TOPIC, None, key=cid.encode())
    if producer.flush(60):
        raise RuntimeError("tombstones not acknowledged by Kafka")
    set_group_offsets(admin, group, [TopicPartition(LINK_INPUT_TOPIC, 0, 0)])
    return {"retired": len(stale), "group_rewound": group}


def rebuild_members_for(settings: Settings, model: LinkageModel,
                        progress: Callable[[int, int], None] | None = None) -> dict[str, frozenset[str]]:
    return rebuilt_members(replay_index(settings, model, progress))
