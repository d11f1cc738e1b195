"""`make demo` as a newcomer runs it: `caselink demo` with no configuration at all, so it starts its
own Kafka and schema registry and every process it starts must find both (it once started the
registry and then could not tell the worker where it was)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


@pytest.mark.timeout(600)
def test_the_demo_runs_start_to_finish_with_nothing_configured(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASELINK_")}
    env.update({"CASELINK_CONFIG": "/nonexistent", "CASELINK_INFRA__RUN_DIR": str(tmp_path / "run"),
                "CASELINK_LINKAGE__MODEL_PATH": str(tmp_path / "no-model.json"), "COLUMNS": "200"})
    done = subprocess.run([sys.executable, "-m", "caselink.cli", "demo"], env=env, capture_output=True, text=True,
                          timeout=540)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "Apicurio Registry" in out and "ready at" in out  # its own registry, started and used
    assert "live citizens on caselink.linked-cases" in out
    assert "5. The consent gate releases what each purpose may see" in out
    assert "Kafka stopped" in out
