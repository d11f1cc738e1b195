"""Outputs of one micro-batch, made durable before the batch's input is acknowledged."""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import Any

from caselink.streams import metrics

from caselink.core.kafka import idempotent_producer, produce
from caselink.core.settings import Settings

_SINKS: weakref.WeakSet[BatchSink] = weakref.WeakSet()


def broker_wait() -> dict[str, Any] | None:
    """For ``/health``: how long this process's outputs have waited for the broker's acknowledgement
    (the longest wait of any sink), and the broker's last error; None when nothing waits."""
    waits = [(time.monotonic() - s.waiting_since, s) for s in list(_SINKS) if s.waiting_since is not None]
    if not waits:
        return None
    seconds, sink = max(waits, key=lambda w: w[0])
    return {"waiting_s": round(seconds, 1), "unacknowledged": len(sink.producer), "last_error": sink.last_error}


class BatchSink:
    """One idempotent confluent-kafka producer; ``flush`` raises unless every output was acknowledged.

    While the broker cannot take the outputs (down, its disk full), the wait goes on, up to
    librdkafka's ``message.timeout.ms`` (5 minutes), after which the messages fail and the stage
    stops: a pause the broker's recovery ends, not a stop (``broker_wait`` tells ``/health`` why)."""

    def __init__(self, settings: Settings) -> None:
        # Reports for failures only: success is what flush() confirms, without a Python call per message.
        # Every batch ends in flush(), which sends at once whatever linger.ms is (librdkafka >= 1.8),
        # so a long linger costs no latency and lets a batch's outputs go in a few large produce
        # requests instead of one every 2 ms, which cost the broker as much CPU per event as the
        # normaliser (docs/benchmarks.md).
        self.producer = idempotent_producer(settings, **{"linger.ms": 100, "delivery.report.only.error": True,
                                                         "error_cb": self._broker_error})
        self.errors: list[str] = []
        self.waiting_since: float | None = None  # outputs unacknowledged since (monotonic), while waited for
        self.last_error: str | None = None
        _SINKS.add(self)
        self._out = metrics.Children(metrics.EVENTS_OUT)
        self._sent: dict[str, int] = {}

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.errors.append(str(err))

    def send(self, topic: str, key: bytes, value: bytes | None,
             headers: list[tuple[str, bytes]] | None = None) -> None:
        if headers:
            produce(self.producer, topic, key, value, self._delivered, headers=headers)
        else:
            produce(self.producer, topic, key, value, self._delivered)
        self._sent[topic] = self._sent.get(topic, 0) + 1

    def count(self) -> None:
        """Add the batch's sends to the Prometheus counters: once a batch, since every ``inc``
        takes a lock."""
        sent, self._sent = self._sent, {}
        for topic, n in sent.items():
            self._out(topic).inc(n)

    def flush_now(self, timeout: float | None = None) -> None:
        self.count()
        self.wait_for_acks(timeout)

    def _broker_error(self, err: Any) -> None:
        self.last_error = f"{err.name()}: {err.str()}" if hasattr(err, "name") else str(err)

    def wait_for_acks(self, timeout: float | None = None) -> None:
        """Send whatever is queued and wait until the broker has acknowledged all of it (no
        counting: this may run in another thread while the caller carries on). ``timeout`` None:
        until each message is acknowledged or librdkafka gives it up (``message.timeout.ms``)."""
        remaining = self.producer.flush(min(timeout, 1.0) if timeout is not None else 1.0)
        if remaining and not self.errors:
            self.waiting_since = time.monotonic() - 1.0
            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                while remaining and not self.errors and (deadline is None or time.monotonic() < deadline):
                    remaining = self.producer.flush(1.0)
            finally:
                self.waiting_since = None
        if not remaining:
            self.last_error = None
        if remaining or self.errors:
            # Stop rather than acknowledge input whose outputs are not on the broker; a restart
            # processes it again from the last commit.
            raise RuntimeError(f"{remaining} output(s) undelivered, errors: {self.errors[-3:]}")

    async def flush(self, timeout: float | None = None) -> None:
        """``flush_now`` off the event loop, so Faust keeps heartbeating while it waits."""
        self.count()  # here, on the loop's thread, where ``send`` runs
        await asyncio.get_running_loop().run_in_executor(None, self.wait_for_acks, timeout)
