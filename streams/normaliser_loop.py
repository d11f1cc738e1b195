"""The normaliser as a plain confluent-kafka consumer-group loop: what a normaliser process runs.

Why not the Faust agent: for the same ``streams.normaliser_core`` work this loop uses about a
quarter of the Faust agent's CPU per event (docs/benchmarks.md). The pipeline is CPU-bound
(linker, normaliser and broker share the cores), so Faust's per-message machinery (aiokafka's
fetcher, the conductor, a stream event, an acknowledgement per message) took CPU the linker needed.
The Faust agent remains for ``worker.normaliser_processes: 0`` (``streams.app``).

It keeps the agent's guarantees:

* scaling: the processes of every worker are members of the app's consumer group (the group id is
  the app id, as the Faust agent's was, so committed positions carry over) and share the agency
  topics' partitions; cooperative-sticky assignment moves only the partitions that must move;
* at-least-once: a batch's outputs are acknowledged by the broker before the batch's offsets are
  committed, and only the offsets of messages whose outputs were acknowledged are ever committed
  (not the consumer's position, which a rebalance in the middle of fetching a batch can move past
  messages not yet handled). Redelivered messages are absorbed by the linker (event ids and
  source versions), so a repeat never changes the index;
* nothing dropped: a message that is not a linkable PersonEvent becomes a dead letter.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from caselink.infra.topics import person_events_topic
from caselink.linkage.deployment import load_model
from caselink.streams import metrics
from caselink.streams.normaliser_core import Normaliser
from caselink.streams.sink import BatchSink
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from caselink.core import kafka
from caselink.core.kafka import drain
from caselink.core.settings import Settings

log = logging.getLogger(__name__)


class NormaliserLoop:
    """One member of the normaliser group; ``run`` until ``should_stop`` says so."""

    def __init__(self, settings: Settings, group_id: str | None = None) -> None:
        self.settings = settings
        self.group_id = group_id or settings.worker.app_id
        self.topics = [person_events_topic(a) for a in settings.agencies]
        self.normaliser = Normaliser(load_model(settings.linkage).rules)
        # Offsets whose outputs are acknowledged but not yet committed.
        self._uncommitted: dict[tuple[str, int], int] = {}

    def _commit(self, consumer: Consumer, partitions: list[TopicPartition] | None, asynchronous: bool) -> None:
        """Commit how far the outputs of ``partitions`` (all when None) are acknowledged."""
        wanted = None if partitions is None else {(tp.topic, tp.partition) for tp in partitions}
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._uncommitted.items()
                   if wanted is None or (t, p) in wanted]
        if not offsets:
            return
        for tp in offsets:
            del self._uncommitted[(tp.topic, tp.partition)]
        try:
            if asynchronous:
                consumer.commit(offsets=offsets, asynchronous=True)
            else:
                consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:  # the group moved on: the next owner handles a little again
            log.warning("normaliser could not commit %s: %s", offsets, exc)

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if err is not None:
            log.warning("normaliser commit failed (the next owner will handle those messages again): %s", err)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if partitions:
            log.info("normaliser assigned %s", [f"{tp.topic}[{tp.partition}]" for tp in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Called inside poll/consume, between batches: every message handled so far has its outputs
        # acknowledged (each batch ends in a flush), so their offsets can be committed for the next owner.
        if partitions:
            self._commit(consumer, partitions, asynchronous=False)

    def run(self, should_stop: Callable[[], bool], every_second: Callable[[], None] | None = None) -> None:
        w = self.settings.worker
        consumer = kafka.consumer(self.settings, self.group_id, **{
            "enable.partition.eof": False, "session.timeout.ms": 10000, "heartbeat.interval.ms": 2000,
            "fetch.wait.max.ms": 10, "partition.assignment.strategy": "cooperative-sticky",
            "on_commit": self._on_commit,
        })
        sink = BatchSink(self.settings)
        events_in = metrics.Children(metrics.EVENTS_IN)
        route = self.normaliser.route
        consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                           on_lost=self._on_lost)
        ticked = time.monotonic()
        try:
            while not should_stop():
                if every_second is not None and time.monotonic() - ticked >= 1.0:
                    ticked = time.monotonic()
                    every_second()
                batch = drain(consumer, w.batch_size, wait_s=0.1)
                if not batch:
                    continue
                consumed: dict[str, int] = {}  # counted once a batch: every inc takes a lock
                handled: dict[tuple[str, int], int] = {}
                for msg in batch:
                    err = msg.error()
                    if err is not None:
                        if err.fatal():
                            raise KafkaException(err)
                        log.warning("normaliser consumer: %s", err)
                        continue
                    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
                    consumed[topic] = consumed.get(topic, 0) + 1
                    sink.send(*route(msg.value(), topic, partition, offset, msg.key()))
                    handled[(topic, partition)] = offset + 1
                for topic, n in consumed.items():
                    events_in(topic).inc(n)
                # Raises (the process stops and is restarted, committing nothing more) unless every
                # output of the batch is on the broker.
                sink.flush_now()
                # Only partitions still held: one taken away while the batch was fetched is handled
                # by its next owner from its last commit (a repeat, which the linker absorbs).
                held = {(tp.topic, tp.partition) for tp in consumer.assignment()}
                self._uncommitted.update((tp, o) for tp, o in handled.items() if tp in held)
                self._commit(consumer, None, asynchronous=True)
        finally:
            try:
                sink.flush_now(30)
                self._commit(consumer, None, asynchronous=False)
            except RuntimeError as exc:
                log.error("normaliser outputs undelivered, position not committed: %s", exc)
            consumer.close()  # leaves the group at once, so the others take over without a session timeout

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # The group already gave them away (this member missed its session): committing is refused.
        for tp in partitions:
            self._uncommitted.pop((tp.topic, tp.partition), None)
