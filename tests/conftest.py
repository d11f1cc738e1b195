"""Shared fixtures: one real Kafka broker per test session, unique topics per test.

The broker is started by the project's own ``infra`` code (resolved from Maven Central, KRaft
mode, free ports). Set ``KAFKA_BOOTSTRAP`` to run the integration tests against an existing
cluster instead. The broker's data and logs are deleted after a green session and kept, with
their path printed, after a red one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from caselink.infra.kafka_runtime import LocalKafka
from caselink.infra.topics import caselink_topics, ensure_topics
from confluent_kafka.admin import AdminClient, NewTopic
from hypothesis import settings as hypothesis_settings

from caselink.core.kafka import admin_client
from caselink.core.settings import KafkaSettings, Settings

# The tests link with the bundled demo model (a deployment trains its own: `caselink train`); set
# before any settings are read, so subprocesses started by tests inherit it too. Tests of the
# deployment-model workflow set their own.
os.environ.setdefault("CASELINK_LINKAGE__BUNDLED_MODEL", "true")

# Hypothesis profiles (tests/depth.py): "ci" is the depth `make test` runs, "dev" a quick pass.
# Tests that name their own example count scale it with tests.depth.examples().
hypothesis_settings.register_profile("ci", deadline=None, print_blob=True)
hypothesis_settings.register_profile("dev", max_examples=20, deadline=None)
hypothesis_settings.load_profile(os.environ.get("CASELINK_HYPOTHESIS", "dev"))


@pytest.fixture(scope="session")
def kafka_cluster(request: pytest.FixtureRequest) -> Iterator[str]:
    """Bootstrap servers of a real broker for the whole session."""
    external = os.environ.get("KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    directory = Path(tempfile.mkdtemp(prefix="caselink-kafka-"))
    kafka = LocalKafka(Settings().infra, directory, brokers=1)
    state = kafka.start()
    try:
        yield state.bootstrap_servers
    finally:
        kafka.stop()
        if request.session.testsfailed:
            print(f"\nKafka data and logs kept for the failed run: {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def settings(kafka_cluster: str) -> Settings:
    return Settings(kafka=KafkaSettings(bootstrap_servers=kafka_cluster))


@pytest.fixture
def admin(kafka_cluster: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": kafka_cluster})


@pytest.fixture
def make_topic(admin: AdminClient, request: pytest.FixtureRequest) -> Callable[..., str]:
    """Create a topic whose name is unique to this test."""

    def create(prefix: str = "t", partitions: int = 1, config: dict[str, str] | None = None) -> str:
        name = f"{prefix}.{request.node.name[:40]}.{uuid.uuid4().hex[:8]}".replace("[", "-").replace("]", "")
        for fut in admin.create_topics([NewTopic(name, partitions, 1, config=config or {})]).values():
            fut.result(timeout=30)
        return name

    return create


@pytest.fixture
def pipeline_settings(request: pytest.FixtureRequest) -> Iterator[Settings]:
    """A broker of the test's own with every caselink topic: for tests that read whole topics."""
    yield from _own_cluster(request, brokers=1)


@pytest.fixture
def cluster_settings(request: pytest.FixtureRequest) -> Iterator[Settings]:
    """Three brokers of the test's own (the default settings: replication factor 3, min ISR 2)
    with every caselink topic."""
    yield from _own_cluster(request, brokers=3)


def _own_cluster(request: pytest.FixtureRequest, brokers: int) -> Iterator[Settings]:
    directory = Path(tempfile.mkdtemp(prefix="caselink-pipeline-"))
    kafka = LocalKafka(Settings().infra, directory, brokers=brokers)
    state = kafka.start()
    settings = Settings(kafka=KafkaSettings(bootstrap_servers=state.bootstrap_servers))
    specs = caselink_topics(settings.agencies, settings.purposes)
    ensure_topics(admin_client(settings), specs)
    if os.environ.get("CASELINK_REGISTRY__URL"):  # integration tests: the session's registry
        from caselink.schemas.registry import ensure_subjects, registry_from_settings

        ensure_subjects(registry_from_settings(settings), specs)
    failed = False
    try:
        yield settings
        failed = request.node.rep_call.failed if hasattr(request.node, "rep_call") else False
    finally:
        kafka.stop()
        if not failed:
            shutil.rmtree(directory, ignore_errors=True)


