"""The consent gate on Kafka: a confluent-kafka loop with transactions (run by `caselink gate`).

Why this shape:

* **one active gate**: it runs only while ``is_leader`` says so (``gate_process.Election``: a
  consumer group on a one-partition topic; or, with ``consent.in_worker``, the worker holding the
  linker's partition), and its transactional id ``<app id>-gate`` fences any older instance that
  has not noticed it lost that role, so two gates never write at once;
* **atomic release and audit**: each batch's purpose-topic records, their ``caselink.disclosures``
  audit records and the gate's own bookkeeping (``caselink.gate-released``, including how far it
  has read each input) are committed in one Kafka transaction (catching up: one per 2,000
  citizens), so the audit matches the releases one to one even across kill -9, inside an open
  transaction too; a transaction commits while the next batch is evaluated, and the next one
  begins only once it is committed;
* **recovery by replay**: on start it reads its bookkeeping, then replays the compacted linked
  cases and the consent topics; inputs below the recorded positions only rebuild state, and the
  first evaluation publishes only what differs from what is already out (nothing, after a clean
  stop);
* **partitioned** (``consent.partitioned``): several gate processes share the citizens, each
  serving the ``caselink.linked-cases`` partitions its ``Membership`` is dealt, each reading the
  whole consent register (a consent about a record or identifier is then found by whichever
  process holds the citizen carrying it); each transaction also commits the process's read
  positions to that group (``send_offsets_to_transaction``), which fences a process that lost
  its partitions; a change of partitions rebuilds the process's state for its new ones;
* **fail closed**: a policy file that does not validate pauses the gate (nothing released or
  retracted; inputs wait in Kafka) until a valid one is in place; a pseudonymised purpose without a
  key releases nothing.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from caselink.infra.topics import (
    DEAD_LETTER_TOPIC,
    GATE_RELEASED_TOPIC,
    LINKED_CASES_TOPIC,
    consent_topics,
    ensure_topics,
    purpose_topic_specs,
)
from caselink.schemas.dead_letters import dead_letter, dead_letter_message
from caselink.streams import metrics
from caselink.streams.consent.gate_core import INPUT_ERRORS, GateCore
from caselink.streams.consent.gate_membership import Membership
from caselink.streams.consent.policy import Policy, PolicyError, bundled_policy_path, load_policy
from caselink.streams.consent.pseudonym import Pseudonymiser
from caselink.streams.linker_core import Outgoing
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from caselink.core.kafka import (
    admin_client,
    client_config,
    drain,
    iter_to_end,
    key_partition,
    partition_count,
    produce,
)
from caselink.core.kafka import consumer as kafka_consumer
from caselink.core.settings import Settings

log = logging.getLogger(__name__)
# How far the inputs' effects are committed: one record under this key (one gate), or one per
# linked-cases partition, ``__positions__|<p>`` (a partitioned gate; partition 0's also holds the
# consent topics'). Read back as the furthest any of them got.
POSITIONS_KEY = b"__positions__"
CATCH_UP_CITIZENS = 2000  # citizens evaluated, and their outputs committed, per transaction while catching up


def policy_path(settings: Settings) -> Path:
    return settings.consent.policy_path or bundled_policy_path()


def pseudonymiser_from(settings: Settings) -> Pseudonymiser | None:
    key = settings.consent.pseudonym_key
    if key is None:
        return None
    return Pseudonymiser(key.get_secret_value().encode(), settings.consent.pseudonym_key_id)


class Reassigned(Exception):
    """This partitioned gate's partitions changed (it stops and rebuilds its state for the new
    ones), or the gate is stopping: what it read is not to be evaluated."""


def merge_positions(into: dict[str, int], recorded: dict[str, int]) -> None:
    """Positions only grow: the furthest recorded for each input wins."""
    for where, offset in recorded.items():
        if offset > into.get(where, 0):
            into[where] = offset


class Committer:
    """Commits a transaction in a helper thread while the gate reads and evaluates the next batch.

    ``commit_transaction`` waits for the broker to write the transaction's markers; py-spy showed
    the live gate idle there for 7-8% of its time. The next transaction begins only after the
    previous one is committed (``wait``), so outputs still reach the topics in batch order and at
    most one transaction is open; a failed commit raises from ``wait``, and the gate restarts from
    its bookkeeping as after any Kafka error (the batch evaluated meanwhile is discarded with the
    rest of its in-memory state).
    """

    def __init__(self, producer: Producer, done: Callable[[], None] = lambda: None) -> None:
        self.producer = producer
        self.done = done  # after each transaction is committed or failed (a partitioned gate's guard)
        self._pending: tuple[Future[None], Callable[[], None]] | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="caselink-gate-commit")

    def commit(self, committed: Callable[[], None]) -> None:
        assert self._pending is None, "wait() for the previous transaction first"
        self._pending = (self._pool.submit(self.producer.commit_transaction, 60), committed)

    def wait(self) -> None:
        if self._pending is not None:
            future, committed = self._pending
            self._pending = None
            try:
                future.result()
            finally:
                self.done()
            committed()

    def close(self) -> None:
        """Stop the helper; a transaction still pending (the caller is failing) is waited for, its
        outcome left to the broker, and ``done`` called, so a partitioned gate's guard is free."""
        try:
            if self._pending is not None:
                future, _committed = self._pending
                self._pending = None
                try:
                    future.exception()
                finally:
                    self.done()
        finally:
            self._pool.shutdown(wait=True)


def configuration_warnings(settings: Settings, policy: Policy) -> list[str]:
    """What this gate will not release as configured, said once at start and in /health: a
    pseudonymised purpose without a key releases nothing (fail closed), which used to show only
    as an empty purpose topic."""
    if settings.consent.pseudonym_key is not None:
        return []
    blocked = sorted(name for name, purpose in policy.purposes.items() if purpose.pseudonymise)
    if not blocked:
        return []
    return [f"no pseudonymisation key (CASELINK_CONSENT__PSEUDONYM_KEY is not set): the pseudonymised "
            f"purpose(s) {', '.join(blocked)} release nothing until it is set and the gate restarted"]


class GateLoop(threading.Thread):
    def __init__(self, settings: Settings, is_leader: Callable[[], bool] = lambda: True,
                 freeze_state: bool = False, membership: Membership | None = None) -> None:
        super().__init__(name="caselink-gate", daemon=True)
        self.settings = settings
        self.is_leader = is_leader
        # Partitioned: the partitions of caselink.linked-cases this process serves, and the group
        # its transactions commit offsets to; None: the one active gate serves every citizen.
        self.membership = membership
        self.owned: frozenset[int] | None = None  # as of the state now held
        self._epoch = 0
        self._cases_partitions = 0
        self._recorded: dict[str, int] = {}  # positions the bookkeeping held when this run began
        # One transactional id per process, kept across restarts of the loop so that the next
        # init_transactions aborts a transaction the last one left open. A named partitioned gate
        # (consent.instance_id) keeps its id across restarts of the process too, so a gate killed
        # inside a transaction and started again aborts it at once instead of leaving the others'
        # read_committed readers waiting for the broker to time it out.
        app, instance = settings.worker.app_id, settings.consent.instance_id
        self._transactional_id = (f"{app}-gate" if membership is None else f"{app}-gate-{instance}" if instance
                                  else f"{app}-gate-{uuid.uuid4().hex[:12]}")
        # In a process of its own (``caselink gate``), the state read while catching up is moved out
        # of the garbage collector's sight (gc.freeze): millions of long-lived dicts, none in a cycle,
        # that every older-generation collection walked again (a tenth of the live gate's CPU).
        self.freeze_state = freeze_state
        self.lock = threading.RLock()
        self.core: GateCore | None = None
        self.policy_error: str | None = None
        self.policy_label: str | None = None
        self.warnings: list[str] = []  # what the gate cannot do as configured (/health turns degraded)
        self.active = False
        self.caught_up = False
        self.inputs_committed = 0  # inputs whose effects are committed (for benchmarks and status)
        self.catch_up_s: float | None = None  # reading the inputs and publishing the first evaluation
        self.positions_committed: dict[str, int] = {}  # "topic:partition" -> next offset, committed
        self.restarts = 0
        self.error: BaseException | None = None
        self._stopping = threading.Event()
        self._policy_mtime: float | None = None
        self._consumer: Consumer | None = None
        self._committed: dict[str, int] = {}
        self._committed_at = 0.0

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join(timeout)

    def status(self) -> dict[str, Any]:
        with self.lock:
            core = self.core
            return {
                "active": self.active, "caught_up": self.caught_up, "policy": self.policy_label,
                **({} if self.membership is None else {
                    "partitions": sorted(self.owned or ()), "instance_id": self.settings.consent.instance_id,
                    "rebalances": self.membership.rebalances,
                    "reshaped_without_rebuild": self.membership.reshaped}),
                "policy_error": self.policy_error, "pseudonym_key_id": self.settings.consent.pseudonym_key_id
                if self.settings.consent.pseudonym_key else None,
                "citizens": len(core.cases) if core else 0, "released": len(core.released) if core else 0,
                "consents": len(core.register.by_id) if core else 0, **(core.stats if core else {}),
                "inputs_committed": self.inputs_committed, "positions": self.positions_committed,
                "catch_up_s": self.catch_up_s,
                "restarts": self.restarts,
                "error": str(self.error) if self.error else None, "warnings": list(self.warnings),
            }

    # ------------------------------------------------------------------ policy
    def _load_policy(self) -> Policy | None:
        path = policy_path(self.settings)
        try:
            self._policy_mtime = path.stat().st_mtime
        except OSError:
            self._policy_mtime = None
        try:
            policy = load_policy(path)
        except PolicyError as exc:
            metrics.GATE_POLICY_OK.set(0)
            if self.policy_error != str(exc):
                log.error("consent policy %s is invalid; the gate releases nothing until it is fixed:\n%s", path, exc)
            self.policy_error = str(exc)
            return None
        self.policy_error, self.policy_label = None, policy.label
        metrics.GATE_POLICY_OK.set(1)
        self.warnings = configuration_warnings(self.settings, policy)
        for warning in self.warnings:
            log.warning("consent gate: %s", warning)
        return policy

    def _policy_changed(self) -> bool:
        try:
            return policy_path(self.settings).stat().st_mtime != self._policy_mtime
        except OSError:
            return self._policy_mtime is not None

    # ------------------------------------------------------------------ main loop
    def run(self) -> None:
        try:
            while not self._stopping.is_set():
                if not self.is_leader():
                    time.sleep(0.2)
                    continue
                try:
                    self._serve()
                except KafkaException as exc:
                    # Fenced by a newer gate (the linker moved to another worker, perhaps only for a
                    # moment), or a transaction that had to be aborted: nothing of it is visible to
                    # read_committed readers. Stand down and start afresh if this worker still leads.
                    self.restarts += 1
                    log.warning("consent gate restarting after %s", exc)
                    time.sleep(1.0)
        except BaseException as exc:  # surfaced through /health
            self.error = exc
            log.exception("consent gate stopped")
            raise
        finally:
            self.active = False

    def _inputs(self) -> list[str]:
        return [LINKED_CASES_TOPIC, *consent_topics(self.settings.agencies)]

    def _serve(self) -> None:
        policy = self._load_policy()
        while policy is None and not self._stopping.is_set() and self.is_leader():
            time.sleep(self.settings.consent.policy_poll_s)
            if self._policy_changed():
                policy = self._load_policy()
        if policy is None:
            return
        if self.membership is not None:
            while not self.membership.settled() and not self._stopping.is_set():
                time.sleep(0.1)
            self._epoch = self.membership.guard.epoch
            self.owned = self.membership.owned
            self._cases_partitions = partition_count(self.settings, LINKED_CASES_TOPIC)
        if self.freeze_state:
            gc.unfreeze()  # the state of a run before this one goes with it
        self._ensure_purpose_topics(policy)
        app = self.settings.worker.app_id
        producer = Producer(client_config(self.settings, **{
            "transactional.id": self._transactional_id, "enable.idempotence": True, "acks": "all", "linger.ms": 5,
            "compression.type": "lz4", "batch.num.messages": 10000,
            "transaction.timeout.ms": 60000,
        }))
        producer.init_transactions(60)
        consumer = kafka_consumer(self.settings, f"{app}-gate-reader", **{
            "isolation.level": "read_committed", "enable.partition.eof": False, "fetch.wait.max.ms": 10})
        self._consumer = consumer
        try:
            with self.lock:
                self.core = GateCore(policy, pseudonymiser_from(self.settings))
                self.active, self.caught_up = True, False
            started = time.monotonic()
            positions, dead = self._catch_up(consumer)
            last_tick = datetime.now(UTC)  # consents starting or ending from here on are ticked
            self._first_evaluation(producer, dead, positions)
            self.catch_up_s = time.monotonic() - started
            if self.freeze_state:
                gc.freeze()
            self.caught_up = True
            log.info("consent gate caught up: %d citizens, %d releases out%s", len(self.core.cases),
                     len(self.core.released), "" if self.owned is None else
                     f" (partitions {sorted(self.owned)} of {LINKED_CASES_TOPIC})")
            self._live(consumer, producer, positions, last_tick)
        except Reassigned:
            if not self._stopping.is_set():
                log.info("consent gate: its partitions changed; rebuilding its state for the new ones")
        finally:
            self.active = False
            self._consumer = None
            consumer.close()
            producer.flush(10)

    def _first_evaluation(self, producer: Producer, dead: list[Outgoing], positions: dict[str, int]) -> None:
        """Evaluate everyone and commit the differences, CATCH_UP_CITIZENS citizens per transaction,
        each committed while the next chunk is evaluated."""
        assert self.core is not None
        chunks = self.core.flush_chunks(CATCH_UP_CITIZENS)
        committer = self._committer(producer)
        try:
            while True:
                with self.lock:
                    out = next(chunks, None)
                if out is None:
                    break
                committer.wait()
                committer.commit(self._send(producer, out, None))
            # The dead letters and the positions last, together: a gate stopped before this
            # transaction reads these inputs again as new, and must not have dead-lettered them.
            committer.wait()
            committer.commit(self._send(producer, dead, positions))
            committer.wait()
        finally:
            committer.close()

    def _ensure_purpose_topics(self, policy: Policy) -> None:
        from caselink.schemas import default_serde
        from caselink.schemas.registry import ensure_subjects

        k = self.settings.kafka
        specs = purpose_topic_specs(policy.purposes, k.default_partitions)
        ensure_topics(admin_client(self.settings), specs, k.replication_factor, k.min_insync_replicas)
        ensure_subjects(default_serde().registry, specs)  # each purpose topic's subject, BACKWARD

    def _catch_up(self, consumer: Consumer) -> tuple[dict[str, int], list[Outgoing]]:
        """Rebuild state from the gate's bookkeeping and its inputs.

        Returns how far the inputs have been read and the dead letters of inputs not seen before.
        """
        core = self.core
        assert core is not None
        positions = self._read_bookkeeping(consumer, core, self._serves_citizen)
        self._recorded = dict(positions)
        dead: list[Outgoing] = []
        only = None if self.owned is None else {LINKED_CASES_TOPIC: set(self.owned)}
        self._read_inputs(consumer, core, self._inputs(), only, dict(positions), positions, dead)
        return positions, dead

    def _read_inputs(self, consumer: Consumer, core: GateCore, topics: list[str], only: dict[str, set[int]] | None,
                     recorded: dict[str, int], positions: dict[str, int], dead: list[Outgoing]) -> None:
        """Every message now on ``topics`` into ``core``, ``positions`` moved past it; one not seen
        before (at or past ``recorded``) that cannot be applied becomes a dead letter in ``dead``.
        Raises ``Reassigned`` if the read was cut short: nothing may be evaluated from part of the
        inputs (the bookkeeping without the cases would retract every view)."""
        for msg in self._read_all(consumer, topics, only):
            where = f"{msg.topic()}:{msg.partition()}"
            live = msg.offset() >= recorded.get(where, 0) and self._dead_letters(msg.topic())
            with self.lock:
                self._apply(msg, core, live=live, dead=dead)
            positions[where] = max(positions.get(where, 0), msg.offset() + 1)
        if self._reassigned() or self._stopping.is_set():
            raise Reassigned()

    # ------------------------------------------------------------------ partitions (consent.partitioned)
    def _serves(self, topic: str, partition: int) -> bool:
        """Whether this process reads ``topic``'s ``partition`` live: every consent partition (the
        register is whole in every process), and its own partitions of the linked cases."""
        return self.owned is None or topic != LINKED_CASES_TOPIC or partition in self.owned

    def _serves_citizen(self, citizen_id: bytes) -> bool:
        """The citizen's linked case is on one of this process's partitions (its bookkeeping is kept
        under ``purpose|citizen`` on a partition of its own, so every process reads it all)."""
        return self.owned is None or key_partition(citizen_id, self._cases_partitions) in self.owned

    def _dead_letters(self, topic: str) -> bool:
        """Who dead-letters a bad input: the owner of its linked-cases partition, and the owner of
        partition 0 for the consents every process reads."""
        return self.owned is None or topic == LINKED_CASES_TOPIC or 0 in self.owned

    def _reassigned(self) -> bool:
        return self.membership is not None and self.membership.guard.epoch != self._epoch

    def _reshape(self, consumer: Consumer, producer: Producer, committer: Committer,
                 positions: dict[str, int]) -> bool:
        """The partitions changed while live: give up the lost ones' citizens (``keep_only``) and
        read in the gained ones' (their cases and bookkeeping; the consents are held already), instead
        of rebuilding everything. False when that cannot be done and the caller must rebuild: the
        partitions changed again meanwhile, or partition 0 (the duty to dead-letter consents, which
        needs the last owner's recorded positions) was gained."""
        membership, core, old = self.membership, self.core, self.owned
        assert membership is not None and core is not None and old is not None
        while not membership.settled():  # a cooperative rebalance takes two rounds
            if self._stopping.is_set():
                return False
            time.sleep(0.1)
        epoch, owned = membership.guard.epoch, membership.owned
        lost, gained = old - owned, owned - old
        if 0 in gained:
            return False
        started = time.monotonic()
        n = self._cases_partitions
        with self.lock:
            core.keep_only(lambda citizen_id: key_partition(citizen_id.encode(), n) in owned)
            self.owned, self._epoch = owned, epoch
            self.caught_up = False  # /health: not until the gained partitions' views are out
        dead: list[Outgoing] = []
        if gained:
            recorded = self._read_bookkeeping(consumer, core, lambda c: key_partition(c, n) in gained)
            self._read_inputs(consumer, core, [LINKED_CASES_TOPIC], {LINKED_CASES_TOPIC: set(gained)}, recorded,
                              positions, dead)
        self._assign_live(consumer, positions)
        with self.lock:
            out = dead + core.flush()
        committer.commit(self._send(producer, out, positions))
        committer.wait()
        self.caught_up = True
        membership.reshaped += 1
        log.info("consent gate: now serves partitions %s (gave up %s, took on %s) without a rebuild, in %.1f s",
                 sorted(owned), sorted(lost), sorted(gained), time.monotonic() - started)
        return True

    def _committer(self, producer: Producer) -> Committer:
        return Committer(producer) if self.membership is None else Committer(producer, self.membership.guard.end)

    def _read_bookkeeping(self, consumer: Consumer, core: GateCore, serves: Callable[[bytes], bool]) -> dict[str, int]:
        """What is out for the citizens ``serves`` says yes to (by citizen id), loaded into ``core``;
        returns the furthest positions any gate recorded."""
        positions: dict[str, int] = {}
        for msg in self._read_all(consumer, [GATE_RELEASED_TOPIC]):
            key = msg.key()
            if key == POSITIONS_KEY or key.startswith(POSITIONS_KEY + b"|"):
                merge_positions(positions, json.loads(msg.value()) if msg.value() else {})
            elif serves(key.split(b"|", 1)[1]):
                with self.lock:
                    core.load_released(key, msg.value())
        return positions

    def _assign_live(self, consumer: Consumer, positions: dict[str, int]) -> None:
        """Read on from ``positions``: every consent partition, and the linked cases' this gate serves."""
        md = consumer.list_topics(timeout=30)
        consumer.assign([TopicPartition(t, p, positions.get(f"{t}:{p}", OFFSET_BEGINNING))
                         for t in self._inputs() if t in md.topics for p in md.topics[t].partitions
                         if self._serves(t, p)])

    def _read_all(self, consumer: Consumer, topics: list[str],
                  only: dict[str, set[int]] | None = None) -> Iterator[Any]:
        """Every message now on ``topics``, streamed (linked cases may not fit in memory twice)."""
        return iter_to_end(consumer, topics, deadline_s=None, idle_s=None, only=only,
                           stop=lambda: self._stopping.is_set() or self._reassigned())

    def _apply(self, msg: Any, core: GateCore, live: bool, dead: list[Outgoing]) -> None:
        """One input message into the core; a bad one becomes a dead letter (only when live)."""
        try:
            core.apply_input(msg.topic(), msg.key(), msg.value(), msg.partition(), msg.offset())
            if live and msg.topic() != LINKED_CASES_TOPIC:
                metrics.GATE_CONSENTS.labels("applied").inc()
        except INPUT_ERRORS as exc:
            core.stats["rejected"] += 1
            if not live:
                return
            metrics.GATE_CONSENTS.labels("rejected").inc()
            origin = f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"
            log.warning("dead letter from the consent gate at %s: %s", origin, exc)
            letter = dead_letter(origin, "consent-gate", exc, msg.value() or b"", topic=msg.topic(),
                                 partition=msg.partition(), offset=msg.offset(), key=msg.key())
            key, value, headers = dead_letter_message(letter, msg.key())
            dead.append(Outgoing(DEAD_LETTER_TOPIC, key or origin.encode(), value, headers))
            metrics.DEAD_LETTERS.labels("consent-gate", type(exc).__name__).inc()

    def _live(self, consumer: Consumer, producer: Producer, positions: dict[str, int], last_tick: datetime) -> None:
        self._assign_live(consumer, positions)
        last_policy_check = time.monotonic()
        committer = self._committer(producer)
        try:
            self._live_batches(consumer, producer, committer, positions, last_tick, last_policy_check)
        finally:
            try:
                committer.wait()  # the last transaction committed (or its failure raised) before anything else
            finally:
                committer.close()

    def _live_batches(self, consumer: Consumer, producer: Producer, committer: Committer, positions: dict[str, int],
                      last_tick: datetime, last_policy_check: float) -> None:
        core = self.core
        assert core is not None
        while not self._stopping.is_set():
            if not self.is_leader():
                log.info("consent gate: this worker no longer leads; standing down")
                return
            if self._reassigned():
                committer.wait()  # the last transaction, for the old partitions, out first
                if not self._reshape(consumer, producer, committer, positions):
                    return  # rebuilt from the start instead
            if time.monotonic() - last_policy_check > self.settings.consent.policy_poll_s:
                last_policy_check = time.monotonic()
                if self._policy_changed():
                    policy = self._load_policy()
                    if policy is None:
                        return  # paused until the file is valid again: _serve waits for it
                    self._ensure_purpose_topics(policy)
                    with self.lock:
                        core.set_policy(policy)
                    log.info("consent gate: policy %s loaded", policy.label)
            batch = drain(consumer, 2000, wait_s=0.05)
            if not batch:
                committer.wait()  # nothing new: record the last transaction as committed now, not at the next batch
            dead: list[Outgoing] = []
            oldest: float | None = None
            with self.lock:
                consumed: Counter[str] = Counter()
                for msg in batch:
                    if msg.error():
                        if msg.error().code() == KafkaError._PARTITION_EOF:
                            continue
                        raise KafkaException(msg.error())
                    consumed[msg.topic()] += 1
                    self._apply(msg, core, live=True, dead=dead)
                    positions[f"{msg.topic()}:{msg.partition()}"] = msg.offset() + 1
                    _kind, ts = msg.timestamp()
                    if ts > 0:
                        oldest = ts / 1000 if oldest is None else min(oldest, ts / 1000)
                now = datetime.now(UTC)
                if (now - last_tick).total_seconds() >= 1.0:
                    core.tick(last_tick, now)
                    last_tick = now
                out = dead + core.flush()
                metrics.GATE_CITIZENS.set(len(core.cases))
            for topic, n in consumed.items():
                metrics.EVENTS_IN.labels(topic).inc(n)
            if out or batch:
                committer.wait()  # one transaction open at a time, in order
                committer.commit(self._send(producer, out, positions))
                if oldest is not None:
                    metrics.GATE_LATENCY.observe(max(0.0, time.time() - oldest))

    def _send(self, producer: Producer, out: list[Outgoing],
              positions: dict[str, int] | None) -> Callable[[], None]:
        """Begin a transaction and produce into it the outputs and the input positions they account
        for (None: not yet); returns what to record once it is committed."""
        produced: Counter[str] = Counter()
        views: Counter[tuple[str, str]] = Counter()
        # The group's generation as it was before the epoch is checked: older is only safer (a
        # refused commit), and asking the member while it waits in a rebalance callback would not be.
        group = self.membership.group_metadata() if self.membership is not None else None
        if self.membership is not None and not self.membership.guard.begin(self._epoch):
            raise Reassigned()
        try:
            producer.begin_transaction()
            for item in out:
                produce(producer, item.topic, item.key, item.value, headers=item.headers)
                produced[item.topic] += 1
                if item.topic.startswith("caselink.cases."):
                    views[(item.topic.rsplit(".", 1)[1], "release" if item.value is not None else "retract")] += 1
            if positions is not None:
                positions = dict(positions)  # as of this transaction: the caller goes on reading
                self._produce_positions(producer, positions)
            if views and self.settings.consent.test_pause_before_commit is not None:
                self._pause_inside_transaction(producer, self.settings.consent.test_pause_before_commit)
            if group is not None:
                self._fence(producer, positions, group)
        except BaseException:
            if self.membership is not None:
                self.membership.guard.end()
            raise

        def committed() -> None:
            for topic, n in produced.items():
                metrics.EVENTS_OUT.labels(topic).inc(n)
            for labels, n in views.items():
                metrics.GATE_OUTPUT.labels(*labels).inc(n)
            if positions is not None:
                self.inputs_committed = sum(positions.values())
                self.positions_committed = positions
                if self.membership is None:  # partitioned: committed in the transaction (_fence)
                    self._commit_positions(positions)

        return committed

    def _produce_positions(self, producer: Producer, positions: dict[str, int]) -> None:
        if self.owned is None:
            produce(producer, GATE_RELEASED_TOPIC, POSITIONS_KEY, json.dumps(positions).encode())
            return
        for p in sorted(self.owned):
            mine = {where: offset for where, offset in positions.items()
                    if where == f"{LINKED_CASES_TOPIC}:{p}" or (p == 0 and not where.startswith(LINKED_CASES_TOPIC))}
            produce(producer, GATE_RELEASED_TOPIC, POSITIONS_KEY + f"|{p}".encode(), json.dumps(mine).encode())

    def _fence(self, producer: Producer, positions: dict[str, int] | None, group: Any) -> None:
        """A partitioned gate's transaction carries its read positions to its group, with the
        group's generation: if this process has lost its partitions (not told: stopped past its
        session timeout), the coordinator refuses them and the transaction is aborted. Its records
        reach the broker first, so a new owner reading the bookkeeping waits for the outcome."""
        assert self.owned is not None
        if producer.flush(60) != 0:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "outputs not delivered within 60 s"))
        held = positions if positions is not None else self._recorded
        offsets = [TopicPartition(LINKED_CASES_TOPIC, p, held.get(f"{LINKED_CASES_TOPIC}:{p}", 0))
                   for p in sorted(self.owned)]
        if offsets:
            producer.send_offsets_to_transaction(offsets, group, 60)

    def _pause_inside_transaction(self, producer: Producer, marker: Path) -> None:
        """The test hook ``consent.test_pause_before_commit``: the open transaction's records reach
        the broker, uncommitted; then the process stops until continued (or killed)."""
        if marker.exists():
            return  # once per marker file
        producer.flush(30)
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGSTOP)

    def _commit_positions(self, positions: dict[str, int]) -> None:
        """Mirror how far the gate has read into its consumer group's committed offsets.

        The gate's own record of its positions is the bookkeeping topic (read back on start, written
        in the transaction); nothing reads these offsets back. They are there so that the gate's
        progress is consumer-group lag like every other stage's: `caselink status`, kafka_exporter
        and `kafka-consumer-groups.sh` show a gate that stopped or fell behind. A failed commit only
        delays that picture, so it is asynchronous and its errors are ignored."""
        consumer = self._consumer
        if consumer is None or not positions:
            return
        offsets = [TopicPartition(topic, int(partition), offset)
                   for where, offset in positions.items() for topic, partition in [where.rsplit(":", 1)]]
        now = time.monotonic()
        if now - self._committed_at < 1.0 and positions == self._committed:
            return
        try:
            consumer.commit(offsets=offsets, asynchronous=True)
            self._committed, self._committed_at = dict(positions), now
        except KafkaException as exc:
            log.debug("consent gate: committing its positions to its group failed (%s); retried next batch", exc)
