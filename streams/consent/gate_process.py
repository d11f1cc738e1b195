"""`caselink gate`: the consent gate in a process of its own, with its own leader election.

The gate evaluates every linked-case change for every purpose; in the worker's process it competed
with the linker and the normaliser for one interpreter (measured: end-to-end throughput halved), so
it runs beside the worker and uses another core. Any number of gate processes may run: the
consumer group ``<app id>-gate`` on the one-partition ``caselink.gate-election`` topic makes exactly
one active (the member holding the partition), the others wait to take over within the session
timeout, and the gate's transactional id fences one that has not noticed it lost. With
``consent.partitioned`` they share the citizens instead (``gate_membership``).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

from caselink.infra.topics import GATE_ELECTION_TOPIC
from caselink.streams.consent.gate_loop import GateLoop
from caselink.streams.consent.gate_membership import Membership
from caselink.streams.health_server import serve_health
from confluent_kafka import Consumer, TopicPartition

from caselink.core.kafka import consumer as kafka_consumer
from caselink.core.settings import Settings

log = logging.getLogger(__name__)


class Election(threading.Thread):
    """Holds a consumer-group membership; ``leader`` while this member is assigned the partition."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="caselink-gate-election", daemon=True)
        self.settings = settings
        self.leader = False
        self._stopping = threading.Event()

    # Cooperative-sticky, as for the linker: a gate process that joins does not take the active
    # role from the one holding it. Callbacks receive only the partitions added or taken away (the
    # client applies them after the callback returns).
    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if partitions:
            self.leader = True
        log.info("consent gate election: %s", "active" if self.leader else "standby")

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if partitions:
            self.leader = False

    def run(self) -> None:
        consumer = kafka_consumer(self.settings, f"{self.settings.worker.app_id}-gate", **{
            "enable.partition.eof": False, "session.timeout.ms": 10000, "heartbeat.interval.ms": 2000,
            "partition.assignment.strategy": "cooperative-sticky"})
        consumer.subscribe([GATE_ELECTION_TOPIC], on_assign=self._assigned, on_revoke=self._revoked,
                           on_lost=self._revoked)
        try:
            while not self._stopping.is_set():
                consumer.poll(0.2)
        finally:
            self.leader = False
            consumer.close()

    def stop(self) -> None:
        self._stopping.set()
        self.join(15)


def serve(settings: Settings, port: int) -> None:
    """Run the election (or, partitioned, the membership) and the gate; serve /health and /metrics
    on ``port`` until SIGTERM/SIGINT."""
    election: Election | Membership
    if settings.consent.partitioned:
        membership = election = Membership(settings)
        membership.start()
        membership.wait_ready()
        gate = GateLoop(settings, is_leader=lambda: membership.joined, freeze_state=True, membership=membership)

        def role() -> str:
            return "partitioned" if membership.joined else "joining"
    else:
        leader = election = Election(settings)
        leader.start()
        gate = GateLoop(settings, is_leader=lambda: leader.leader, freeze_state=True)

        def role() -> str:
            return "active" if leader.leader else "standby"
    gate._load_policy()  # a standby, too, says whether the policy is valid (caselink_gate_policy_ok, /health)
    gate.start()

    def health() -> dict[str, Any]:
        status: dict[str, Any] = {"role": role(), **gate.status()}
        healthy = gate.error is None and gate.is_alive() and election.is_alive()
        status["status"] = ("failed" if not healthy else
                            "degraded" if gate.policy_error or gate.warnings else "ok")
        if status["status"] == "degraded":
            status["reason"] = (f"the consent policy is invalid: {gate.policy_error}" if gate.policy_error
                                else "; ".join(gate.warnings))
        return status

    server = serve_health(settings.worker.web_host, port, health, "gate")
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    log.info("consent gate process up; health on http://%s:%d/health", settings.worker.web_host, port)
    while not stopping.is_set() and (gate.is_alive() or gate.error is None) and election.is_alive():
        time.sleep(0.2)
    server.shutdown()
    gate.stop()
    election.stop()
    failed = getattr(election, "error", None)
    if failed is not None:
        raise SystemExit(f"the consent gate stopped: {failed}")
