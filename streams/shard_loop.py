"""One shard of the sharded index on Kafka: a block shard or a record shard (``caselink shard``).

The tiers' logic is ``streams.shard_core``; this is how a shard process runs it on Kafka's own
machinery:

* **which partitions it owns**: the shards of a tier are one consumer group
  (``<app id>-<tier>-shards``) subscribed to ``caselink.link-shards``, a topic that is never
  written and has one partition per key partition. Kafka's group protocol deals them out, and
  deals them again when a shard joins, leaves or dies (cooperative-sticky, as for the linker);
* **what it reads**: the whole one-partition link input in order, from the start (its offset is
  the sequence number), because its state is a function of that log; a record shard also reads
  the block shards' answers (``caselink.link-found``) and uses them once every partition has
  answered a change (``Coverage``); a paused block shard makes it wait, then catch up;
* **what it writes**: its answers, one message per poll's worth of changes (split when one would
  pass the largest message), on ``caselink.link-found`` or ``caselink.link-scored``;
* **how far it got**: once a batch's messages are acknowledged, the shard commits, in its group,
  each of its partitions of ``caselink.link-shards`` with how far in the link input it has
  answered (the offset commit's metadata). The group coordinator refuses a commit from a member
  of an older generation, so a shard that lost its partitions cannot record progress for them;
* **recovery**: a shard that is dealt partitions (at start, or after a rebalance) rebuilds its
  state by replaying the link input from the start, silently up to the least of its partitions'
  committed positions, and answers from there. With ``shards.instance_id`` a shard is a static
  member of its group: restarted within the session timeout, it is dealt its own partitions
  again and no other shard is dealt them meanwhile (each would replay the link input for them);
  a second process under the same name fences the first, which stops with that error.

At-least-once is enough: an answer depends only on the link input up to the change it answers,
so a batch answered twice (a crash between sending and committing, or a shard that has not yet
noticed it lost a partition) says the same thing twice, and the next tier's merge is idempotent.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any

from caselink.infra.topics import LINK_FOUND_TOPIC, LINK_INPUT_TOPIC, LINK_SCORED_TOPIC, LINK_SHARDS_TOPIC
from caselink.linkage.model import LinkageModel
from caselink.schemas import default_serde
from caselink.streams import metrics, shard_snapshot
from caselink.streams.normaliser_core import change_header, packed_record
from caselink.streams.shard_core import (
    NO_ANSWER,
    Batch,
    BlockAnswers,
    Coverage,
    RecordAnswers,
    answered,
    batches,
    decode_batch,
    decode_change,
    made_with,
    merge_found,
)
from caselink.streams.snapshot import SnapshotWriter
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from caselink.core.kafka import consumer as kafka_consumer
from caselink.core.kafka import drain, group_member, idempotent_producer, poll_group, produce
from caselink.core.settings import Settings

log = logging.getLogger(__name__)

TIERS = ("blocks", "records")
POSITION_PREFIX = "link-input="  # the committed metadata: how far this partition is answered
# A record shard (and the resolver) holds at most this many link-input messages while waiting for
# the tier before's answers to them, then stops reading the link input until they come.
MAX_WAITING = 20_000


def hold_back(reader: Consumer, waiting: int) -> None:
    """Stop reading the link input while more than ``MAX_WAITING`` messages wait for the tier
    before's answers (a paused or lagging shard), and read on once half of them have come."""
    link_input = [TopicPartition(LINK_INPUT_TOPIC, 0)]
    if waiting > MAX_WAITING:
        reader.pause(link_input)
    elif waiting < MAX_WAITING // 2:
        reader.resume(link_input)


def group_id(settings: Settings, tier: str) -> str:
    return f"{settings.worker.app_id}-{tier}-shards"


def answered_position(tp: TopicPartition) -> int:
    """How far in the link input a partition is answered, from its committed metadata (0: never)."""
    meta = getattr(tp, "metadata", None) or ""
    if tp.offset < 0 or not meta.startswith(POSITION_PREFIX):
        return 0
    return int(meta[len(POSITION_PREFIX):])


class ShardLoop(threading.Thread):
    """A block or record shard: owns what its group deals it, answers every change for it."""

    def __init__(self, settings: Settings, tier: str, model: LinkageModel) -> None:
        if tier not in TIERS:
            raise ValueError(f"unknown shard tier {tier!r}: expected one of {', '.join(TIERS)}")
        super().__init__(name=f"caselink-{tier}-shard", daemon=True)
        self.settings, self.tier, self.model = settings, tier, model
        self.partitions = settings.shards.partitions
        self.serde = default_serde()
        self.owned: set[int] = set()
        self._dealt = threading.Event()  # the group dealt partitions again: rebuild
        self.working: frozenset[int] = frozenset()  # the partitions the current state is for
        self.position = 0  # every link-input offset below this is applied
        self.publish_from = 0  # answers below this were sent before (by this shard or another)
        self.committed = 0
        self.lag: int | None = None  # link-input messages not yet applied, as of the last fetch
        self.rebuilds = 0
        self.answers_sent = 0
        self.messages_sent = 0
        self.error: BaseException | None = None
        self._stopping = threading.Event()
        self._waiting: collections.deque[Message] = collections.deque()
        self._coverage: Coverage | None = None
        self._answers: BlockAnswers | RecordAnswers | None = None
        self._found_read_to = 0  # a record shard: how far it has read the block shards' answers
        data_dir = settings.shards.data_dir
        self.snapshots = None if data_dir is None else SnapshotWriter(
            data_dir / f"{tier}-shard.snapshot", writer=shard_snapshot.write, what=f"{tier} shard")
        self.snapshot_loaded: dict[str, Any] | None = None
        self._source: dict[str, Any] = {}  # where the log comes from, as a snapshot must say it too

    # ------------------------------------------------------------------ lifecycle
    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join(timeout)

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "tier": self.tier, "instance_id": self.settings.shards.instance_id,
            "partitions_owned": sorted(self.working), "position": self.position, "lag": self.lag,
            "answering_from": self.publish_from, "committed": self.committed, "rebuilds": self.rebuilds,
            "answers_sent": self.answers_sent, "messages_sent": self.messages_sent,
            "replaying": self.position < self.publish_from, "error": repr(self.error) if self.error else None}
        if self.snapshots is not None:
            status["snapshot"] = {**self.snapshots.status(), "loaded": self.snapshot_loaded}
        if self._coverage is not None and self._waiting:
            behind = self._coverage.lagging()
            status["waiting_for_block_shards"] = {"changes": len(self._waiting), "answered_to": min(behind.values()),
                                                  "partitions_behind": sorted(behind)}
        return status

    # The group's callbacks run inside poll() on this thread: they only note the change.
    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if partitions:
            self.owned |= {tp.partition for tp in partitions}
            self._dealt.set()

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if partitions:
            self.owned -= {tp.partition for tp in partitions}
            self._dealt.set()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # surfaced through /health; the process must then be restarted
            self.error = exc
            log.exception("%s shard stopped", self.tier)

    def _run(self) -> None:
        settings = self.settings
        shards = settings.shards
        group = kafka_consumer(settings, group_id(settings, self.tier), **{
            "enable.partition.eof": False, "partition.assignment.strategy": "cooperative-sticky",
            **group_member(shards.instance_id, shards.session_timeout_s)})
        who = f"{self.tier} shard" + (f" {shards.instance_id!r}" if shards.instance_id else "")
        group.subscribe([LINK_SHARDS_TOPIC], on_assign=self._assigned, on_revoke=self._revoked,
                        on_lost=self._revoked)
        reader = kafka_consumer(settings, f"{group_id(settings, self.tier)}-reader", **{
            "enable.partition.eof": False, "fetch.wait.max.ms": 10})
        producer = idempotent_producer(settings)
        out_topic = LINK_FOUND_TOPIC if self.tier == "blocks" else LINK_SCORED_TOPIC
        if self.snapshots is not None:
            self._source = {"cluster_id": reader.list_topics(timeout=30).cluster_id, "app_id": settings.worker.app_id}
        try:
            while not self._stopping.is_set():
                poll_group(group, 0, who)
                if self._dealt.is_set():
                    self._rebuild(group, reader)
                if not self.working:
                    if self.snapshots is not None:
                        self.snapshots.poll()  # a child that finished is reaped
                    poll_group(group, 0.2, who)
                    continue
                start = self.position
                answers = self._read_and_answer(reader)
                if self.position > start and self.position > self.publish_from:
                    self._send(group, producer, out_topic, max(start, self.publish_from), answers)
                self._snapshot()  # also when idle: the last batch may have come within the interval
                self._measure(reader)
        finally:
            if self.snapshots is not None:
                self.snapshots.wait(30)
            producer.flush(10)
            reader.close()
            group.close()

    def _measure(self, reader: Consumer) -> None:
        tier = self.tier
        metrics.SHARD_POSITION.labels(tier).set(self.position)
        metrics.SHARD_PARTITIONS.labels(tier).set(len(self.working))
        metrics.SHARD_WAITING.labels(tier).set(len(self._waiting))
        try:  # the end the last fetch saw: no request to the broker
            _low, high = reader.get_watermark_offsets(TopicPartition(LINK_INPUT_TOPIC, 0), cached=True)
        except KafkaException:
            return
        if high >= 0:
            self.lag = max(0, high - self.position)
            metrics.SHARD_LAG.labels(tier).set(self.lag)

    # ------------------------------------------------------------------ rebuilding
    def _rebuild(self, group: Consumer, reader: Consumer) -> None:
        """State for the partitions now owned, replayed from the start of the link input; a shard
        that only lost partitions drops their records or blocks instead (``keep_only``)."""
        self._dealt.clear()
        owned = frozenset(self.owned)
        if owned and owned < self.working and self._answers is not None:
            self._answers.shard.keep_only(owned)
            self.working = owned
            log.info("%s shard gave up partitions; %d left %s, no replay", self.tier, len(owned), sorted(owned))
            return
        self.working = owned
        self.rebuilds += 1
        metrics.SHARD_REBUILDS.labels(self.tier).inc()
        positions = {}
        if owned:
            while True:
                try:
                    committed = group.committed([TopicPartition(LINK_SHARDS_TOPIC, p) for p in sorted(owned)],
                                                timeout=30)
                    break
                except KafkaException as exc:  # the coordinator is moving or loading: ask again
                    log.info("%s shard could not read its partitions' positions yet: %s", self.tier, exc)
                    if self._stopping.wait(0.5):
                        return
            positions = {tp.partition: answered_position(tp) for tp in committed}
        self.publish_from = min(positions.values(), default=0)
        self.committed = self.publish_from
        self.position = 0
        self._found_read_to = 0
        self._waiting.clear()
        if self._restore(owned, reader):
            return
        if self.tier == "blocks":
            self._answers = BlockAnswers(owned, self.partitions, self.settings.linkage.max_block_size)
            self._coverage = None
            reader.assign([TopicPartition(LINK_INPUT_TOPIC, 0, OFFSET_BEGINNING)])
        else:
            self._answers = RecordAnswers(self.model, owned, self.partitions)
            self._coverage = Coverage(merge_found, self.partitions, made_with=made_with("blocks", self.model))
            reader.assign([TopicPartition(LINK_INPUT_TOPIC, 0, OFFSET_BEGINNING),
                           TopicPartition(LINK_FOUND_TOPIC, 0, OFFSET_BEGINNING)])
        log.info("%s shard owns %d partitions %s; replaying the link input, answering from %d", self.tier,
                 len(owned), sorted(owned), self.publish_from)

    def _restore(self, owned: frozenset[int], reader: Consumer) -> bool:
        """State for ``owned`` from this shard's snapshot, if it has one fit to use (its
        partitions, not past the committed positions): then the link input is read from the
        snapshot's position, and a record shard's block answers from where the snapshot says
        every one it still needs begins."""
        if self.snapshots is None or not owned:
            return False
        linkage = self.settings.linkage
        loaded = shard_snapshot.read(self.snapshots.path, self.tier, self.model, self.partitions,
                                     linkage.max_block_size, owned, self.publish_from, self._source)
        if loaded is None:
            return False
        # as if just written: not written again until there is something new and the interval has passed
        self.snapshots.child_position, self.snapshots.started = loaded.position, time.monotonic()
        self._answers, self.position = loaded.answers, loaded.position
        link_input = TopicPartition(LINK_INPUT_TOPIC, 0, loaded.position)
        if self.tier == "blocks":
            self._coverage = None
            reader.assign([link_input])
        else:
            self._found_read_to = int(loaded.header["found_from"])
            self._coverage = Coverage(merge_found, self.partitions, start=loaded.position,
                                      made_with=made_with("blocks", self.model))
            reader.assign([link_input, TopicPartition(LINK_FOUND_TOPIC, 0, self._found_read_to)])
        self.snapshot_loaded = {"position": loaded.position, "seconds": round(loaded.seconds, 3),
                                "taken_at": loaded.header["taken_at"]}
        log.info("%s shard owns %d partitions %s; loaded its snapshot at %d in %.1f s, answering from %d",
                 self.tier, len(owned), sorted(owned), loaded.position, loaded.seconds, self.publish_from)
        return True

    def _snapshot(self) -> None:
        """A snapshot of the state at the position just committed, every ``snapshot_interval_s``,
        written by a forked child while the shard goes on."""
        writer = self.snapshots
        if writer is None or writer.busy:  # busy also reaps a child that has finished
            return
        if (self._answers is None or self.position == 0 or self.position != self.committed
                or self.position == writer.child_position
                or time.monotonic() - writer.started < self.settings.shards.snapshot_interval_s):
            return
        extra: dict[str, Any] = {"made_with": made_with(self.tier, self.model), **self._source}
        if self._coverage is not None:
            extra["found_from"] = self._coverage.resume_from(self._found_read_to)
        writer.start(self._answers, self.position, extra)

    # ------------------------------------------------------------------ answering
    def _read_and_answer(self, reader: Consumer) -> list[tuple[int, Any]]:
        answers: list[tuple[int, Any]] = []
        batch = drain(reader, self.settings.worker.batch_size * 4, wait_s=0.1)
        rules = self.model.rules
        for msg in batch:
            failure = msg.error()
            if failure is not None:
                if failure.code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(failure)
            if msg.topic() == LINK_FOUND_TOPIC:
                assert self._coverage is not None
                self._coverage.add(decode_batch(msg.value()), origin=msg.offset())
                self._found_read_to = msg.offset() + 1
            elif self._coverage is not None:
                self._waiting.append(msg)
            else:
                self._answer(msg, NO_ANSWER, answers, rules)
        if self._coverage is not None:
            for msg in answered(self._waiting, self._coverage):
                self._answer(msg, self._coverage.take(msg.offset()), answers, rules)
            hold_back(reader, len(self._waiting))
        return answers

    def _answer(self, msg: Message, found: Any, answers: list[tuple[int, Any]], rules: Any) -> None:
        offset = msg.offset()
        assert offset is not None and self._answers is not None
        headers = msg.headers()
        change = decode_change(self.serde, rules, msg.value(), packed_record(headers), msg.topic(), msg.partition(),
                               offset, key=msg.key(), change=change_header(headers), values=self.tier == "records")
        said = (self._answers.apply(change) if isinstance(self._answers, BlockAnswers)
                else self._answers.apply(change, found))
        if said is not NO_ANSWER and offset >= self.publish_from:
            answers.append((offset, said))
        self.position = offset + 1

    def _send(self, group: Consumer, producer: Any, topic: str, first: int, answers: list[tuple[int, Any]]) -> None:
        """The answers for ``first``..``position``, acknowledged, then the position committed."""
        end = self.position
        key = f"{self.tier}:{min(self.working)}".encode()
        limit = self.settings.kafka.max_message_bytes - 1024
        batch = Batch(self.tier, self.working, first, end, answers, self.partitions, made_with(self.tier, self.model))
        for data in batches(batch, limit):
            produce(producer, topic, key, data)
            self.messages_sent += 1
        if producer.flush(60) != 0:
            raise RuntimeError(f"{self.tier} shard: answers not acknowledged by the broker within 60 s")
        self.answers_sent += len(answers)
        metrics.SHARD_ANSWERS.labels(self.tier).inc(len(answers))
        offsets = [TopicPartition(LINK_SHARDS_TOPIC, p, 0, metadata=f"{POSITION_PREFIX}{end}")
                   for p in sorted(self.working)]
        try:
            group.commit(offsets=offsets, asynchronous=False)
            self.committed = end
        except KafkaException as exc:  # a rebalance under way (or fenced: the next poll says so)
            log.info("%s shard could not commit position %d (%s); the next owner of its partitions answers "
                     "again from the last committed one", self.tier, end, exc)
