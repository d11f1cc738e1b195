from pathlib import Path

import pytest
from pydantic import ValidationError

from caselink.core.settings import Settings


def test_yaml_then_env_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "caselink.yaml"
    config.write_text("kafka:\n  bootstrap_servers: yaml:9092\n  replication_factor: 3\nagencies: [health]\n")
    monkeypatch.setenv("CASELINK_CONFIG", str(config))
    monkeypatch.setenv("CASELINK_KAFKA__BOOTSTRAP_SERVERS", "env:9092")
    s = Settings()
    assert s.kafka.bootstrap_servers == "env:9092"
    assert s.kafka.replication_factor == 3
    assert s.agencies == ["health"]


def test_secret_in_yaml_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "caselink.yaml"
    config.write_text("kafka:\n  sasl_password: hunter2\n")
    monkeypatch.setenv("CASELINK_CONFIG", str(config))
    with pytest.raises(ValueError, match="CASELINK_KAFKA__SASL_PASSWORD"):
        Settings()


def test_sasl_settings_reach_the_client_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASELINK_KAFKA__BOOTSTRAP_SERVERS", "b:9093")
    monkeypatch.setenv("CASELINK_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("CASELINK_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("CASELINK_KAFKA__SASL_USERNAME", "worker")
    monkeypatch.setenv("CASELINK_KAFKA__SASL_PASSWORD", "s3cret")
    conf = Settings().kafka_client_config()
    assert conf == {
        "bootstrap.servers": "b:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "worker",
        "sasl.password": "s3cret",
    }
    assert "s3cret" not in repr(Settings())


def test_unknown_setting_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "caselink.yaml"
    config.write_text("kafak: {}\n")
    monkeypatch.setenv("CASELINK_CONFIG", str(config))
    with pytest.raises(ValueError, match="kafak"):
        Settings()


def test_cluster_ids_never_look_like_options() -> None:
    from caselink.infra.kafka_runtime import kafka_uuid

    ids = [kafka_uuid() for _ in range(2000)]
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
    assert len(set(ids)) == len(ids)


def test_a_shard_named_for_good_is_a_static_member_of_its_group_and_a_bad_name_is_refused() -> None:
    from caselink.core.kafka import group_member
    from caselink.core.settings import ShardSettings

    assert "group.instance.id" not in group_member(None, 10)
    config = group_member(ShardSettings(instance_id="blocks-0").instance_id, 45)
    assert config["group.instance.id"] == "blocks-0"
    assert config["session.timeout.ms"] == 45_000 and config["heartbeat.interval.ms"] * 3 <= 45_000
    assert group_member(None, 6)["heartbeat.interval.ms"] == 2000
    for bad in ("", "a b", "x" * 250):
        with pytest.raises(ValidationError):
            ShardSettings(instance_id=bad)
    with pytest.raises(ValidationError):
        ShardSettings(session_timeout_s=1)  # below the broker's group.min.session.timeout.ms


def test_a_gate_instance_id_means_something_only_among_partitioned_gates() -> None:
    from caselink.core.settings import ConsentSettings

    assert ConsentSettings(partitioned=True, instance_id="gate-0").instance_id == "gate-0"
    with pytest.raises(ValidationError, match=r"consent\.partitioned"):
        ConsentSettings(instance_id="gate-0")


def test_every_session_timeout_the_settings_take_makes_a_consumer_librdkafka_accepts() -> None:
    from confluent_kafka import Consumer

    from caselink.core.kafka import group_member

    for seconds in (6, 10, 301, 1800):
        consumer = Consumer({"bootstrap.servers": "127.0.0.1:9", "group.id": "g",
                             **group_member("shard-0", seconds)})  # refused at once if inconsistent
        consumer.close()

