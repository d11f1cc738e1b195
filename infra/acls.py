"""Principals and ACLs: each kind of client may touch only the topics its job needs.

* ``analyst-<purpose>`` reads ``caselink.cases.<purpose>`` and nothing else, with consumer groups
  named ``analyst-<purpose>...``;
* ``connector-<agency>`` writes its agency's person and consent topics and dead letters, and
  reads and writes its agency's checkpoint topic (and no other agency's: a connector can neither
  damage nor forge another agency's position);
* ``worker`` (the app id) reads the agency topics and owns the ``caselink.*`` topics, its
  consumer groups, its internal Faust topics and its transactional ids;
* ``ingest`` (the HTTP endpoint, which enforces per-agency tokens itself) writes agency topics.

Passwords are generated here and handed back once; the broker keeps only SCRAM salted hashes.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from caselink.infra.topics import (
    DEAD_LETTER_TOPIC,
    connector_checkpoints_topic,
    consent_events_topic,
    person_events_topic,
    purpose_topic,
)
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialUpsertion,
)

LITERAL, PREFIXED = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED
TOPIC, GROUP, CLUSTER, TXN = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.BROKER, ResourceType.TRANSACTIONAL_ID
READ, WRITE, DESCRIBE, ALL = AclOperation.READ, AclOperation.WRITE, AclOperation.DESCRIBE, AclOperation.ALL
READER_GROUP_PREFIX = "caselink-reader-"  # the groups caselink's own whole-topic readers use


@dataclass(frozen=True)
class Principal:
    name: str
    password: str
    grants: tuple[tuple[ResourceType, str, ResourcePatternType, AclOperation], ...]

    def acls(self) -> list[AclBinding]:
        return [AclBinding(kind, name, pattern, f"User:{self.name}", "*", operation, AclPermissionType.ALLOW)
                for kind, name, pattern, operation in self.grants]


def _password() -> str:
    return secrets.token_urlsafe(24)


def analyst(purpose: str) -> Principal:
    name = f"analyst-{purpose}"
    return Principal(name, _password(), (
        (TOPIC, purpose_topic(purpose), LITERAL, READ), (TOPIC, purpose_topic(purpose), LITERAL, DESCRIBE),
        (GROUP, name, PREFIXED, READ),
    ))


def connector(agency: str) -> Principal:
    grants = []
    for topic in (person_events_topic(agency), consent_events_topic(agency), DEAD_LETTER_TOPIC):
        grants += [(TOPIC, topic, LITERAL, WRITE), (TOPIC, topic, LITERAL, DESCRIBE)]
    grants += [(TOPIC, connector_checkpoints_topic(agency), LITERAL, op) for op in (READ, WRITE, DESCRIBE)]
    grants += [(GROUP, READER_GROUP_PREFIX, PREFIXED, READ)]
    return Principal(f"connector-{agency}", _password(), tuple(grants))


def worker(app_id: str) -> Principal:
    return Principal("worker", _password(), (
        (TOPIC, "caselink.", PREFIXED, ALL), (TOPIC, "agency.", PREFIXED, READ), (TOPIC, "agency.", PREFIXED, DESCRIBE),
        (TOPIC, app_id, PREFIXED, ALL),  # Faust's own topics (<app id>-__assignor-__leader, ...)
        (GROUP, app_id, PREFIXED, ALL), (GROUP, READER_GROUP_PREFIX, PREFIXED, READ),
        (TXN, app_id, PREFIXED, ALL), (CLUSTER, "kafka-cluster", LITERAL, DESCRIBE),
        # The cluster's default replication factor, for Faust's own topics and `topics ensure`'s report.
        (CLUSTER, "kafka-cluster", LITERAL, AclOperation.DESCRIBE_CONFIGS),
    ))


def ingest() -> Principal:
    return Principal("ingest", _password(), (
        (TOPIC, "agency.", PREFIXED, WRITE), (TOPIC, "agency.", PREFIXED, DESCRIBE),
    ))


def standard_principals(agencies: Iterable[str], purposes: Iterable[str], app_id: str) -> list[Principal]:
    return [worker(app_id), ingest(), *(connector(a) for a in agencies), *(analyst(p) for p in purposes)]


def provision(admin: AdminClient, principals: list[Principal], timeout: float = 30.0) -> None:
    """Create or reset each principal's SCRAM credential and add its ACLs (existing ACLs are kept)."""
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
    upserts: list[UserScramCredentialAlteration] = [
        UserScramCredentialUpsertion(p.name, info, p.password.encode()) for p in principals]
    for fut in admin.alter_user_scram_credentials(upserts).values():
        fut.result(timeout=timeout)
    for fut in admin.create_acls([acl for p in principals for acl in p.acls()]).values():
        fut.result(timeout=timeout)
