"""Finding the broker and making the confluent-kafka clients every caselink process uses."""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from caselink.settings import Settings
from infra.kafka_runtime import ClusterState, pid_alive

log = logging.getLogger(__name__)


class NoBrokerError(RuntimeError):
    pass


def state_file(settings: Settings):
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
