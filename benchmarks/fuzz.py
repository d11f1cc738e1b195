"""The fuzz pass, longer than CI's: every input parser with many generated inputs.

    python benchmarks/fuzz.py [--examples 5000]

Runs the Hypothesis properties of tests/unit/test_fuzz.py and tests/integration/test_fuzz_http.py
(the HTTP ingest against a real local broker) with ``--examples`` inputs each, and prints per
parser the inputs tried and whether any crashed (an exception other than a clean rejection, or a
5xx); a crash prints Hypothesis's smallest failing input. Writes benchmarks/results/fuzz.json.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
import traceback
from pathlib import Path

from common import save  # also puts the repository on sys.path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=5000, help="inputs per property")
    args = parser.parse_args()
    os.environ["CASELINK_FUZZ_EXAMPLES"] = str(args.examples)  # read when the tests are imported
    logging.disable(logging.WARNING)  # every rejected input logs its dead letter: thousands of lines

    from caselink.infra.kafka_runtime import LocalKafka
    from caselink.infra.topics import caselink_topics, ensure_topics
    from confluent_kafka.admin import AdminClient
    from fastapi.testclient import TestClient
    from pydantic import SecretStr

    from caselink.core.settings import IngestSettings, KafkaSettings, Settings
    from caselink.ingest import ingest_app
    from tests import fuzz_targets
    from tests.integration import test_fuzz_http
    from tests.unit import test_fuzz

    properties = [(name, getattr(test_fuzz, name), {}) for name in dir(test_fuzz) if name.startswith("test_")]
    directory = Path(tempfile.mkdtemp(prefix="caselink-fuzz-kafka-"))
    kafka = LocalKafka(Settings().infra, directory)
    state = kafka.start()
    results = {}
    try:
        ensure_topics(AdminClient({"bootstrap.servers": state.bootstrap_servers}), caselink_topics(["health"], []))
        settings = Settings(kafka=KafkaSettings(bootstrap_servers=state.bootstrap_servers), agencies=["health"],
                            ingest=IngestSettings(tokens={"health": SecretStr("fuzz-token-0123456789")},
                                                  max_body_bytes=50_000))
        with TestClient(ingest_app(settings), raise_server_exceptions=False) as client:
            properties.append(("test_http_ingest", test_fuzz_http.test_no_body_gets_a_server_error,
                               {"client": client}))
            for name, prop, kwargs in properties:
                before = sum(fuzz_targets.TRIED.values())
                started = time.perf_counter()
                try:
                    prop(**kwargs)
                    crash = None
                except Exception as exc:  # noqa: BLE001 - a crash found: report it and go on
                    crash = "".join(traceback.format_exception_only(exc)).strip()[-2000:]
                tried = sum(fuzz_targets.TRIED.values()) - before
                seconds = time.perf_counter() - started
                results[name.removeprefix("test_")] = {"inputs": tried, "crashed": crash is not None,
                                                       "crash": crash, "seconds": round(seconds, 1)}
                print(f"{name.removeprefix('test_'):<24} {tried:>7,} inputs in {seconds:6.1f}s: "
                      + ("no crash" if crash is None else f"CRASH\n{crash}"), flush=True)
    finally:
        kafka.stop()
        shutil.rmtree(directory, ignore_errors=True)
    total = sum(r["inputs"] for r in results.values())
    crashes = sum(r["crashed"] for r in results.values())
    print(f"total: {total:,} inputs, {crashes} crash(es)")
    save("fuzz", {"examples_per_property": args.examples, "total_inputs": total, "crashes": crashes,
                  "properties": results})


if __name__ == "__main__":
    main()
