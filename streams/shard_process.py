"""`caselink shard blocks|records`: one shard of the sharded index in a process of its own.

Any number may run per tier; their consumer group deals the key partitions among them
(``streams.shard_loop``). The process serves /health (its partitions, how far it has answered,
what it waits for) and /metrics, and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

from caselink.infra.topics import ensure_topics, shard_topic_specs
from caselink.linkage import deployment
from caselink.streams.health_server import serve_health
from caselink.streams.shard_loop import ShardLoop

from caselink.core.kafka import admin_client
from caselink.core.settings import Settings

log = logging.getLogger(__name__)


def serve(settings: Settings, tier: str, port: int) -> None:
    """Run one shard of ``tier``; serve /health and /metrics on ``port`` until SIGTERM/SIGINT."""
    model = deployment.load_model(settings.linkage)
    k = settings.kafka
    ensure_topics(admin_client(settings), shard_topic_specs(settings.shards.partitions), k.replication_factor,
                  k.min_insync_replicas)
    shard = ShardLoop(settings, tier, model)
    shard.start()

    def health() -> dict[str, Any]:
        status: dict[str, Any] = shard.status()
        healthy = shard.error is None and shard.is_alive()
        status["status"] = "failed" if not healthy else "ok" if shard.working else "waiting"
        if status["status"] == "waiting":
            status["reason"] = "no key partitions dealt to this shard yet (or more shards than partitions)"
        return status

    server = serve_health(settings.worker.web_host, port, health, f"{tier}-shard")
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    log.info("%s shard up; health on http://%s:%d/health", tier, settings.worker.web_host, port)
    while not stopping.is_set() and shard.is_alive():
        time.sleep(0.2)
    server.shutdown()
    shard.stop()
    if shard.error is not None:
        raise SystemExit(f"the {tier} shard stopped: {shard.error}")
