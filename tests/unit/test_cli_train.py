"""The deployment's model: `caselink train`, then `link` and the worker use it; `evaluate`; the check
of a model against data it does not fit. Commands run as a user runs them (no broker needed)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from caselink.linkage.synthetic_intl import generate, write


@cache
def extracts(tmp: str) -> Path:
    directory = Path(tmp)
    write(generate(people=1500, seed=3), directory)
    return directory


def caselink(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "CASELINK_LINKAGE__BUNDLED_MODEL": "false", **(env or {})}
    return subprocess.run([sys.executable, "-m", "caselink.cli", *args], capture_output=True, text=True, env=full,
                          timeout=timeout)


@pytest.mark.slow  # trains models in subprocesses: make test runs it, make unit does not
def test_train_then_link_and_evaluate_with_the_deployments_own_model(tmp_path: Path,
                                                                     tmp_path_factory: object) -> None:
    data = extracts(str(tmp_path / "intl"))
    mappings = [str(p) for p in sorted((data / "mappings").glob("*.yaml"))]
    model = tmp_path / "state" / "model.json"
    env = {"CASELINK_LINKAGE__MODEL_PATH": str(model)}

    missing = caselink("link", *mappings, "--out", str(tmp_path / "out"), env=env)
    assert missing.returncode == 1 and "no linkage model at" in missing.stderr and "caselink train" in missing.stderr

    trained = caselink("train", *mappings, "--json", env=env)
    assert trained.returncode == 0, trained.stderr
    summary = json.loads(trained.stdout)
    assert summary["model"] == str(model) and model.exists()
    assert "identifier:ssn" in summary["comparisons"]  # the example non-UK scheme, compared on its own

    linked = caselink("link", *mappings, "--out", str(tmp_path / "out"), "--threshold", "0.99", "--json", env=env)
    assert linked.returncode == 0, linked.stderr
    result = json.loads(linked.stdout)
    assert result["model_version"] == summary["version"] and result["link_threshold"] == 0.99
    assert result["records"] > 3000 and result["citizens"] < result["records"]

    judged = caselink("evaluate", "--truth", str(data / "truth.csv"), "--clusters",
                      str(tmp_path / "out" / "clusters.csv"), "--json", env=env)
    assert judged.returncode == 0, judged.stderr
    pairwise = json.loads(judged.stdout)["truth"]["pairwise"]
    assert pairwise["precision"] > 0.95 and pairwise["recall"] > 0.85

    # labelled pairs: one the citizens got right, one they got wrong
    with (tmp_path / "out" / "clusters.csv").open() as f:
        rows = list(csv.DictReader(f))
    by_citizen: dict[str, list[str]] = {}
    for row in rows:
        by_citizen.setdefault(row["citizen_id"], []).append(row["record_key"])
    together = next(members for members in by_citizen.values() if len(members) > 1)
    (tmp_path / "pairs.csv").write_text(f"left,right,same\n{together[0]},{together[1]},true\n"
                                        f"{together[0]},{rows[-1]['record_key']},true\n")
    judged = caselink("evaluate", "--pairs", str(tmp_path / "pairs.csv"), "--clusters",
                      str(tmp_path / "out" / "clusters.csv"), "--json", env=env)
    counts = json.loads(judged.stdout)["pairs"]
    assert (counts["linked_same"], counts["apart_same"], counts["recall"]) == (1, 1, 0.5)


def test_evaluate_with_nothing_to_judge_says_so_and_fails(tmp_path: Path) -> None:
    done = caselink("evaluate")
    assert done.returncode == 2 and "nothing to evaluate" in done.stderr
    (tmp_path / "clusters.csv").write_text("record_key,citizen_id\n")
    done = caselink("evaluate", "--truth", str(tmp_path / "t.csv"), "--clusters", str(tmp_path / "clusters.csv"))
    assert done.returncode != 0


@pytest.mark.slow  # trains models in subprocesses: make test runs it, make unit does not
def test_a_model_that_does_not_fit_the_data_is_reported_and_refused_by_setting(tmp_path: Path) -> None:
    """The bundled UK model on extracts where one placeholder postal code stands on every record."""
    data = tmp_path / "placeholder"
    (data / "mappings").mkdir(parents=True)
    with (data / "people.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "first", "last", "dob", "street", "zip"])
        for i in range(400):
            w.writerow([f"P{i}", f"Given{i % 89}", f"Name{i % 97}", f"19{50 + i % 40}-0{1 + i % 9}-1{i % 9}",
                        f"{i} {['Mill', 'Oak', 'Station', 'Church', 'High'][i % 5]} Street", "00000"])
    (data / "mappings" / "people.yaml").write_text(
        "agency: register\nsource: {kind: csv, path: ../people.csv}\nrecord_id: id\nfields:\n"
        "  given_names: first\n  family_name: last\n  date_of_birth: dob\n"
        "  addresses:\n    - lines: street\n      postcode: zip\n")
    mapping = str(data / "mappings" / "people.yaml")
    warned = caselink("link", mapping, "--use-default-model", "--out", str(tmp_path / "out"), "--json")
    assert warned.returncode == 0, warned.stderr
    assert "location 'same_postcode'" in warned.stderr and "caselink train" in warned.stderr
    refused = caselink("link", mapping, "--use-default-model", "--out", str(tmp_path / "out"),
                       env={"CASELINK_LINKAGE__MODEL_CHECK": "refuse"})
    assert refused.returncode == 1 and "does not fit these extracts" in refused.stderr


def test_the_worker_will_not_start_without_the_deployments_model(tmp_path: Path) -> None:
    done = caselink("worker", env={"CASELINK_LINKAGE__MODEL_PATH": str(tmp_path / "none.json"),
                                   "CASELINK_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9"}, timeout=120)
    assert done.returncode == 1 and "no linkage model at" in done.stderr
