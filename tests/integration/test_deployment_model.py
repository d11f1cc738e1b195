"""The deployment's model from its own topics, and reviewers' verdicts as labels, against a real broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from caselink.infra.topics import REVIEW_TOPIC, person_events_topic
from caselink.linkage.model import LinkageModel
from caselink.linkage.synthetic import records_for_size
from caselink.schemas import default_serde
from confluent_kafka import Producer

from caselink.core.kafka import read_to_end
from caselink.core.settings import Settings
from caselink.demo import start_worker, wait_for_worker
from tests.events import synthetic_person_event

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _caselink(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "caselink.cli", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "CASELINK_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
                               **env})


def test_train_from_topics_then_judge_the_model_by_reviewers_verdicts(pipeline_settings: Settings,
                                                                      tmp_path: Path) -> None:
    settings = pipeline_settings
    serde = default_serde()
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers, "enable.idempotence": True})
    now = datetime(2026, 11, 1, tzinfo=UTC)
    data = records_for_size(3000, seed=9)
    for i, item in enumerate(data):
        producer.produce(person_events_topic(item["agency"]), synthetic_person_event(i, item, now),
                         key=f"{item['agency']}:{item['source_record_id']}".encode())
    assert producer.flush(60) == 0

    model_path = tmp_path / "model.json"
    trained = _caselink(settings, "train", "--from-topics", "--out", str(model_path), "--json")
    assert trained.returncode == 0, trained.stderr
    assert json.loads(trained.stdout)["records"] == len(data)
    model = LinkageModel.load(model_path)
    assert {p.name for p in model.comparisons} >= {"identifier:nhs_number", "given_name", "location"}

    # The worker links with the model just trained.
    deployment = settings.model_copy(update={"linkage": settings.linkage.model_copy(
        update={"bundled_model": False, "model_path": model_path})})
    worker = start_worker(deployment, app_id="model-test")
    try:
        wait_for_worker(worker, len(data), timeout=180)
        assert worker.health()["model_version"] == model.version
    finally:
        worker.stop()

    # Reviewers settle three of the possible matches it offered; evaluate reads their verdicts.
    offered = list({item["pair_key"]: item for item in (
        serde.decode(m.value(), expect="ReviewItem")[1] for m in read_to_end(settings, [REVIEW_TOPIC])
        if m.value() is not None)}.values())
    assert len(offered) >= 3, "the sample must offer possible matches for this test to mean anything"
    for item, same in zip(offered[:3], (True, True, False), strict=False):
        done = _caselink(settings, "review", "decide", item["left_record"], item["right_record"],
                         "--same" if same else "--different", "--by", "tester")
        assert done.returncode == 0, done.stderr
    judged = _caselink(settings, "evaluate", "--reviews", "--json", CASELINK_LINKAGE__BUNDLED_MODEL="false",
                       CASELINK_LINKAGE__MODEL_PATH=str(model_path))
    assert judged.returncode == 0, judged.stderr
    reviews = json.loads(judged.stdout)["reviews"]
    assert reviews["pairs"] == 3 and reviews["with_probability"] == 3
    # They were offered for review, so below the link threshold: the two that were one person are
    # the model's misses, the other a pair it rightly left apart.
    assert (reviews["model_apart_same"], reviews["model_apart_different"]) == (2, 1)
    assert sum(band["pairs"] for band in reviews["bands"]) == 3
