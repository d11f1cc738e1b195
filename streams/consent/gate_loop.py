"""The consent gate on Kafka: a confluent-kafka loop with transactions (run by `caselink gate`).

Why this shape:

* **one active gate**: it runs only while ``is_leader`` says so (``gate_process.Election``: a
  consumer group on a one-partition topic; or, with ``consent.in_worker``, the worker holding the
  linker's partition), and its transactional id ``<app id>-gate`` fences any older instance that
  has not noticed it lost that role, so two gates never write at once;
* **atomic release and audit**: each batch's purpose-topic records, their ``caselink.disclosures``
  audit records and the gate's own bookkeeping (``caselink.gate-released``, including how far it
  has read each input) are committed in one Kafka transaction, so the audit matches the releases
  one to one even across kill -9;
* **recovery by replay**: on start it reads its bookkeeping, then replays the compacted linked
  cases and the consent topics; inputs below the recorded positions only rebuild state, and the
  first evaluation publishes only what differs from what is already out (nothing, after a clean
  stop);
* **fail closed**: a policy file that does not validate pauses the gate (nothing released or
  retracted; inputs wait in Kafka) until a valid one is in place; a pseudonymised purpose without a
  key releases nothing.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from caselink.connectors.base import dead_letter
from caselink.infra.topics import (
    DEAD_LETTER_TOPIC,
    GATE_RELEASED_TOPIC,
    LINKED_CASES_TOPIC,
    consent_topics,
    ensure_topics,
    purpose_topic_specs,
)
from caselink.schemas.dead_letters import dead_letter_message
from caselink.streams import metrics
from caselink.streams.consent.gate_core import INPUT_ERRORS, GateCore
from caselink.streams.consent.policy import Policy, PolicyError, bundled_policy_path, load_policy
from caselink.streams.consent.pseudonym import Pseudonymiser
from caselink.streams.linker_core import Outgoing
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from caselink.core.kafka import admin_client, client_config, drain, iter_to_end, produce
from caselink.core.settings import Settings

log = logging.getLogger(__name__)
POSITIONS_KEY = b"__positions__"
MAX_TRANSACTION = 5000  # outputs per transaction while catching up


def transaction_chunks(out: list[Outgoing], limit: int) -> list[list[Outgoing]]:
    """``out`` in transactions of about ``limit`` records, cut only after a bookkeeping record.

    A release or retraction is three records (the view, its audit, the gate's bookkeeping);
    cutting between them let a kill -9 after one transaction commit a view and its audit without
    the bookkeeping, so the standby released it again: a duplicate release and audit (found by
    the fault benchmark, benchmarks/faults.py)."""
    chunks: list[list[Outgoing]] = [[]]
    for item in out:
        chunks[-1].append(item)
        if len(chunks[-1]) >= limit and item.topic == GATE_RELEASED_TOPIC:
            chunks.append([])
    if len(chunks) > 1 and not chunks[-1]:
        chunks.pop()
    return chunks


def policy_path(settings: Settings) -> Path:
    return settings.consent.policy_path or bundled_policy_path()


def pseudonymiser_from(settings: Settings) -> Pseudonymiser | None:
    key = settings.consent.pseudonym_key
    if key is None:
        return None
    return Pseudonymiser(key.get_secret_value().encode(), settings.consent.pseudonym_key_id)


class GateLoop(threading.Thread):
    def __init__(self, settings: Settings, is_leader: Callable[[], bool] = lambda: True) -> None:
        super().__init__(name="caselink-gate", daemon=True)
        self.settings = settings
        self.is_leader = is_leader
        self.lock = threading.RLock()
        self.core: GateCore | None = None
        self.policy_error: str | None = None
        self.policy_label: str | None = None
        self.active = False
        self.caught_up = False
        self.inputs_committed = 0  # inputs whose effects are committed (for benchmarks and status)
        self.restarts = 0
        self.error: BaseException | None = None
        self._stopping = threading.Event()
        self._policy_mtime: float | None = None

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join(timeout)

    def status(self) -> dict[str, Any]:
        with self.lock:
            core = self.core
            return {
                "active": self.active, "caught_up": self.caught_up, "policy": self.policy_label,
                "policy_error": self.policy_error, "pseudonym_key_id": self.settings.consent.pseudonym_key_id
                if self.settings.consent.pseudonym_key else None,
                "citizens": len(core.cases) if core else 0, "released": len(core.released) if core else 0,
                "consents": len(core.register.by_id) if core else 0, **(core.stats if core else {}),
                "inputs_committed": self.inputs_committed, "restarts": self.restarts,
                "error": str(self.error) if self.error else None,
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
        self._ensure_purpose_topics(policy)
        app = self.settings.worker.app_id
        producer = Producer(client_config(self.settings, **{
            "transactional.id": f"{app}-gate", "enable.idempotence": True, "acks": "all", "linger.ms": 5,
            "transaction.timeout.ms": 60000,
        }))
        producer.init_transactions(60)
        consumer = Consumer(client_config(self.settings, **{
            "group.id": f"{app}-gate-reader", "enable.auto.commit": False, "isolation.level": "read_committed",
            "enable.partition.eof": False, "fetch.wait.max.ms": 10,
        }))
        try:
            with self.lock:
                self.core = GateCore(policy, pseudonymiser_from(self.settings))
                self.active, self.caught_up = True, False
            positions, dead = self._catch_up(consumer)
            with self.lock:
                out = dead + self.core.flush()
            self._publish(producer, out, positions)
            self.caught_up = True
            log.info("consent gate caught up: %d citizens, %d releases out", len(self.core.cases),
                     len(self.core.released))
            self._live(consumer, producer, positions)
        finally:
            self.active = False
            consumer.close()
            producer.flush(10)

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
        positions: dict[str, int] = {}
        for msg in self._read_all(consumer, [GATE_RELEASED_TOPIC]):
            if msg.key() == POSITIONS_KEY:
                positions = json.loads(msg.value()) if msg.value() else {}
            else:
                core.load_released(msg.key(), msg.value())
        recorded = dict(positions)
        dead: list[Outgoing] = []
        for msg in self._read_all(consumer, self._inputs()):
            where = f"{msg.topic()}:{msg.partition()}"
            self._apply(msg, core, live=msg.offset() >= recorded.get(where, 0), dead=dead)
            positions[where] = max(positions.get(where, 0), msg.offset() + 1)
        return positions, dead

    def _read_all(self, consumer: Consumer, topics: list[str]) -> Iterator[Any]:
        """Every message now on ``topics``, streamed (linked cases may not fit in memory twice)."""
        return iter_to_end(consumer, topics, deadline_s=None, stop=self._stopping.is_set)

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

    def _live(self, consumer: Consumer, producer: Producer, positions: dict[str, int]) -> None:
        core = self.core
        assert core is not None
        md = consumer.list_topics(timeout=30)
        consumer.assign([TopicPartition(t, p, positions.get(f"{t}:{p}", OFFSET_BEGINNING))
                         for t in self._inputs() if t in md.topics for p in md.topics[t].partitions])
        last_tick = datetime.now(UTC)
        last_policy_check = time.monotonic()
        while not self._stopping.is_set():
            if not self.is_leader():
                log.info("consent gate: this worker no longer leads; standing down")
                return
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
            dead: list[Outgoing] = []
            oldest: float | None = None
            with self.lock:
                for msg in batch:
                    if msg.error():
                        if msg.error().code() == KafkaError._PARTITION_EOF:
                            continue
                        raise KafkaException(msg.error())
                    metrics.EVENTS_IN.labels(msg.topic()).inc()
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
            if out or batch:
                self._publish(producer, out, positions)
                if oldest is not None:
                    metrics.GATE_LATENCY.observe(max(0.0, time.time() - oldest))

    def _publish(self, producer: Producer, out: list[Outgoing], positions: dict[str, int]) -> None:
        """Outputs plus positions, in transactions of at most MAX_TRANSACTION records."""
        chunks = transaction_chunks(out, MAX_TRANSACTION)
        for i, chunk in enumerate(chunks):
            producer.begin_transaction()
            for item in chunk:
                if item.headers:
                    produce(producer, item.topic, item.key, item.value, headers=item.headers)
                else:
                    produce(producer, item.topic, item.key, item.value)
                if item.topic.startswith("caselink.cases."):
                    metrics.GATE_OUTPUT.labels(item.topic.rsplit(".", 1)[1],
                                               "release" if item.value is not None else "retract").inc()
                metrics.EVENTS_OUT.labels(item.topic).inc()
            if i == len(chunks) - 1:
                produce(producer, GATE_RELEASED_TOPIC, POSITIONS_KEY, json.dumps(positions).encode())
            producer.commit_transaction(60)
        self.inputs_committed = sum(positions.values())
