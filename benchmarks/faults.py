"""Faults injected under load: what was in flight, what was lost or duplicated, how long the stall.

    python benchmarks/faults.py [--only gate,normalisers,broker,disk]

The scenarios are tests/fault_scenarios.py's (tests/integration/test_faults.py asserts their
correctness; this prints their figures for docs/operations.md's fault table). "Lost" and
"duplicated" are against a straight run: a replay of the link input through one uninterrupted
linker, or (the gate) the pure GateCore on the same linked cases. "Stall" is the longest gap in
the stage's output: link-input timestamps, or the time until the standby gate had taken over.
The disk scenario needs root (it mounts a size-capped tmpfs). Writes benchmarks/results/faults.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from common import save  # also puts the repository on sys.path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="gate,normalisers,broker,disk")
    args = parser.parse_args()
    from caselink.infra.kafka_runtime import LocalKafka
    from caselink.infra.topics import caselink_topics, ensure_topics

    from caselink.core.kafka import admin_client
    from caselink.core.settings import KafkaSettings, Settings
    from tests import fault_scenarios

    def on_fresh_broker(scenario):  # type: ignore[no-untyped-def]
        directory = Path(tempfile.mkdtemp(prefix="caselink-faults-"))
        kafka = LocalKafka(Settings().infra, directory)
        state = kafka.start()
        try:
            settings = Settings(kafka=KafkaSettings(bootstrap_servers=state.bootstrap_servers))
            ensure_topics(admin_client(settings), caselink_topics(settings.agencies, settings.purposes))
            return scenario(settings)
        finally:
            kafka.stop()
            shutil.rmtree(directory, ignore_errors=True)

    runs = {
        "gate": lambda: on_fresh_broker(lambda s: fault_scenarios.gate_killed_mid_transaction(s, citizens=6000)),
        "normalisers": lambda: on_fresh_broker(lambda s: fault_scenarios.normalisers_rebalancing(s, 20000, 1500)),
        "broker": lambda: fault_scenarios.broker_lost(events=12000, rate=1500),
        "disk": lambda: (fault_scenarios.disk_fills(events=6000) if fault_scenarios.can_mount_tmpfs() is None
                         else {"skipped": fault_scenarios.can_mount_tmpfs()}),
    }
    from common import RESULTS

    previous = RESULTS / "faults.json"  # a partial run (--only) keeps the other scenarios' last figures
    results = {k: v for k, v in json.loads(previous.read_text()).items() if k in runs} if previous.exists() else {}
    for name in args.only.split(","):
        print(f"--- {name}", flush=True)
        results[name] = runs[name]()
        print(json.dumps(results[name], indent=2, default=str), flush=True)
    print("\n| fault | faults | in flight | lost | duplicated | stall (s) |\n|---|---|---|---|---|---|")
    for r in results.values():
        if "skipped" not in r:
            print(f"| {r['fault']} | {r['faults_injected']} | {r['in_flight']:,} | {r['lost']} | {r['duplicated']} "
                  f"| {r['stall_s']} |")
    save("faults", results)


if __name__ == "__main__":
    main()
