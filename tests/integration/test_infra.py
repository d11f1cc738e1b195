"""The project's own broker start-up: clear failures, a CLI, and a three-node cluster."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from caselink.infra.kafka_runtime import KafkaRuntimeError, LocalKafka, resolve_jars
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from caselink.core.settings import InfraSettings, Settings

pytestmark = pytest.mark.integration


def test_port_taken_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(KafkaRuntimeError, match=f"port {port} is already in use"):
            LocalKafka(Settings().infra, tmp_path, port=port).start()


def test_missing_java_says_how_to_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings().infra.model_copy(update={"java_home": None})
    resolve_jars(settings)  # while Maven is still on the PATH, so only Java is missing below
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(KafkaRuntimeError, match="Java was not found"):
        LocalKafka(settings, tmp_path).start()


def test_unresolvable_kafka_version_points_at_the_maven_log(tmp_path: Path) -> None:
    settings = InfraSettings(kafka_version="0.0.0-does-not-exist", cache_dir=tmp_path)
    with pytest.raises(KafkaRuntimeError) as err:
        resolve_jars(settings)
    assert "Maven could not resolve" in str(err.value)
    assert err.value.log_path is not None and err.value.log_path.exists()


def test_cli_up_status_down(tmp_path: Path) -> None:
    env = {**os.environ, "CASELINK_INFRA__RUN_DIR": str(tmp_path / "run"), "CASELINK_CONFIG": "/nonexistent"}
    env.pop("CASELINK_KAFKA__BOOTSTRAP_SERVERS", None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "caselink.cli", *args, "--json"], env=env,
                              capture_output=True, text=True, timeout=180)

    up = cli("infra", "up")
    assert up.returncode == 0, up.stderr
    try:  # from here the broker is stopped whatever fails
        info = json.loads(up.stdout)
        assert info["status"] == "ready"
        # each part timed to ready, with its memory: the broker and the schema registry
        assert [c["component"] for c in info["components"]] == ["kafka", "registry"]
        assert all(c["status"] == "ready" and isinstance(c["seconds_to_ready"], float) and c["rss_mb"]
                   for c in info["components"])
        status = cli("infra", "status")
        assert status.returncode == 0 and json.loads(status.stdout)["running"] is True
        md = AdminClient({"bootstrap.servers": info["bootstrap_servers"]}).list_topics(timeout=10)
        assert len(md.brokers) == 1
    finally:
        down = cli("infra", "down")
    assert down.returncode == 0 and json.loads(down.stdout)["status"] == "stopped"
    # "stopped" only once the broker has exited and its ports refuse connections (issue 19, item 13:
    # it used to say so while the broker was still shutting down)
    import socket

    port = int(info["bootstrap_servers"].rsplit(":", 1)[1])
    stopped = json.loads(down.stdout)
    assert stopped["nodes"][0]["ports_closed"][0] == port
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    pid = stopped["nodes"][0]["pid"]
    state = Path(f"/proc/{pid}/stat")
    assert not state.exists() or state.read_text().rsplit(")", 1)[1].split()[0] == "Z"  # exited (maybe unreaped)
    assert cli("infra", "status").returncode == 1


@pytest.mark.slow
def test_three_node_cluster_survives_one_broker_down(tmp_path: Path) -> None:
    kafka = LocalKafka(Settings().infra, tmp_path, brokers=3)
    state = kafka.start()
    try:
        admin = AdminClient({"bootstrap.servers": state.bootstrap_servers})
        assert len(admin.list_topics(timeout=10).brokers) == 3
        for fut in admin.create_topics([NewTopic("ha", 3, 3, config={"min.insync.replicas": "2"})]).values():
            fut.result(timeout=30)
        kafka.stop_node(3)
        producer = Producer({"bootstrap.servers": state.bootstrap_servers, "acks": "all",
                             "enable.idempotence": True, "message.timeout.ms": 30000})
        delivered = []
        for i in range(100):
            producer.produce("ha", str(i).encode(), on_delivery=lambda err, msg: delivered.append(err))
        assert producer.flush(60) == 0
        assert delivered == [None] * 100  # acks=all met by the two in-sync replicas left
        kafka.start_node(3)
        assert len(admin.list_topics(timeout=10).brokers) == 3
    finally:
        kafka.stop()


def test_the_local_brokers_files_are_private_and_no_secret_is_on_a_command_line(tmp_path: Path,
                                                                                monkeypatch) -> None:
    """D7: the broker's data directories were 0755 and segments 0644 (any local user could read
    personal data around the ACLs), and the admin password was on the `java` command line (in ps)."""
    import stat
    import uuid

    import caselink.infra.kafka_runtime as runtime
    from confluent_kafka.admin import NewTopic

    command_lines: list[list[str]] = []
    for name in ("run", "Popen"):
        real = getattr(subprocess, name)
        monkeypatch.setattr(runtime.subprocess, name, lambda args, *a, _real=real, **kw:
                            command_lines.append(list(args)) or _real(args, *a, **kw))
    password = uuid.uuid4().hex
    kafka = LocalKafka(Settings().infra, tmp_path / "cluster", admin_password=password)
    kafka.start()
    try:
        admin = AdminClient(kafka.admin_config())  # the admin logs in: its credential was set from the file
        for fut in admin.create_topics([NewTopic("private", 1, 1)]).values():
            fut.result(timeout=30)
        producer = Producer(kafka.admin_config())
        producer.produce("private", b"personal data")
        assert producer.flush(15) == 0
        assert command_lines and not [c for c in command_lines if any(password in a for a in c)]
        for pid in [n.pid for n in kafka.state.nodes]:
            assert password.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        loose = []
        for path in [tmp_path / "cluster", *(tmp_path / "cluster").rglob("*")]:
            mode = stat.S_IMODE(path.lstat().st_mode)
            if mode & 0o077:
                loose.append(f"{path} {stat.filemode(path.lstat().st_mode)}")
        assert loose == []
        assert any(p.suffix == ".log" for p in (tmp_path / "cluster").rglob("private-0/*"))  # segments were checked
    finally:
        kafka.stop()
