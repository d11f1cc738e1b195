"""Topics as code: creation is idempotent and drift is repaired."""

import time
import uuid

import pytest
from caselink.infra.topics import TopicSpec, caselink_topics, ensure_topics
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

pytestmark = pytest.mark.integration


def _specs(suffix: str) -> list[TopicSpec]:
    # The design's topics, under a unique prefix so tests do not share state.
    return [
        TopicSpec(f"{suffix}.{s.name}", s.partitions, s.cleanup_policy, s.retention_ms, s.extra)
        for s in caselink_topics(["health", "police"], ["research"], partitions=2)
    ]


def _wait_for_config(admin, topic: str, key: str, value: str) -> None:
    """An acknowledged alter reaches the broker's config view a moment later."""
    for _ in range(100):
        described = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic)])
        if next(iter(described.values())).result(timeout=30)[key].value == value:
            return
        time.sleep(0.1)
    raise AssertionError(f"{topic} {key} never became {value}")


def test_ensure_is_idempotent_and_repairs_drift(admin) -> None:
    specs = _specs(uuid.uuid4().hex[:8])
    first = ensure_topics(admin, specs)
    assert sorted(first.created) == sorted(s.name for s in specs)

    second = ensure_topics(admin, specs)
    assert second.created == [] and second.reconfigured == [] and second.repartitioned == []
    assert sorted(second.unchanged) == sorted(s.name for s in specs)

    linked = next(s for s in specs if s.name.endswith("caselink.linked-cases"))
    res = ConfigResource(ConfigResource.Type.TOPIC, linked.name, incremental_configs=[
        ConfigEntry("cleanup.policy", "delete", incremental_operation=AlterConfigOpType.SET)])
    for fut in admin.incremental_alter_configs([res]).values():
        fut.result(timeout=30)
    _wait_for_config(admin, linked.name, "cleanup.policy", "delete")
    grown = [TopicSpec(s.name, s.partitions + 2, s.cleanup_policy, s.retention_ms, s.extra)
             if s.name.endswith("agency.health.person-events") else s for s in specs]

    third = ensure_topics(admin, grown)
    assert third.reconfigured == [linked.name]
    assert len(third.repartitioned) == 1 and third.repartitioned[0].endswith("agency.health.person-events")
    md = admin.list_topics(timeout=10)
    assert len(md.topics[third.repartitioned[0]].partitions) == 4
    described = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, linked.name)])
    config = next(iter(described.values())).result(timeout=30)
    assert config["cleanup.policy"].value == "compact"


def test_link_input_is_single_partition_and_compacted_topics_are_compacted() -> None:
    specs = {s.name: s for s in caselink_topics(["health"], ["research"])}
    assert specs["caselink.link-input"].partitions == 1
    for name in ("caselink.linked-cases", "caselink.review", "caselink.cases.research"):
        assert specs[name].cleanup_policy == "compact"
    assert specs["agency.health.person-events"].retention_ms == -1
