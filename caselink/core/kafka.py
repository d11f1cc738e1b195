"""Finding the broker and making the confluent-kafka clients every caselink process uses."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from caselink.core.cluster import ClusterState, pid_alive
from caselink.core.settings import Settings

log = logging.getLogger(__name__)
# librdkafka reports every refused connection and retry; they go to Python logging under this
# name (silent unless an operator configures a handler), not straight to the terminal.
CLIENT_LOG = logging.getLogger("caselink.kafka.client")
CLIENT_LOG.addHandler(logging.NullHandler())
CLIENT_LOG.propagate = False


class NoBrokerError(RuntimeError):
    pass


def state_file(settings: Settings) -> Path:
    return settings.infra.run_dir / "state.json"


def local_cluster(settings: Settings) -> ClusterState | None:
    """The cluster `caselink infra up` started, if it is still running."""
    path = state_file(settings)
    if not path.exists():
        return None
    state = ClusterState.load(path)
    if not any(pid_alive(n.pid) for n in state.nodes):
        return None
    return state


def bootstrap_servers(settings: Settings) -> str:
    """The configured cluster, else the local one started by ``caselink infra up``."""
    if settings.kafka.bootstrap_servers:
        return settings.kafka.bootstrap_servers
    state = local_cluster(settings)
    if state is None:
        raise NoBrokerError(
            "no Kafka broker: run `caselink infra up`, or point at a cluster with "
            "CASELINK_KAFKA__BOOTSTRAP_SERVERS (TLS/SASL settings under kafka.* in caselink.yaml)"
        )
    return state.bootstrap_servers


def client_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    conf = settings.kafka_client_config()
    conf["bootstrap.servers"] = bootstrap_servers(settings)
    conf["logger"] = CLIENT_LOG
    conf.update(overrides)
    return conf


def admin_client(settings: Settings) -> AdminClient:
    return AdminClient(client_config(settings))


def idempotent_producer(settings: Settings, **overrides: Any) -> Producer:
    """acks=all + idempotence: retries never duplicate or reorder within a partition."""
    conf = client_config(
        settings,
        **{
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "batch.num.messages": 10000,
            **overrides,
        },
    )
    return Producer(conf)


def consumer(settings: Settings, group_id: str, **overrides: Any) -> Consumer:
    conf = client_config(
        settings,
        **{
            "group.id": group_id,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            **overrides,
        },
    )
    return Consumer(conf)


def group_member(instance_id: str | None, session_timeout_s: float) -> dict[str, Any]:
    """A group member's session settings; with ``instance_id``, a static member (KIP-345): the
    coordinator keeps its partitions for it through a restart shorter than the session timeout
    instead of dealing them to the others, and a second process joining under the same name
    fences the first."""
    session_ms = int(session_timeout_s * 1000)
    config: dict[str, Any] = {"session.timeout.ms": session_ms,
                              "heartbeat.interval.ms": max(500, min(2000, session_ms // 3)),
                              # librdkafka refuses a poll interval below the session timeout
                              "max.poll.interval.ms": max(300_000, session_ms)}
    if instance_id:
        config["group.instance.id"] = instance_id
    return config


_GROUP_ERRORS_SAID: dict[tuple[str, int], float] = {}  # (who, error code) -> when last logged


def poll_group(group: Consumer, timeout: float, who: str) -> None:
    """Serve a group membership (its callbacks run inside ``poll``), raising on a fatal error
    instead of carrying on as a member the group has already replaced (``who`` names the
    process in the error)."""
    msg = group.poll(timeout)
    failure = msg.error() if msg is not None else None
    if failure is None:
        return
    # A fatal error reaches the consumer as a message whose error is _FATAL (``fatal()`` is false
    # on that copy). Others (a session timeout the broker refuses, a coordinator moving) are said
    # once a minute each: the member goes on trying, and its /health says it has no partitions.
    if not (failure.fatal() or failure.code() == KafkaError._FATAL):
        now = time.monotonic()
        if now - _GROUP_ERRORS_SAID.get((who, failure.code()), -60.0) >= 60.0:
            _GROUP_ERRORS_SAID[(who, failure.code())] = now
            log.warning("%s: its consumer group says %s", who, failure.str())
        return
    raise RuntimeError(f"{who} left its group for good: {failure.str()} (a static member is fenced when another "
                       "process joins under the same instance id: each process needs a name of its own)")


REPORTS_BACKLOG = 20_000


def produce(producer: Producer, topic: str, key: bytes | None, value: bytes | None,
            on_delivery: Any = None, **extra: Any) -> None:
    """Produce, waiting for deliveries to drain when the local queue is full, instead of failing.

    ``extra`` goes to ``Producer.produce`` as it is (headers, timestamp, partition).

    Delivery reports are served when the backlog grows past ``REPORTS_BACKLOG`` (and by the
    caller's flush), not after every message: ``poll`` releases the GIL, and in a worker where
    another thread is busy each release waited out that thread's switch interval
    (docs/benchmarks.md).
    """
    while True:
        try:
            producer.produce(topic, value, key=key, on_delivery=on_delivery, **extra)
            break
        except BufferError:
            producer.poll(0.05)
    if len(producer) > REPORTS_BACKLOG:
        producer.poll(0)


def drain(c: Consumer, max_messages: int, wait_s: float) -> list[Any]:
    """Wait up to ``wait_s`` for one message, then take whatever else is already fetched.

    ``Consumer.consume(n, timeout)`` waits for the whole timeout unless n messages arrive, which
    adds the timeout to every message's latency at low rates; this returns as soon as there is
    work, and still batches under load.
    """
    first = c.poll(wait_s)
    if first is None:
        return []
    return [first, *c.consume(max_messages - 1, timeout=0)] if max_messages > 1 else [first]


def watermarks(c: Consumer, tp: Any, timeout: float = 30.0) -> tuple[int, int]:
    """Low and high offsets, waiting out the moments after creation when a partition has no leader yet."""

    deadline = time.monotonic() + timeout
    while True:
        try:
            return c.get_watermark_offsets(tp, timeout=max(1.0, deadline - time.monotonic()))
        except KafkaException as exc:
            if not exc.args[0].retriable() and "leader" not in str(exc).lower():
                raise
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def iter_to_end(c: Consumer, topics: list[str], timeout: float = 30.0, deadline_s: float | None = None,
                stop: Callable[[], bool] | None = None,
                error: Callable[[Any], Exception] | None = None, idle_s: float | None = 30.0,
                progress: Callable[[int, int], None] | None = None,
                only: dict[str, set[int]] | None = None,
                ends_out: dict[tuple[str, int], int] | None = None) -> Iterator[Any]:
    """Stream every message now on ``topics``, from the beginning to the end they had when asked.

    ``c`` is assigned the partitions (and unassigned after). ``idle_s`` bounds how long the read
    may go without a message before it gives up (TimeoutError): a large topic takes as long as it
    takes, a broker that stops answering does not hang the caller. ``deadline_s`` bounds the whole
    read (None: no bound). ``stop`` ends it early. ``progress(done, total)`` is called as messages
    arrive (total: the messages between the low and high watermarks). ``only`` restricts a topic
    to some of its partitions (a key's partition, say). ``ends_out`` receives every partition's end
    as it was when the read began (to follow on from there). A message carrying an error raises
    ``error(message)`` (default: ``KafkaException``).
    """

    md = c.list_topics(timeout=timeout)
    ends, total = {}, 0
    for topic in topics:
        if topic not in md.topics:
            continue
        for p in md.topics[topic].partitions:
            if only is not None and topic in only and p not in only[topic]:
                continue
            lo, hi = watermarks(c, TopicPartition(topic, p), timeout)
            if ends_out is not None:
                ends_out[(topic, p)] = hi
            if hi > lo:
                ends[(topic, p)] = hi
                total += hi - lo
    if not ends:
        return
    c.assign([TopicPartition(t, p, OFFSET_BEGINNING) for (t, p) in ends])
    deadline = None if deadline_s is None else time.monotonic() + deadline_s
    last_seen = time.monotonic()
    done = 0
    try:
        while ends:
            if stop is not None and stop():
                return
            now = time.monotonic()
            if deadline is not None and now > deadline:
                raise TimeoutError(f"could not read to the end of {sorted(ends)} within {deadline_s}s")
            if idle_s is not None and now - last_seen > idle_s:
                raise TimeoutError(f"no message from {sorted(ends)} for {idle_s:.0f}s before reaching their end")
            # consume() waits out its whole timeout unless the batch fills: a short one, since
            # the positions below, not the wait, say when the read is done.
            batch = c.consume(5000, timeout=0.05)
            if batch:
                last_seen = time.monotonic()
            for msg in batch:
                failure = msg.error()
                if failure is not None:
                    if failure.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise error(msg) if error is not None else KafkaException(failure)
                yield msg
            done += len(batch)
            if progress is not None and batch:
                progress(min(done, total), total)
            # Transactional topics end in commit markers, which are never delivered: the position,
            # not the last message, says whether a partition has been read.
            for tp in c.position([TopicPartition(t, p) for (t, p) in ends]):
                if tp.offset >= ends[(tp.topic, tp.partition)]:
                    del ends[(tp.topic, tp.partition)]
        if progress is not None:
            progress(total, total)
    finally:
        c.unassign()


def read_to_end(settings: Settings, topics: list[str], timeout: float = 30.0,
                progress: Callable[[int, int], None] | None = None,
                only: dict[str, set[int]] | None = None) -> list[Any]:
    """Every message now on ``topics`` (from the beginning up to the current end), in partition
    order. ``timeout``: how long without a message before giving up (not a bound on the whole read)."""
    c = consumer(settings, f"caselink-reader-{uuid.uuid4().hex[:12]}")
    try:
        return list(iter_to_end(c, topics, timeout, idle_s=timeout, progress=progress, only=only,
                                error=lambda msg: RuntimeError(f"reading {msg.topic()}: {msg.error()}")))
    finally:
        c.close()


def key_partition(key: bytes, partitions: int) -> int:
    """The partition librdkafka's default partitioner (``consistent_random``: CRC-32 of the key)
    gives a keyed message, so a reader after one key reads one partition instead of the topic."""
    import zlib

    return zlib.crc32(key) % partitions


def partition_count(settings: Settings, topic: str, timeout: float = 10.0) -> int:
    """How many partitions ``topic`` has (0: no such topic)."""
    c = consumer(settings, "caselink-reader-meta")
    try:
        md = c.list_topics(topic, timeout=timeout)
        meta = md.topics.get(topic)
        return 0 if meta is None or meta.error is not None else len(meta.partitions)
    finally:
        c.close()


def set_group_offsets(admin: AdminClient, group: str, partitions: list[Any], timeout: float = 60.0) -> None:
    """Commit offsets for a consumer group that is not running, retrying while the group
    coordinator is still loading or moving (errors are reported per partition, not raised)."""

    deadline = time.monotonic() + timeout
    while True:
        result = admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, partitions)],
                                                    request_timeout=10)[group].result(timeout=15)
        errors = [tp.error for tp in result.topic_partitions if tp.error is not None]
        if not errors:
            return
        if time.monotonic() > deadline or not all(e.retriable() or e.code() in (14, 15, 16) for e in errors):
            raise RuntimeError(f"could not set offsets of group {group}: {errors[0]}")
        time.sleep(0.5)
