"""The single writer of the citizen index, as a plain confluent-kafka loop in the worker.

Why not a Faust agent: Faust's per-event machinery (stream, buffer, acknowledgement) cost several
times what linking one record costs (docs/benchmarks.md); this loop is the linker's own limit. It
keeps Faust's guarantees in its own way:

* exclusivity: it subscribes to the one-partition ``caselink.link-input`` in the consumer group
  ``<app id>-linker``, so one worker links while any others wait to take over;
* recovery: the index is a deterministic function of the link-input log. A worker that does not
  hold the partition is a *hot standby*: it follows the log up to the group's committed offset
  and applies it to its own index, publishing nothing. When it is assigned the partition (the
  linker died or left) it carries on from where it followed to, replaying silently only the gap
  up to the committed offset; a worker with no standby state (the first start) replays the log
  from the beginning. Either way nothing is published below the committed offset;
* at-least-once output: a batch's outputs are acknowledged by the broker before its offset is
  committed. The acknowledgement of one batch's outputs is awaited in a helper thread while this
  thread links the next batch, whose outputs are held back until then (so outputs reach the
  broker in input order, as before), instead of waiting for it between batches.

In sharded mode (``shards.enabled``, docs/architecture.md "The sharded index") the same loop is
the ordered resolver: it also reads the record shards' answers (``caselink.link-scored``), holds
each link-input message until every key partition has answered it, applies it with the linker's
core in resolver mode, and keeps the records' values in a store on disk
(``streams.values_store``). Roles, standbys, snapshots and commits are as above.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from caselink.infra.topics import DEAD_LETTER_TOPIC, LINK_INPUT_TOPIC, LINK_SCORED_TOPIC
from caselink.linkage import deployment
from caselink.linkage.checks import check_model
from caselink.linkage.model import LinkageModel
from caselink.schemas import UndecodableEventError, default_serde
from caselink.schemas.dead_letters import dead_letter, dead_letter_message
from caselink.schemas.serde import AvroSerde
from caselink.streams import metrics, snapshot
from caselink.streams.linker_core import LinkerCore, new_core
from caselink.streams.normaliser_core import packed_record
from caselink.streams.shard_core import NO_ANSWER, Coverage, answered, decode_batch, made_with, merge_scored
from caselink.streams.shard_loop import MAX_WAITING, hold_back
from caselink.streams.sink import BatchSink
from caselink.streams.snapshot import SnapshotWriter
from caselink.streams.values_store import ValuesStore
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from caselink.core import kafka
from caselink.core.kafka import drain
from caselink.core.settings import Settings

log = logging.getLogger(__name__)


class LinkerLoop(threading.Thread):
    def __init__(self, settings: Settings, model: LinkageModel, group_id: str) -> None:
        super().__init__(name="caselink-linker", daemon=True)
        self.settings = settings
        self.model = model
        self.group_id = group_id
        self.lock = threading.RLock()  # the web API reads the index while this thread writes it
        # Sharded mode (shards.enabled): this is the ordered resolver. It applies each link-input
        # message once the record shards have answered it (``answered``), holding the messages
        # read before their answers (``held``), and keeps the records' values in ``store``.
        self.sharded = settings.shards.enabled
        self.store = (ValuesStore(settings.worker.data_dir / "resolver-values.sqlite", model.rules)
                      if self.sharded else None)
        self.answered: Coverage | None = None
        self.held: collections.deque[Message] = collections.deque()
        self._answers_from_start = True  # the answers' reader starts again from the beginning
        self.answers_read_from = self._answers_read_to = 0  # where it started, how far it has read
        self._answers: Consumer | None = None
        self._compacted = 0  # the snapshot position the store of values was last compacted to
        # Empty, the store of values kept as it is: a snapshot taken with it may be loaded (_run).
        self.core = new_core(settings, model, store=self.store)
        if self.sharded:
            self._answers_from(0)
        self.publish_from: int | None = None  # None: not assigned; replaying below this offset
        self.position = 0
        self.committed_position = 0  # how far the outputs are acknowledged (and committed, or about to be)
        self._pending: Future[int] | None = None  # the last batch's outputs, being acknowledged
        self.standby_position = 0  # how far the standby index has followed the committed log
        self.last_takeover: dict[str, int] = {}  # from where the last assignment resumed, and the gap replayed
        self.recovered_at: float | None = None
        self.started_at = time.monotonic()
        self.error: BaseException | None = None
        self._stopping = threading.Event()
        # Does the model fit what is being linked (linkage/checks.py)? Checked as the index grows
        # past each power of ten from 1,000 records; with linkage.model_check: refuse, linking
        # pauses at the first misfit (the index and /health say why) until a fitting model is used.
        self.model_findings: list[str] = deployment.scheme_drift(model, settings.linkage)
        for problem in self.model_findings:
            log.warning("linkage model: %s", problem)
        self._next_check = MODEL_CHECK_FROM
        self.refused: str | None = None
        # Snapshots of the index (streams/snapshot.py): loaded at start, written every interval.
        self.snapshots = SnapshotWriter(settings.worker.data_dir / "linker.snapshot")
        self.snapshot_loaded: dict[str, float] = {}

    def _new_core(self) -> LinkerCore:
        """An empty index, to rebuild by replaying the link input (in sharded mode with an empty
        store of values, and the record shards' answers read again from the start)."""
        if self.store is None:
            return new_core(self.settings, self.model)
        self.store.clear()
        self._answers_from(0)
        return new_core(self.settings, self.model, store=self.store)

    def _answers_from(self, position: int, topic_offset: int = 0) -> None:
        """Sharded mode: the record shards' answers read again from ``topic_offset`` of their topic
        (a snapshot says from where its position's answers are all there), the ones below
        ``position`` (applied already) left out."""
        self.answered = Coverage(merge_scored, self.settings.shards.partitions, start=position,
                                 made_with=made_with("records", self.model))
        self._answers_from_start = True
        self.answers_read_from = self._answers_read_to = topic_offset
        self.held.clear()
        self._answered_to, self._answered_at = position, time.monotonic()  # the shards' last progress

    # ------------------------------------------------------------------ lifecycle
    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join(timeout)

    @property
    def recovering(self) -> bool:
        return self.publish_from is None or self.position < self.publish_from

    # The group uses the cooperative-sticky assignor: a worker that joins (a new standby, or the old
    # linker coming back after a restart) leaves the partition where it is. With the eager range
    # assignor the partition went to whichever member id sorted first, so a joining worker with an
    # empty index took the linker role about half the time and replayed the whole log before it
    # published again (seen with a million records: 998,000 replayed). Callbacks receive only the
    # partitions added or taken away.
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if not partitions:  # nothing new for this member: it keeps whatever role it had
            return
        committed = consumer.committed(partitions, timeout=30)
        offset = max((tp.offset for tp in committed if tp.offset >= 0), default=0)
        resume = self.standby_position
        if resume > offset:  # the group was rewound (e.g. `caselink rebuild --switch`): start over
            resume = 0
        with self.lock:
            if resume == 0:
                self.core = self._new_core()
        self.held.clear()  # read by the standby's reader: the group's consumer reads them again
        self.publish_from, self.position, self.recovered_at = offset, resume, None
        self.committed_position = offset
        self.last_takeover = {"resumed_from": resume, "replayed_silently": offset - resume, "committed": offset}
        log.info("linker assigned %s; resuming at %d, replaying up to %d before publishing", partitions, resume,
                 offset)
        for tp in partitions:
            tp.offset = resume if resume > 0 else OFFSET_BEGINNING
        consumer.incremental_assign(partitions)

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if err is not None:
            log.warning("linker could not commit its position (it will replay more on takeover): %s", err)

    def _settle(self, consumer: Consumer, wait: bool) -> None:
        """Once the last batch's outputs are acknowledged (``wait``: wait for that), commit its
        position, asynchronously. Raises if an output could not be delivered."""
        pending = self._pending
        if pending is None or (not wait and not pending.done()):
            return
        self._pending = None
        self.committed_position = pending.result()
        # Asynchronous: the outputs are on the broker already, so the commit need not be waited
        # for. A commit lost with a crash only means
        # replaying a little more, silently, on takeover; one that fails is logged by _on_commit.
        consumer.commit(offsets=[TopicPartition(LINK_INPUT_TOPIC, 0, self.committed_position)], asynchronous=True)

    def _commit_now(self, consumer: Consumer) -> None:
        """Commit synchronously how far the outputs are acknowledged, on the way out. Raises,
        committing nothing more, if the last batch's outputs could not be delivered."""
        self._settle(consumer, wait=True)
        if self.publish_from is None or self.committed_position <= self.publish_from:
            return
        try:
            consumer.commit(offsets=[TopicPartition(LINK_INPUT_TOPIC, 0, self.committed_position)],
                            asynchronous=False)
        except KafkaException as exc:  # e.g. the group moved on already: the next linker replays more
            log.warning("linker could not commit its final position %d: %s", self.committed_position, exc)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if not partitions:
            return
        self._commit_now(consumer)
        if self.publish_from is not None:
            # Every batch applied so far is acknowledged and committed (_commit_now raises otherwise),
            # so the index is a valid standby.
            self.standby_position = self.position
        self.publish_from = None
        self.held.clear()  # past the position: the standby's reader reads them again
        consumer.incremental_unassign(partitions)

    def _follow(self, consumer: Consumer, follower: Consumer, state: dict[str, float]) -> None:
        """While another worker links: apply the log up to its committed offset, silently."""
        now = time.monotonic()
        if now - state.get("checked", 0.0) > 0.5:
            state["checked"] = now
            try:
                tp = consumer.committed([TopicPartition(LINK_INPUT_TOPIC, 0)], timeout=10)[0]
            except KafkaException as exc:  # the group coordinator is moving or loading: ask again later
                log.debug("standby could not read the committed offset: %s", exc)
                return
            if tp.offset < 0:  # no answer yet (or nothing committed): keep the last limit
                return
            state["limit"] = tp.offset
            if self.standby_position > state["limit"]:  # rewound: follow again from the start
                with self.lock:
                    self.core = self._new_core()
                self.standby_position = 0
                state.pop("assigned_at", None)
        limit = int(state.get("limit", 0))
        read_to = self.held[-1].offset() + 1 if self.held else self.standby_position  # type: ignore[operator]
        if read_to >= limit:
            if self.answered is not None and self.held:
                self._apply_following(self._ready([], wait_s=0.05))
            else:
                time.sleep(0.05)
            return
        if state.get("assigned_at") != read_to:
            follower.assign([TopicPartition(LINK_INPUT_TOPIC, 0, read_to)])
        overshot = False
        batch = []
        for msg in drain(follower, self.settings.worker.batch_size, wait_s=0.1):
            if msg.error():
                continue
            if msg.offset() >= limit:  # beyond what the leader has committed: not yet
                overshot = True
                break
            batch.append(msg)
            read_to = msg.offset() + 1
        self._apply_following(batch if self.answered is None else self._ready(batch))
        if overshot:
            state.pop("assigned_at", None)  # seek back to where it has read next time
        else:
            state["assigned_at"] = read_to

    def _apply_following(self, batch: list[Message]) -> None:
        """A standby's step: apply, publishing nothing (what the leader could not apply, it
        dead-lettered)."""
        answered = self.answered
        for msg in batch:
            with self.lock:
                scored = answered.take(msg.offset()) if answered is not None else NO_ANSWER  # type: ignore[arg-type]
                try:
                    self.core.apply(msg.value(), msg.topic(), msg.partition(), msg.offset(),
                                    packed_record(msg.headers()), scored=scored)
                except (UndecodableEventError, ValueError):
                    pass  # the leader dead-lettered it
            self.standby_position = msg.offset() + 1  # type: ignore[operator]
        if self.store is not None:
            with self.lock:
                self.store.commit()

    def _ready(self, batch: list[Message], wait_s: float = 0.0) -> list[Message]:
        """Sharded mode: the held link-input messages (with ``batch`` after them) that every
        partition's record shard has answered, in order; the rest stay held. Reads the answers
        that have come, waiting up to ``wait_s`` for them when messages are held."""
        assert self.answered is not None and self._answers is not None
        self.held.extend(batch)
        answers = self._answers
        if self._answers_from_start:
            start = self._answers_read_to
            answers.assign([TopicPartition(LINK_SCORED_TOPIC, 0, start if start > 0 else OFFSET_BEGINNING)])
            self._answers_from_start = False
        for msg in drain(answers, self.settings.worker.batch_size, wait_s=wait_s if self.held else 0.0):
            failure = msg.error()
            if failure is not None:
                if failure.code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(f"reading {LINK_SCORED_TOPIC}: {failure}")
                continue
            # a shard's answers that cannot be used stop the linker
            self.answered.add(decode_batch(msg.value()), msg.offset())
            self._answers_read_to = msg.offset() + 1
        ready, held = self.answered.ready(), self.held
        if ready > self._answered_to:
            self._answered_to, self._answered_at = ready, time.monotonic()
        out = answered(held, self.answered)
        # Answers far ahead of the link input read so far (a rebuild replaying the log) wait on the
        # broker, not in memory; the input is never held back then, so both move on.
        read_to = max(self.answered.taken, (held[-1].offset() or 0) + 1 if held else 0)
        scored = [TopicPartition(LINK_SCORED_TOPIC, 0)]
        if ready - read_to > MAX_WAITING:
            answers.pause(scored)
        else:
            answers.resume(scored)
        return out

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # surfaced through /health; the worker must then be restarted
            self.error = exc
            log.exception("linker loop stopped")
            raise

    def _load_snapshot(self) -> bool:
        """Start from the last snapshot, as a standby that has followed the log to its position
        (in sharded mode with its store of values put back to that position)."""
        store = self.store
        loaded = snapshot.read(self.snapshots.path, self.model,
                               lambda: new_core(self.settings, self.model, store=store),
                               values_store=store.store_id if store is not None else None)
        if loaded is None:
            return False
        with self.lock:
            self.core = loaded.core
            if store is not None:
                store.rewind(loaded.position)
                self._answers_from(loaded.position, int(loaded.header.get("answers_from", 0)))
                self._compacted = loaded.position
        self.standby_position = loaded.position
        self.snapshot_loaded = {"position": loaded.position, "seconds": round(loaded.seconds, 3),
                                "taken_at": loaded.taken_at}
        self.snapshots.last = {"position": loaded.position, "at": loaded.taken_at}  # the one on disk
        log.info("linker loaded its snapshot at %d (%d records) in %.1f s", loaded.position,
                 len(loaded.core.index.records), loaded.seconds)
        return True

    def _maybe_check_model(self) -> None:
        """Once the index passes the next power of ten: compare the model with its records."""
        mode = self.settings.linkage.model_check
        index = self.core.index
        records = index.records
        if mode == "off" or len(records) < self._next_check:
            return
        while self._next_check <= len(records):
            self._next_check *= 10
        sample = [self.core.values(k) for k in itertools.islice(records, MODEL_CHECK_SAMPLE)]
        findings = [f.message for f in check_model(self.model, sample)]
        metrics.MODEL_FINDINGS.set(len(findings))
        for message in findings:
            if message not in self.model_findings:
                log.warning("linkage model does not fit the data (%d records): %s", len(records), message)
        self.model_findings = findings
        if findings and mode == "refuse" and self.publish_from is not None:
            self.refused = (f"linking paused at {len(records):,} records: model {self.model.version} does not fit "
                            f"the data (linkage.model_check: refuse); train one on it (caselink train --from-topics)"
                            f" and restart")
            log.error(self.refused)

    def _maybe_snapshot(self, consumer: Consumer) -> None:
        """Between batches, once an interval has passed: snapshot the index at a position whose
        outputs are all acknowledged and committed (the linker) or below the committed offset
        (a standby). Not while replaying."""
        interval = self.settings.worker.snapshot_interval_s
        self._compact_store()
        if interval <= 0 or self.snapshots.busy or time.monotonic() - self.snapshots.started < interval:
            return
        if self.publish_from is not None:
            if self.recovering:
                return
            self._commit_now(consumer)
            if self.committed_position != self.position:
                return
            position = self.position
        elif self.standby_position > 0:
            position = self.standby_position
        else:
            return
        if position == self.snapshots.last.get("position"):
            self.snapshots.started = time.monotonic()  # nothing new since the last one
            return
        extra = None
        if self.answered is not None:  # every answer the snapshot's position still needs is from here on
            extra = {"answers_from": self.answered.resume_from(self._answers_read_to)}
        self.snapshots.start(self.core, position, extra)

    def _compact_store(self) -> None:
        """Sharded mode: once a snapshot is written, the values no rewind to it can need go."""
        written = self.snapshots.last.get("position")
        if self.store is None or written is None or written <= self._compacted:
            return
        with self.lock:
            dropped = self.store.compact(written)
        self._compacted = written
        log.info("resolver's store of values compacted to the snapshot at %d: %d older values dropped", written,
                 dropped)

    def _run(self) -> None:
        loaded = False
        if self.settings.worker.snapshot_interval_s > 0:
            loaded = self._load_snapshot()
            self.snapshots.started = time.monotonic()  # the first snapshot one interval from now
        if not loaded and self.store is not None:  # the index starts empty: so does its store of values
            with self.lock:
                self.store.clear()
        consumer, follower = self._consumers()
        sink = BatchSink(self.settings)
        serde = default_serde()
        follow_state: dict[str, float] = {}
        summary = DecisionSummary()
        acks = ThreadPoolExecutor(max_workers=1, thread_name_prefix="caselink-linker-acks")
        try:
            while not self._stopping.is_set():
                summary.due(lambda: len(self.core.index.review))
                if self.answered is not None:  # every turn: a stall shows while nothing is linked
                    metrics.RESOLVER_HELD.set(len(self.held))
                    metrics.RESOLVER_WAITING.set(self._waiting_s())
                self._settle(consumer, wait=False)
                self._maybe_snapshot(consumer)
                batch = self._next_batch(consumer, follower, follow_state)
                publish_from = self.publish_from
                if publish_from is not None and self.answered is not None:
                    batch = self._ready(batch, wait_s=0.05)
                    hold_back(consumer, len(self.held))
                if not batch or publish_from is None:
                    continue
                linked = link_batch(self.core, self.lock, batch, publish_from, serde, self.answered)
                if self.store is not None:
                    with self.lock:
                        self.store.commit()
                self._count(linked)
                summary.add(linked.outcomes)
                if linked.last is None:
                    continue
                self._advance(consumer, sink, serde, acks, linked.last + 1, linked.outputs)
                self._update_gauges(consumer)
        finally:
            try:
                self._commit_now(consumer)
            except RuntimeError as exc:  # the run is over anyway; a restart replays from the last commit
                log.error("linker outputs undelivered, position not committed: %s", exc)
            acks.shutdown()
            sink.producer.flush(30)
            follower.close()
            consumer.close()
            if self._answers is not None:
                self._answers.close()
            if self.store is not None:
                with self.lock:
                    self.store.close()
            self.snapshots.wait(60)  # a snapshot being written is finished, not left half-way

    def _consumers(self) -> tuple[Consumer, Consumer]:
        """The link input's group member (the linker, or waiting to be), and the standby's reader
        of the same log (assigned explicitly, never subscribed)."""
        consumer = kafka.consumer(self.settings, self.group_id, **{
            "enable.partition.eof": False, "session.timeout.ms": 10000, "heartbeat.interval.ms": 2000,
            "fetch.wait.max.ms": 10, "max.poll.interval.ms": 600000,
            "partition.assignment.strategy": "cooperative-sticky", "on_commit": self._on_commit,
        })
        consumer.subscribe([LINK_INPUT_TOPIC], on_assign=self._on_assign, on_revoke=self._on_revoke,
                           on_lost=self._on_revoke)
        follower = kafka.consumer(self.settings, f"{self.group_id}-standby",
                                  **{"enable.partition.eof": False, "fetch.wait.max.ms": 10})
        if self.sharded:  # the record shards' answers (assigned in _ready, from where _answers_from says)
            self._answers = kafka.consumer(self.settings, f"{self.group_id}-answers",
                                           **{"enable.partition.eof": False, "fetch.wait.max.ms": 10})
        return consumer, follower

    def sharded_status(self) -> dict[str, Any]:
        """Sharded mode, for /health and /metrics: what waits for the record shards, for how long,
        and which key partitions hold it back."""
        coverage = self.answered
        if coverage is None:
            return {}
        return {"answered_to": coverage.ready(), "held_changes": len(self.held),
                "waiting_s": round(self._waiting_s(), 1), "answers_read_from": self.answers_read_from,
                "partitions_behind": sorted(coverage.lagging()) if self.held else [],
                "store": str(self.store.path) if self.store is not None else None}

    def _waiting_s(self) -> float:
        """Sharded mode: how long changes have been held with no new answer from the shards."""
        return time.monotonic() - self._answered_at if self.held else 0.0

    def _linking(self) -> bool:
        """Whether this worker holds the link input (the group's callbacks change it during a poll)."""
        return self.publish_from is not None

    def _next_batch(self, consumer: Consumer, follower: Consumer, follow_state: dict[str, float]) -> list[Message]:
        """The next link-input messages to link: none while paused, or while another worker links
        (this one then follows the log as a standby)."""
        batch_size = self.settings.worker.batch_size
        if self.refused is not None:  # paused by the model check: hold the partition, link nothing
            consumer.poll(0.5)
            return []
        if self._linking():
            return drain(consumer, batch_size, wait_s=0.1)
        # Not the linker (yet): poll the group (to be assigned) and follow the log meanwhile.
        batch = drain(consumer, batch_size, wait_s=0.0)
        if not self._linking():
            self._follow(consumer, follower, follow_state)
            return []
        follow_state.clear()
        return batch

    @staticmethod
    def _count(linked: LinkedBatch) -> None:
        """Counters once a batch: every ``inc`` takes a lock."""
        metrics.EVENTS_IN.labels(LINK_INPUT_TOPIC).inc(linked.applied)
        for outcome, n in linked.outcomes.items():
            metrics.DECISIONS.labels(outcome).inc(n)
        for error_type in linked.dead_letters:
            metrics.DEAD_LETTERS.labels("link", error_type).inc()
        for seconds in linked.latencies:
            metrics.LATENCY.observe(seconds)

    def _advance(self, consumer: Consumer, sink: BatchSink, serde: AvroSerde, acks: ThreadPoolExecutor,
                 position: int, outputs: list[Output]) -> None:
        """Move the position past the batch; once past the replay, send its outputs after the last
        batch's are acknowledged, and have the helper thread wait for this batch's."""
        self.position = position
        if self.recovered_at is None and not self.recovering:
            self.recovered_at = time.monotonic()
        if self.position > (self.publish_from or 0):
            self._settle(consumer, wait=True)
            for topic, key, value, offset, headers in outputs:
                if headers:  # a dead letter, in Kafka Connect's convention
                    sink.send(topic, key, value, headers)
                else:
                    self._publish(sink, serde, topic, key, value, offset)
            sink.count()
            self._pending = acks.submit(_acknowledged, sink, self.position)

    def _update_gauges(self, consumer: Consumer) -> None:
        _lo, hi = consumer.get_watermark_offsets(TopicPartition(LINK_INPUT_TOPIC, 0), cached=True)
        if hi >= 0:
            metrics.LINKER_LAG.set(max(0, hi - self.position))
        with self.lock:
            metrics.INDEX_RECORDS.set(len(self.core.index.records))
            metrics.INDEX_CITIZENS.set(len(self.core.index.citizens))
            metrics.REVIEW_OPEN.set(len(self.core.index.review))
            metrics.SIZE_GUARD.set(self.core.index.size_refusals)
            self._maybe_check_model()

    @staticmethod
    def _publish(sink: BatchSink, serde: Any, topic: str, key: bytes, value: bytes | None, offset: int) -> None:
        """Send one output; one the broker cannot take (larger than its message size, say) is
        dead-lettered with its origin, the reason and its first bytes, and the stream goes on."""
        try:
            sink.send(topic, key, value)
        except KafkaException as exc:
            origin = f"{LINK_INPUT_TOPIC}[0]@{offset}"
            size = len(value or b"")
            error = RuntimeError(f"could not publish a {size:,}-byte message to {topic} (key {key[:200]!r}): {exc}; "
                                 f"the payload holds its first {PUBLISH_LETTER_BYTES:,} bytes")
            letter = dead_letter(origin, "publish", error, (value or b"")[:PUBLISH_LETTER_BYTES], topic=topic,
                                 partition=None, offset=None, key=key)
            dead_key, dead_value, headers = dead_letter_message(letter, key)
            sink.send(DEAD_LETTER_TOPIC, dead_key or origin.encode(), dead_value, headers)
            metrics.DEAD_LETTERS.labels("publish", type(exc).__name__).inc()
            log.error("linker output to %s (from %s) dead-lettered: %s", topic, origin, exc)


MODEL_CHECK_FROM = 1_000  # records in the index at the first check of the model against them
MODEL_CHECK_SAMPLE = 50_000  # records the check draws its random pairs from
# How much of an output the broker refused a dead letter keeps (the rest would be refused too).
PUBLISH_LETTER_BYTES = 65_536


class DecisionSummary:
    """The linker's decisions in the log at the default level, as one line every ``every_s``
    seconds with the count of each outcome (a line per decision would cost more than linking at
    7,000 events/s, and nobody reads 7,000 lines a second)."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self.counts: dict[str, int] = {}
        self.since = time.monotonic()

    def add(self, outcomes: dict[str, int]) -> None:
        for outcome, n in outcomes.items():
            self.counts[outcome] = self.counts.get(outcome, 0) + n

    def due(self, review_open: Callable[[], int]) -> None:
        """Log the period's line if the period is over (called on every turn of the loop, busy or idle)."""
        now = time.monotonic()
        if now - self.since < self.every_s:
            return
        if self.counts:
            total = sum(self.counts.values())
            parts = ", ".join(f"{k} {v:,}" for k, v in sorted(self.counts.items(), key=lambda kv: -kv[1]))
            log.info("linker: %s decisions in the last %.0f s (%s); %s possible matches open", f"{total:,}",
                     now - self.since, parts, f"{review_open():,}")
        self.counts, self.since = {}, now


def _log_review(decision: Mapping[str, Any], outcome: str, reason: str | None, out: list[Any]) -> None:
    """Every reviewer's decision in the log at the default level, applied or refused and why."""
    action = decision.get("action") or ("same person" if decision["same_person"] else "different people")
    pair = f"{decision['left_record']} / {decision['right_record']}"
    note = f" ({decision['reason']})" if decision.get("reason") else ""
    if outcome == "REJECTED":
        log.warning("review decision %s by %s on %s: %s%s refused: %s", decision["decision_id"],
                    decision["decided_by"], pair, action, note, reason or "the linker could not apply it")
    else:
        log.info("review decision %s by %s on %s: %s%s applied: %s, %d message(s) out",
                    decision["decision_id"], decision["decided_by"], pair, action, note, outcome, len(out))


def _acknowledged(sink: BatchSink, position: int) -> int:
    """In the helper thread: ``position`` once every output sent before it is acknowledged."""
    sink.wait_for_acks()
    return position


# topic, key, value, the link-input offset it answers, and a dead letter's headers
Output = tuple[str, bytes, bytes | None, int, list[tuple[str, bytes]] | None]


@dataclass
class LinkedBatch:
    """What linking one batch did: what to publish, and what to count."""

    last: int | None = None  # the batch's last offset (None: it held only end-of-partition markers)
    applied: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    outputs: list[Output] = field(default_factory=list)  # sent once the last batch's are acknowledged
    dead_letters: list[str] = field(default_factory=list)  # the error type of each message dead-lettered
    latencies: list[float] = field(default_factory=list)  # seconds from each event's timestamp to its linking


def link_batch(core: LinkerCore, lock: threading.RLock, batch: list[Message], publish_from: int,
               serde: AvroSerde, answered: Coverage | None = None) -> LinkedBatch:
    """Apply a batch of link-input messages to the index (the step without Kafka I/O). Messages
    below ``publish_from`` are replayed: they change the index and publish nothing. A message the
    index cannot apply becomes a dead letter, and the batch goes on. ``answered``: a resolver's
    record-shard answers, every message of the batch answered."""
    linked = LinkedBatch()
    for msg in batch:
        failure = msg.error()
        if failure is not None:
            if failure.code() != KafkaError._PARTITION_EOF:
                raise RuntimeError(f"reading {LINK_INPUT_TOPIC}: {failure}")
            continue
        offset = msg.offset()
        assert offset is not None  # every message read from a partition has one
        linked.last = offset
        live = offset >= publish_from
        linked.applied += 1
        scored = answered.take(offset) if answered is not None else NO_ANSWER
        try:
            with lock:  # per message, so the web API reads between them
                out = core.apply(msg.value(), msg.topic(), msg.partition(), offset, packed_record(msg.headers()),
                                 scored=scored)
        except Exception as exc:
            if not isinstance(exc, (UndecodableEventError, ValueError)):
                log.exception("linker could not apply %s[%d]@%d; dead-lettered, going on", msg.topic(),
                              msg.partition(), offset)
            if live:
                origin = f"{msg.topic()}[{msg.partition()}]@{offset}"
                letter = dead_letter(origin, "link", exc, msg.value() or b"", topic=msg.topic(),
                                     partition=msg.partition(), offset=offset, key=msg.key())
                key, value, headers = dead_letter_message(letter, msg.key())
                linked.outputs.append((DEAD_LETTER_TOPIC, key or origin.encode(), value, offset, headers))
                linked.dead_letters.append(type(exc).__name__)
            continue
        if not live:
            continue
        if core.last_review is not None:
            _log_review(core.last_review, core.last_outcome, core.last_reason, out)
        linked.outcomes[core.last_outcome] = linked.outcomes.get(core.last_outcome, 0) + 1
        linked.outputs.extend((item.topic, item.key, item.value, offset, None) for item in out)
        _kind, ts = msg.timestamp()
        if ts > 0:
            linked.latencies.append(max(0.0, time.time() - ts / 1000))
    return linked
