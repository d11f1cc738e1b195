"""Which of ``caselink.linked-cases``' partitions this gate process serves (``consent.partitioned``).

The gate processes share the citizens through Kafka's group protocol: each is a member of the
consumer group ``<app id>-gate-partitions`` subscribed to ``caselink.linked-cases`` (its
partitions are the citizens' partitions, so nothing has to be kept in step with them), and
cooperative-sticky assignment deals the partitions and deals them again when a gate joins,
leaves or dies. The member only holds the assignment: it pauses what it is dealt and never reads
it (the gate's own reader does, from the start of each partition); its group also takes the
gate's transactional offset commits, which fence a gate that lost its partitions (KIP-447).

Why a handshake on revocation: a gate mid-transaction when it is told to give partitions up must
commit that transaction before the group deals them to another gate, or the new owner could read
the gate's bookkeeping before it and release the same views again. The revoke callback therefore
waits (``TransactionGuard``) until no transaction is open, and from then on the gate begins none
for the old assignment. A gate that is not told (stopped past its session timeout) is fenced
instead: its next ``send_offsets_to_transaction`` carries a stale generation and the transaction
is aborted.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from caselink.infra.topics import LINKED_CASES_TOPIC
from confluent_kafka import Consumer, TopicPartition

from caselink.core.kafka import consumer as kafka_consumer
from caselink.core.kafka import group_member, poll_group
from caselink.core.settings import Settings

log = logging.getLogger(__name__)
REVOKE_WAIT_S = 30.0  # at most this long a revocation waits for the open transaction to commit


def group_id(settings: Settings) -> str:
    return f"{settings.worker.app_id}-gate-partitions"


class TransactionGuard:
    """At most one of: a transaction open for the current assignment, or a change of assignment."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held = False
        self.epoch = 0  # bumped on every change of assignment

    def begin(self, epoch: int) -> bool:
        """Before a transaction begins: False (and nothing held) if the assignment has changed."""
        self._lock.acquire()
        if self.epoch != epoch:
            self._lock.release()
            return False
        self._held = True
        return True

    def end(self) -> None:
        """The transaction is committed or aborted (or never began)."""
        if self._held:
            self._held = False
            self._lock.release()

    def change(self) -> None:
        """A change of assignment: waits for the open transaction, then bumps the epoch."""
        got = self._lock.acquire(timeout=REVOKE_WAIT_S)
        try:
            self.epoch += 1
        finally:
            if got:
                self._lock.release()
        if not got:
            log.warning("consent gate: a transaction stayed open for %.0f s during a rebalance; the "
                        "group's generation fences it", REVOKE_WAIT_S)


class Membership(threading.Thread):
    """The gate process's membership of ``<app id>-gate-partitions``; ``owned`` is what it serves."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="caselink-gate-membership", daemon=True)
        self.settings = settings
        self.guard = TransactionGuard()
        self.owned: frozenset[int] = frozenset()
        self.joined = False  # dealt an assignment at least once (possibly empty)
        self.changed_at = time.monotonic()
        self.rebalances = 0
        self.reshaped = 0  # changes the gate took without a rebuild (``GateLoop._reshape``)
        self._metadata: Any = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._stopping = threading.Event()

    # The callbacks run inside poll() on this thread.
    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._change(self.owned | {tp.partition for tp in partitions})
        self.joined = True

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._change(self.owned - {tp.partition for tp in partitions})

    def _change(self, owned: frozenset[int]) -> None:
        if owned != self.owned:
            self.guard.change()
            self.owned = owned
            self.rebalances += 1
            self.changed_at = time.monotonic()
            log.info("consent gate serves partitions %s of %s", sorted(owned), LINKED_CASES_TOPIC)

    def settled(self, quiet_s: float = 1.0) -> bool:
        """Dealt partitions, and no change for ``quiet_s`` (a cooperative rebalance takes two rounds)."""
        return self.joined and time.monotonic() - self.changed_at >= quiet_s

    def group_metadata(self) -> Any:
        """The member's identity and generation, for ``send_offsets_to_transaction``: as this
        thread last read it after a poll (asked from another thread while this one polls, the
        client does not answer). At worst older than the group's: then the commit is refused."""
        return self._metadata

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - the process stops and says why (gate_process.serve)
            self.error = exc
            log.error("consent gate: %s", exc)
        finally:
            self._ready.set()  # wait_ready returns, failed or not; is_alive() says which

    def _run(self) -> None:
        consent = self.settings.consent
        consumer = kafka_consumer(self.settings, group_id(self.settings), **{
            "enable.partition.eof": False, "partition.assignment.strategy": "cooperative-sticky",
            "isolation.level": "read_committed", **group_member(consent.instance_id, consent.session_timeout_s)})
        who = "consent gate" + (f" {consent.instance_id!r}" if consent.instance_id else "")
        consumer.subscribe([LINKED_CASES_TOPIC], on_assign=self._assigned, on_revoke=self._revoked,
                           on_lost=self._revoked)
        self._ready.set()
        paused: set[int] = set()
        try:
            while not self._stopping.is_set():
                poll_group(consumer, 0.2, who)  # a message fetched before its partition was paused is not needed
                self._metadata = consumer.consumer_group_metadata()
                assigned = {tp.partition for tp in consumer.assignment()}
                fresh = assigned - paused
                if fresh:
                    consumer.pause([TopicPartition(LINKED_CASES_TOPIC, p) for p in sorted(fresh)])
                paused = assigned
        finally:
            consumer.close()

    def wait_ready(self, timeout: float = 30.0) -> None:
        self._ready.wait(timeout)

    def stop(self) -> None:
        self._stopping.set()
        self.join(15)
