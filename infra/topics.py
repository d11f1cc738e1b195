"""Every caselink topic declared once, and made to exist as declared.

The names are part of the public contract (``shared/DESIGN.md``); partitions, cleanup policy and
retention live here and nowhere else. ``ensure_topics`` is idempotent: it creates what is missing,
raises partitions that are too few, and re-applies configs that drifted, so running it on every
start is safe.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
)

DAY_MS = 24 * 3600 * 1000
LONG_RETENTION_MS = -1  # replay sources: kept until deliberately removed
DEAD_LETTER_TOPIC = "caselink.dead-letters"
LINK_INPUT_TOPIC = "caselink.link-input"
LINKED_CASES_TOPIC = "caselink.linked-cases"
LINK_DECISIONS_TOPIC = "caselink.link-decisions"
REVIEW_TOPIC = "caselink.review"
DISCLOSURES_TOPIC = "caselink.disclosures"
# Before 0.2 every connector's checkpoint shared this one topic, which any connector could write:
# one agency could corrupt or forge another's position. Kept only to name it; see connector_checkpoints_topic.
CONNECTOR_CHECKPOINTS_TOPIC = "caselink.connector-checkpoints"
CONSENT_EVENTS_TOPIC = "caselink.consent-events"  # consents recorded centrally: CLI, national opt-outs
DLQ_REDRIVEN_TOPIC = "caselink.dlq-redriven"  # dead letters already re-driven, so a redrive sends each once
GATE_ELECTION_TOPIC = "caselink.gate-election"  # never written: its one partition elects the active gate
GATE_RELEASED_TOPIC = "caselink.gate-released"  # the gate's own record of what is on each purpose topic
# The sharded index (streams/shard_loop.py): never written, its partitions are dealt to the shards
# of each tier by their consumer group; and the two tiers' answers.
LINK_SHARDS_TOPIC = "caselink.link-shards"
LINK_FOUND_TOPIC = "caselink.link-found"
LINK_SCORED_TOPIC = "caselink.link-scored"


def person_events_topic(agency: str) -> str:
    return f"agency.{agency}.person-events"


def consent_events_topic(agency: str) -> str:
    return f"agency.{agency}.consent-events"


def connector_checkpoints_topic(agency: str) -> str:
    """Where an agency's connectors record their positions: a topic per agency, so an ACL can let
    each agency's connector principal read and write its own and nobody else's."""
    return f"{CONNECTOR_CHECKPOINTS_TOPIC}.{agency}"


def consent_topics(agencies: Iterable[str]) -> list[str]:
    """Where consents arrive: the central topic and every agency's own."""
    return [CONSENT_EVENTS_TOPIC, *(consent_events_topic(a) for a in agencies)]


def purpose_topic(purpose: str) -> str:
    return f"caselink.cases.{purpose}"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    cleanup_policy: str = "delete"
    retention_ms: int = 7 * DAY_MS
    extra: dict[str, str] = field(default_factory=dict)
    # The caselink Avro records its values are, each with a subject in the schema registry
    # (schemas/registry.py); empty for a topic of caselink's own bookkeeping (JSON, or no values).
    value_schemas: tuple[str, ...] = ()

    def configs(self, min_insync_replicas: int | None = None) -> dict[str, str]:
        """The topic-level configs; ``min_insync_replicas`` None leaves it to the cluster's default."""
        conf = {"cleanup.policy": self.cleanup_policy}
        if min_insync_replicas is not None:
            conf["min.insync.replicas"] = str(min_insync_replicas)
        if "delete" in self.cleanup_policy:
            conf["retention.ms"] = str(self.retention_ms)
        conf.update(self.extra)
        return conf


COMPACTED = {"min.cleanable.dirty.ratio": "0.1", "delete.retention.ms": str(DAY_MS)}


def caselink_topics(
    agencies: Iterable[str], purposes: Iterable[str], partitions: int = 3
) -> list[TopicSpec]:
    """The design's topic table, expanded for the configured agencies and purposes."""
    specs: list[TopicSpec] = []
    for agency in agencies:
        specs.append(TopicSpec(person_events_topic(agency), partitions, retention_ms=LONG_RETENTION_MS,
                               value_schemas=("PersonEvent",)))
        specs.append(TopicSpec(consent_events_topic(agency), partitions, retention_ms=LONG_RETENTION_MS,
                               value_schemas=("ConsentEvent",)))
        # Where each of the agency's connectors got to in its source; one key per connector, latest wins.
        specs.append(TopicSpec(connector_checkpoints_topic(agency), 1, cleanup_policy="compact", extra=COMPACTED))
    specs += [
        # The linker is the single writer of the citizen index, so its input has one partition;
        # the index is rebuilt by replaying it, so it is kept indefinitely.
        TopicSpec(LINK_INPUT_TOPIC, 1, retention_ms=LONG_RETENTION_MS, value_schemas=("PersonEvent", "ReviewDecision")),
        TopicSpec(LINKED_CASES_TOPIC, partitions, cleanup_policy="compact", extra=COMPACTED,
                  value_schemas=("LinkedCase",)),
        TopicSpec(LINK_DECISIONS_TOPIC, partitions, retention_ms=LONG_RETENTION_MS, value_schemas=("LinkDecision",)),
        TopicSpec(REVIEW_TOPIC, 1, cleanup_policy="compact", extra=COMPACTED, value_schemas=("ReviewItem",)),
        TopicSpec(DISCLOSURES_TOPIC, partitions, retention_ms=LONG_RETENTION_MS, value_schemas=("Disclosure",)),
        TopicSpec(CONSENT_EVENTS_TOPIC, partitions, retention_ms=LONG_RETENTION_MS, value_schemas=("ConsentEvent",)),
        TopicSpec(GATE_RELEASED_TOPIC, partitions, cleanup_policy="compact", extra=COMPACTED),
        TopicSpec(DLQ_REDRIVEN_TOPIC, 1, cleanup_policy="compact", extra=COMPACTED),
        TopicSpec(GATE_ELECTION_TOPIC, 1, cleanup_policy="compact", extra=COMPACTED),
        TopicSpec(DEAD_LETTER_TOPIC, 1, retention_ms=30 * DAY_MS),
    ]
    specs += purpose_topic_specs(purposes, partitions)
    return specs


def shard_topic_specs(partitions: int) -> list[TopicSpec]:
    """The sharded index's topics, made by the shards when they start (a single writer needs none).
    Each shard reads its tier's inputs from the start when it rebuilds, so answers are kept as
    long as the link input is."""
    return [TopicSpec(LINK_SHARDS_TOPIC, partitions, retention_ms=LONG_RETENTION_MS),
            TopicSpec(LINK_FOUND_TOPIC, 1, retention_ms=LONG_RETENTION_MS),
            TopicSpec(LINK_SCORED_TOPIC, 1, retention_ms=LONG_RETENTION_MS)]


def purpose_topic_specs(purposes: Iterable[str], partitions: int = 3) -> list[TopicSpec]:
    """The compacted ``caselink.cases.<purpose>`` topics (also created by the gate for its policy's purposes)."""
    return [TopicSpec(purpose_topic(p), partitions, cleanup_policy="compact", extra=COMPACTED,
                      value_schemas=("GatedCase",)) for p in purposes]


# Topic-level settings caselink may have set itself and, when they are not configured, hands
# back to the cluster's defaults (an override left by an older version or by hand is removed).
INHERITED = ("min.insync.replicas",)


@dataclass
class EnsureReport:
    created: list[str] = field(default_factory=list)
    repartitioned: list[str] = field(default_factory=list)
    reconfigured: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    # Existing topics with fewer replicas than new ones would get (ensure cannot add replicas:
    # that is a partition reassignment, kafka-reassign-partitions).
    under_replicated: list[str] = field(default_factory=list)


def cluster_defaults(admin: AdminClient, timeout: float = 30.0) -> dict[str, int]:
    """The cluster's ``default.replication.factor`` and ``min.insync.replicas`` (as a broker reports them)."""
    node = min(b.id for b in admin.list_topics(timeout=timeout).brokers.values())
    resource = ConfigResource(ConfigResource.Type.BROKER, str(node))
    config = admin.describe_configs([resource])[resource].result(timeout=timeout)
    return {key: int(config[key].value) for key in ("default.replication.factor", "min.insync.replicas")}


def ensure_topics(
    admin: AdminClient,
    specs: Iterable[TopicSpec],
    replication_factor: int | None = None,
    min_insync_replicas: int | None = None,
    timeout: float = 30.0,
) -> EnsureReport:
    """Create or update topics so the cluster matches ``specs``; never deletes anything.

    ``replication_factor`` and ``min_insync_replicas`` None (the default) mean the cluster's own
    defaults: topics are created with the broker's ``default.replication.factor`` and carry no
    ``min.insync.replicas`` of their own. Why: passing caselink's own default explicitly gave every
    topic RF 1 on a three-broker cluster, so one broker lost was data lost.
    """
    specs = list(specs)
    report = EnsureReport()
    metadata = admin.list_topics(timeout=timeout)
    brokers = len(metadata.brokers)
    rf = -1 if replication_factor is None else min(replication_factor, brokers)  # -1: the broker's default
    min_isr = None if min_insync_replicas is None else min(min_insync_replicas, brokers if rf < 0 else rf)
    existing = metadata.topics

    missing = [s for s in specs if s.name not in existing]
    if missing:
        futures = admin.create_topics(
            [NewTopic(s.name, s.partitions, rf, config=s.configs(min_isr)) for s in missing],
            operation_timeout=timeout,
        )
        for name, fut in futures.items():
            try:
                fut.result(timeout=timeout)
                report.created.append(name)
            except Exception as exc:  # a concurrent creator won the race: that is fine
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
        _wait_until_effective(admin, missing, min_isr, timeout)

    present = [s for s in specs if s.name in existing]
    if present:
        try:
            wanted_rf = rf if rf > 0 else cluster_defaults(admin, timeout)["default.replication.factor"]
        except KafkaException:  # not allowed to read broker configs (DescribeConfigs on the cluster): no report
            wanted_rf = 0
        report.under_replicated = [s.name for s in present
                                   if min(len(p.replicas) for p in existing[s.name].partitions.values()) < wanted_rf]
    grow = [s for s in present if len(existing[s.name].partitions) < s.partitions]
    if grow:
        for name, fut in admin.create_partitions(
            [NewPartitions(s.name, s.partitions) for s in grow]
        ).items():
            fut.result(timeout=timeout)
            report.repartitioned.append(name)

    if present:
        configs = _current_configs(admin, present, timeout)
        overrides = _topic_overrides(admin, present, timeout)
        drifted: list[tuple[TopicSpec, dict[str, str | None]]] = []
        for spec in present:
            current = configs[spec.name]
            wanted = spec.configs(min_isr)
            diff: dict[str, str | None] = {k: v for k, v in wanted.items() if current.get(k) != v}
            # Not configured here: a topic-level override goes, so the cluster's default applies.
            diff.update({k: None for k in INHERITED if k not in wanted and k in overrides[spec.name]})
            if diff:
                drifted.append((spec, diff))
            elif spec.name not in report.repartitioned:
                report.unchanged.append(spec.name)
        if drifted:
            alter = [
                ConfigResource(
                    ConfigResource.Type.TOPIC,
                    spec.name,
                    incremental_configs=[
                        ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) if v is not None
                        else ConfigEntry(k, None, incremental_operation=AlterConfigOpType.DELETE)
                        for k, v in diff.items()
                    ],
                )
                for spec, diff in drifted
            ]
            for res, fut in admin.incremental_alter_configs(alter).items():
                fut.result(timeout=timeout)
                report.reconfigured.append(res.name)
            _wait_until_effective(admin, [spec for spec, _ in drifted], min_isr, timeout)
    return report


def _current_configs(admin: AdminClient, specs: list[TopicSpec], timeout: float) -> dict[str, dict[str, str]]:
    resources = [ConfigResource(ConfigResource.Type.TOPIC, s.name) for s in specs]
    described = admin.describe_configs(resources)
    return {
        res.name: {k: v.value for k, v in described[res].result(timeout=timeout).items()}
        for res in resources
    }


def _topic_overrides(admin: AdminClient, specs: list[TopicSpec], timeout: float) -> dict[str, set[str]]:
    """Per topic, the configs set on the topic itself (not inherited from the broker or Kafka's defaults)."""

    resources = [ConfigResource(ConfigResource.Type.TOPIC, s.name) for s in specs]
    described = admin.describe_configs(resources)
    return {res.name: {k for k, v in described[res].result(timeout=timeout).items()
                       if getattr(v.source, "value", v.source) == ConfigSource.DYNAMIC_TOPIC_CONFIG.value}
            for res in resources}


def _wait_until_effective(admin: AdminClient, specs: list[TopicSpec], min_isr: int | None, timeout: float) -> None:
    """Creation is acknowledged before leaders are elected and configs applied; wait for both."""
    deadline = time.monotonic() + timeout
    pending = list(specs)
    while pending:
        metadata = admin.list_topics(timeout=timeout)
        leaderless = [s for s in pending if s.name not in metadata.topics
                      or any(p.leader < 0 for p in metadata.topics[s.name].partitions.values())]
        if leaderless:
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics without leaders after {timeout}s: {[s.name for s in leaderless]}")
            time.sleep(0.1)
            continue
        try:
            current = _current_configs(admin, pending, timeout)
            pending = [s for s in pending
                       if any(current[s.name].get(k) != v for k, v in s.configs(min_isr).items())]
        except KafkaException:
            pass  # not visible on the broker we asked yet
        if pending and time.monotonic() > deadline:
            raise TimeoutError(f"topics not effective after {timeout}s: {[s.name for s in pending]}")
        if pending:
            time.sleep(0.1)
