"""Access control on the real broker: SASL/SCRAM logins and ACLs per principal.

An analyst for one purpose reads that purpose's topic and is refused every other topic; a connector
writes its own agency's topic and is refused another's; the worker principal has what the consent
gate needs (its topics, transactions, groups); a wrong password does not get in.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from caselink.infra.acls import provision, standard_principals
from caselink.infra.kafka_runtime import SASL_MECHANISM, LocalKafka
from caselink.infra.topics import (
    LINKED_CASES_TOPIC,
    caselink_topics,
    ensure_topics,
    person_events_topic,
    purpose_topic,
)
from caselink.streams.consent.gate_loop import GateLoop
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient
from pydantic import SecretStr

from caselink.core.settings import ConsentSettings, KafkaSettings, Settings, WorkerSettings
from tests.consent_fixtures import encode_case, linked_case, member

pytestmark = [pytest.mark.integration, pytest.mark.slow]
QUIET = logging.getLogger("caselink.tests.acl-clients")
QUIET.addHandler(logging.NullHandler())
QUIET.propagate = False


def login(bootstrap: str, user: str, password: str) -> dict[str, str]:
    return {"bootstrap.servers": bootstrap, "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": SASL_MECHANISM,
            "sasl.username": user, "sasl.password": password}


def read(conf: dict[str, str], topic: str, group: str, timeout: float = 20.0) -> tuple[str, object]:
    """('ok', messages) or ('refused', error code) as the broker answers this principal."""
    failures: list[KafkaError] = []
    c = Consumer({**conf, "group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "error_cb": failures.append, "logger": QUIET})
    c.subscribe([topic])
    got = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if any(f.code() == KafkaError._AUTHENTICATION for f in failures):
                return "refused", KafkaError._AUTHENTICATION
            msg = c.poll(0.5)
            if msg is None:
                if got:
                    return "ok", got
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                return "refused", msg.error().code()
            got.append(msg)
        return "ok", got
    finally:
        c.close()


def write(conf: dict[str, str], topic: str, idempotent: bool = True) -> object:
    errors: list = []
    p = Producer({**conf, "enable.idempotence": idempotent, "message.timeout.ms": 10000, "logger": QUIET})
    p.produce(topic, b"x", key=b"k", on_delivery=lambda err, _m: errors.append(err))
    p.flush(15)
    return errors[0].code() if errors and errors[0] else None


@pytest.fixture
def secure_cluster(request: pytest.FixtureRequest):
    directory = Path(tempfile.mkdtemp(prefix="caselink-acl-"))
    kafka = LocalKafka(Settings().infra, directory, admin_password=uuid.uuid4().hex)
    kafka.start()
    try:
        yield kafka
    finally:
        kafka.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_principals_get_only_what_their_job_needs(secure_cluster: LocalKafka) -> None:
    kafka = secure_cluster
    bootstrap = kafka.state.bootstrap_servers
    admin = AdminClient(kafka.admin_config())
    purposes = ["direct_care", "safeguarding", "research", "planning"]
    ensure_topics(admin, caselink_topics(["health", "police"], purposes))
    principals = {p.name: p for p in standard_principals(["health", "police"], purposes, "acl-test")}
    provision(admin, list(principals.values()))

    # Nobody gets in without the right password; with no ACLs at all a principal sees nothing.
    assert read(login(bootstrap, "analyst-planning", "wrong"), purpose_topic("planning"), "analyst-planning-1",
                timeout=10) == ("refused", KafkaError._AUTHENTICATION)

    # The worker principal runs the consent gate: reads linked cases, writes purpose topics in transactions.
    worker = principals["worker"]
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap, security_protocol="SASL_PLAINTEXT",
                            sasl_mechanism=SASL_MECHANISM, sasl_username="worker",
                            sasl_password=SecretStr(worker.password)),
        worker=WorkerSettings(app_id="acl-test"), agencies=["health", "police"], purposes=purposes,
        consent=ConsentSettings(pseudonym_key=SecretStr("acl-test-key-0123456789abcdef")))
    producer = Producer(login(bootstrap, "worker", worker.password))
    producer.produce(LINKED_CASES_TOPIC, encode_case(linked_case("C1", [member("health", "H1")])), key=b"C1")
    assert producer.flush(15) == 0
    gate = GateLoop(settings)
    gate.start()
    try:
        analyst = principals["analyst-planning"]
        conf = login(bootstrap, analyst.name, analyst.password)
        deadline = time.monotonic() + 60
        outcome: tuple[str, object] = ("ok", [])
        while time.monotonic() < deadline and not outcome[1]:
            assert gate.error is None, gate.error
            outcome = read(conf, purpose_topic("planning"), f"analyst-planning-{uuid.uuid4().hex[:6]}", timeout=5)
        assert outcome[0] == "ok" and outcome[1], "the planning analyst reads its own purpose topic"
    finally:
        gate.stop()

    # ... and is refused every other purpose topic, the linked cases and the agency topics.
    for topic in (purpose_topic("safeguarding"), purpose_topic("direct_care"), LINKED_CASES_TOPIC,
                  person_events_topic("health")):
        verdict = read(conf, topic, "analyst-planning-2", timeout=15)
        assert verdict == ("refused", KafkaError.TOPIC_AUTHORIZATION_FAILED), (topic, verdict)
    # A group outside its prefix is refused too, even for its own topic.
    assert read(conf, purpose_topic("planning"), "someone-else", timeout=15) == (
        "refused", KafkaError.GROUP_AUTHORIZATION_FAILED)
    assert write(conf, purpose_topic("planning"), idempotent=False) == KafkaError.TOPIC_AUTHORIZATION_FAILED

    # A connector writes its own agency's topic and not another agency's.
    health = principals["connector-health"]
    conf = login(bootstrap, health.name, health.password)
    assert write(conf, person_events_topic("health")) is None
    assert write(conf, person_events_topic("police")) == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_a_connector_can_neither_damage_nor_forge_another_agencys_checkpoints(secure_cluster: LocalKafka,
                                                                              tmp_path: Path) -> None:
    """D2: any connector login could write the shared checkpoint topic: damage every connector's
    position (a crash at start, for good) or forge another agency's (skipping its rows)."""
    from caselink.connectors.files import FileConnector
    from caselink.connectors.mapping import parse_mapping
    from caselink.infra.topics import connector_checkpoints_topic

    kafka = secure_cluster
    bootstrap = kafka.state.bootstrap_servers
    admin = AdminClient(kafka.admin_config())
    ensure_topics(admin, caselink_topics(["health", "police"], []))
    principals = {p.name: p for p in standard_principals(["health", "police"], [], "acl-test")}
    provision(admin, list(principals.values()))
    health = principals["connector-health"]
    conf = login(bootstrap, health.name, health.password)

    # Its own agency's checkpoints: yes. Another agency's: neither written nor read.
    assert write(conf, connector_checkpoints_topic("police")) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert read(conf, connector_checkpoints_topic("police"), "caselink-reader-x", timeout=15) == (
        "refused", KafkaError.TOPIC_AUTHORIZATION_FAILED)

    # A load as connector-health: events, its checkpoint, and a resume from it, all under its own login.
    settings = Settings(kafka=KafkaSettings(bootstrap_servers=bootstrap, security_protocol="SASL_PLAINTEXT",
                                            sasl_mechanism=SASL_MECHANISM, sasl_username=health.name,
                                            sasl_password=SecretStr(health.password)),
                        agencies=["health", "police"])
    data = tmp_path / "h.csv"
    data.write_text("id,last,dob\n" + "".join(f"H{i},Lee,1990-01-0{1 + i % 9}\n" for i in range(20)))
    mapping = parse_mapping({"agency": "health", "record_id": "id",
                             "fields": {"family_name": "last", "date_of_birth": "dob"}})
    assert FileConnector(settings, mapping, name="file:health").load(data).events == 20
    again = FileConnector(settings, mapping, name="file:health").load(data)
    assert again.rows == 0 and again.resumed_from == 20
