"""Every benchmark in turn (about 40 minutes on the 2-core machine): python benchmarks/run_all.py"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = [
    ["linkage_accuracy.py"],
    ["linkage_speed.py"],
    ["pipeline_throughput.py"],
    ["connector_throughput.py"],
    ["cdc_throughput.py"],
    ["ingest_throughput.py"],
    ["ingest_throughput.py", "--batch", "100"],
    ["gate_throughput.py"],
    ["recovery.py"],
    ["scale_out.py"],
    ["scale_out_kafka.py"],
    ["values_store.py"],
]


def main() -> int:
    failed = []
    for script in SCRIPTS:
        print(f"== {' '.join(script)}", flush=True)
        if subprocess.run([sys.executable, str(HERE / script[0]), *script[1:]], check=False).returncode != 0:
            failed.append(" ".join(script))
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
